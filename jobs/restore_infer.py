"""Restoration at inference: whole images of any size by blended tiles, videos frame by frame, and the
``mediascore restore --input URI --output URI`` job. Ray-free.

The generator is fully convolutional, so a frame could go through in one call; tiles bound the memory a 4K frame
needs and keep the work the same shape on every frame. Videos are restored frame by frame (the method has no
temporal module) and re-encoded with FFmpeg through PyAV at the source's frame rate (rounded to whole frames per
second) and size. A file that cannot be read, decoded or encoded is recorded with its reason in the job's report
and the job goes on.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from jobs import storage
from jobs.decode import describe

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}
VIDEO_ENCODERS = {".mp4": ("mp4", "libx264"), ".mkv": ("mkv", "libx264"), ".webm": ("webm", "libvpx-vp9")}


class Restorer:
    """A trained generator (from a ``mediascore train restore`` checkpoint) over RGB uint8 images.

    Args:
        checkpoint: URI of the generator checkpoint (the EMA weights when the run kept an EMA).
        tile: tile side in pixels (0: the whole image in one call).
        overlap: pixels shared by neighbouring tiles.
        device: ``cuda`` / ``cpu``; unset: CUDA when there is one.
    """

    def __init__(self, checkpoint: str, tile: int = 256, overlap: int = 32, device: str | None = None):
        import torch

        from models.checkpoint import build_from_checkpoint, describe

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, meta = build_from_checkpoint(storage.read_bytes(checkpoint), self.device)
        self.tile, self.overlap = tile, overlap
        self.meta = meta
        self.info = describe(meta, checkpoint)
        self.version = self.info["version"]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import torch

        from jobs.quality_classifier import to_tensor
        from models.tiling import tiled_apply

        x = to_tensor(image[None]).to(self.device)
        with torch.no_grad():
            y = tiled_apply(self.model, x, self.tile, self.overlap) if self.tile else self.model(x)
        return (y[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def restore_image_bytes(data: bytes, restore: Callable[[np.ndarray], np.ndarray], ext: str) -> bytes:
    """Decode, restore and re-encode one image in the format its extension names."""
    from jobs.decode import decode_image

    image, _ = decode_image(data, max_pixels=64_000_000)
    buf = io.BytesIO()
    fmt = IMAGE_EXTS[ext]
    Image.fromarray(restore(image)).save(buf, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def restore_video_bytes(data: bytes, restore: Callable[[np.ndarray], np.ndarray], ext: str) -> tuple[bytes, int]:
    """Decode every frame, restore it and encode the frames again; returns the bytes and the frame count."""
    import av

    from jobs.corpus.videoenc import encode_frames

    container_name, encoder = VIDEO_ENCODERS[ext]
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        fps = max(1, round(float(stream.average_rate or 25)))
        frames = [restore(frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)]
    if not frames:
        raise ValueError("the video has no decodable frame")
    h, w = frames[0].shape[:2]
    return encode_frames(frames, container_name, encoder, fps, gop=2 * fps, size=(w, h)), len(frames)


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
