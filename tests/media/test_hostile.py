"""Hostile input: decompression bombs in every image format we read, metadata bloat, and videos that would cost
memory or minutes; each is refused with a reason before it is decoded, or decoded within its limits.

The bombs are built here byte by byte (a header declaring a huge canvas over a few bytes of data), so nothing in
the repository is a bomb.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jobs.common.config import VideoSampling
from jobs.media.decode import DecodeError, DecodeLimits, VideoInfo, decode_image, probe_image, sample_video
from jobs.media.videoenc import encode_frames


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _small(fmt: str, **options) -> bytearray:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format=fmt, **options)
    return bytearray(buf.getvalue())


def png_bomb() -> bytes:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def gif_bomb() -> bytes:
    data = _small("GIF")
    data[6:10] = struct.pack("<HH", 65535, 65535)  # the logical screen
    start = data.index(b"\x2c")  # the image descriptor
    data[start + 5 : start + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def jpeg_bomb() -> bytes:
    data = _small("JPEG")
    start = data.index(b"\xff\xc0")  # start of frame: precision, then height and width
    data[start + 5 : start + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(data)


def webp_bomb() -> bytes:
    data = _small("WEBP", lossless=True, exif=b"Exif\0\0" + b"\0" * 8)  # EXIF makes it an extended (VP8X) file
    start = data.index(b"VP8X")
    data[start + 12 : start + 18] = (16382).to_bytes(3, "little") * 2  # canvas 16383 x 16383, the format's maximum
    return bytes(data)


def tiff_bomb() -> bytes:
    side, ifd_size = 100_000, 2 + 9 * 12 + 4
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + ifd_size), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, 16)]  # fmt: skip
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0" * 16


@pytest.mark.parametrize("build", [png_bomb, gif_bomb, jpeg_bomb, webp_bomb, tiff_bomb], ids=lambda f: f.__name__)
def test_a_bomb_in_every_image_format_is_refused_from_its_header(build):
    data = build()
    assert len(data) < 1000
    with pytest.raises(DecodeError) as info:
        probe_image(data, max_pixels=40_000_000)
    assert info.value.code == "image_too_large" and "pixels" in info.value.detail


def test_a_canvas_over_our_own_limit_but_under_pillows_is_refused_with_our_limit():
    data = _small("PNG")
    data[16:24] = struct.pack(">II", 8000, 8000)  # 64 M pixels: under Pillow's bomb guard, over the config's
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with pytest.raises(DecodeError, match="8000x8000 = 64000000 pixels > limit 40000000"):
        decode_image(bytes(data), max_pixels=40_000_000)


def test_a_text_chunk_that_inflates_to_100_mb_is_refused_without_inflating_it():
    png = bytes(_small("PNG"))
    packed = zlib.compressobj(9)
    text = b"".join(packed.compress(b"A" * (1 << 20)) for _ in range(100)) + packed.flush()
    bomb = png[:33] + _chunk(b"zTXt", b"Comment\0\0" + text) + png[33:]
    with pytest.raises(DecodeError) as info:
        decode_image(bomb)
    assert info.value.code == "image_decode_error" and "too large" in info.value.detail


def test_pixel_data_that_inflates_past_its_header_stops_at_the_header():
    png = bytes(_small("PNG"))
    packed = zlib.compressobj(9)
    idat = b"".join(packed.compress(b"\0" * (1 << 20)) for _ in range(64)) + packed.flush()  # 64 MB for 8x8
    end = png.index(b"IDAT") - 4
    lying = png[:end] + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    pixels, fmt = decode_image(lying)
    assert pixels.shape == (8, 8, 3) and fmt == "png"


def test_gigantic_icc_and_exif_blocks_do_not_stop_the_pixels():
    ramp = np.linspace(0, 255, 48, dtype=np.uint8)
    image = np.stack([np.tile(ramp, (32, 1)), np.tile(ramp[::-1], (32, 1)), np.full((32, 48), 90, np.uint8)], -1)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: about one whole APP1 segment
    Image.fromarray(image).save(buf, format="JPEG", quality=95, icc_profile=b"\0" * 4_000_000, exif=exif)
    assert len(buf.getvalue()) > 4_000_000
    pixels, _ = decode_image(buf.getvalue())
    assert pixels.shape == image.shape and np.abs(pixels.astype(int) - image).mean() < 3


def _video(frames: int, size: tuple[int, int] = (32, 32), fps: int = 25, gop: int = 25) -> bytes:
    rng = np.random.default_rng(1)
    pixels = (rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(frames))
    return encode_frames(pixels, "mkv", "mpeg4", fps=fps, gop=gop, size=size)


def _sample(data: bytes, sampling: VideoSampling, limits: DecodeLimits) -> list:
    return [f for f in sample_video(io.BytesIO(data), sampling, limits=limits) if not isinstance(f, VideoInfo)]


def test_video_frames_over_the_pixel_limit_are_refused_before_any_is_decoded():
    data = _video(10, size=(256, 128))
    gen = sample_video(io.BytesIO(data), VideoSampling(), limits=DecodeLimits(max_pixels=10_000))
    with pytest.raises(DecodeError, match=r"256x128 = 32768 pixels > limit 10000") as info:
        next(gen)  # not even the stream's info is given
    assert info.value.code == "video_too_large"


@pytest.mark.parametrize("policy", ["interval", "all", "keyframes"])
def test_a_stream_of_many_tiny_packets_runs_into_the_packet_budget_whatever_the_sampling(policy):
    data = _video(600, size=(16, 16), fps=600, gop=10)  # one second of 600 packets
    sampling = VideoSampling(policy=policy, interval_s=0.5, max_frames=1000)
    assert len(_sample(data, sampling, DecodeLimits(max_frames_total=1000))) >= 2
    with pytest.raises(DecodeError, match=r"more than 100 packets \(decode.max_frames_total\)") as info:
        _sample(data, sampling, DecodeLimits(max_frames_total=100))
    assert info.value.code == "video_over_budget"


def test_a_looping_stream_runs_into_the_budget():
    """Three copies of one MPEG-TS-like segment one after the other: timestamps start again twice. Sampled by
    time it would go on as long as the stream does; the budget bounds it."""
    segment = _video(100, fps=25)
    looping = segment * 3
    with pytest.raises(DecodeError, match="packets") as info:
        _sample(looping, VideoSampling(policy="all", max_frames=10_000), DecodeLimits(max_frames_total=150))
    assert info.value.code == "video_over_budget"


def test_the_time_budget_stops_a_video_that_takes_too_long():
    with pytest.raises(DecodeError, match=r"decode.max_seconds") as info:
        _sample(_video(50), VideoSampling(policy="all"), DecodeLimits(max_seconds=1e-9))
    assert info.value.code == "video_over_budget"
