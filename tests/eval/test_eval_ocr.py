"""The OCR evaluation's pieces: edit distance, matching recognized lines to the rendered truths, the hard cases."""

from types import SimpleNamespace

import numpy as np
import pytest

from jobs.common.config import OcrConfig
from jobs.corpus.ocr_cases import CATEGORIES, make_cases
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


def test_hard_cases_report_every_figure_against_the_baseline_engine():
    from jobs.eval.ocr import run_eval_ocr_cases

    result = run_eval_ocr_cases(OcrConfig(threads=1), per_category=1, seed=3, progress=lambda line: None)
    assert result["images"] == 8 and result["textfree_images"] == 1  # one per category and the real page
    assert set(result["cer_by_category"]) == {"rotated", "blurred", "jpeg", "gradient", "multiline", "page"}
    assert result["page_lines"] == sum(len(c.lines) for c in make_cases(1, 3) if c.category == "page")
    for figures in (result, result["baseline"]):
        assert 0 <= figures["cer_en"] <= 100 and figures["invented_lines"] >= 0
        assert figures["invented_lines_no_presence"] >= 0
    # the baseline scores DB boxes in their rectangle, which loses lines of the photographed page
    assert result["page_lines_missing"] < result["baseline"]["page_lines_missing"]
    assert result["real_page_cer"] <= 5.0
    if result["baseline"]["cer_en"]:
        assert result["ratio_cer_en"] == round(result["cer_en"] / result["baseline"]["cer_en"], 3)


def test_made_cases_are_reproducible_and_have_their_truth():
    a, b = make_cases(2, 5), make_cases(2, 5)
    assert [c.name for c in a] == [c.name for c in b]
    assert all(np.array_equal(x.image, y.image) and x.lines == y.lines for x, y in zip(a, b, strict=True))
    assert {c.category for c in a} == set(CATEGORIES)
    assert all(bool(c.lines) == (c.category != "textfree") for c in a)
    assert any(c.name == "skimage-page" for c in a)
    with pytest.raises(ValueError, match="unknown category"):
        make_cases(1, 0, ("sideways",))
