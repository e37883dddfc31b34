"""Encoding videos with FFmpeg through PyAV, with fixed keyframes and byte-identical output for the same frames.

Keyframes come exactly every ``gop`` frames: scene-cut keyframes are off (``scenecut=0`` for libx264,
``sc_threshold`` for MPEG-4, equal minimum and maximum keyframe distance for libvpx). Encoders run on one thread
and containers are written with ``+bitexact`` (no random track ids or dates), so output depends only on the frames.
Frame ``i`` has pts ``i`` in time base ``1/fps``; MP4 keeps that time base, Matroska/WebM store milliseconds.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

from jobs.corpus.video import VideoSpec, render_frame, video_background

MUXERS = {"mp4": "mp4", "webm": "webm", "mkv": "matroska"}


def encoder_options(encoder: str, gop: int) -> dict[str, str]:
    """FFmpeg options for an encoder: fixed GOP, one thread, deterministic rate control."""
    if encoder == "libx264":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0"
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
    container_options = {"fflags": "+bitexact"}
    if container == "mp4":
        container_options["video_track_timescale"] = str(fps)
    buf = io.BytesIO()
    out = av.open(buf, mode="w", format=MUXERS[container], container_options=container_options)
    try:
        stream = out.add_stream(encoder, rate=fps, options=encoder_options(encoder, gop))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = gop
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    finally:
        out.close()
    return buf.getvalue()


def encode_video(spec: VideoSpec) -> bytes:
    """Render and encode every frame of a video."""
    background = video_background(spec)
    frames = (render_frame(spec, background, i) for i in range(spec.num_frames))
    return encode_frames(frames, spec.container, spec.encoder, spec.fps, spec.gop, (spec.width, spec.height))
