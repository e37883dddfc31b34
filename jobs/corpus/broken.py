"""Broken inputs, each broken in one known way, for testing that readers fail cleanly.

- ``broken/empty.png``: zero bytes;
- ``broken/truncated.jpg``: a corpus-style photo JPEG cut to 60 % of its bytes (no end-of-image marker);
- ``broken/truncated.mp4``: a valid MP4 cut to 50 % (its ``moov`` index, written last, is lost);
- ``broken/video_named.jpg``: the bytes of a valid MP4 under a ``.jpg`` name;
- ``broken/bomb.png``: a valid PNG declaring 20000 x 20000 1-bit grey pixels, all black, about 50 KB on disk.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from dataclasses import dataclass

from jobs.corpus import encode, render, scene, video, videoenc
from jobs.corpus.spec import STREAM_BROKEN, item_rng

BROKEN_SCENE_ID = 999_999
BROKEN_VIDEO_ID = 999_999
BOMB_SIDE = 20_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDAT_CHUNK = 1 << 16


@dataclass(frozen=True)
class BrokenFile:
    """One broken object: its key, what is wrong with it, and what its name claims it is."""

    key: str
    kind: str
    media_type: str
    format: str
    data: bytes


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels, compressed one row at a time."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale, no interlace
    row = b"\x00" * (1 + (width + 7) // 8)  # filter type 0, then the packed bits
    compressor = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    stream = b"".join(parts)
    idats = [_chunk(b"IDAT", stream[i : i + IDAT_CHUNK]) for i in range(0, len(stream), IDAT_CHUNK)]
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + b"".join(idats) + _chunk(b"IEND", b"")


def small_jpeg(seed: int) -> bytes:
    """A valid photo-style corpus JPEG."""
    sample = scene.sample_scene(seed, BROKEN_SCENE_ID)
    rgb = render.render_scene(sample, "photo", item_rng(seed, STREAM_BROKEN, 0))
    return encode.encode_image(rgb, encode.Encoding("jpeg", 90))


def small_mp4(seed: int) -> bytes:
    """A valid two-second H.264 MP4 in the corpus style."""
    spec = video.sample_video(seed, BROKEN_VIDEO_ID)
    spec = dataclasses.replace(
        spec, container="mp4", encoder="libx264", codec="h264", num_frames=min(spec.num_frames, 2 * spec.fps)
    )
    return videoenc.encode_video(spec)


def broken_files(seed: int) -> list[BrokenFile]:
    """All broken objects of a corpus, in key order."""
    jpeg, mp4 = small_jpeg(seed), small_mp4(seed)
    files = [
        BrokenFile("broken/bomb.png", "too_many_pixels", "image", "png", bomb_png()),
        BrokenFile("broken/empty.png", "empty", "image", "png", b""),
        BrokenFile("broken/truncated.jpg", "truncated_jpeg", "image", "jpeg", jpeg[: int(len(jpeg) * 0.6)]),
        BrokenFile("broken/truncated.mp4", "truncated_mp4", "video", "mp4", mp4[: len(mp4) // 2]),
        BrokenFile("broken/video_named.jpg", "video_named_jpg", "image", "jpeg", mp4),
    ]
    return sorted(files, key=lambda f: f.key)
