import numpy as np
import pytest

from jobs.common import storage
from jobs.common.config import DecodeConfig, ListingConfig, VideoSampling
from jobs.score.ingest import Decoder, list_inputs

EXPECTED_REASON = {
    "empty": "empty_object",
    "truncated_jpeg": "image_truncated",
    "truncated_mp4": "video_open_error",
    "video_named_jpg": "media_type_mismatch",
    "too_many_pixels": "image_too_large",
}


def _batch(objects: list[tuple[str, int, str]], skip: list[str] | None = None) -> dict:
    return {
        "uri": np.array([o[0] for o in objects]),
        "size": np.array([o[1] for o in objects]),
        "kind": np.array([o[2] for o in objects]),
        "skip": np.array(skip or [""] * len(objects)),
    }


def _rows(decoder: Decoder, batch: dict) -> list[dict]:
    out = []
    for block in decoder(batch):
        n = len(block["source_uri"])
        out += [{k: v[i] for k, v in block.items()} for i in range(n)]
    return out


def test_listing_skips_non_media_and_reads_manifests(corpus):
    uri, manifest = corpus
    listing = list_inputs(uri, ListingConfig())
    assert sorted(m.uri for m in listing.media) == sorted(manifest.uri)
    assert listing.skipped >= 3  # README.txt, meta.json, manifest.parquet
    kinds = {m.uri: m.kind for m in listing.media}
    assert kinds[manifest[manifest.media_type == "video"].uri.iloc[0]] == "video"
    from_manifest = list_inputs(storage.join(uri, "manifest.parquet"), ListingConfig())
    assert sorted(m.uri for m in from_manifest.media) == sorted(manifest.uri)


def test_each_broken_input_is_one_dead_letter_row_with_its_reason(corpus):
    _, manifest = corpus
    broken = manifest[manifest.broken.notna()]
    assert set(broken.broken) == set(EXPECTED_REASON)
    listing = {m.uri: m for m in list_inputs(corpus[0], ListingConfig()).media}
    objects = [(u, listing[u].size, listing[u].kind) for u in broken.uri]
    objects.append((storage.join(corpus[0], "images/gone.jpg"), 10, "image"))
    rows = _rows(Decoder(DecodeConfig()), _batch(objects))
    assert len(rows) == len(objects)
    by_uri = {r["source_uri"]: r for r in rows}
    for uri, kind in zip(broken.uri, broken.broken, strict=True):
        row = by_uri[uri]
        assert row["_dead"] and row["_last"] and row["error_code"] == EXPECTED_REASON[kind], (kind, row["error"])
        assert row["error"].startswith(EXPECTED_REASON[kind] + ": ") and len(row["error"]) > len(kind) + 5
    assert by_uri[objects[-1][0]]["error_code"] == "not_found"


def test_follow_decodes_a_misnamed_video_by_its_content(corpus):
    _, manifest = corpus
    uri = manifest[manifest.broken == "video_named_jpg"].uri.iloc[0]
    rows = _rows(Decoder(DecodeConfig(mismatched_content="follow")), _batch([(uri, -1, "image")]))
    assert len(rows) > 1 and all(r["media_type"] == "video" and not r["_dead"] for r in rows)
    assert [r["_sample"] for r in rows] == list(range(len(rows))) and rows[-1]["_last"]


def test_video_rows_carry_samples_and_skip_what_was_written(corpus):
    _, manifest = corpus
    video = manifest[(manifest.media_type == "video") & manifest.broken.isna()].iloc[0]
    decoder = Decoder(DecodeConfig(rows_per_block=2))
    rows = _rows(decoder, _batch([(video.uri, -1, "video")]))
    assert [r["_sample"] for r in rows] == list(range(len(rows)))
    assert [r["_last"] for r in rows] == [False] * (len(rows) - 1) + [True]
    assert all(r["pixels"].shape == (video.height, video.width, 3) for r in rows)
    again = _rows(decoder, _batch([(video.uri, -1, "video")], skip=["0,2"]))
    assert [r["_sample"] for r in again] == [r["_sample"] for r in rows if r["_sample"] not in (0, 2)]
    assert [r["frame_index"] for r in again] == [r["frame_index"] for r in rows if r["_sample"] not in (0, 2)]


