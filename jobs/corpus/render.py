"""Drawing scenes in the three image types, and the instance mask that goes with them.

- ``photo``: a crop of a real photo; objects shaded with a light gradient and a smooth texture, a soft drop shadow,
  soft inner edges, and Gaussian noise over the whole image.
- ``sketch``: paper of one colour; objects and texts as lines of one ink colour, without anti-aliasing.
- ``cartoon``: a flat or two-tone background; objects in flat colours with a dark outline.

Every visible object pixel lies inside the object's polygon (outlines are drawn inside it), so boxes are tight.

In a risk corpus the pasted face or hazard sign goes on top of the scene, before the photo noise, and the ``style``
grade (a red duotone) over the whole image comes last, in every image type.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

from jobs.corpus import backgrounds, fonts, shapes
from jobs.corpus.scene import RGB, Risk, Scene, SceneObject, SceneText
from jobs.corpus.spec import RISK_FACES

OUTLINE: RGB = (28, 26, 36)
SHADOW_STRENGTH = 0.4
SIGN_YELLOW: RGB = (250, 204, 12)
SIGN_BLACK: RGB = (16, 16, 16)
SIGN_BORDER = 0.09
"""Border width and the "!"'s stroke width, as a fraction of the sign's side."""
DUOTONE_DARK: RGB = (78, 0, 8)
DUOTONE_LIGHT: RGB = (255, 196, 196)
LUMA = (0.299, 0.587, 0.114)
_FACES_LOCK = threading.Lock()


def instance_mask(objects: Sequence[SceneObject], order: Sequence[int], width: int, height: int) -> np.ndarray:
    """(H, W) uint8: 0 for background, k + 1 where object k is visible."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for i in order:
        shapes.fill(mask, objects[i].polygon(), i + 1)
    return mask


def _region(box: shapes.Box, pad: int, width: int, height: int) -> shapes.Box:
    return max(0, box[0] - pad), max(0, box[1] - pad), min(width, box[2] + pad), min(height, box[3] + pad)


