"""Training and use of the image quality classifier (poor / medium / good). Ray-free.

The classifier is small and trains in a minute on CPU from measured labels (see :mod:`jobs.restore_data`), so
``mediascore train restore`` trains it in the driver before the GAN and stores it as its own self-describing
checkpoint. A whole image is judged by the mean class probabilities of crops spread over it at native resolution:
resizing a frame to the classifier's input would hide the blur and noise it must see.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from jobs import storage
from jobs.degrade import DegradeConfig
from jobs.restore_data import QualityLabelSettings, grid_crops, quality_examples

log = logging.getLogger(__name__)


def to_tensor(images: np.ndarray):
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in ``[0, 1]``."""
    import torch

    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # torch wants a writable buffer (decoded images may be read-only views)
        images = images.copy()
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def train_quality_classifier(
    images: list[np.ndarray], cfg: QualityLabelSettings, degrade_cfg: DegradeConfig, model: dict, seed: int
) -> bytes:
    """Train on measured labels (90 % of the crops) and return the checkpoint bytes; held-out accuracy and the
    class counts go into its metrics."""
    import torch
    import torch.nn.functional as F

    from models.checkpoint import checkpoint_bytes
    from models.quality_net import CLASSES, build_quality_net, quality_net_config_from_dict

    torch.manual_seed(seed)
    crops, _, labels = quality_examples(images, cfg, degrade_cfg, seed)
    n_val = max(1, len(crops) // 10)
    x, y = to_tensor(crops), torch.from_numpy(labels)
    net_cfg = quality_net_config_from_dict(model)
    net = build_quality_net(net_cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    weight = 1.0 / torch.bincount(y[n_val:], minlength=len(CLASSES)).clamp(min=1).float()
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x) - n_val) + n_val
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            batch = x[idx].flip(3) if torch.rand(()) < 0.5 else x[idx]
            loss = F.cross_entropy(net(batch), y[idx], weight=weight / weight.sum() * len(CLASSES))
            opt.zero_grad()
            loss.backward()
            opt.step()
        log.info("quality classifier epoch %d: loss %.4f", epoch, loss.item())
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x[:n_val]).argmax(1) == y[:n_val]).float().mean())
    counts = {c: int((labels == i).sum()) for i, c in enumerate(CLASSES)}
    print(f"[train restore] quality classifier: held-out accuracy {accuracy:.3f} on {n_val} crops; classes {counts}")
    metrics = {"val_accuracy": accuracy, "class_counts": counts, "crops": len(crops)}
    data = {"label_db": [cfg.db_low, cfg.db_high], "degrade": degrade_cfg.model_dump(), "crop": cfg.crop}
    data["judge_patches"] = cfg.judge_patches
    return checkpoint_bytes(
        net, "quality_net", dataclasses.asdict(net_cfg), step=0, epoch=cfg.epochs - 1, metrics=metrics, data=data
    )


class QualityJudge:
    """A trained quality classifier applied to whole images: quality number (0-100) and class per image."""

    def __init__(self, checkpoint: str, device: str | None = None):
        import torch

        from models.checkpoint import build_from_checkpoint, describe

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, meta = build_from_checkpoint(storage.read_bytes(checkpoint), self.device)
        self.crop, self.patches = int(meta["data"]["crop"]), int(meta["data"]["judge_patches"])
        self.info = describe(meta, checkpoint)
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
