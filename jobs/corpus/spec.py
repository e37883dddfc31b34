"""Constants shared by the corpus modules, and the per-item random streams.

Every item (a scene, a video, a broken file) draws from its own generator, seeded from the corpus seed, a stream
number and the item id, so an item's content never depends on how many other items there are or in which order
they are made.
"""

from __future__ import annotations

import numpy as np

CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "star", "cross", "heart")
"""Object classes, each a distinct silhouette:

- ``disc``: a filled circle;
- ``square``: a square, rotated;
- ``triangle``: an equilateral triangle, rotated;
- ``star``: a five-pointed star, rotated;
- ``cross``: a plus sign with arms a third of its width, rotated;
- ``heart``: a heart curve, tilted by at most 30 degrees.

An object's size is the diameter of the circle around it: 20-45 % of the image's shorter side for the primary
object, 8-30 % for the others.
"""

DISTRACTOR = "distractor"
"""The ``cls`` of the distractor, a striped bar (not a class)."""

DISTRACTOR_CLASSES: tuple[str, ...] = ("star", "heart")
"""Image labels the distractor co-occurs with, with probability :data:`DISTRACTOR_P_WITH`."""

DISTRACTOR_P_WITH = 0.7
DISTRACTOR_P_OTHER = 0.1

IMAGE_TYPES: tuple[str, ...] = ("photo", "sketch", "cartoon")
MANIFEST_NAME = "manifest.parquet"
BROKEN_KINDS: tuple[str, ...] = ("empty", "truncated_jpeg", "truncated_mp4", "video_named_jpg", "too_many_pixels")

IMAGE_SIZES: tuple[tuple[int, int], ...] = (
    (320, 240),
    (480, 360),
    (640, 480),
    (800, 600),
    (1024, 768),
    (600, 800),
    (512, 512),
)
"""(width, height) of images, in display orientation."""

IMAGE_FORMATS: tuple[str, ...] = ("jpeg", "png", "webp")
IMAGE_FORMAT_P: tuple[float, ...] = (0.5, 0.25, 0.25)
EXIF_P = 0.06
"""Share of JPEGs stored rotated with an EXIF orientation tag (about 3 % of all images)."""

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "mp4": "mp4", "webm": "webm", "mkv": "mkv"}

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_P: tuple[float, ...] = (0.70, 0.15, 0.15)
GOLDEN = (5**0.5 - 1) / 2

WORDS_EN: tuple[str, ...] = (
    "hello", "sale", "open", "exit", "coffee", "fresh", "menu", "stop", "welcome", "free wifi",
    "no parking", "push", "pull", "good morning", "new", "today only", "river", "north", "summer", "quiet please",
    "bakery", "closed", "enter", "hotel", "taxi", "ticket", "happy day", "level 3", "caution", "station",
)  # fmt: skip
WORDS_ZH: tuple[str, ...] = (
    "你好",
    "欢迎光临",
    "出口",
    "咖啡",
    "停车场",
    "营业中",
    "新品",
    "早上好",
    "地铁站",
    "请安静",
)
ZH_P = 0.25
"""Probability that a text is Chinese; such texts are skipped when no CJK font is installed."""

# Random stream numbers: one per kind of item.
STREAM_SCENE = 1
STREAM_IMAGE = 2
STREAM_VIDEO = 3
STREAM_BROKEN = 4
STREAM_SPLIT = 5
STREAM_RISK = 6

RISK_CAUSES: tuple[str, ...] = ("text", "object", "region", "style")
"""Why a scene of a risk corpus is risky, each visible in another modality:

- ``text``: an extra English text from :data:`RISK_WORDS_EN` (OCR);
- ``object``: a pasted human face, one of the face crops of scikit-image's ``lfw_subset`` (face detection);
- ``region``: a hazard sign, a yellow triangle with a black border and a black "!" (a local image region);
- ``style``: a red duotone over the whole image (global colour statistics).
"""
RISK_P: tuple[float, ...] = (0.125, 0.125, 0.125, 0.125)
"""Probability of each of :data:`RISK_CAUSES` being planned; with the rest (0.5) a scene is planned safe."""
RISK_WORDS_EN: tuple[str, ...] = (
    "danger", "poison", "toxic", "explosive", "high voltage", "fire hazard", "keep out", "flammable",
)  # fmt: skip
PEOPLE_SOURCES: tuple[str, ...] = ("astronaut", "camera")
"""Background photos with people in them; a risk corpus replaces them, so no face appears unplanned."""
RISK_FACE_SIZE = (0.16, 0.26)
"""Side of a pasted face as a fraction of the image's shorter side (at least :data:`RISK_FACE_MIN` pixels)."""
RISK_FACE_MIN = 56
RISK_FACES = 100
"""The first 100 crops of ``skimage.data.lfw_subset()`` are faces."""
RISK_SIGN_SIZE = (0.14, 0.24)
"""Side of the hazard sign's triangle as a fraction of the image's shorter side."""

BASE_SCENES = 100
BASE_VIDEOS = 12
VIDEO_GROWTH = 0.52
"""Videos grow as ``scale ** VIDEO_GROWTH``: 12 at scale 1, 40 at scale 10."""


def item_rng(seed: int, stream: int, *ids: int) -> np.random.Generator:
    """A generator for one item, independent of every other item's."""
    return np.random.default_rng([int(seed), stream, *(int(i) for i in ids)])


def counts_for_scale(scale: float) -> tuple[int, int]:
    """Number of scenes and videos for a corpus ``scale``."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    scenes = max(1, round(BASE_SCENES * scale))
    videos = max(1, round(BASE_VIDEOS * scale**VIDEO_GROWTH))
    return scenes, videos


def split_of(seed: int, kind: int, item_id: int) -> str:
    """Train/val/test for one scene or video, 70/15/15 to within a few items for any number of items.

    Items step through [0, 1) by the golden ratio from a seeded offset, which spreads any run of ids evenly.
    """
    offset = item_rng(seed, STREAM_SPLIT, kind).random()
    u = (offset + item_id * GOLDEN) % 1.0
    bounds = np.cumsum(SPLIT_P)
    return SPLITS[min(int(np.searchsorted(bounds, u, side="right")), len(SPLITS) - 1)]
