"""Scenes: what an image shows, sampled as plain data before anything is drawn.

How labels are made: a scene holds one to three class objects and sometimes a distractor, each placed at a known
centre, radius and angle. The first object is the primary one: its silhouette area is at least 1/0.6 times that of
any other object's, it is drawn on top of the other class objects, and its class is the image label. Labels cycle
through :data:`CLASSES` with the scene id (offset by the seed), so every class has an equal share. The boxes
are the tight boxes of the drawn polygons, and the instance mask is those same polygons filled in drawing order, so
mask pixels of instance k always lie inside box k. The distractor (a striped bar) overlaps no other object; it
comes with :data:`DISTRACTOR_CLASSES` labels with probability 0.7 and with any other label with probability 0.1.
Texts are placed where they touch no object box. Every draw comes from the scene's own random stream; Chinese
texts are drawn from that stream whether or not they can be rendered, then dropped when no CJK font exists, so the
rest of the scene is the same on every machine.

How risk labels are made (only in a risk corpus, ``make_corpus(..., risk=True)``): after every draw above, a
separate stream (:data:`~jobs.corpus.spec.STREAM_RISK`) first replaces a background photo of people (astronaut,
camera) by another photo, so no face appears unplanned, then plans a cause: none with probability 0.5, else
``text``, ``object``, ``region`` or ``style`` with probability 0.125 each. ``text`` adds one English text from
:data:`~jobs.corpus.spec.RISK_WORDS_EN` (danger, poison, ...), sized and placed like the other texts and appended
to them; ``object`` pastes one of the 100 LFW face crops, 16-26 % of the shorter side (at least 56 px);
``region`` draws a hazard sign (a yellow triangle with a black border and a black "!"), 14-24 % of the shorter
side. Text, face and sign touch no object or text box, and their box is the risk box. ``style`` turns the whole
image into a red duotone of its luminance and has no box. When the planned text, face or sign finds no place,
the scene has no cause: the risk label is 1 exactly when a cause was drawn. Faces and signs are not class objects
and stay out of the instance mask.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace

import numpy as np

from jobs.corpus import fonts, shapes
from jobs.corpus.spec import (
    CLASSES,
    DISTRACTOR,
    DISTRACTOR_CLASSES,
    DISTRACTOR_P_OTHER,
    DISTRACTOR_P_WITH,
    IMAGE_SIZES,
    PEOPLE_SOURCES,
    RISK_CAUSES,
    RISK_FACE_MIN,
    RISK_FACE_SIZE,
    RISK_FACES,
    RISK_P,
    RISK_SIGN_SIZE,
    RISK_WORDS_EN,
    STREAM_RISK,
    STREAM_SCENE,
    WORDS_EN,
    WORDS_ZH,
    ZH_P,
    item_rng,
)

RGB = tuple[int, int, int]
PHOTO_SOURCES: tuple[str, ...] = (
    "astronaut", "chelsea", "cat", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "stereo_motorcycle", "colorwheel", "camera", "coins", "moon", "grass", "gravel", "brick", "page", "clock", "horse",
)  # fmt: skip
PAPER: tuple[RGB, ...] = ((250, 248, 240), (245, 238, 220), (236, 236, 232), (232, 240, 246), (248, 244, 228))
INK: tuple[RGB, ...] = ((20, 20, 20), (60, 60, 64), (24, 40, 110), (90, 50, 20), (20, 80, 40))
SECONDARY_AREA = 0.6
MAX_OVERLAP = 0.25
PLACE_TRIES = 40


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: a class instance or the distractor."""

    cls: str
    cx: float
    cy: float
    radius: float
    angle: float
    colour: RGB
    colour2: RGB
    texture_seed: int
    distractor: bool = False

    def polygon(self) -> np.ndarray:
        return shapes.polygon(self.cls, self.cx, self.cy, self.radius, self.angle)

    def box(self) -> shapes.Box:
        return shapes.box_of(self.polygon())


