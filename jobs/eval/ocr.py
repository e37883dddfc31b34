"""``mediascore eval ocr``: character error rate and line recall on the corpus's rendered texts, English and
Chinese separately.

Ground truth is the manifest's ``texts`` of every decodable image of the chosen splits: the string, its language
and its ink box. Each recognized line goes to the ground-truth text whose box covers most of the line's box (at
least ``min_cover`` of it); the lines that land on one text are joined left to right (a detector may cut one
phrase in two). Then, per language:

* ``cer``: total edit distance between the joined prediction and the truth over the total number of true
  characters (a text nothing landed on counts all its characters as errors), in percent;
* ``line_recall``: the fraction of texts that some recognized line landed on, in percent; ``line_exact`` (extra):
  the fraction read exactly, spaces included.

``cer_en_raw`` is the English CER of the recognizer's raw text, before :func:`jobs.media.ocr.restore_spaces`, from the
same run; ``false_lines`` counts recognized lines that landed on no text; ``skipped_with_text`` counts images with
text that the presence check wrongly skipped.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
from rapidfuzz.distance import Levenshtein

from jobs.common import storage
from jobs.common.config import OcrConfig
from jobs.media.decode import decode_image

EVAL_KEYS = ("cer_en", "cer_zh", "line_recall_en", "line_recall_zh")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of one character each cost 1), by RapidFuzz."""
    return int(Levenshtein.distance(a, b))


