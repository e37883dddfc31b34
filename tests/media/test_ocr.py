import numpy as np
import pytest
from PIL import Image, ImageDraw

from jobs.common.config import OcrConfig
from jobs.corpus import fonts
from jobs.media.ocr import OcrEngine, ctc_decode, english_words, restore_spaces


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