@dataclass(frozen=True)
class SceneText:
    """One text: drawn with anchor ``la`` at (x, y); ``box`` is its ink box."""

    text: str
    lang: str
    x: int
    y: int
    size: int
    box: shapes.Box


@dataclass(frozen=True)
class Background:
    """Background choices for the three image types."""

    source: str
    crop: tuple[float, float, float]  # (scale, fx, fy): crop size and position as fractions
    flip: bool
    paper: RGB
    flat: tuple[RGB, RGB, float]  # cartoon: top colour, bottom colour, horizon as a fraction of the height


@dataclass(frozen=True)
class Risk:
    """The risk label of a scene in a risk corpus: the cause drawn (``None``: none, not risky), the box of the text,
    face or sign it drew (``None`` for ``style`` and when not risky) and, for ``object``, the LFW face index."""

    cause: str | None
    box: shapes.Box | None = None
    face: int = -1

    @property
    def label(self) -> int:
        return int(self.cause is not None)


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw one scene in any image type."""

    scene_id: int
    width: int
    height: int
    background: Background
    objects: tuple[SceneObject, ...]
    texts: tuple[SceneText, ...]
    ink: RGB
    noise_sigma: float
    risk: Risk | None = None  # None: not a risk corpus

    @property
    def label(self) -> str:
        return self.objects[0].cls

    def draw_order(self) -> list[int]:
        """Object indices back to front: other class objects, then the primary, then distractors."""
        others = [i for i, o in enumerate(self.objects) if i > 0 and not o.distractor]
        return [*others, 0, *(i for i, o in enumerate(self.objects) if o.distractor)]


def random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.55, 1.0)) -> RGB:
    """A saturated colour."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(0.45, 0.95))
    return int(r * 255), int(g * 255), int(b * 255)


def pastel(rng: np.random.Generator) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.35), rng.uniform(0.8, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def shape_area(cls: str, radius: float) -> float:
    """Area of a shape's silhouette in square pixels."""
    x, y = shapes.unit_polygon(cls).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) * radius**2


