"""Encoding videos with FFmpeg through PyAV, with fixed keyframes and byte-identical output for the same frames.

Keyframes come exactly every ``gop`` frames: scene-cut keyframes are off (``scenecut=0`` for libx264,
``sc_threshold`` for MPEG-4, equal minimum and maximum keyframe distance for libvpx). Encoders run on one thread
and containers are written with ``+bitexact`` (no random track ids or dates), so output depends only on the frames.
Frame ``i`` has pts ``i`` in time base ``1/fps``; MP4 keeps that time base, Matroska/WebM store milliseconds.

Two things keep the bytes independent of the machine and of the PyAV release:

- RGB becomes YUV 4:2:0 here, in exact integer arithmetic (:func:`rgb_to_yuv420p`), and the encoder is handed
  ``yuv420p`` frames, so PyAV never converts. PyAV's own conversion runs swscale, whose kernels are picked per CPU
  and which PyAV 17 moved to ``sws_scale_frame`` with a reused, threaded context: not a promise of equal bytes.
- libx264 runs with ``cpu-independent=1``: by default x264 picks algorithms by instruction set (its output differs
  between CPUs), and this option asks for the same results on every CPU.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

MUXERS = {"mp4": "mp4", "webm": "webm", "mkv": "matroska"}


# ITU-R BT.601 in limited range, the matrix FFmpeg assumes for untagged frames, in 8-bit fixed point (x / 256).
_Y = np.array([66, 129, 25])
_U = np.array([-38, -74, 112])
_V = np.array([112, -94, -18])


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H * 3 / 2, W) uint8 planar YUV 4:2:0, the layout of a ``yuv420p`` frame.

    Luma per pixel, chroma from the rounded mean of each 2x2 block; integer arithmetic only, so the result is
    the same on every machine. H and W must be even, as 4:2:0 encoders require.
    """
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"a 4:2:0 video needs an even frame size, got {w}x{h}")
    px = rgb.astype(np.int32)
    y = ((px @ _Y + 128) >> 8) + 16  # (H, W)
    block = (px[0::2, 0::2] + px[1::2, 0::2] + px[0::2, 1::2] + px[1::2, 1::2] + 2) >> 2  # (H/2, W/2, 3)
    u = ((block @ _U + 128) >> 8) + 128
    v = ((block @ _V + 128) >> 8) + 128
    chroma = np.stack([u, v]).reshape(h // 2, w)  # U then V, each (H/2, W/2), as (H/2, W) rows
    return np.clip(np.concatenate([y, chroma]), 0, 255).astype(np.uint8)


def encoder_options(encoder: str, gop: int) -> dict[str, str]:
    """FFmpeg options for an encoder: fixed GOP, one thread, deterministic rate control."""
    if encoder == "libx264":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:cpu-independent=1"
        return {"preset": "veryfast", "crf": "23", "x264-params": params, "threads": "1"}
    if encoder in ("libvpx", "libvpx-vp9"):
        opts = {"deadline": "good", "cpu-used": "5", "g": str(gop), "keyint_min": str(gop)}
        opts |= {"auto-alt-ref": "0", "lag-in-frames": "0", "threads": "1"}
        if encoder == "libvpx-vp9":
            return opts | {"crf": "33", "b": "0", "row-mt": "0"}
        return opts | {"crf": "10", "b": "1500k"}
    if encoder == "mpeg4":
        return {"b": "1500k", "g": str(gop), "sc_threshold": "1000000000", "threads": "1"}
    raise ValueError(f"unsupported encoder {encoder!r}")


def encode_frames(
    frames: Iterable[np.ndarray], container: str, encoder: str, fps: int, gop: int, size: tuple[int, int]
) -> bytes:
    """Encode (H, W, 3) uint8 RGB frames, frame i at pts i in time base 1/fps; returns the file's bytes."""
    width, height = size
    container_options = {"fflags": "+bitexact"}
    if container == "mp4":
        container_options["video_track_timescale"] = str(fps)
    buf = io.BytesIO()
    out = av.open(buf, mode="w", format=MUXERS[container], container_options=container_options)
    try:
        stream = out.add_stream(encoder, rate=fps, options=encoder_options(encoder, gop))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = gop
        for i, rgb in enumerate(frames):
            if rgb.shape[:2] != (height, width):
                raise ValueError(f"frame {i} is {rgb.shape[1]}x{rgb.shape[0]}, the video is {width}x{height}")
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb), format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    finally:
        out.close()
    return buf.getvalue()
