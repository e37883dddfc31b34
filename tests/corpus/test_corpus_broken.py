"""The broken files are broken in exactly the intended way."""

from __future__ import annotations

import io
import struct
import time
import zlib

import av
import pytest
from PIL import Image

from jobs.corpus import broken


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == broken.PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks


@pytest.fixture(scope="module")
def files() -> dict[str, broken.BrokenFile]:
    return {f.kind: f for f in broken.broken_files(0)}


def test_bomb_png_is_small_fast_and_valid():
    start = time.perf_counter()
    data = broken.bomb_png()
    assert time.perf_counter() - start < 1.0
    assert len(data) < 200_000
    chunks = _chunks(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert width * height > 100_000_000 and (depth, colour) == (1, 0)
    decompressor, raw = zlib.decompressobj(), 0
    for kind, payload in chunks:
        if kind == b"IDAT":
            raw += len(decompressor.decompress(payload, 0))
    assert decompressor.eof and raw == height * (1 + (width + 7) // 8)


def test_bomb_header_reports_too_many_pixels(files):
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(files["too_many_pixels"].data))


def test_empty_and_truncated_images(files):
    assert files["empty"].data == b""
    with pytest.raises(OSError):
        Image.open(io.BytesIO(files["truncated_jpeg"].data)).load()
    full = broken.small_jpeg(0)
    assert full.startswith(files["truncated_jpeg"].data) and Image.open(io.BytesIO(full)).load() is not None


def test_truncated_mp4_fails_in_pyav(files):
    with pytest.raises(av.FFmpegError), av.open(io.BytesIO(files["truncated_mp4"].data)) as container:
        for _ in container.decode(video=0):
            pass


def test_video_named_jpg_is_a_playable_mp4(files):
    data = files["video_named_jpg"].data
    assert files["video_named_jpg"].key.endswith(".jpg")
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(data))
    with av.open(io.BytesIO(data)) as container:
        assert "mp4" in container.format.name
        assert sum(1 for _ in container.decode(video=0)) > 0
    assert data[: len(files["truncated_mp4"].data)] == files["truncated_mp4"].data
