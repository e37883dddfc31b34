"""Decoding of images and sampling of video frames. Ray-free: plain functions over bytes and file objects.

Errors are :class:`DecodeError` with a short machine-readable ``code`` (the dead-letter reason) and a detail.
"""

from __future__ import annotations

import io
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from jobs.common import transient
from jobs.common.config import DEFAULT_MAX_PIXELS, VideoSampling


class DecodeError(Exception):
    """An input that cannot become rows. ``code`` is a stable reason such as ``image_truncated``."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


_OBJECT_REPR = re.compile(r"\s*'?<[\w.]+ object at 0x[0-9a-fA-F]+>'?")


def describe(exc: BaseException) -> str:
    """A reason a user can read: what went wrong, without Python object reprs, errno codes or class paths.

    FFmpeg errors give their message (``Invalid data found when processing input``) without the ``[Errno N]``
    prefix and the ``'<none>'`` file name of an in-memory stream.
    """
    text = getattr(exc, "strerror", None) if type(exc).__module__.startswith("av") else None
    text = _OBJECT_REPR.sub("", str(text or exc)).strip(" :")
    return text or type(exc).__name__


def _unreadable_image(data: bytes, exc: Exception) -> str:
    """Why Pillow could not open the bytes, in words: no known image format, or a damaged header."""
    head = data[:8]
    shown = head.decode("ascii") if head.isascii() and head.decode("ascii").isprintable() else head.hex(" ")
    if isinstance(exc, Image.UnidentifiedImageError):
        if sniff(data[:256]) == "image":
            return f"the header looks like an image but the rest cannot be read (damaged); it starts with {shown!r}"
        return f"the content is not in any image format the decoder reads; it starts with {shown!r}"
    return f"not a readable image: {describe(exc)}; it starts with {shown!r}"


_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3", b"FLV")


def sniff(head: bytes) -> str | None:
    """What the first bytes of an object say it is: ``"image"``, ``"video"`` or ``None`` (unknown)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "image" if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1") else "video"
    if any(head.startswith(m) for m in _IMAGE_MAGIC):
        return "image"
    if any(head.startswith(m) for m in _VIDEO_MAGIC) or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47):
        return "video"
    return None


def probe_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open image bytes lazily: the format and size from the header, checked against ``max_pixels``; no pixel is
    decoded yet (cheap enough for an HTTP gateway to refuse bad input before it reaches a model)."""
    if not data:
        raise DecodeError("empty_object", "the object has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError("image_too_large", str(exc)) from None
    except Exception as exc:
        raise DecodeError("image_decode_error", _unreadable_image(data, exc)) from None
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError("image_too_large", f"{width}x{height} = {width * height} pixels > limit {max_pixels}")
    return img


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode image bytes to an RGB ``uint8`` array ``(H, W, 3)`` in display orientation.

    EXIF orientation is applied; palette, grey, 16-bit, CMYK and alpha images become RGB (alpha composited over
    white). The pixel count is checked from the header, before any pixel is decoded. Animated images give their
    first frame. Returns the array and the format name (``jpeg``, ``png``, ...).
    """
    img = probe_image(data, max_pixels)
    fmt = (img.format or "unknown").lower()
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        arr = np.asarray(_to_rgb(img))
    except OSError as exc:
        code = "image_truncated" if "truncated" in str(exc).lower() else "image_decode_error"
        raise DecodeError(code, describe(exc)) from None
    except Exception as exc:
        raise DecodeError("image_decode_error", f"the pixels cannot be decoded: {describe(exc)}") from None
    return np.ascontiguousarray(arr, dtype=np.uint8), fmt


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr * (255.0 / (65535.0 if peak > 255 else 255.0)), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


@dataclass
class VideoFrame:
    """One sampled frame: index in the video's own frame numbering, presentation time, RGB pixels."""

    index: int
    timestamp_s: float
    pixels: np.ndarray
    keyframe: bool


@dataclass
class VideoInfo:
    codec: str
    fps: float
    duration_s: float | None
    width: int
    height: int


