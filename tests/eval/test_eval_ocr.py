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
