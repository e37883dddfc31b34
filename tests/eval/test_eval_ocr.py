"""The OCR evaluation's pieces: edit distance and matching recognized lines to the rendered truths."""

from types import SimpleNamespace

from jobs.eval.ocr import edit_distance, match_lines


def test_edit_distance_counts_single_character_edits():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("中文名字", "中文名") == 1
    assert edit_distance("same", "same") == 0


def test_lines_land_on_the_truth_they_cover_left_to_right():
    truths = [{"x0": 0, "y0": 0, "x1": 100, "y1": 20}, {"x0": 0, "y0": 50, "x1": 100, "y1": 70}]
    right = SimpleNamespace(quad=[60, 2, 95, 2, 95, 18, 60, 18])
    left = SimpleNamespace(quad=[5, 2, 50, 2, 50, 18, 5, 18])
    stray = SimpleNamespace(quad=[300, 300, 320, 300, 320, 310, 300, 310])
    landed, false = match_lines(truths, [right, stray, left])
    assert landed == [[left, right], []] and false == 1


def test_eval_ocr_reads_the_corpus_texts_and_reports_every_figure(corpus):
    import math

    from jobs.common import storage
    from jobs.eval.ocr import run_eval_ocr

    uri, manifest = corpus
    splits = tuple(sorted(manifest.split.dropna().unique()))
    lines = []
    result = run_eval_ocr(storage.join(uri, "manifest.parquet"), splits, limit=8, progress=lines.append)
    assert result["images"] == 8 and lines[-1].startswith("[eval ocr] 8/8 images")
    assert result["splits"] == list(splits) and result["images_with_text"] <= 8
    for lang in ("en", "zh"):
        if result[f"texts_{lang}"]:
            assert 0 <= result[f"cer_{lang}"] <= 100 and 0 <= result[f"line_recall_{lang}"] <= 100
        else:
            assert math.isnan(result[f"cer_{lang}"])
    assert result["texts_en"] + result["texts_zh"] > 0  # the corpus renders text into its images