def _quad_box(quad: list[int]) -> tuple[float, float, float, float]:
    xs, ys = quad[0::2], quad[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _cover(line: tuple[float, float, float, float], truth: tuple[float, float, float, float]) -> float:
    """Fraction of ``line``'s area inside ``truth``."""
    w = max(0.0, min(line[2], truth[2]) - max(line[0], truth[0]))
    h = max(0.0, min(line[3], truth[3]) - max(line[1], truth[1]))
    area = max(1e-6, (line[2] - line[0]) * (line[3] - line[1]))
    return w * h / area


def match_lines(truths: list[dict], lines: list, min_cover: float = 0.5, pad: float = 0.25) -> tuple[list, int]:
    """Per truth, the recognized lines that landed on it (left to right); and the number that landed nowhere.

    Truth boxes are the ink boxes of the rendered strings; detector boxes are wider by design (unclipped), so the
    truth box is padded by ``pad`` of its height on every side before measuring cover.
    """
    boxes = []
    for t in truths:
        p = pad * (t["y1"] - t["y0"])
        boxes.append((t["x0"] - p, t["y0"] - p, t["x1"] + p, t["y1"] + p))
    landed: list[list] = [[] for _ in truths]
    false = 0
    for line in lines:
        box = _quad_box(line.quad)
        covers = [_cover(box, b) for b in boxes]
        best = int(np.argmax(covers)) if covers else -1
        if best < 0 or covers[best] < min_cover:
            false += 1
        else:
            landed[best].append((box[0], line))
    return [[line for _, line in sorted(group, key=lambda item: item[0])] for group in landed], false


def _joined(lines: list, lang: str, raw: bool = False) -> str:
    parts = [line.raw if raw else line.text for line in lines]
    return ("" if lang == "zh" else " ").join(parts)


def _images(manifest_uri: str, splits: tuple[str, ...], limit: int | None):
    """The manifest's usable images of ``splits`` (at most ``limit``), with their number of texts."""
    from jobs.train.data.cam import read_manifest

    manifest = read_manifest(manifest_uri)
    images = manifest[(manifest.media_type == "image") & manifest.broken.isna() & manifest.split.isin(splits)]
    images = images.assign(n_texts=images.texts.map(lambda t: 0 if t is None else len(t)))
    if limit:
        images = images.head(limit)
    if images.empty:
        raise FileNotFoundError(f"no images in splits {list(splits)} of {manifest_uri}")
    return images


def _tally(counts: Counter, truths: list[dict], groups: list[list]) -> None:
    """Add each true text's figures (by language) to ``counts``: texts, characters, edits, found, exact."""
    for truth, lines in zip(truths, groups, strict=True):
        lang, text = truth["lang"], truth["text"]
        counts["total", lang] += 1
        counts["chars", lang] += len(text)
        counts["edits", lang] += edit_distance(_joined(lines, lang), text)
        counts["edits_raw", lang] += edit_distance(_joined(lines, lang, raw=True), text)
        counts["found", lang] += bool(lines)
        counts["exact", lang] += _joined(lines, lang) == text


def run_eval_ocr(manifest_uri: str, splits: tuple[str, ...] = ("test",), cfg: OcrConfig | None = None,
                 limit: int | None = None, progress=print) -> dict:  # fmt: skip
    """OCR every image with text (and as many without) of ``splits``; the figures described in the module."""
    from jobs.media.ocr import OcrEngine

    images = _images(manifest_uri, splits, limit)
    engine = OcrEngine(cfg or OcrConfig())
    counts: Counter = Counter()
    started = time.monotonic()
    for k, row in enumerate(images.itertuples(), start=1):
        pixels, _ = decode_image(storage.read_bytes(row.uri))
        result = engine([pixels])[0]
        truths = list(row.texts) if row.texts is not None else []
        counts["skipped"] += result.skipped
        counts["skipped_with_text"] += result.skipped and bool(truths)
        groups, false = match_lines(truths, result.lines)
        counts["false_lines"] += false
        _tally(counts, truths, groups)
        if k % 25 == 0 or k == len(images):
            progress(f"[eval ocr] {k}/{len(images)} images, {time.monotonic() - started:.0f} s")

    def pct(num: str, den: str, lang: str) -> float:
        return round(100.0 * counts[num, lang] / counts[den, lang], 2) if counts[den, lang] else float("nan")

    return {
        "cer_en": pct("edits", "chars", "en"),
        "cer_zh": pct("edits", "chars", "zh"),
        "line_recall_en": pct("found", "total", "en"),
        "line_recall_zh": pct("found", "total", "zh"),
        "line_exact_en": pct("exact", "total", "en"),
        "line_exact_zh": pct("exact", "total", "zh"),
        "cer_en_raw": pct("edits_raw", "chars", "en"),
        "texts_en": counts["total", "en"],
        "texts_zh": counts["total", "zh"],
        "images": len(images),
        "images_with_text": int((images.n_texts > 0).sum()),
        "skipped": int(counts["skipped"]),
        "skipped_with_text": int(counts["skipped_with_text"]),
        "false_lines": counts["false_lines"],
        "seconds": round(time.monotonic() - started, 1),
        "splits": list(splits),
    }


def _line_match(truth: list[str], predicted: list[str], max_distance: float = 0.34) -> list[int | None]:
    """Per true line, the index of the predicted line closest to it in normalized edit distance, when that is at
    most ``max_distance``; ``None`` when no predicted line is that close (the line is missing)."""
    out: list[int | None] = []
    for line in truth:
        scores = [Levenshtein.normalized_distance(line, p) for p in predicted]
        best = int(np.argmin(scores)) if scores else -1
        out.append(best if best >= 0 and scores[best] <= max_distance else None)
    return out


def _case_figures(case, lines: list[str]) -> dict:
    """One hard case's edits (the lines joined by newlines: a split or merged line costs one edit, a wrong order
    costs the moved text), true characters, and for pages the lines missing and whether the rest are in order."""
    truth = "\n".join(case.lines)
    figures = {"edits": edit_distance("\n".join(lines), truth), "chars": len(truth), "invented": 0}
    if not case.lines:
        figures["invented"] = len(lines)
    if case.category == "page":
        found = [i for i in _line_match(case.lines, lines) if i is not None]
        figures["missing"] = len(case.lines) - len(found)
        figures["out_of_order"] = int(found != sorted(found))
    return figures


# what this eval compares against in the same run: the engine without line grouping, with DB boxes scored in
# their rectangle (RapidOCR's default) and without the invented-text filter
BASELINE = {"det_score_mode": "fast", "group_lines": False, "invented_min_score": 0.0}


def _score_cases(engine, cases: list, progress, label: str) -> dict:
    """The figures of :func:`run_eval_ocr_cases` for one engine."""
    counts: Counter = Counter()
    started = time.monotonic()
    for k, case in enumerate(cases, start=1):
        f = _case_figures(case, [line.text for line in engine([case.image])[0].lines])
        for key in [(case.category, case.lang)] + ([("all", case.lang)] if case.category != "page" else []):
            counts["edits", *key] += f["edits"]
            counts["chars", *key] += f["chars"]
        counts["invented"] += f["invented"]
        counts["missing"] += f.get("missing", 0)
        counts["out_of_order"] += f.get("out_of_order", 0)
        counts["page_lines"] += len(case.lines) if case.category == "page" else 0
        if case.name == "skimage-page":
            counts["real_edits"], counts["real_chars"] = f["edits"], f["chars"]
        if k % 25 == 0 or k == len(cases):
            progress(f"[eval ocr] {label}: {k}/{len(cases)} cases, {time.monotonic() - started:.0f} s")

    def cer(*key: str) -> float:
        chars = counts["chars", *key]
        return round(100.0 * counts["edits", *key] / chars, 2) if chars else float("nan")

    by_category = {
        c: {lang: cer(c, lang) for lang in ("en", "zh") if counts["chars", c, lang]}
        for c in dict.fromkeys(case.category for case in cases if case.lines)
    }
    return {
        "cer_en": cer("all", "en"),
        "cer_zh": cer("all", "zh"),
        "cer_by_category": by_category,
        "page_cer": by_category.get("page", {}).get("en", float("nan")),
        "page_lines": counts["page_lines"],
        "page_lines_missing": counts["missing"],
        "page_out_of_order": counts["out_of_order"],
        "real_page_cer": round(100.0 * counts["real_edits"] / max(counts["real_chars"], 1), 2),
        "invented_lines": counts["invented"],
        "seconds": round(time.monotonic() - started, 1),
    }


def run_eval_ocr_cases(cfg: OcrConfig | None = None, per_category: int = 10, seed: int = 0, progress=print) -> dict:
    """OCR the harder cases of :mod:`jobs.corpus.ocr_cases` with ``cfg`` and with :data:`BASELINE` over it.

    Figures, per engine: CER by language over every text category but ``page`` (``cer_en``, ``cer_zh``), by
    category and language (``cer_by_category``), the pages' own (``page_cer``, ``page_lines_missing``,
    ``page_out_of_order``, ``real_page_cer`` for scikit-image's photographed page) and the lines read on the
    text-free images (``invented_lines`` of ``textfree_images``). The presence check skips most text-free images
    before anything is read, so ``invented_lines_no_presence`` counts them again with it off (as the demo runs).
    ``baseline`` holds the same figures for the baseline engine, ``ratio_cer_en`` ours over its."""
    from jobs.corpus.ocr_cases import make_cases
    from jobs.media.ocr import OcrEngine

    cfg = cfg or OcrConfig()
    cases = make_cases(per_category, seed)
    textfree = [case for case in cases if not case.lines]
    result, baseline = {}, {}
    for label, engine_cfg, out in (("ours", cfg, result), ("baseline", cfg.model_copy(update=BASELINE), baseline)):
        out.update(_score_cases(OcrEngine(engine_cfg), cases, progress, label))
        no_presence = OcrEngine(engine_cfg.model_copy(update={"presence_side": 0}))
        out["invented_lines_no_presence"] = _score_cases(no_presence, textfree, progress, label)["invented_lines"]
    return {
        "cases": "hard",
        **result,
        "baseline": baseline,
        "ratio_cer_en": round(result["cer_en"] / baseline["cer_en"], 3) if baseline["cer_en"] else None,
        "textfree_images": len(textfree),
        "images": len(cases),
        "per_category": per_category,
        "seed": seed,
    }


def summary_table(result: dict) -> str:
    rows = [("en", "English"), ("zh", "Chinese")]
    lines = [f"{'':<8} {'texts':>6} {'CER %':>7} {'recall %':>9} {'exact %':>8}"]
    for lang, name in rows:
        lines.append(
            f"{name:<8} {result[f'texts_{lang}']:>6} {result[f'cer_{lang}']:>7} {result[f'line_recall_{lang}']:>9} "
            f"{result[f'line_exact_{lang}']:>8}"
        )
    lines.append(f"English CER without putting spaces back: {result['cer_en_raw']} %")
    return "\n".join(lines)
