"""Restoration inference: the generator applied to images and video frames, tiled (Ray-free)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from jobs.media.images import encode_image

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
        from jobs.media.checkpoints import device_for, load_model

        self.device = device_for(device)
        self.model, meta, self.info = load_model(checkpoint, self.device)
        self.tile, self.overlap = tile, overlap
        self.meta = meta
        self.version = self.info["version"]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import torch

        from jobs.media.quality import to_tensor
        from models.tiling import tiled_apply

        x = to_tensor(image[None]).to(self.device)
        with torch.no_grad():
            y = tiled_apply(self.model, x, self.tile, self.overlap) if self.tile else self.model(x)
        return (y[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def restore_image_bytes(data: bytes, restore: Callable[[np.ndarray], np.ndarray], ext: str) -> bytes:
    """Decode, restore and re-encode one image in the format its extension names."""
    from jobs.media.decode import decode_image

    image, _ = decode_image(data)
    return encode_image(restore(image), IMAGE_EXTS[ext], quality=95)


def restore_video_bytes(data: bytes, restore: Callable[[np.ndarray], np.ndarray], ext: str) -> tuple[bytes, int]:
    """Decode every frame, restore it and encode the frames again; returns the bytes and the frame count."""
    import av

    from jobs.media.videoenc import encode_frames

    container_name, encoder = VIDEO_ENCODERS[ext]
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        fps = max(1, round(float(stream.average_rate or 25)))
        frames = [restore(frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)]
    if not frames:
        raise ValueError("the video has no decodable frame")
    h, w = frames[0].shape[:2]
    return encode_frames(frames, container_name, encoder, fps, gop=2 * fps, size=(w, h)), len(frames)
