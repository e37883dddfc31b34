"""The multi-modal sample set of seed 003: co-registered renders of one scene, the label visible through some.

Every sample is one scene (an object on a background) seen by several modalities at the same geometry, and a
binary label (``present``: a warm, near, right-moving target; ``absent``). Each modality shows its own cue of the
label, and the cue agrees with the label with that modality's probability (:data:`RELIABILITY`), independently of
the others, so each modality carries part of the signal and their combination carries more:

* ``visible`` (RGB PNG): the object's hue, warm or cool, on a textured colour background;
* ``infrared`` (grey PNG): the object hot or at ambient temperature, with sensor noise;
* ``depth`` (a NumPy ``float32`` map, metres): the object in front of or behind the background plane;
* ``clip`` (an MP4 of :data:`CLIP_FRAMES` frames, the corpus videos' frame-code band along the bottom): the object
  moving right or left. The appearance is the same for both labels: only the order of the frames tells them apart,
  which is what a 3D network is for.

The manifest (``manifest.parquet``) has one row per (sample, modality): ``sample_id``, ``modality``, ``uri``,
``label``, ``split`` (``train`` or ``test``), ``fold`` (0..folds-1 for training samples, stratified by label;
null for test), and ``cue_agrees`` (whether that modality's cue tells the truth: for analysis only).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from jobs.common import storage
from jobs.corpus.spec import item_rng
from jobs.corpus.video import STRIP_HEIGHT, draw_frame_code
from jobs.media.videoenc import encode_frames

MODALITIES = ("visible", "infrared", "depth", "clip")
RELIABILITY = {"visible": 0.75, "infrared": 0.9, "depth": 0.6, "clip": 0.8}
LABELS = ("absent", "present")
CLIP_FRAMES = 8
CLIP_SIZE = (192, 128)  # (W, H): the frame code needs 168 px; the scene is the part above the band
STREAM_MULTIMODAL = 40
MANIFEST = "manifest.parquet"


@dataclass(frozen=True)
class Geometry:
    shape: str
    cx: float
    cy: float
    radius: float


def _mask(geom: Geometry, width: int, height: int, dx: float = 0.0) -> np.ndarray:
    """(H, W) float mask of the object, its centre at fractions ``(cx + dx, cy)`` of the frame."""
    canvas = np.zeros((height, width), np.uint8)
    cx, cy, r = (geom.cx + dx) * width, geom.cy * height, geom.radius * min(width, height)
    if geom.shape == "disc":
        cv2.circle(canvas, (round(cx), round(cy)), round(r), 255, -1, cv2.LINE_AA)
    else:
        sides = {"triangle": 3, "square": 4, "hexagon": 6}[geom.shape]
        angles = np.pi / 2 + 2 * np.pi * np.arange(sides) / sides
        points = np.stack([cx + r * np.cos(angles), cy - r * np.sin(angles)], 1).round().astype(np.int32)
        cv2.fillPoly(canvas, [points], 255, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int = 4) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a few random cells blown up bicubically."""
    small = rng.random((cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def _hsv(hue: float, sat: float, val: float) -> np.ndarray:
    px = np.uint8([[[round(hue / 2) % 180, round(sat * 255), round(val * 255)]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def render_visible(rng, geom: Geometry, cue: int, size: int) -> np.ndarray:
    base = _hsv(rng.uniform(0, 360), rng.uniform(0.05, 0.35), rng.uniform(0.35, 0.8))
    texture = (_smooth_noise(rng, size, size, 6)[..., None] - 0.5) * 80
    background = base + texture
    hue = rng.uniform(-20, 40) if cue else rng.uniform(170, 250)  # warm or cool
    colour = _hsv(hue, rng.uniform(0.5, 0.95), rng.uniform(0.5, 0.95))
    m = _mask(geom, size, size)[..., None]
    image = background * (1 - m) + colour * m + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def render_infrared(rng, geom: Geometry, cue: int, size: int) -> np.ndarray:
    ambient = rng.uniform(70, 130) + (_smooth_noise(rng, size, size, 5) - 0.5) * 60
    delta = rng.uniform(45, 90) if cue else rng.uniform(-15, 15)
    image = ambient + delta * cv2.GaussianBlur(_mask(geom, size, size), (0, 0), 1.5)
    image += rng.normal(0, 14, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def render_depth(rng, geom: Geometry, cue: int, size: int) -> np.ndarray:
    """Metres: a tilted background plane, the object 0.3-1.0 m in front of it (cue) or behind it."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    plane = rng.uniform(3, 6) + rng.uniform(-1, 1) * xs + rng.uniform(-1, 1) * ys
    offset = rng.uniform(0.3, 1.0) * (-1 if cue else 1)
    depth = plane + offset * _mask(geom, size, size) + rng.normal(0, 0.08, (size, size))
    return depth.astype(np.float32)


def render_clip(rng, geom: Geometry, cue: int) -> list[np.ndarray]:
    """:data:`CLIP_FRAMES` RGB frames of the object crossing the scene, rightwards (cue) or leftwards."""
    width, height = CLIP_SIZE
    scene_h = height - STRIP_HEIGHT
    background = _hsv(rng.uniform(0, 360), 0.2, 0.6) + (_smooth_noise(rng, scene_h, width, 6)[..., None] - 0.5) * 60
    colour = _hsv(rng.uniform(0, 360), 0.8, 0.9)
    step = rng.uniform(0.05, 0.09) * (1 if cue else -1)
    start = 0.5 - step * (CLIP_FRAMES - 1) / 2
    moving = Geometry(geom.shape, 0.0, geom.cy, geom.radius * 0.8)
    frames = []
    for i in range(CLIP_FRAMES):
        m = _mask(moving, width, scene_h, dx=start + i * step)[..., None]
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:scene_h] = np.clip(background * (1 - m) + colour * m + rng.normal(0, 5, m.shape), 0, 255)
        draw_frame_code(frame, i)
        frames.append(frame)
    return frames


def _png(image: np.ndarray) -> bytes:
    code = cv2.COLOR_RGB2BGR if image.ndim == 3 else None
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, code) if code is not None else image)
    assert ok
    return data.tobytes()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def sample_files(seed: int, sample_id: int, label: int, size: int, modalities) -> dict[str, tuple[str, bytes, bool]]:
    """``{modality: (file name, bytes, cue agrees)}`` of one sample."""
    rng = item_rng(seed, STREAM_MULTIMODAL, sample_id)
    geom = Geometry(str(rng.choice(["disc", "triangle", "square", "hexagon"])), rng.uniform(0.3, 0.7),
                    rng.uniform(0.3, 0.7), rng.uniform(0.14, 0.24))  # fmt: skip
    out = {}
    for modality in modalities:
        agrees = bool(rng.random() < RELIABILITY[modality])
        cue = label if agrees else 1 - label
        if modality == "visible":
            out[modality] = ("visible.png", _png(render_visible(rng, geom, cue, size)), agrees)
        elif modality == "infrared":
            out[modality] = ("infrared.png", _png(render_infrared(rng, geom, cue, size)), agrees)
        elif modality == "depth":
            out[modality] = ("depth.npy", _npy(render_depth(rng, geom, cue, size)), agrees)
        else:
            frames = render_clip(rng, geom, cue)
            out[modality] = ("clip.mp4", encode_frames(frames, "mp4", "libx264", 8, 8, CLIP_SIZE), agrees)
    return out


def make_multimodal(output: str, seed: int = 0, samples: int = 400, test_share: float = 0.25, folds: int = 5,
                    size: int = 64, modalities=MODALITIES, progress=print) -> str:  # fmt: skip
    """Write the set under ``output`` and return the manifest's URI. Labels alternate so both classes are equal;
    the test split is every sample whose hash falls in ``test_share``, the folds deal training samples round-robin
    within each label."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown or len(modalities) < 2:
        raise ValueError(f"at least two modalities of {MODALITIES}, got {list(modalities)}")
    rows, fold_of_label = [], {0: 0, 1: 0}
    for sid in range(samples):
        label = sid % 2
        split = "test" if item_rng(seed, STREAM_MULTIMODAL + 1, sid).random() < test_share else "train"
        fold = None
        if split == "train":
            fold, fold_of_label[label] = fold_of_label[label] % folds, fold_of_label[label] + 1
        for modality, (name, data, agrees) in sample_files(seed, sid, label, size, modalities).items():
            uri = storage.join(output, f"samples/{sid:05d}/{name}")
            storage.write_bytes(uri, data)
            rows.append({"sample_id": f"s{sid:05d}", "modality": modality, "uri": uri, "label": LABELS[label],
                         "split": split, "fold": fold, "cue_agrees": agrees})  # fmt: skip
        if progress and (sid + 1) % 100 == 0:
            progress(f"[multimodal] {sid + 1}/{samples} samples")
    table = pd.DataFrame(rows).astype({"fold": "Int64"})
    uri = storage.join(output, MANIFEST)
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    storage.write_bytes(uri, buf.getvalue())
    return uri