@dataclass(frozen=True)
class DecodeLimits:
    """What one video may cost before it is refused (``video_too_large``, ``video_over_budget``): the pixels of a
    frame (checked from the stream's header before any frame is decoded, and on every frame), the packets demuxed
    (a stream of a million tiny packets, or one that never ends or loops, runs into it whatever the sampling), and
    the seconds spent in the video."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames_total: int = 100_000
    max_seconds: float = math.inf


class _Budget:
    def __init__(self, limits: DecodeLimits):
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.packets = 0

    def packet(self) -> None:
        self.packets += 1
        if self.packets > self.limits.max_frames_total:
            detail = f"more than {self.limits.max_frames_total} packets (decode.max_frames_total)"
            raise DecodeError("video_over_budget", detail)
        if time.monotonic() > self.deadline:
            raise DecodeError("video_over_budget", f"more than {self.limits.max_seconds:g} s (decode.max_seconds)")

    def frame_size(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            pixels = width * height
            raise DecodeError("video_too_large", f"{width}x{height} = {pixels} pixels > limit {self.limits.max_pixels}")


def sample_video(
    source, sampling: VideoSampling, keep_pixels: bool = True, limits: DecodeLimits | None = None
) -> Iterator[VideoFrame | VideoInfo]:
    """Open a video (path or seekable file object) and yield its :class:`VideoInfo`, then the sampled frames.

    Frame indices come from presentation timestamps (``round(t * average_fps)``), so they are the same whether a
    frame was reached by seeking or by decoding from the start. Raises :class:`DecodeError`; an error after some
    frames were yielded is raised as ``video_decode_error`` (or the budget's code) and the caller decides what the
    frames already given are worth. A :class:`~jobs.common.transient.TransientError` from the source's reads
    passes through: the store failed, not the video.
    """
    import av

    budget = _Budget(limits or DecodeLimits())
    try:
        container = av.open(source, mode="r", buffer_size=1 << 20)
    except transient.TransientError:
        raise
    except Exception as exc:
        raise DecodeError("video_open_error", f"not a readable video container: {describe(exc)}") from None
    with container:
        if not container.streams.video:
            raise DecodeError("video_no_stream", "the container has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        info = _info(container, stream)
        budget.frame_size(info.width, info.height)
        yield info
        try:
            ended_at = yield from _sampled(container, stream, info, sampling, keep_pixels, budget)
        except (DecodeError, transient.TransientError):
            raise
        except Exception as exc:
            raise DecodeError("video_decode_error", f"a frame cannot be decoded: {describe(exc)}") from None
        _check_complete(info, ended_at, sampling)


def _sampled(container, stream, info: VideoInfo, sampling: VideoSampling, keep_pixels: bool, budget: _Budget):
    clock = _Clock(stream, info.fps, budget)
    if sampling.policy == "keyframes":
        return _keyframes(container, stream, clock, sampling.max_frames, keep_pixels)
    if sampling.policy == "all":
        return _every_frame(container, stream, clock, sampling.max_frames, keep_pixels)
    interval = sampling.interval_s if sampling.policy == "interval" else 1.0 / sampling.fps
    return _targets(container, stream, info, clock, interval, sampling, keep_pixels)


def _check_complete(info: VideoInfo, ended_at: float | None, sampling: VideoSampling) -> None:
    """A stream that runs dry well before the duration its header declares was cut short (a partial upload).

    ``ended_at`` is the time of the last decoded frame when decoding hit the end of the stream, ``None`` when
    sampling stopped on its own. Keyframe sampling decodes too few frames to tell, so it is not checked.
    """
    if ended_at is None or info.duration_s is None or sampling.policy == "keyframes":
        return
    slack = max(0.5, 3.0 / info.fps) if info.fps else 0.5
    if ended_at < info.duration_s - slack:
        raise DecodeError(
            "video_truncated", f"the stream ends at {ended_at:.2f} s of the {info.duration_s:.2f} s its header declares"
        )


def _info(container, stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or 0
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    ctx = stream.codec_context
    if ctx is None:
        raise DecodeError("video_open_error", "the video stream's codec is not one the decoder knows")
    return VideoInfo(codec=ctx.name, fps=float(rate), duration_s=duration, width=ctx.width, height=ctx.height)


class _Clock:
    """Maps decoded frames to (index, seconds) relative to the stream's start, and demuxes within the budget."""

    def __init__(self, stream, fps: float, budget: _Budget):
        self.tb = stream.time_base
        self.start = stream.start_time or 0
        self.fps = fps
        self.count = 0
        self.budget = budget

    def packets(self, container, stream) -> Iterator:
        """``container.demux(stream)``, each packet counted against the budget."""
        for packet in container.demux(stream):
            self.budget.packet()
            yield packet

    def decode(self, container, stream) -> Iterator:
        """``container.decode(stream)`` within the budget."""
        for packet in self.packets(container, stream):
            yield from packet.decode()

    def seconds(self, frame) -> float:
        if frame.pts is None or self.tb is None:
            return self.count / self.fps if self.fps else float(self.count)
        return float((frame.pts - self.start) * self.tb)

    def index(self, seconds: float) -> int:
        return round(seconds * self.fps) if self.fps else self.count

    def frame(self, frame, keep_pixels: bool) -> VideoFrame:
        self.budget.frame_size(frame.width, frame.height)
        t = self.seconds(frame)
        pixels = frame.to_ndarray(format="rgb24") if keep_pixels else np.zeros((0, 0, 3), np.uint8)
        out = VideoFrame(index=self.index(t), timestamp_s=t, pixels=pixels, keyframe=bool(frame.key_frame))
        self.count += 1
        return out


def _every_frame(container, stream, clock: _Clock, max_frames: int, keep_pixels: bool) -> Iterator[VideoFrame]:
    """Every decoded frame. Returns the last frame's time at the end of the stream, ``None`` at ``max_frames``."""
    last = 0.0
    for produced, frame in enumerate(clock.decode(container, stream)):
        if produced >= max_frames:
            return None
        sample = clock.frame(frame, keep_pixels)
        last = sample.timestamp_s
        yield sample
    return last


def _keyframes(container, stream, clock: _Clock, max_frames: int, keep_pixels: bool) -> Iterator[VideoFrame]:
    """Keyframes only: other packets never reach the decoder (a decoder-side skip is not honoured by every codec)."""
    produced = 0
    for packet in clock.packets(container, stream):
        if not packet.is_keyframe and packet.size > 0:  # size 0: the final packet that flushes the decoder
            continue
        for frame in packet.decode():
            if produced >= max_frames:
                return None
            produced += 1
            yield clock.frame(frame, keep_pixels)
    return None


def _targets(container, stream, info, clock: _Clock, interval: float, sampling: VideoSampling, keep_pixels: bool):
    """The first frame at or after each target time ``k * interval``; far targets are reached by seeking.

    Returns the last decoded frame's time when the stream ran dry, ``None`` when sampling ended on its own.
    """
    tol = 0.25 / info.fps if info.fps else 0.0  # absorbs timestamps rounded to the container's time base
    frames = clock.decode(container, stream)
    position = 0.0  # time of the last decoded frame
    last_index, produced, k = None, 0, 0
    while produced < sampling.max_frames:
        target = k * interval
        if info.duration_s is not None and target > info.duration_s + tol:
            return None
        if target - position > sampling.seek_threshold_s:
            offset = int(math.floor(target / stream.time_base)) + (stream.start_time or 0)
            container.seek(offset, stream=stream, backward=True, any_frame=False)
            frames = clock.decode(container, stream)
        chosen = None
        for frame in frames:
            position = clock.seconds(frame)
            if position + tol >= target:
                chosen = frame
                break
        if chosen is None:
            return position
        sample = clock.frame(chosen, keep_pixels)
        if sample.index != last_index:
            yield sample
            produced += 1
            last_index = sample.index
        k = max(k + 1, math.floor((sample.timestamp_s + tol) / interval) + 1)  # skip targets this frame covered
