import io
import math
import re

import numpy as np
import pytest
from PIL import Image

from jobs.common import storage
from jobs.common.config import VideoSampling
from jobs.corpus.video import read_frame_code
from jobs.media.decode import DecodeError, VideoInfo, decode_image, sample_video, sniff


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_sniff_tells_images_from_videos():
    assert sniff(b"\xff\xd8\xff\xe0" + b"\0" * 60) == "image"
    assert sniff(b"\x89PNG\r\n\x1a\n" + b"\0" * 56) == "image"
    assert sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image"
    assert sniff(b"\0\0\0\x20ftypisom\0\0\0\0") == "video"
    assert sniff(b"\0\0\0\x20ftypavif\0\0\0\0") == "image"
    assert sniff(b"\x1a\x45\xdf\xa3" + b"\0" * 60) == "video"
    assert sniff(b"hello world") is None


def test_exif_orientation_is_applied():
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    pixels, fmt = decode_image(_encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95), 10**8)
    assert fmt == "jpeg" and pixels.shape == (40, 20, 3)
    assert pixels[5, 10, 0] > 200 and pixels[35, 10, 0] < 60  # the red half is now on top


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "I;16", "CMYK"])
def test_every_mode_becomes_rgb(mode):
    if mode == "RGBA":
        img = Image.new("RGBA", (8, 6), (0, 0, 0, 0))  # fully transparent -> white
        expected = (255, 255, 255)
    elif mode == "I;16":
        img = Image.fromarray(np.full((6, 8), 65535, np.uint16))
        expected = (255, 255, 255)
    else:
        img = Image.new("RGB", (8, 6), (10, 200, 30)).convert(mode)
        expected = None
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    pixels, _ = decode_image(_encode(img, fmt), 10**8)
    assert pixels.shape == (6, 8, 3) and pixels.dtype == np.uint8
    if expected:
        assert tuple(pixels[0, 0]) == expected


def test_broken_images_raise_with_reasons():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    good = _encode(Image.fromarray(noise), "JPEG")  # noise: most of the file is scan data, not headers
    cases = {
        b"": "empty_object",
        good[: len(good) // 2]: "image_truncated",
        b"not an image at all": "image_decode_error",
    }
    for data, code in cases.items():
        with pytest.raises(DecodeError) as err:
            decode_image(data, 10**8)
        assert err.value.code == code
        assert not re.search(r"object at 0x|Errno|BytesIO", str(err.value)), str(err.value)
    with pytest.raises(DecodeError) as err:
        decode_image(good, max_pixels=64 * 63)
    assert err.value.code == "image_too_large"


def _expected_interval(num_frames: int, fps: float, duration: float, interval: float, max_frames: int) -> list[int]:
    out, k = [], 0
    while len(out) < max_frames and k * interval <= duration + 0.25 / fps:
        i = math.ceil(k * interval * fps - 0.25)
        if i >= num_frames:
            break
        if not out or i != out[-1]:
            out.append(i)
        k += 1
    return out


def _sample(data: bytes, **kw) -> list:
    return [f for f in sample_video(io.BytesIO(data), VideoSampling(**kw)) if not isinstance(f, VideoInfo)]


@pytest.fixture(scope="module")
def videos(corpus):
    _, manifest = corpus
    rows = manifest[(manifest.media_type == "video") & manifest.broken.isna()]
    assert len(rows) >= 3
    return [(row, storage.read_bytes(row.uri)) for row in rows.itertuples()]


@pytest.mark.parametrize("policy", ["interval", "fps"])
def test_sampled_frames_match_the_ground_truth_with_and_without_seeking(videos, policy):
    for row, data in videos:
        interval = 1.0 if policy == "interval" else 0.5
        expected = _expected_interval(int(row.num_frames), row.fps, row.duration_s, interval, 64)
        results = []
        for threshold in (0.0, 1e9):  # always seek / never seek
            frames = _sample(data, policy=policy, interval_s=1.0, fps=2.0, seek_threshold_s=threshold)
            assert [f.index for f in frames] == expected, (row.key, threshold)
            for f in frames:
                assert read_frame_code(f.pixels) == f.index, (row.key, threshold)  # the pixels are that frame
                assert f.timestamp_s == pytest.approx(f.index / row.fps, abs=2e-3)
            results.append([f.pixels for f in frames])
        for seeked, decoded in zip(*results, strict=True):
            assert np.array_equal(seeked, decoded)


def test_keyframes_all_and_max_frames(videos):
    for row, data in videos:
        keys = _sample(data, policy="keyframes", max_frames=1000)
        assert [f.index for f in keys] == list(row.keyframes), row.key
        assert all(f.keyframe for f in keys)
        every = _sample(data, policy="all", max_frames=10_000)
        assert [f.index for f in every] == list(range(int(row.num_frames)))
        assert [read_frame_code(f.pixels) for f in every[:5]] == [0, 1, 2, 3, 4]
        assert len(_sample(data, policy="all", max_frames=3)) == 3
        assert len(_sample(data, policy="interval", interval_s=0.5, max_frames=2)) == 2


def test_a_video_cut_short_yields_its_frames_then_a_truncation_error(videos):
    _row, data = next((r, d) for r, d in videos if r.format in ("mkv", "webm"))
    frames = []
    with pytest.raises(DecodeError) as err:
        for item in sample_video(io.BytesIO(data[: int(len(data) * 0.6)]), VideoSampling(policy="interval")):
            frames.append(item)
    assert err.value.code == "video_truncated"
    assert isinstance(frames[0], VideoInfo) and len(frames) > 1


def test_garbage_is_not_a_video():
    with pytest.raises(DecodeError) as err:
        list(sample_video(io.BytesIO(b"\0" * 1000), VideoSampling()))
    assert err.value.code == "video_open_error"
    assert err.value.detail == "not a readable video container: Invalid data found when processing input"


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"<html>oops</html>", "the content is not in any image format the decoder reads; it starts with '<html>oo'"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 32, "the header looks like an image but the rest cannot be read (damaged)"),
    ],
)
def test_unreadable_image_reasons_say_what_is_wrong_in_words(data, expected):
    with pytest.raises(DecodeError) as err:
        decode_image(data, 10**8)
    assert err.value.detail.startswith(expected)
    assert "object at 0x" not in err.value.detail
