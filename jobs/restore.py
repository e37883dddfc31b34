"""Restoration at inference: whole images of any size by blended tiles, videos frame by frame, and the
``mediascore restore --input URI --output URI`` job. Ray-free.

The generator is fully convolutional, so a frame could go through in one call; tiles bound the memory a 4K frame
needs and keep the work the same shape on every frame. Videos are restored frame by frame (the method has no
temporal module) and re-encoded with FFmpeg through PyAV at the source's frame rate (rounded to whole frames per
second) and size. A file that cannot be read, decoded or encoded is recorded with its reason in the job's report
and the job goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import PurePosixPath

import numpy as np

from jobs.common import storage
from jobs.media.decode import describe
from jobs.media.restorer import IMAGE_EXTS, VIDEO_ENCODERS, restore_image_bytes, restore_video_bytes

log = logging.getLogger(__name__)


def _target(input_uri: str, output_uri: str, uri: str) -> str:
    prefix = input_uri.rstrip("/")
    relative = uri[len(prefix) :].lstrip("/") if uri.startswith(prefix) and uri != prefix else PurePosixPath(uri).name
    return storage.join(output_uri, relative)


def run_restore(input_uri: str, output_uri: str, restore: Callable[[np.ndarray], np.ndarray]) -> dict:
    """Restore every image and video under ``input_uri`` into ``output_uri`` (same relative names); returns the
    report that is also written to ``_restore.json`` there."""
    exts = set(IMAGE_EXTS) | set(VIDEO_ENCODERS)
    objects = list(storage.list_objects(input_uri, extensions=exts))
    report: dict = {"input": input_uri, "output": output_uri, "restored": [], "failed": []}
    started = time.monotonic()
    for i, obj in enumerate(objects):
        ext = PurePosixPath(obj.uri).suffix.lower()
        target = _target(input_uri, output_uri, obj.uri)
        try:
            data = storage.read_bytes(obj.uri)
            if ext in IMAGE_EXTS:
                out, frames = restore_image_bytes(data, restore, ext), 1
            else:
                out, frames = restore_video_bytes(data, restore, ext)
            storage.write_bytes(target, out)
            report["restored"].append({"source": obj.uri, "output": target, "frames": frames})
        except Exception as exc:  # one bad file must not stop the job
            log.warning("restore failed for %s: %s", obj.uri, exc)
            report["failed"].append({"source": obj.uri, "error": f"{type(exc).__name__}: {describe(exc)}"})
        print(f"[restore] {i + 1}/{len(objects)} {obj.uri} ({time.monotonic() - started:.1f} s)", flush=True)
    report["seconds"] = round(time.monotonic() - started, 2)
    storage.write_bytes(storage.join(output_uri, "_restore.json"), json.dumps(report, indent=1).encode())
    return report
