"""Rendering and encoding the corpus's videos (the encoder itself is :mod:`jobs.media.videoenc`)."""

from __future__ import annotations

from jobs.corpus.video import VideoSpec, render_frame, video_background
from jobs.media.videoenc import encode_frames


def encode_video(spec: VideoSpec) -> bytes:
    """Render and encode every frame of a video."""
    background = video_background(spec)
    frames = (render_frame(spec, background, i) for i in range(spec.num_frames))
    return encode_frames(frames, spec.container, spec.encoder, spec.fps, spec.gop, (spec.width, spec.height))