def test_a_truncated_stream_keeps_its_frames_and_ends_with_an_error_row(corpus, s3):
    _, manifest = corpus
    video = manifest[manifest.format.isin(["mkv", "webm"]) & manifest.broken.isna()].iloc[0]
    data = storage.read_bytes(video.uri)
    cut = storage.join(corpus[0] + "-extra", "cut." + video.format)
    storage.ensure_bucket(cut)
    storage.write_bytes(cut, data[: int(len(data) * 0.6)])
    rows = _rows(Decoder(DecodeConfig()), _batch([(cut, -1, "video")]))
    assert len(rows) >= 2
    *frames, last = rows
    assert all(r["error"] == "" and not r["_last"] for r in frames)
    assert last["error_code"] == "video_truncated" and last["_last"] and not last["_dead"]
    assert last["frame_index"] == -1


@pytest.mark.parametrize("keep", [True, False])
def test_inventory_mode_keeps_sizes_but_no_pixels(corpus, keep):
    _, manifest = corpus
    image = manifest[(manifest.media_type == "image") & manifest.broken.isna()].iloc[0]
    video = manifest[(manifest.media_type == "video") & manifest.broken.isna()].iloc[0]
    rows = _rows(
        Decoder(DecodeConfig(), keep_pixels=keep), _batch([(image.uri, -1, "image"), (video.uri, -1, "video")])
    )
    assert ("pixels" in rows[0]) == keep
    assert (rows[0]["width"], rows[0]["height"]) == (image.width, image.height)
    assert (rows[-1]["width"], rows[-1]["height"]) == (video.width, video.height)


def test_every_legal_key_in_a_manifest_is_read_as_its_own_object(put_tricky_images):
    import pyarrow as pa
    import pyarrow.parquet as pq

    sizes = put_tricky_images("s3://test-ingest/tricky")
    manifest = "s3://test-ingest/tricky-manifest.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"uri": sorted(sizes)}), sink)
    storage.write_bytes(manifest, sink.getvalue().to_pybytes())
    listing = list_inputs(manifest, ListingConfig())
    assert sorted(m.uri for m in listing.media) == sorted(sizes) and listing.skipped == 0
    rows = _rows(Decoder(DecodeConfig(), keep_pixels=False), _batch([(m.uri, -1, m.kind) for m in listing.media]))
    assert {r["source_uri"]: (r["width"], r["height"]) for r in rows} == sizes  # sizes unknown: asked of the store
    assert all(r["error"] == "" and r["source_size"] > 0 for r in rows)


def test_an_invalid_uri_in_a_manifest_is_dead_lettered_with_its_reason():
    rows = _rows(Decoder(DecodeConfig()), _batch([("s3://../../etc/passwd", -1, "image"), ("s3://media/", 5, "image")]))
    assert [(r["error_code"], r["_dead"]) for r in rows] == [("invalid_uri", True)] * 2
    assert "bucket name '..' must be 3 to 63 characters long" in rows[0]["error"]
    assert "names a bucket, not an object" in rows[1]["error"]


def test_decode_limits_from_the_config_dead_letter_with_their_reasons(tmp_path):
    """``decode.max_image_bytes`` is checked before an image is read (from its listed size, and again while it is
    read, should the listing be stale); ``decode.max_frames_total`` bounds a video's packets."""
    import io

    from PIL import Image

    from jobs.media.videoenc import encode_frames

    image = tmp_path / "big.png"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    image.write_bytes(buf.getvalue())
    video = tmp_path / "clip.mkv"
    video.write_bytes(encode_frames((np.zeros((16, 16, 3), np.uint8) for _ in range(60)), "mkv", "mpeg4", 25, 5,
                                    (16, 16)))  # fmt: skip
    cfg = DecodeConfig(max_image_bytes=1000, max_frames_total=20, video=VideoSampling(policy="all"))
    objects = [(str(image), image.stat().st_size, "image"), (str(image), 10, "image"), (str(video), -1, "video")]
    rows = _rows(Decoder(cfg, keep_pixels=False), _batch(objects))
    assert [(r["error_code"], r["_dead"]) for r in rows[:2]] == [("object_too_large", True)] * 2
    assert "(decode.max_image_bytes)" in rows[0]["error"]
    frames, last = rows[2:-1], rows[-1]
    assert len(frames) >= 1 and all(r["error_code"] == "" for r in frames)  # what was decoded is kept
    assert last["error_code"] == "video_over_budget" and "decode.max_frames_total" in last["error"]
