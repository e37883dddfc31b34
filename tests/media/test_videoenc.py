"""The video encoder: fixed keyframes, byte-identical output for the same frames, exact RGB -> YUV 4:2:0."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from jobs.corpus import video
from jobs.corpus.video import draw_frame_code, read_frame_code
from jobs.media import videoenc


def _decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def _clip(n: int = 14, cut: int = 7) -> list[np.ndarray]:
    """Frames with a hard scene cut at ``cut``, to tempt encoders into an extra keyframe."""
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)
    frames = []
    for i in range(n):
        frame = (first if i < cut else second).copy()
        draw_frame_code(frame, i)
        frames.append(frame)
    return frames


@pytest.mark.parametrize("container, encoder, codec", sorted(set(video.VIDEO_KINDS)))
def test_encoders_are_deterministic_with_fixed_keyframes(container, encoder, codec):
    frames = _clip()
    fps, gop = 12, 5
    data = videoenc.encode_frames(frames, container, encoder, fps, gop, (320, 240))
    assert data == videoenc.encode_frames(frames, container, encoder, fps, gop, (320, 240))
    decoded = _decode(data)
    assert [read_frame_code(f.to_ndarray(format="rgb24")) for f in decoded] == list(range(len(frames)))
    assert [i for i, f in enumerate(decoded) if f.key_frame] == [0, 5, 10]
    assert [f.time for f in decoded] == pytest.approx([i / fps for i in range(len(frames))], abs=1e-3)
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video[0].codec_context.name == codec


def test_rgb_to_yuv420p_matches_bt601_and_round_trips():
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, 255 - xx * 3], -1).clip(0, 255).astype(np.uint8)
    yuv = videoenc.rgb_to_yuv420p(rgb)
    assert yuv.shape == (72, 64) and yuv.dtype == np.uint8
    flat = videoenc.rgb_to_yuv420p(np.full((2, 2, 3), (255, 0, 0), np.uint8))
    assert flat.ravel().tolist() == [82, 82, 82, 82, 90, 240]  # BT.601 limited range: pure red
    back = av.VideoFrame.from_ndarray(yuv, format="yuv420p").to_ndarray(format="rgb24")
    assert np.abs(back.astype(int) - rgb).mean() < 3
    with pytest.raises(ValueError, match="even frame size"):
        videoenc.rgb_to_yuv420p(np.zeros((3, 4, 3), np.uint8))
