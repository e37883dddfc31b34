import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from jobs.common import storage
from jobs.common.config import OcrConfig, load_config
from jobs.corpus import fonts
from jobs.score.stages.ocr import OcrStage


def _sign(text: str) -> np.ndarray:
    image = Image.new("RGB", (400, 120), (240, 240, 230))
    ImageDraw.Draw(image).text((30, 40), text, font=fonts.font("en", 28), fill=(10, 10, 10))
    return np.asarray(image)


def test_stage_columns_with_and_without_text():
    stage = OcrStage(OcrConfig(threads=1))
    pixels = np.empty(3, dtype=object)
    pixels[:] = [_sign("fresh coffee"), np.full((200, 200, 3), 90, np.uint8), np.zeros((0, 0, 3), np.uint8)]
    batch = {"source_uri": np.array(["a", "b", "c"]), "error": np.array([""] * 3, dtype=object),
             "error_code": np.array([""] * 3, dtype=object), "pixels": pixels}  # fmt: skip
    out = stage(batch)
    assert out["ocr_text"][0] == "fresh coffee" and out["ocr_lines"][0] == ["fresh coffee"]
    assert out["ocr_count"][0] == 1 and len(out["ocr_boxes"][0][0]) == 8 and 0.5 < out["ocr_scores"][0][0] <= 1
    assert out["ocr_skipped"][0] is False
    # no text: the row says so; no pixels: the stage did not run (nulls)
    assert out["ocr_text"][1] == "" and out["ocr_count"][1] == 0 and out["ocr_lines"][1] == []
    assert out["ocr_skipped"][1] is True
    assert out["ocr_text"][2] is None and out["ocr_count"][2] is None


def test_ocr_and_text_embed_inside_a_real_score_run(ray_local, corpus):
    from jobs.score.pipeline import run_score

    _, manifest = corpus
    # a few images with text, a few without and one video keep the run short
    images = manifest[(manifest.media_type == "image") & manifest.broken.isna()]
    has_text = images.texts.map(lambda t: t is not None and len(t) > 0)
    videos = manifest[(manifest.media_type == "video") & manifest.broken.isna()]
    pick = [*images[has_text].uri[:4], *images[~has_text].uri[:2], videos.uri.iloc[0]]
    corpus_uri = "s3://test-scores/ocr-input.parquet"
    fs, path = storage.resolve(corpus_uri)
    pq.write_table(pa.table({"uri": pick}), path, filesystem=fs)
    cfg = load_config(
        overrides={"stages": {"run": ["ocr", "text_embed"], "fuse": "stages", "ocr": {"threads": 1}},
                   "decode": {"video": {"max_frames": 2}}}
    )  # fmt: skip
    out = "s3://test-scores/with-ocr"
    summary = run_score(corpus_uri, out, cfg, echo=lambda s: None)
    fs, path = storage.resolve(storage.join(out, "rows"))
    rows = pq.read_table(path, filesystem=fs).to_pandas()
    assert len(rows) == summary.rows_written and set(rows.source_uri) == set(pick)
    images = rows[(rows.media_type == "image") & rows.error.isna()]
    assert len(images) > 0 and images.ocr_count.notna().all() and images.ocr_text.notna().all()
    truth = manifest.set_index("uri").texts
    found = total = 0
    for row in images.itertuples():
        expected = [t["text"] for t in (truth[row.source_uri] if truth[row.source_uri] is not None else [])]
        total += len(expected)
        found += sum(text in row.ocr_lines for text in expected)
        if row.ocr_count == 0:
            assert row.text_token_count == 0 and row.text_sentence is None
        else:
            assert row.text_token_count > 0 and len(row.text_sentence) == 384
            assert sum(row.text_token_mask) == row.text_token_count
    assert total > 0 and found / total >= 0.8  # the rendered strings are read back
