"""Finding fonts for the texts: a Latin TTF for English and, when one is installed, a CJK font for Chinese.

FreeType faces are not safe to share between threads, so every use of a font goes through :data:`FONT_LOCK`.
"""

from __future__ import annotations

import functools
import os
import subprocess
import threading

from PIL import ImageFont

LATIN_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
CJK_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
FONT_LOCK = threading.RLock()


def _fc_list(pattern: str) -> list[str]:
    """Font files ``fc-list`` reports for a pattern; empty when fontconfig is missing or fails."""
    try:
        out = subprocess.run(["fc-list", pattern, "file"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    files = (line.strip().rstrip(":").strip() for line in out.stdout.splitlines())
    return sorted(f for f in files if f.lower().endswith(FONT_SUFFIXES))


def _loads(path: str, probe: str) -> bool:
    try:
        font = ImageFont.truetype(path, 24)
        left, top, right, bottom = font.getbbox(probe)
    except OSError:
        return False
    return right > left and bottom > top


def _first_usable(candidates: list[str], probe: str) -> str | None:
    return next((p for p in candidates if os.path.isfile(p) and _loads(p, probe)), None)


@functools.cache
def latin_font_path() -> str | None:
    """A TTF font for English, or ``None`` to use PIL's built-in font."""
    preferred = [p for p in _fc_list(":lang=en") if "DejaVuSans.ttf" in p or "Regular" in p]
    return _first_usable([*LATIN_CANDIDATES, *preferred], "Ag")


def _packaged_cjk() -> list[str]:
    """Noto Sans CJK from the ``cvttf-notosanscjk-regular`` wheel (a project dependency), when installed."""
    try:
        import cvttf_NotoSansCJK_Regular as noto
    except ImportError:
        return []
    try:
        return [noto.get_TTF_path()]
    except FileNotFoundError:
        return []


@functools.cache
def cjk_font_path() -> str | None:
    """A font that can draw Chinese (the packaged Noto Sans CJK first, so every machine renders the same corpus),
    or ``None`` when none is installed."""
    return _first_usable([*_packaged_cjk(), *CJK_CANDIDATES, *_fc_list(":lang=zh")], "你好")


def cjk_available() -> bool:
    return cjk_font_path() is not None


@functools.cache
def font(lang: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The font for a language at a pixel size; raises ``LookupError`` for Chinese without a CJK font."""
    path = cjk_font_path() if lang == "zh" else latin_font_path()
    if path is None and lang == "zh":
        raise LookupError("no CJK font installed")
    with FONT_LOCK:
        return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def text_bbox(text: str, lang: str, size: int) -> tuple[int, int, int, int]:
    """Ink box (left, top, right, bottom; the last two exclusive) of ``text`` drawn at the origin, anchor ``la``."""
    f = font(lang, size)
    with FONT_LOCK:
        left, top, right, bottom = f.getbbox(text)
    return int(left), int(top), int(right), int(bottom)