def _overlap(a: shapes.Box, b: shapes.Box) -> float:
    """Intersection of two boxes over the smaller one's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1)


def place(
    rng: np.random.Generator, radius: float, region: shapes.Box, taken: list[shapes.Box], max_overlap: float
) -> tuple[float, float] | None:
    """A centre for a shape of ``radius`` inside ``region`` that overlaps ``taken`` boxes at most ``max_overlap``."""
    x0, y0, x1, y1 = region
    lo = np.array([x0 + radius + 1, y0 + radius + 1])
    hi = np.array([x1 - radius - 2, y1 - radius - 2])
    candidates = rng.uniform(size=(PLACE_TRIES, 2))  # a fixed number of draws, whatever is accepted
    if np.any(hi < lo):
        return None
    for fx, fy in candidates:
        cx, cy = lo + (hi - lo) * np.array([fx, fy])
        r = int(np.ceil(radius)) + 1
        box = (int(cx) - r, int(cy) - r, int(cx) + r, int(cy) + r)
        if all(_overlap(box, t) <= max_overlap for t in taken):
            return float(cx), float(cy)
    return None


def _angle(rng: np.random.Generator, cls: str) -> float:
    draw = rng.uniform(-np.pi, np.pi)
    return draw / 6 if cls == "heart" else draw


def make_object(rng: np.random.Generator, cls: str, radius: float, centre: tuple[float, float]) -> SceneObject:
    """An object with its colours, angle and texture drawn from ``rng``."""
    angle = _angle(rng, cls)
    colour = random_colour(rng)
    colour2 = (20, 20, 20) if rng.random() < 0.5 else (235, 205, 30)
    seed = int(rng.integers(2**31))
    return SceneObject(cls, *centre, radius, angle, colour, colour2, seed, distractor=cls == DISTRACTOR)


def sample_objects(rng: np.random.Generator, label: str, region: shapes.Box, short: int) -> list[SceneObject]:
    """The primary object of class ``label`` and up to two smaller ones inside ``region``; then maybe a distractor."""
    n = int(rng.integers(1, 4))
    classes = [label, *(CLASSES[int(i)] for i in rng.integers(len(CLASSES), size=n - 1))]
    radius = rng.uniform(0.2, 0.45) * short / 2
    primary_area = shape_area(classes[0], radius)
    radii = [radius]
    for cls in classes[1:]:
        biggest = np.sqrt(SECONDARY_AREA * primary_area / shape_area(cls, 1.0))
        radii.append(min(biggest, rng.uniform(0.08, 0.3) * short / 2))
    objects: list[SceneObject] = []
    for cls, r in zip(classes, radii, strict=True):
        centre = place(rng, r, region, [o.box() for o in objects], MAX_OVERLAP)
        obj = make_object(rng, cls, r, centre or (0.0, 0.0))
        if centre is not None:
            objects.append(obj)
    p = DISTRACTOR_P_WITH if classes[0] in DISTRACTOR_CLASSES else DISTRACTOR_P_OTHER
    wants_distractor = rng.random() < p
    r = rng.uniform(0.25, 0.45) * short / 2
    centre = place(rng, r, region, [o.box() for o in objects], 0.0)
    bar = make_object(rng, DISTRACTOR, r, centre or (0.0, 0.0))
    if wants_distractor and centre is not None:
        objects.append(bar)
    return objects


def _fits(box: shapes.Box, w: int, h: int, taken: list[shapes.Box]) -> bool:
    margin = 2
    inside = box[0] >= margin and box[1] >= margin and box[2] <= w - margin and box[3] <= h - margin
    grown = [(t[0] - margin, t[1] - margin, t[2] + margin, t[3] + margin) for t in taken]
    return inside and all(_overlap(box, t) == 0 for t in grown)


def sample_texts(
    rng: np.random.Generator, size: tuple[int, int], taken: list[shapes.Box], cjk: bool
) -> list[SceneText]:
    """Zero to two texts that touch no ``taken`` box; Chinese ones only when ``cjk``."""
    texts: list[SceneText] = []
    for _ in range(int(rng.integers(0, 3))):
        zh = rng.random() < ZH_P
        words = (WORDS_EN[int(rng.integers(len(WORDS_EN)))], WORDS_ZH[int(rng.integers(len(WORDS_ZH)))])
        px = _text_px(rng, size)
        candidates = rng.uniform(size=(PLACE_TRIES, 2))
        if zh and not cjk:
            continue
        text, lang = (words[1], "zh") if zh else (words[0], "en")
        placed = _place_text(text, lang, px, candidates, size, taken + [t.box for t in texts])
        if placed is not None:
            texts.append(placed)
    return texts


def _text_px(rng: np.random.Generator, size: tuple[int, int]) -> int:
    short = min(size)
    return int(rng.integers(max(12, round(0.05 * short)), round(0.1 * short) + 13))


def _place_text(
    text: str, lang: str, px: int, candidates: np.ndarray, size: tuple[int, int], taken: list[shapes.Box]
) -> SceneText | None:
    """The first of ``candidates`` (fractions of the free range) where the text touches no ``taken`` box."""
    w, h = size
    left, top, right, bottom = fonts.text_bbox(text, lang, px)
    for fx, fy in candidates:
        x, y = int(fx * (w - right)), int(fy * (h - bottom))
        box = (x + left, y + top, x + right, y + bottom)
        if _fits(box, w, h, taken):
            return SceneText(text, lang, x, y, px, box)
    return None


def _place_rect(
    candidates: np.ndarray, rect: tuple[int, int], size: tuple[int, int], taken: list[shapes.Box]
) -> shapes.Box | None:
    """The box of the first of ``candidates`` where a ``rect`` (width, height) touches no ``taken`` box."""
    (w, h), (rw, rh) = size, rect
    for fx, fy in candidates:
        x, y = int(fx * (w - rw)), int(fy * (h - rh))
        box = (x, y, x + rw, y + rh)
        if _fits(box, w, h, taken):
            return box
    return None


def sample_background(rng: np.random.Generator) -> Background:
    source = PHOTO_SOURCES[int(rng.integers(len(PHOTO_SOURCES)))]
    crop = (float(rng.uniform(0.45, 1.0)), float(rng.uniform()), float(rng.uniform()))
    flip = bool(rng.random() < 0.5)
    paper = PAPER[int(rng.integers(len(PAPER)))]
    top, bottom = pastel(rng), pastel(rng)
    horizon = float(rng.uniform(0.4, 0.75)) if rng.random() < 0.5 else 1.0
    return Background(source, crop, flip, paper, (top, bottom, horizon))


def _plan_risk(
    rng: np.random.Generator, cause: str | None, size: tuple[int, int], taken: list[shapes.Box]
) -> tuple[Risk, SceneText | None]:
    """Draw and place the planned cause's element; no place for it gives no cause."""
    short = min(size)
    if cause == "text":
        word, px = RISK_WORDS_EN[int(rng.integers(len(RISK_WORDS_EN)))], _text_px(rng, size)
        text = _place_text(word, "en", px, rng.uniform(size=(PLACE_TRIES, 2)), size, taken)
        return (Risk(cause, text.box), text) if text else (Risk(None), None)
    if cause == "object":
        face = int(rng.integers(RISK_FACES))
        side = max(RISK_FACE_MIN, round(rng.uniform(*RISK_FACE_SIZE) * short))
        box = _place_rect(rng.uniform(size=(PLACE_TRIES, 2)), (side, side), size, taken)
        return (Risk(cause, box, face) if box else Risk(None)), None
    if cause == "region":
        side = round(rng.uniform(*RISK_SIGN_SIZE) * short)
        box = _place_rect(rng.uniform(size=(PLACE_TRIES, 2)), (side, round(side * 3**0.5 / 2)), size, taken)
        return (Risk(cause, box) if box else Risk(None)), None
    return Risk(cause), None


