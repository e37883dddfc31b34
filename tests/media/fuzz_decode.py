"""The coverage-guided fuzz harness of the decoders (atheris, libFuzzer's engine over Python code).

    python tests/media/fuzz_decode.py CORPUS_DIR -max_total_time=300

Any exception other than :class:`DecodeError` is a crash: libFuzzer writes the input as ``crash-<hash>`` and exits
non-zero. Keep such an input in ``tests/fuzz_corpus/decode`` once it is fixed. Images and videos are told apart by
their first bytes, as ingestion does.
"""

import io
import sys
import warnings

import atheris

with atheris.instrument_imports(include=["jobs", "PIL"]):
    from jobs.common.config import VideoSampling
    from jobs.media.decode import DecodeError, DecodeLimits, decode_image, sample_video, sniff

LIMITS = DecodeLimits(max_pixels=1_000_000, max_frames_total=500, max_seconds=20.0)
SAMPLING = VideoSampling(policy="all", max_frames=8)


def one_input(data: bytes) -> None:
    try:
        if sniff(data[:64]) == "video":
            for _ in sample_video(io.BytesIO(data), SAMPLING, limits=LIMITS):
                pass
        else:
            decode_image(data, LIMITS.max_pixels)
    except DecodeError:
        pass


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # Pillow warns about every damaged tag; only exceptions matter here
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
