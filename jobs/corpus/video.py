"""Short labelled videos: moving objects over a background, a word that changes every second, and a frame code.

Each frame carries its own index in a strip along the bottom edge: on a mid-grey band :data:`STRIP_HEIGHT` pixels
high, :data:`CODE_BITS` squares of :data:`CODE_SIZE` pixels, black for 0 and white for 1, least significant bit
first, the first at x = :data:`CODE_X0`. Objects and texts stay above the band. Objects move in straight lines
(and turn) from a start to an end pose, so every frame's boxes are known; the label is the primary (largest) object's
class, as for images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from jobs.corpus import backgrounds, fonts, render, scene
from jobs.corpus.scene import Background, SceneObject, SceneText
from jobs.corpus.spec import CLASSES, IMAGE_TYPES, STREAM_VIDEO, WORDS_EN, item_rng

STRIP_HEIGHT = 24
CODE_BITS = 10
CODE_SIZE = 16
CODE_X0 = 8
CODE_BOTTOM = 4
STRIP_GREY = 128

VIDEO_FPS: tuple[int, ...] = (10, 12, 15, 24, 25)
VIDEO_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (480, 272), (640, 360))
VIDEO_KINDS: tuple[tuple[str, str, str], ...] = (
    ("mp4", "libx264", "h264"),
    ("webm", "libvpx-vp9", "vp9"),
    ("mkv", "libx264", "h264"),
    ("mp4", "libx264", "h264"),
    ("webm", "libvpx", "vp8"),
    ("mkv", "mpeg4", "mpeg4"),
)
"""(container, encoder, codec) by ``video_id % 6``."""
TEXT_X, TEXT_Y = 8, 4


def draw_frame_code(frame: np.ndarray, index: int) -> None:
    """Paint the grey band and the binary code of ``index`` along the bottom of (H, W, 3) ``frame`` in place."""
    if not 0 <= index < 2**CODE_BITS:
        raise ValueError(f"frame index {index} does not fit in {CODE_BITS} bits")
    height = frame.shape[0]
    frame[height - STRIP_HEIGHT :] = STRIP_GREY
    y0 = height - CODE_BOTTOM - CODE_SIZE
    for bit in range(CODE_BITS):
        x0 = CODE_X0 + bit * CODE_SIZE
        frame[y0 : y0 + CODE_SIZE, x0 : x0 + CODE_SIZE] = 255 if (index >> bit) & 1 else 0


def read_frame_code(frame_rgb: np.ndarray) -> int:
    """The frame index coded along the bottom of a decoded (H, W, 3) or (H, W) frame.

    Each square is read from its central 8x8 pixels, away from edges that lossy codecs and chroma subsampling blur.
    """
    frame = np.asarray(frame_rgb, dtype=np.float32)
    grey = frame.mean(axis=2) if frame.ndim == 3 else frame
    y0 = grey.shape[0] - CODE_BOTTOM - CODE_SIZE
    q = CODE_SIZE // 4
    value = 0
    for bit in range(CODE_BITS):
        x0 = CODE_X0 + bit * CODE_SIZE
        if grey[y0 + q : y0 + CODE_SIZE - q, x0 + q : x0 + CODE_SIZE - q].mean() > 127.5:
            value |= 1 << bit
    return value


@dataclass(frozen=True)
class Track:
    """An object moving in a straight line: its pose at frame 0 (``start``) and at the last frame."""

    start: SceneObject
    end_cx: float
    end_cy: float
    end_angle: float

    def at(self, t: float) -> SceneObject:
        """The object at ``t`` in [0, 1] along the track."""
        s = self.start
        return replace(
            s,
            cx=s.cx + (self.end_cx - s.cx) * t,
            cy=s.cy + (self.end_cy - s.cy) * t,
            angle=s.angle + (self.end_angle - s.angle) * t,
        )


@dataclass(frozen=True)
class VideoSpec:
    """Everything needed to render, encode and describe one video."""

    video_id: int
    container: str
    encoder: str
    codec: str
    image_type: str
    fps: int
    num_frames: int
    gop: int
    width: int
    height: int
    background: Background
    tracks: tuple[Track, ...]
    words: tuple[str, ...]  # one per second
    text_size: int
    ink: tuple[int, int, int]

    @property
    def name(self) -> str:
        return f"{self.video_id:05d}_{self.image_type}"

    @property
    def label(self) -> str:
        return self.tracks[0].start.cls

    @property
    def keyframes(self) -> list[int]:
        return list(range(0, self.num_frames, self.gop))

    def objects_at(self, index: int) -> list[SceneObject]:
        t = index / max(self.num_frames - 1, 1)
        return [track.at(t) for track in self.tracks]

    def texts_at(self, index: int) -> list[SceneText]:
        word = self.words[min(index // self.fps, len(self.words) - 1)]
        left, top, right, bottom = fonts.text_bbox(word, "en", self.text_size)
        box = (TEXT_X + left, TEXT_Y + top, TEXT_X + right, TEXT_Y + bottom)
        return [SceneText(word, "en", TEXT_X, TEXT_Y, self.text_size, box)]


def _track(rng: np.random.Generator, cls: str, radius: float, region: tuple[int, int, int, int]) -> Track:
    start = scene.place(rng, radius, region, [], 1.0) or (0.0, 0.0)
    end = scene.place(rng, radius, region, [], 1.0) or start
    obj = scene.make_object(rng, cls, radius, start)
    turn = 0.0 if cls == "heart" else float(rng.uniform(-1.5, 1.5))
    return Track(obj, end[0], end[1], obj.angle + turn)


def _tracks(rng: np.random.Generator, region: tuple[int, int, int, int]) -> tuple[Track, ...]:
    """One or two tracks; the first object's silhouette is the largest."""
    short = min(region[2] - region[0], region[3] - region[1])
    classes = [CLASSES[int(i)] for i in rng.integers(len(CLASSES), size=int(rng.integers(1, 3)))]
    radius = rng.uniform(0.45, 0.8) * short / 2
    tracks = [_track(rng, classes[0], radius, region)]
    for cls in classes[1:]:
        biggest = math.sqrt(scene.SECONDARY_AREA * scene.shape_area(classes[0], radius) / scene.shape_area(cls, 1.0))
        tracks.append(_track(rng, cls, min(biggest, rng.uniform(0.25, 0.5) * short / 2), region))
    return tuple(tracks)


