"""The quality judge: a trained quality classifier applied to whole images (Ray-free).

A whole image is judged by the mean class probabilities of crops spread over it at native resolution:
resizing a frame to the classifier's input would hide the blur and noise it must see."""

from __future__ import annotations

import numpy as np

from jobs.media.images import grid_crops


def to_tensor(images: np.ndarray):
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in ``[0, 1]``."""
    import torch

    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # torch wants a writable buffer (decoded images may be read-only views)
        images = images.copy()
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


class QualityJudge:
    """A trained quality classifier applied to whole images: quality number (0-100) and class per image."""

    def __init__(self, checkpoint: str, device: str | None = None):
        from jobs.media.checkpoints import device_for, load_model

        self.device = device_for(device)
        self.model, meta, self.info = load_model(checkpoint, self.device)
        self.crop, self.patches = int(meta["data"]["crop"]), int(meta["data"]["judge_patches"])
        self.version = self.info["version"]

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Mean class probabilities ``(3,)`` over crops of one RGB uint8 image."""
        import torch

        crops = grid_crops(image, self.crop, self.patches)
        with torch.no_grad():
            probs = torch.softmax(self.model(to_tensor(crops).to(self.device)), dim=1)
        return probs.mean(0).cpu().numpy()

    def judge(self, images: list[np.ndarray]) -> tuple[list[float], list[str]]:
        """Quality numbers and class names of RGB uint8 images."""
        import torch

        from models.quality_net import CLASSES, quality_number

        probs = np.stack([self.probabilities(im) for im in images])
        numbers = quality_number(torch.from_numpy(probs)).tolist()
        return [float(v) for v in numbers], [CLASSES[int(i)] for i in probs.argmax(1)]
