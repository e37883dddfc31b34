import numpy as np
import pytest
from PIL import Image, ImageDraw

from jobs.common.config import OcrConfig
from jobs.corpus import fonts
from jobs.corpus.ocr_cases import SKIMAGE_PAGE_LINES, make_cases, real_page
from jobs.eval.ocr import edit_distance
from jobs.media.ocr import OcrEngine, ctc_decode, english_words, latin_punctuation, looks_invented, restore_spaces


def render(lines: list[tuple[str, str]], size: int, width: int = 640) -> np.ndarray:
    """RGB image with one (text, lang) per row, dark on light."""
    image = Image.new("RGB", (width, 30 + 2 * size * len(lines)), (238, 232, 220))
    draw = ImageDraw.Draw(image)
    for i, (text, lang) in enumerate(lines):
        draw.text((20, 15 + 2 * size * i), text, font=fonts.font(lang, size), fill=(25, 25, 25))
    return np.asarray(image)


@pytest.fixture(scope="module")
def engine():
    return OcrEngine(OcrConfig(threads=1))


def test_ctc_decode_collapses_repeats_and_blanks_and_keeps_positions():
    alphabet = ["blank", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 0, 0]  # a a _ a b b _ _  ->  "aab"
    probs = np.full((len(steps), 4), 0.01)
    probs[np.arange(len(steps)), steps] = 0.97
    chars, centers, score = ctc_decode(probs, alphabet)
    assert chars == ["a", "a", "b"] and centers == [0.5, 3.0, 4.5]
    assert score == pytest.approx(0.97)
    assert ctc_decode(np.eye(4)[[0, 0]], alphabet) == ([], [], 0.0)


def test_restore_spaces_splits_only_unknown_runs_at_wide_gaps():
    words = english_words()
    assert {"parking", "today", "only", "station"} <= words
    # "noparking": evenly spaced except a wide gap after "no"
    chars = list("noparking")
    centers = [0, 1, 2.8, 3.8, 4.8, 5.6, 6.2, 6.8, 7.8]
    assert restore_spaces(chars, centers, words) == "no parking"
    # a known word is never split, however uneven
    assert restore_spaces(list("parking"), [0, 1, 3, 4, 5, 6, 7], words) == "parking"
    # an unknown run without a wide gap is left alone ("wifi" must not become "wi fi")
    assert restore_spaces(list("wifi"), [0, 0.6, 1.1, 1.6], words) == "wifi"
    # emitted spaces stay; a digit at a wide gap from a letter gets one
    level = [0, 1, 2, 3, 3.6]
    welcome = [7.2, 8.2, 9.0, 9.6, 10.6, 11.6, 12.6]
    assert restore_spaces(list("level3welcome"), [*level, 5.4, *welcome], words) == "level 3 welcome"
    assert restore_spaces(list("level3welcome"), [*level, 5.4, *(c - 0.8 for c in welcome)], words) == "level 3welcome"
    assert restore_spaces(list("你好"), [0, 1], words) == "你好"
    with pytest.raises(ValueError, match="centers"):
        restore_spaces(["a"], [], words)


def test_spaces_after_punctuation_units_and_words_the_lexicon_lacks():
    words = english_words()

    def even(text: str) -> str:  # evenly spaced characters: only the rules speak, no gap says anything
        chars = latin_punctuation(list(text))
        return restore_spaces(chars, [float(k) for k in range(len(chars))], words)

    assert even("background.These") == "background. These"
    assert even("YOUR.TRAIN") == "YOUR. TRAIN"
    assert even("merged,95") == "merged, 95" and even("labels:scored") == "labels: scored"
    for kept in ("np.zeros_like", "e.g.", "U.S.A", "3.5", "1,000", "a.m."):
        assert even(kept) == kept
    assert even("Here，") == "Here," and even("你好，世界") == "你好，世界"  # Chinese keeps full-width marks
    # "1pm" is a time, not a number before a word, however wide the gap
    assert restore_spaces(list("1pm"), [0, 1.6, 2.6], words) == "1pm"
    assert restore_spaces(list("1pmcoffee"), [0, 1.6, 2.6, 4.6, 5.6, 6.6, 7.6, 8.6, 9.6], words) == "1pm coffee"
    # an unknown word at the start of a run is cut off at a wide gap when the rest are words
    centers = [*range(9), *(k + 0.8 for k in range(9, 16))]
    assert "flammable" not in words
    assert restore_spaces(list("flammablestation"), centers, words) == "flammable station"
    assert restore_spaces(list("pmcoffee"), [0, 1, 2, 3, 4, 5.8, 6.8, 7.8], words) == "pmcoffee"  # "pmcof fee": no