def sample_video(seed: int, video_id: int) -> VideoSpec:
    """Sample video ``video_id`` of the corpus with ``seed``."""
    rng = item_rng(seed, STREAM_VIDEO, video_id)
    container, encoder, codec = VIDEO_KINDS[video_id % len(VIDEO_KINDS)]
    image_type = IMAGE_TYPES[int(rng.integers(len(IMAGE_TYPES)))]
    fps = VIDEO_FPS[int(rng.integers(len(VIDEO_FPS)))]
    num_frames = int(round(rng.uniform(3.0, 8.0) * fps))
    gop = int((fps, 2 * fps, 10, 30)[int(rng.integers(4))])
    width, height = VIDEO_SIZES[int(rng.integers(len(VIDEO_SIZES)))]
    text_size = max(12, int(round(0.07 * height)))
    band = TEXT_Y + int(round(1.4 * text_size)) + 4
    region = (0, band, width, height - STRIP_HEIGHT)
    background = scene.sample_background(rng)
    tracks = _tracks(rng, region)
    words = tuple(WORDS_EN[int(i)] for i in rng.integers(len(WORDS_EN), size=math.ceil(num_frames / fps)))
    ink = scene.INK[int(rng.integers(len(scene.INK)))]
    return VideoSpec(
        video_id, container, encoder, codec, image_type, fps, num_frames, gop, width, height,
        background, tracks, words, text_size, ink,
    )  # fmt: skip


def video_background(spec: VideoSpec) -> np.ndarray:
    return backgrounds.for_type(spec.background, spec.image_type, spec.width, spec.height)


def render_frame(spec: VideoSpec, background: np.ndarray, index: int) -> np.ndarray:
    """Frame ``index`` as (H, W, 3) uint8 RGB, frame code included."""
    objects = spec.objects_at(index)
    order = [*range(1, len(objects)), 0]
    frame = render.compose(background, objects, order, spec.texts_at(index), spec.image_type, spec.ink)
    draw_frame_code(frame, index)
    return frame