def add_risk(scene: Scene, seed: int) -> Scene:
    """``scene`` with its risk label drawn from its own stream (see the module docstring)."""
    rng = item_rng(seed, STREAM_RISK, scene.scene_id)
    safe = [source for source in PHOTO_SOURCES if source not in PEOPLE_SOURCES]
    other = safe[int(rng.integers(len(safe)))]  # drawn always, so the cause's draws never depend on the source
    background = scene.background
    if background.source in PEOPLE_SOURCES:
        background = replace(background, source=other)
    pick = int(rng.choice(len(RISK_CAUSES) + 1, p=(1.0 - sum(RISK_P), *RISK_P)))
    cause = RISK_CAUSES[pick - 1] if pick else None
    taken = [o.box() for o in scene.objects] + [t.box for t in scene.texts]
    risk, text = _plan_risk(rng, cause, (scene.width, scene.height), taken)
    texts = (*scene.texts, text) if text else scene.texts
    return replace(scene, background=background, texts=texts, risk=risk)


def sample_scene(seed: int, scene_id: int, cjk: bool | None = None, risk: bool = False) -> Scene:
    """Sample scene ``scene_id`` of the corpus with ``seed``; ``cjk`` defaults to whether a CJK font is installed;
    ``risk`` adds a risk label (and what makes it risky), leaving every other draw as it is."""
    cjk = fonts.cjk_available() if cjk is None else cjk
    rng = item_rng(seed, STREAM_SCENE, scene_id)
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    background = sample_background(rng)
    label = CLASSES[(scene_id + seed) % len(CLASSES)]  # labels cycle, so every class has its share
    objects = sample_objects(rng, label, (0, 0, w, h), min(w, h))
    texts = sample_texts(rng, (w, h), [o.box() for o in objects], cjk)
    ink = INK[int(rng.integers(len(INK)))]
    noise = float(rng.uniform(2.0, 6.0))
    sample = Scene(scene_id, w, h, background, tuple(objects), tuple(texts), ink, noise)
    return add_risk(sample, seed) if risk else sample