def test_short_low_confidence_symbols_count_as_invented():
    assert looks_invented("00", 0.7, 0.9) and looks_invented("O O O", 0.8, 0.9) and looks_invented("~.", 0.6, 0.9)
    assert not looks_invented("00", 0.95, 0.9)  # confident
    for text in ("EXIT", "24", "No", "OK"):
        assert not looks_invented(text, 0.6, 0.9)
    assert not looks_invented("000", 0.7, 0.0)  # the filter off


def test_a_photographed_page_keeps_every_line_in_order(engine):
    """scikit-image's book page: curved, unevenly lit lines. Scoring DB boxes in their rectangle lost three of its
    six lines; in their contour, every line is read, in order."""
    (result,) = engine([real_page().image])
    lines = [line.text for line in result.lines]
    assert len(lines) == len(SKIMAGE_PAGE_LINES)
    truth = "\n".join(SKIMAGE_PAGE_LINES)
    assert edit_distance("\n".join(lines), truth) <= 0.05 * len(truth)
    baseline = OcrEngine(OcrConfig(threads=1, det_score_mode="fast"))
    assert len(baseline([real_page().image])[0].lines) < len(SKIMAGE_PAGE_LINES)  # the regression this guards


def test_rotated_signs_and_two_columns_come_back_as_whole_lines_in_order(engine):
    cases = [c for c in make_cases(per_category=3, seed=11, categories=("rotated", "multiline")) if c.lang == "en"]
    edits = chars = 0
    for case in cases:
        (result,) = engine([case.image])
        lines = [line.text for line in result.lines]
        assert len(lines) == len(case.lines), (case.name, lines, case.lines)
        edits += edit_distance("\n".join(lines), "\n".join(case.lines))
        chars += len("\n".join(case.lines))
    assert edits <= 0.05 * chars


def test_english_lines_with_spaces_put_back(engine):
    texts = ["no parking today only", "quiet please", "good morning"]
    image = render([(t, "en") for t in texts], size=16)
    (result,) = engine([image])
    assert not result.skipped
    assert [line.text for line in result.lines] == texts
    # the raw recognizer output lost spaces that the engine put back
    assert any(" " not in line.raw for line in result.lines)
    for line in result.lines:
        xs, ys = line.quad[0::2], line.quad[1::2]
        assert 0 <= min(xs) < max(xs) <= image.shape[1] and 0 <= min(ys) < max(ys) <= image.shape[0]
        assert 0.5 <= line.score <= 1


def test_chinese_line(engine):
    # the font ships in a declared dependency: without it the install is broken, so this fails instead of skipping
    assert fonts.cjk_available(), "no CJK font: the cvttf-notosanscjk-regular dependency is missing"
    (result,) = engine([render([("欢迎光临", "zh"), ("请安静", "zh")], size=28)])
    assert [line.text for line in result.lines] == ["欢迎光临", "请安静"]


def test_images_without_text_say_so(engine):
    flat = np.full((240, 320, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    tiny = np.zeros((1, 1, 3), np.uint8)
    results = engine([flat, noise, tiny])
    assert results[0].skipped and results[0].lines == [] and results[0].text == ""
    assert all(r.text == "" or isinstance(r.text, str) for r in results)
    unchecked = OcrEngine(OcrConfig(presence_side=0, threads=1))([flat])[0]
    assert not unchecked.skipped and unchecked.lines == []


def test_recognition_is_pooled_across_images(engine):
    images = [render([("sale", "en")], 24), render([("hotel", "en"), ("taxi", "en")], 24)]
    calls = []
    session = engine.engine.text_rec.session
    original = type(session).__call__

    def counting(self, x):
        if x.shape[2] == 48:  # the recognizer's input height (the detector's session is the same class)
            calls.append(len(x))
        return original(self, x)

    type(session).__call__ = counting
    try:
        results = engine(images)
    finally:
        type(session).__call__ = original
    assert [[line.text for line in r.lines] for r in results] == [["sale"], ["hotel", "taxi"]]
    assert calls == [3]  # one recognizer call for the three lines of the two images


def test_thread_setting_reaches_every_onnx_session(engine):
    sessions = [engine.engine.text_det.infer.session, engine.engine.text_rec.session.session]
    assert [s.get_session_options().intra_op_num_threads for s in sessions] == [1, 1]
