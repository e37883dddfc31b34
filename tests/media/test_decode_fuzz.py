"""Property-based fuzzing of the decoders: any bytes either decode within the limits or fail with a
:class:`DecodeError` and a known reason, never anything else.

Inputs are the seed corpus in ``tests/fuzz_corpus/decode`` (small valid files of every format we read, plus any
input a fuzzer once found interesting) cut short, bit-flipped, overwritten with large values and spliced with
random bytes, and plain random bytes. The default run is derandomized (the same examples on every machine, no
example database written); ``make test-slow`` runs many more, randomized, and the coverage-guided atheris
harness in ``fuzz_decode.py``. A failure found there is kept by adding its input to the corpus.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.common.config import VideoSampling
from jobs.media.decode import DecodeError, DecodeLimits, decode_image, sample_video, sniff

CORPUS = Path(__file__).resolve().parents[1] / "fuzz_corpus" / "decode"
SEEDS = {path.name: path.read_bytes() for path in sorted(CORPUS.iterdir())}
IMAGE_CODES = {"empty_object", "image_too_large", "image_decode_error", "image_truncated"}
VIDEO_CODES = {"video_open_error", "video_no_stream", "video_decode_error", "video_truncated", "video_too_large",
               "video_over_budget"}  # fmt: skip
MAX_PIXELS = 1_000_000
BRIEF = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
LONG = settings(max_examples=20_000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] ^= value or 1
    return bytes(out)


def _overwrite(data: bytes, position: int, value: bytes) -> bytes:
    position %= len(data)
    return data[:position] + value + data[position + len(value) :]


@st.composite
def mutated(draw, names: list[str]) -> bytes:
    """A seed from the corpus, changed the ways a damaged or hostile file is: cut, flipped, stretched, spliced."""
    data = SEEDS[draw(st.sampled_from(names))]
    how = draw(st.sampled_from(["cut", "flip", "stretch", "splice", "as is"]))
    if how == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if how == "flip":
        return _flip(data, draw(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1,
                                         max_size=16)))  # fmt: skip
    if how == "stretch":  # a size or count field set to a huge value
        huge = draw(st.sampled_from([b"\xff\xff", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00"]))
        return _overwrite(data, draw(st.integers(0, 1 << 16)), huge)
    if how == "splice":
        position = draw(st.integers(0, len(data)))
        return data[:position] + draw(st.binary(max_size=64)) + data[position:]
    return data


IMAGES = [name for name in SEEDS if sniff(SEEDS[name][:64]) == "image"]
VIDEOS = [name for name in SEEDS if sniff(SEEDS[name][:64]) == "video"]


def check_image(data: bytes) -> None:
    try:
        pixels, fmt = decode_image(data, MAX_PIXELS)
    except DecodeError as exc:
        assert exc.code in IMAGE_CODES and exc.detail, exc
        return
    assert pixels.dtype.name == "uint8" and pixels.ndim == 3 and pixels.shape[2] == 3 and fmt
    assert 0 < pixels.shape[0] * pixels.shape[1] <= MAX_PIXELS


def check_video(data: bytes) -> None:
    limits = DecodeLimits(max_pixels=MAX_PIXELS, max_frames_total=500, max_seconds=20.0)
    try:
        for _ in sample_video(io.BytesIO(data), VideoSampling(policy="all", max_frames=8), limits=limits):
            pass
    except DecodeError as exc:
        assert exc.code in VIDEO_CODES and exc.detail, exc


def test_the_corpus_has_every_format_and_its_findings_are_handled():
    """Named seeds are valid files; ``cov-*`` inputs are what the coverage-guided fuzzer kept, ``found-*`` ones
    once crashed a decoder."""
    valid = {"rgb.png", "rgb.jpg", "rgb.gif", "lossless.webp", "rgb.tiff", "rgb.bmp"}
    assert valid <= set(IMAGES) and {"tiny.mkv", "tiny.mp4"} <= set(VIDEOS)
    for name in valid:
        decode_image(SEEDS[name])
    assert any(name.startswith("cov-") for name in SEEDS) and any(name.startswith("found-") for name in SEEDS)
    for name, data in SEEDS.items():
        check_video(data) if name in VIDEOS else check_image(data)


@BRIEF
@given(st.one_of(mutated(IMAGES), st.binary(max_size=256)))
def test_any_image_bytes_decode_or_fail_with_a_reason(data):
    check_image(data)


@settings(BRIEF, max_examples=60)
@given(mutated(VIDEOS))
def test_any_video_bytes_sample_or_fail_with_a_reason(data):
    check_video(data)


@pytest.mark.slow
@LONG
@given(st.one_of(mutated(IMAGES), st.binary(max_size=4096)))
def test_any_image_bytes_decode_or_fail_with_a_reason_long(data):
    check_image(data)


@pytest.mark.slow
@settings(LONG, max_examples=2000)
@given(mutated(VIDEOS))
def test_any_video_bytes_sample_or_fail_with_a_reason_long(data):
    check_video(data)


def _atheris(seconds: int, tmp_path: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in SEEDS.items():
        (corpus / name).write_bytes(data)
    harness = Path(__file__).with_name("fuzz_decode.py")
    command = [sys.executable, str(harness), str(corpus), f"-max_total_time={seconds}", "-rss_limit_mb=3072",
               "-timeout=30", f"-artifact_prefix={tmp_path}/"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, env=os.environ)


def test_coverage_guided_fuzzing_finds_no_crash_briefly(tmp_path):
    result = _atheris(4, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_coverage_guided_fuzzing_finds_no_crash(tmp_path):
    result = _atheris(300, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