def _local_mask(poly: np.ndarray, region: shapes.Box, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    x0, y0, x1, y1 = region
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    shapes.fill(mask, poly + np.array(shift, dtype=np.int32), 1, (x0, y0))
    return mask


def _base_colours(obj: SceneObject, region: shapes.Box) -> np.ndarray:
    """(h, w, 3) float32 flat colours of an object over ``region``: one colour, or the bar's stripes."""
    x0, y0, x1, y1 = region
    shape = (y1 - y0, x1 - x0, 3)
    if not obj.distractor:
        return np.broadcast_to(np.array(obj.colour, np.float32), shape).copy()
    xs, ys = np.meshgrid(np.arange(x0, x1), np.arange(y0, y1))
    odd = shapes.stripe_index(xs, ys, obj.cx, obj.cy, obj.radius, obj.angle) % 2 == 1
    return np.where(odd[..., None], np.float32(obj.colour2), np.float32(obj.colour)).astype(np.float32)


def _shading(obj: SceneObject, region: shapes.Box) -> np.ndarray:
    """(h, w) float32 light gradient times a smooth texture, around 1."""
    x0, y0, x1, y1 = region
    rng = np.random.default_rng(obj.texture_seed)
    light = rng.uniform(-np.pi, np.pi)
    strength = rng.uniform(0.2, 0.4)
    grid = rng.standard_normal((6, 6)).astype(np.float32)
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    along = ((xs - obj.cx) * np.cos(light) + (ys - obj.cy) * np.sin(light)) / max(obj.radius, 1.0)
    texture = cv2.resize(grid, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    return (1.0 + strength * along) * (1.0 + 0.12 * texture)


def draw_photo_object(image: np.ndarray, obj: SceneObject) -> None:
    """Draw one shaded object with a drop shadow into uint8 (H, W, 3) ``image`` in place."""
    height, width = image.shape[:2]
    poly = obj.polygon()
    offset = max(2, int(round(obj.radius * 0.08)))
    blur = max(1.0, obj.radius * 0.05)
    region = _region(shapes.box_of(poly), offset + int(3 * blur) + 2, width, height)
    x0, y0, x1, y1 = region
    local = image[y0:y1, x0:x1]
    shadow = cv2.GaussianBlur(_local_mask(poly, region, (offset, offset)).astype(np.float32), (0, 0), blur)
    shadow *= SHADOW_STRENGTH
    local[:] = cv2.blendLinear(local, np.zeros_like(local), 1.0 - shadow, shadow)
    inside = _local_mask(poly, region).astype(np.float32)
    alpha = inside * cv2.GaussianBlur(inside, (0, 0), 0.8)
    layer = np.clip(_base_colours(obj, region) * _shading(obj, region)[..., None] + 0.5, 0, 255).astype(np.uint8)
    local[:] = cv2.blendLinear(local, layer, 1.0 - alpha, alpha)


def _inner_outline(poly: np.ndarray, region: shapes.Box, thickness: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (inside, outline) masks over ``region``; the outline is ``thickness`` wide, inside the polygon."""
    x0, y0, x1, y1 = region
    inside = _local_mask(poly, region).astype(bool)
    line = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    shapes.outline(line, poly, 1, 2 * thickness, (x0, y0))
    return inside, line.astype(bool) & inside


def draw_flat_object(image: np.ndarray, obj: SceneObject, fill: RGB | None, line: RGB, thickness: int) -> None:
    """Draw one object into uint8 (H, W, 3) ``image`` in place: filled (``fill``, or the object's own colours when
    ``None``) with an outline of colour ``line``; a distractor also gets its stripe boundaries."""
    height, width = image.shape[:2]
    poly = obj.polygon()
    region = _region(shapes.box_of(poly), 0, width, height)
    x0, y0, x1, y1 = region
    inside, edge = _inner_outline(poly, region, thickness)
    local = image[y0:y1, x0:x1]
    colours = _base_colours(obj, region).astype(np.uint8) if fill is None else np.array(fill, np.uint8)
    local[inside] = colours[inside] if fill is None else colours
    if obj.distractor and fill is not None:
        stripes = np.zeros(edge.shape, dtype=np.uint8)
        for seg in shapes.stripe_lines(obj.cx, obj.cy, obj.radius, obj.angle):
            cv2.line(stripes, *(tuple(int(v) for v in p - (x0, y0)) for p in seg), 1, thickness, cv2.LINE_8)
        edge |= stripes.astype(bool) & inside
    local[edge] = line


def text_colour(image: np.ndarray, text: SceneText) -> RGB:
    """Dark or light ink, whichever stands out from the pixels under the text."""
    x0, y0, x1, y1 = text.box
    luma = float(image[y0:y1, x0:x1].mean()) if x1 > x0 and y1 > y0 else 128.0
    return (18, 18, 22) if luma > 120 else (246, 244, 236)


def draw_texts(image: np.ndarray, texts: Sequence[SceneText], colour: RGB | None, antialias: bool) -> np.ndarray:
    """Return uint8 ``image`` with the texts drawn (``colour`` ``None``: contrast with what is below)."""
    if not texts:
        return image
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "L" if antialias else "1"
    for text in texts:
        fill = text_colour(image, text) if colour is None else colour
        with fonts.FONT_LOCK:
            draw.text((text.x, text.y), text.text, fill=fill, font=fonts.font(text.lang, text.size), anchor="la")
    return np.asarray(canvas).copy()


def line_width(width: int, height: int) -> int:
    return max(2, int(round(min(width, height) / 200)))


def compose(
    background: np.ndarray,
    objects: Sequence[SceneObject],
    order: Sequence[int],
    texts: Sequence[SceneText],
    image_type: str,
    ink: RGB,
) -> np.ndarray:
    """Draw objects (back to front in ``order``) and texts over ``background`` in one image type; (H, W, 3) uint8."""
    height, width = background.shape[:2]
    thickness = line_width(width, height)
    image = background.copy()
    if image_type == "photo":
        for i in order:
            draw_photo_object(image, objects[i])
        return draw_texts(image, texts, None, antialias=True)
    paper = tuple(int(v) for v in background[0, 0])
    for i in order:
        if image_type == "sketch":
            draw_flat_object(image, objects[i], paper, ink, thickness)
        else:
            draw_flat_object(image, objects[i], None, OUTLINE, thickness)
    colour = ink if image_type == "sketch" else OUTLINE
    return draw_texts(image, texts, colour, antialias=image_type != "sketch")


@functools.cache
def _faces() -> np.ndarray:
    import skimage.data

    faces = skimage.data.lfw_subset()[:RISK_FACES]  # (100, 25, 25) float in [0, 1]
    return np.round(np.clip(faces, 0, 1) * 255).astype(np.uint8)


def face_tile(index: int) -> np.ndarray:
    """LFW face crop ``index`` as (25, 25) uint8, loaded once per process."""
    with _FACES_LOCK:
        return _faces()[index]


def draw_face(image: np.ndarray, box: shapes.Box, index: int) -> None:
    """Paste LFW face ``index``, scaled up (cubic) to fill ``box``, grey on all channels, into ``image`` in place."""
    x0, y0, x1, y1 = box
    tile = cv2.resize(face_tile(index), (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    image[y0:y1, x0:x1] = tile[:, :, None]


def draw_sign(image: np.ndarray, box: shapes.Box) -> None:
    """Draw a hazard sign filling ``box`` into ``image`` in place: an upward equilateral triangle, yellow with a thick
    black border, and a black "!" inside. The triangle's corners touch the box's edges, so the box is tight."""
    x0, y0, x1, y1 = box
    side, height = x1 - x0, y1 - y0
    outer = np.array([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], np.float64)
    centre = outer.mean(axis=0)
    stroke = max(2.0, SIGN_BORDER * side)
    inradius = side / (2 * 3**0.5)
    inner = centre + (outer - centre) * max(inradius - stroke, 1.0) / inradius
    cv2.fillPoly(image, [np.round(outer).astype(np.int32)], SIGN_BLACK, cv2.LINE_8)
    cv2.fillPoly(image, [np.round(inner).astype(np.int32)], SIGN_YELLOW, cv2.LINE_8)
    left, right = int(round(centre[0] - stroke / 2)), int(round(centre[0] + stroke / 2))
    cv2.rectangle(image, (left, round(y0 + 0.36 * height)), (right, round(y0 + 0.68 * height)), SIGN_BLACK, -1)
    cv2.rectangle(image, (left, round(y0 + 0.75 * height)), (right, round(y0 + 0.84 * height)), SIGN_BLACK, -1)


def red_duotone(image: np.ndarray) -> np.ndarray:
    """The ``style`` grade: luminance mapped from deep red (dark) to pale pink (light); (H, W, 3) uint8."""
    luma = image.astype(np.float32) @ np.array(LUMA, np.float32) / 255.0  # (H, W)
    dark, light = np.array(DUOTONE_DARK, np.float32), np.array(DUOTONE_LIGHT, np.float32)
    return np.clip(dark + luma[..., None] * (light - dark) + 0.5, 0, 255).astype(np.uint8)


def draw_risk(image: np.ndarray, risk: Risk) -> None:
    """Draw a risk cause's face or sign into ``image`` in place (texts are drawn with the scene's texts)."""
    if risk.cause == "object":
        draw_face(image, risk.box, risk.face)
    elif risk.cause == "region":
        draw_sign(image, risk.box)


def render_scene(scene: Scene, image_type: str, rng: np.random.Generator) -> np.ndarray:
    """One scene in one image type, in display orientation: (H, W, 3) uint8; ``rng`` draws the photo noise."""
    background = backgrounds.for_type(scene.background, image_type, scene.width, scene.height)
    image = compose(background, scene.objects, scene.draw_order(), scene.texts, image_type, scene.ink)
    if scene.risk is not None:
        draw_risk(image, scene.risk)
    if image_type == "photo":
        noise = rng.standard_normal(image.shape, dtype=np.float32) * scene.noise_sigma
        image = np.clip(image.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
    if scene.risk is not None and scene.risk.cause == "style":
        image = red_duotone(image)
    return image
