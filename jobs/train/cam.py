"""``mediascore train cam``: the CAM localizer trained with Ray Train from image-level labels only.

The driver turns the labelled manifest into a Ray Data dataset of resized images (decoded once, then reused every
epoch) and starts a ``TorchTrainer`` with N workers (DDP; CPU or GPU from config). Rank 0 evaluates on the
validation split after every epoch and writes a self-describing checkpoint, ``latest.json`` and the metrics history
to object storage; every worker resumes from the latest checkpoint when the run (or a restarted worker group)
starts again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
from pydantic import Field

from jobs.common import storage
from jobs.common.config import StrictModel, load_yaml
from jobs.common.storage import read_json
from jobs.media.images import load_resized
from jobs.train.common import RunFiles, TrainSettings, fit, resume, start_worker, train_epochs
from jobs.train.data.cam import ground_truth, labelled_images, read_manifest
from models.cam_net import CamNetConfig
from models.cam_recipe import CamTrainConfig


class CamDataSettings(StrictModel):
    """Which images train and validate, and at what size."""

    manifest: str
    image_size: int = Field(128, ge=32)
    image_types: list[str] = ["photo", "sketch", "cartoon"]
    train_splits: list[str] = ["train"]
    val_splits: list[str] = ["val"]
    val_image_types: list[str] = ["photo"]


class TrainCamSettings(TrainSettings):
    """``mediascore train cam`` config."""

    data: CamDataSettings
    model: CamNetConfig = Field(default_factory=CamNetConfig)
    train: CamTrainConfig = Field(default_factory=CamTrainConfig)
    val_tau_step: float = Field(0.01, gt=0, le=0.1, description="coarser than the eval's 0.001: it runs every epoch")


def load_train_settings(path: str | Path, overrides: dict | None = None) -> TrainCamSettings:
    return load_yaml(TrainCamSettings, path, overrides)


class _LoadImages:
    """Ray Data step: uri -> resized uint8 image."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, batch: dict) -> dict:
        images = np.stack([load_resized(str(u), self.size) for u in batch["uri"]])
        return {"image": images, "label": batch["label"]}


def load_eval_set(rows, classes: list[str], size: int):
    """Normalized images, label indices, GT boxes and masks of ``rows`` at ``size``."""
    import torch

    from jobs.media.images import to_tensor_batch

    images = np.stack([load_resized(u, size) for u in rows.uri]) if len(rows) else np.zeros((0, size, size, 3))
    labels = torch.tensor([classes.index(label) for label in rows.label], dtype=torch.long)
    gts = [ground_truth(r, size) for r in rows.itertuples()]
    return to_tensor_batch(images), labels, [g.boxes for g in gts], [g.mask for g in gts]


def _validation_set(settings: TrainCamSettings, classes: list[str]):
    manifest = read_manifest(settings.data.manifest)
    rows = labelled_images(manifest, settings.data.val_splits, settings.data.val_image_types)
    return load_eval_set(rows, classes, settings.data.image_size)


def train_func(config: dict) -> None:
    """The per-worker loop (runs inside Ray Train)."""
    import ray.train
    import ray.train.torch
    import torch

    from jobs.media.images import MEAN, STD
    from models.cam_net import build_cam_net
    from models.cam_recipe import CamRecipe, evaluate_localization
    from models.checkpoint import checkpoint_bytes

    settings = TrainCamSettings.model_validate(config["settings"])
    rank, world, device = start_worker(settings.seed)
    classes, model_cfg, train_cfg = config["classes"], settings.model, settings.train
    net = build_cam_net(model_cfg)
    files = RunFiles(settings.output)
    steps = max(1, int(np.ceil(config["n_train"] / world / train_cfg.batch_size)))
    recipe = CamRecipe(ray.train.torch.prepare_model(net), train_cfg, steps)
    ckpt, progress = resume(files, settings.resume)
    if ckpt:
        net.load_state_dict(ckpt["state_dict"])
        recipe.load_state_dict(ckpt["optimizer"])
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (MEAN, STD))
    val = _validation_set(settings, classes) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")

    def one_epoch(epoch: int) -> dict:
        sums, n, stats = {"loss": 0.0, "acc": 0.0}, 0, {}
        for batch in shard.iter_torch_batches(
            batch_size=train_cfg.batch_size, local_shuffle_buffer_size=4 * train_cfg.batch_size, device=device
        ):
            x = (batch["image"].permute(0, 3, 1, 2).float() - mean) / std  # (B, 3, S, S)
            stats = recipe.train_step(recipe.augment(x), batch["label"].long())
            sums = {k: sums[k] + float(stats[k]) for k in sums}
            n += 1
        metrics = {"train_loss": sums["loss"] / max(n, 1), "train_acc": sums["acc"] / max(n, 1)}
        metrics["lr"] = float(stats["lr"]) if n else 0.0
        if val is not None and len(val[1]):
            images, labels, boxes, masks = val
            scores = evaluate_localization(
                net, images.to(device), labels.to(device), boxes, masks, tau_step=settings.val_tau_step
            )
            metrics |= {f"val_{k}": v for k, v in scores.items()}
        return metrics

    def checkpoint(epoch: int, metrics: dict) -> bytes:
        data = {
            "manifest": settings.data.manifest,
            "manifest_sha1": config["manifest_sha1"],
            "classes": classes,
            "image_size": settings.data.image_size,
            "tau": metrics.get("val_tau_50", 0.5),  # without a validation split the usual default
        }
        return checkpoint_bytes(
            net, "cam_net", dataclasses.asdict(model_cfg), step=(epoch + 1) * steps, epoch=epoch, metrics=metrics,
            data=data, optimizer_state=recipe.state_dict(),
        )  # fmt: skip

    train_epochs("cam", files, progress, train_cfg.epochs, one_epoch, checkpoint, retry=settings.retry.policy())


def run_train_cam(settings: TrainCamSettings, address: str | None = None) -> dict:
    """Prepare the data, run the trainer, return the last metrics."""
    import ray.data

    from jobs.common.session import ray_session

    with ray_session(settings.ray, address):
        manifest_bytes = storage.read_bytes(settings.data.manifest)
        manifest = read_manifest(settings.data.manifest)
        classes = sorted(manifest.label.dropna().unique().tolist())
        rows = labelled_images(manifest, settings.data.train_splits, settings.data.image_types)
        items = rows[["uri"]].assign(label=[classes.index(label) for label in rows.label])
        ds = (
            ray.data.from_pandas(items)
            .map_batches(
                _LoadImages,
                fn_constructor_args=(settings.data.image_size,),
                batch_size=32,
                compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=1,
            )
            .materialize()
        )  # decoded once, reused every epoch
        loop_config = {
            "settings": settings.model_dump(mode="json"),
            "classes": classes,
            "n_train": len(rows),
            "manifest_sha1": hashlib.sha1(manifest_bytes).hexdigest(),
        }
        fit(train_func, loop_config, settings.scaling, ds, "train-cam")
        return (read_json(RunFiles(settings.output).latest) or {}).get("metrics", {})
