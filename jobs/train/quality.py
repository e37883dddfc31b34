"""Training of the image quality classifier (poor / medium / good); its use is :mod:`jobs.media.quality`. Ray-free.

The classifier is small and trains in a minute on CPU from measured labels (see :mod:`jobs.train.data.restore`), so
``mediascore train restore`` trains it in the driver before the GAN and stores it as its own self-describing
checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from jobs.media.degrade import DegradeConfig
from jobs.media.quality import to_tensor
from jobs.train.data.restore import QualityLabelSettings, quality_examples
from models.quality_net import QualityNetConfig

log = logging.getLogger(__name__)


def train_quality_classifier(
    images: list[np.ndarray],
    cfg: QualityLabelSettings,
    degrade_cfg: DegradeConfig,
    net_cfg: QualityNetConfig,
    seed: int,
) -> bytes:
    """Train on measured labels (90 % of the crops) and return the checkpoint bytes; held-out accuracy and the
    class counts go into its metrics."""
    import torch
    import torch.nn.functional as F

    from models.checkpoint import checkpoint_bytes
    from models.quality_net import CLASSES, build_quality_net

    torch.manual_seed(seed)
    crops, _, labels = quality_examples(images, cfg, degrade_cfg, seed)
    n_val = max(1, len(crops) // 10)
    x, y = to_tensor(crops), torch.from_numpy(labels)
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
