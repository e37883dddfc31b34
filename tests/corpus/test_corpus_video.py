"""Frame codes, video sampling and the encoders' keyframe and determinism guarantees."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
import pytest

from jobs.corpus import video
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
