"""Harder OCR cases than the corpus's own renders, made here and reproducible by seed: ``mediascore eval ocr --cases
hard``.

Each case is an RGB image with its true lines in reading order. The categories:

* ``rotated``: a sign of one or two lines turned by 3 to 20 degrees either way;
* ``blurred``: Gaussian blur of sigma 0.8 to 1.8 pixels;
* ``jpeg``: JPEG at quality 12 to 35;
* ``gradient``: text and background both colour gradients, at moderate contrast;
* ``multiline``: a left-aligned block of 3 to 5 lines, or two columns of 2 to 3 lines each;
* ``page``: a printed paragraph of 5 to 7 lines photographed: perspective, uneven light, blur, noise and JPEG; plus
  the photographed book page that ships with scikit-image (``skimage.data.page``), transcribed here;
* ``textfree``: crops of scikit-image's photographs and textures, and synthetic patterns, with no text at all.

English texts are drawn from a vocabulary of sign and prose words in lower, Title and UPPER case with punctuation
and numbers; Chinese texts from common sign words. Fonts are the DejaVu faces when installed (sans, serif, bold,
condensed), else the corpus's Latin font; Chinese uses the corpus's CJK font and is skipped without one.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jobs.corpus import fonts

CATEGORIES = ("rotated", "blurred", "jpeg", "gradient", "multiline", "page", "textfree")

WORDS = (  # noqa: SIM905 (a paragraph reads better than 160 quoted words)
    "caution wet floor emergency exit only staff fire door keep closed no parking entry open daily from until "
    "please wait here push pull danger high voltage private property office hours welcome to the museum station "
    "platform north south east west street avenue road main library coffee fresh bread market closed for repairs "
    "today tomorrow sale price ticket gate level floor parking visitors reception customer service toilets lift "
    "stairs report any damage at once we are open monday friday weekend delivery entrance back soon sorry "
    "flammable liquid hazard warning slippery surface children crossing school zone speed limit bus stop taxi "
    "rank train arrivals departures check your baggage lost found information centre river park garden view "
    "the results of this study show that our method works well on several kinds of images and video frames "
    "while it runs faster than previous systems with lower cost a model learns features from data labels "
    "each region is scored before its neighbours are merged into larger segments"
).split()
ZH_WORDS = (  # noqa: SIM905
    "安全出口 禁止吸烟 小心地滑 欢迎光临 营业时间 请勿停车 注意安全 紧急出口 顾客止步 请排队 "
    "停车场 售票处 洗手间 电梯 楼梯 入口 出口 办公室 图书馆 火车站 公交车站 博物馆 超市 药店 "
    "今日特价 新鲜面包 请勿触摸 保持安静 当心触电 禁止通行 员工通道 服务中心 失物招领 候车室"
).split()

# The book page that ships with scikit-image, line by line as printed (the rule and the half-cut code line under
# them are left out by the crop in :func:`real_page`).
SKIMAGE_PAGE_LINES = (
    "Region-based segmentation",
    "Let us first determine markers of the coins and the",
    "background. These markers are pixels that we can label",
    "unambiguously as either object or background. Here,",
    "the markers are found at the two extreme parts of the",
    "histogram of grey values:",
)


# scikit-image photographs and textures with no legible text in them
TEXTFREE_PHOTOS = (
    "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "camera", "hubble_deep_field", "immunohistochemistry",
    "moon",
)  # fmt: skip


@dataclass
class OcrCase:
    """One image and its truth: ``lines`` in reading order; ``lang`` ``en`` or ``zh``; no lines when text-free."""

    name: str
    category: str
    image: np.ndarray
    lines: list[str] = field(default_factory=list)
    lang: str = "en"


@functools.cache
def _latin_faces() -> tuple[str, ...]:
    names = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansCondensed.ttf")
    found = [os.path.join(os.path.dirname(p), n) for p in fonts.LATIN_CANDIDATES[:1] for n in names]
    found = [p for p in found if os.path.isfile(p)]
    return tuple(found) or tuple(p for p in [fonts.latin_font_path()] if p)


def _font(rng: np.random.Generator, lang: str, size: int):
    if lang == "zh":
        return ImageFont.truetype(fonts.cjk_font_path(), size)
    faces = _latin_faces()
    return ImageFont.truetype(faces[rng.integers(len(faces))], size) if faces else ImageFont.load_default(size)


def _phrase(rng: np.random.Generator, lang: str, words: tuple[int, int]) -> str:
    n = int(rng.integers(words[0], words[1] + 1))
    if lang == "zh":
        return "".join(rng.choice(ZH_WORDS, size=min(n, 3), replace=False))
    picked = [str(w) for w in rng.choice(WORDS, size=n)]
    style = rng.choice(["lower", "title", "upper", "sentence"])
    if style == "upper":
        picked = [w.upper() for w in picked]
    elif style == "title":
        picked = [w.title() for w in picked]
    elif style == "sentence":
        picked[0] = picked[0].title()
    if n > 3 and rng.random() < 0.4:  # a second sentence or clause
        k = int(rng.integers(1, n - 1))
        picked[k - 1] += str(rng.choice([".", ",", ":", ";"]))
        if picked[k - 1].endswith(".") and style != "upper":
            picked[k] = picked[k].title()
    if rng.random() < 0.3:
        picked.insert(int(rng.integers(0, n)), str(rng.choice([rng.integers(2, 99), f"{rng.integers(1, 12)}pm"])))
    return " ".join(picked)


def _background(rng: np.random.Generator, width: int, height: int, kind: str) -> np.ndarray:
    if kind == "gradient":
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, width if rng.random() < 0.5 else height)
        ramp = (a[None] * (1 - t[:, None]) + b[None] * t[:, None]).astype(np.uint8)
        ramp = ramp[None] if len(t) == width else ramp[:, None]
        return np.ascontiguousarray(np.broadcast_to(ramp, (height, width, 3)))
    if kind == "photo":
        from jobs.media.images import photo

        src = photo(str(rng.choice(TEXTFREE_PHOTOS)))
        y, x = rng.integers(0, max(1, src.shape[0] - height // 2)), rng.integers(0, max(1, src.shape[1] - width // 2))
        crop = src[y : y + height, x : x + width]
        return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.full((height, width, 3), rng.integers(150, 256, 3), np.uint8)


def _draw_block(lines: list[str], font, spacing: float, colour) -> Image.Image:
    """The lines left-aligned on a transparent canvas just large enough (RGBA, ``colour`` ink)."""
    pitch = int(round(font.size * spacing))
    widths = [int(font.getlength(line)) for line in lines]
    canvas = Image.new("RGBA", (max(widths) + font.size, pitch * len(lines) + font.size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((font.size // 2, font.size // 2 + i * pitch), line, font=font, fill=(*colour, 255))
    return canvas


def _paste(background: np.ndarray, block: Image.Image, angle: float, rng: np.random.Generator) -> np.ndarray:
    """``block`` turned by ``angle`` degrees (counter-clockwise) and composited at a random place that fits."""
    turned = block.rotate(angle, resample=Image.BICUBIC, expand=True)
    h, w = background.shape[:2]
    if turned.width > w or turned.height > h:
        raise ValueError("block larger than its background")
    x, y = int(rng.integers(0, w - turned.width + 1)), int(rng.integers(0, h - turned.height + 1))
    out = Image.fromarray(background)
    out.alpha_composite(turned.convert("RGBA"), (x, y)) if out.mode == "RGBA" else out.paste(turned, (x, y), turned)
    return np.asarray(out.convert("RGB"))


def _ink(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """Dark ink on light backgrounds and light ink on dark ones, with some colour."""
    light = background.mean() > 110
    base = rng.integers(0, 70, 3) if light else rng.integers(200, 256, 3)
    return tuple(int(v) for v in base)


def _sign(rng: np.random.Generator, lang: str, kind: str, angle: float, n_lines: int = 1) -> tuple[np.ndarray, list]:
    """A sign: ``n_lines`` phrases on a ``kind`` background (``flat`` or ``gradient``), turned by ``angle``."""
    size = int(rng.integers(20, 44))
    font = _font(rng, lang, size)
    lines = [_phrase(rng, lang, (2, 4)) for _ in range(n_lines)]
    block = _draw_block(lines, font, 1.5, (0, 0, 0))
    side = int(np.hypot(block.width, block.height)) + 16
    width = max(side, int(rng.integers(320, 560)))
    height = max(int(side * 0.6) + block.height, int(rng.integers(160, 360)))
    background = _background(rng, width, height, kind)
    colour = _ink(rng, background)
    return _paste(background, _draw_block(lines, font, 1.5, colour), angle, rng), lines


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    _, buf = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def _gradient_text(rng: np.random.Generator, lang: str) -> tuple[np.ndarray, list]:
    """Text whose ink runs between two colours over a gradient background, at moderate contrast."""
    image, lines = _sign(rng, lang, "gradient", float(rng.uniform(-3, 3)))
    ramp = np.linspace(0.0, 1.0, image.shape[1])[None, :, None]
    tint = rng.integers(-60, 61, 3)[None, None, :] * ramp
    return np.clip(image.astype(np.float32) + tint, 0, 255).astype(np.uint8), lines


def _multiline(rng: np.random.Generator, lang: str) -> tuple[np.ndarray, list]:
    """A block of 3 to 5 lines, or two columns of 2 to 3 lines side by side (the left column is read first)."""
    size = int(rng.integers(18, 30))
    font = _font(rng, lang, size)
    if rng.random() < 0.5:
        lines = [_phrase(rng, lang, (3, 6)) for _ in range(int(rng.integers(3, 6)))]
        block = _draw_block(lines, font, 1.6, (0, 0, 0))
        background = _background(rng, block.width + 40, block.height + 40, "flat")
        return _paste(background, _draw_block(lines, font, 1.6, _ink(rng, background)), 0.0, rng), lines
    n = int(rng.integers(2, 4))
    left = [_phrase(rng, lang, (2, 3)) for _ in range(n)]
    right = [_phrase(rng, lang, (2, 3)) for _ in range(n)]
    colour = tuple(int(v) for v in rng.integers(0, 60, 3))
    a, b = _draw_block(left, font, 1.6, colour), _draw_block(right, font, 1.6, colour)
    gutter = 3 * size
    background = _background(rng, a.width + gutter + b.width + 20, max(a.height, b.height) + 20, "flat")
    out = Image.fromarray(background)
    out.paste(a, (10, 10), a)
    out.paste(b, (10 + a.width + gutter, 10), b)
    return np.asarray(out), left + right


def _photographed_page(rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """A printed paragraph photographed: paper, a perspective of up to 6 % per corner, a light falloff across the
    sheet, slight blur, sensor noise and JPEG."""
    size = int(rng.integers(16, 24))
    font = _font(rng, "en", size)
    width = int(rng.integers(26, 34) * size * 0.55)
    lines, words, target = [], [_phrase(rng, "en", (12, 16)) for _ in range(4)], int(rng.integers(5, 8))
    text = " ".join(words).split()
    current = ""
    for word in text:  # greedy line filling to the column width
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
        if len(lines) == target:
            break
    lines = lines or [current]
    paper = tuple(int(v) for v in rng.integers(200, 245, 3))
    block = _draw_block(lines, font, 1.45, tuple(int(v) for v in rng.integers(10, 50, 3)))
    sheet = Image.new("RGB", (block.width + 2 * size, block.height + 2 * size), paper)
    sheet.paste(block, (size, size), block)
    image = np.asarray(sheet).astype(np.float32)
    h, w = image.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    moved = corners + rng.uniform(-0.06, 0.06, (4, 2)).astype(np.float32) * [w, h]
    moved = (moved - moved.min(axis=0)).astype(np.float32)
    size_out = (int(moved[:, 0].max()) + 1, int(moved[:, 1].max()) + 1)
    warp = cv2.getPerspectiveTransform(corners, moved)
    image = cv2.warpPerspective(image, warp, size_out, borderValue=tuple(float(v) * 0.6 for v in paper))
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    cx, cy = rng.uniform(0, image.shape[1]), rng.uniform(0, image.shape[0])
    falloff = 1.0 - rng.uniform(0.2, 0.45) * np.hypot(xx - cx, yy - cy) / np.hypot(*image.shape[:2])
    image = cv2.GaussianBlur(image * falloff[..., None], (0, 0), float(rng.uniform(0.4, 0.9)))
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    return _jpeg(image, int(rng.integers(45, 80))), lines


def real_page() -> OcrCase:
    """scikit-image's photographed book page (grey, curved, uneven light), cropped above the rule at its foot."""
    from skimage import data

    page = data.page()[:146]
    return OcrCase("skimage-page", "page", np.repeat(page[:, :, None], 3, axis=2), list(SKIMAGE_PAGE_LINES), "en")


