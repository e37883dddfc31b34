"""Frame codes, video sampling and the encoders' keyframe and determinism guarantees."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
import pytest

from jobs.corpus import video, videoenc
from jobs.corpus.video import CODE_BITS, STRIP_HEIGHT, draw_frame_code, read_frame_code


def _decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


@pytest.mark.parametrize("index", [0, 1, 2, 5, 170, 341, 512, 999, 2**CODE_BITS - 1])
def test_frame_code_survives_noise_and_blur(index):
    rng = np.random.default_rng(index)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    draw_frame_code(frame, index)
    noisy = np.clip(frame + rng.normal(0, 20, frame.shape), 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(noisy, (0, 0), 2.0)
    assert read_frame_code(frame) == index
    assert read_frame_code(blurred) == index
    assert read_frame_code(cv2.cvtColor(blurred, cv2.COLOR_RGB2GRAY)) == index


def test_frame_code_rejects_indices_that_do_not_fit():
    with pytest.raises(ValueError):
        draw_frame_code(np.zeros((240, 320, 3), np.uint8), 2**CODE_BITS)


@pytest.mark.parametrize("video_id", range(12))
def test_video_spec_stays_inside_its_limits(video_id):
    spec = video.sample_video(0, video_id)
    assert spec.fps in video.VIDEO_FPS and (spec.width, spec.height) in video.VIDEO_SIZES
    assert 3.0 <= spec.num_frames / spec.fps <= 8.0 + 1 / spec.fps
    assert spec.keyframes == list(range(0, spec.num_frames, spec.gop))
    assert 1 <= len(spec.tracks) <= 2
    for i in range(0, spec.num_frames, 7):
        for obj in spec.objects_at(i):
            x0, y0, x1, y1 = obj.box()
            assert 0 <= x0 < x1 <= spec.width and 0 <= y0 < y1 <= spec.height - STRIP_HEIGHT
        (text,) = spec.texts_at(i)
        assert text.text == spec.words[i // spec.fps] and text.box[3] <= spec.height - STRIP_HEIGHT


def test_word_changes_every_second():
    spec = video.sample_video(0, 0)
    words = [spec.texts_at(i)[0].text for i in range(spec.num_frames)]
    assert words[: spec.fps] == [spec.words[0]] * spec.fps
    assert words[spec.fps] == spec.words[1]


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