def _textfree(rng: np.random.Generator) -> np.ndarray:
    """A crop of a scikit-image photograph or texture, or a synthetic pattern (stripes, noise, checks)."""
    width, height = int(rng.integers(256, 512)), int(rng.integers(192, 400))
    kind = rng.choice(["photo", "photo", "photo", "stripes", "noise", "checks"])
    if kind == "photo":
        return _background(rng, width, height, "photo")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "stripes":
        period, theta = rng.uniform(6, 30), rng.uniform(0, np.pi)
        grey = 127 + 100 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == "checks":
        cell = int(rng.integers(8, 40))
        grey = 60.0 + 140.0 * (((xx // cell) + (yy // cell)) % 2)
    else:
        grey = cv2.GaussianBlur(rng.normal(128, 60, (height, width)).astype(np.float32), (0, 0), rng.uniform(1, 4))
    tint = rng.uniform(0.6, 1.0, 3)
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)


def _case(rng: np.random.Generator, category: str, index: int) -> OcrCase:
    """Case ``index`` of ``category``: every third text case is Chinese when a CJK font is installed."""
    lang = "zh" if index % 3 == 2 and category not in ("page", "textfree") and fonts.cjk_available() else "en"
    name = f"{category}-{index:03d}"
    if category == "rotated":
        angle = float(rng.uniform(3, 20) * rng.choice([-1, 1]))
        image, lines = _sign(rng, lang, str(rng.choice(["flat", "gradient"])), angle, int(rng.integers(1, 3)))
    elif category == "blurred":
        image, lines = _sign(rng, lang, "flat", float(rng.uniform(-2, 2)))
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.8, 1.8)))
    elif category == "jpeg":
        image, lines = _sign(rng, lang, str(rng.choice(["flat", "gradient"])), float(rng.uniform(-2, 2)))
        image = _jpeg(image, int(rng.integers(12, 36)))
    elif category == "gradient":
        image, lines = _gradient_text(rng, lang)
    elif category == "multiline":
        image, lines = _multiline(rng, lang)
    elif category == "page":
        image, lines = _photographed_page(rng)
    elif category == "textfree":
        image, lines = _textfree(rng), []
    else:
        raise ValueError(f"unknown category {category!r}; choose from {CATEGORIES}")
    return OcrCase(name, category, np.ascontiguousarray(image), lines, lang)


def make_cases(per_category: int = 10, seed: int = 0, categories: tuple[str, ...] = CATEGORIES) -> list[OcrCase]:
    """``per_category`` cases of each category (the real page comes on top of the ``page`` ones), by ``seed``."""
    cases = []
    for c, category in enumerate(categories):
        rng = np.random.default_rng([seed, c])
        cases += [_case(rng, category, i) for i in range(per_category)]
        if category == "page":
            cases.append(real_page())
    return cases
