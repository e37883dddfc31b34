"""``mediascore train cam``: the CAM localizer trained with Ray Train from image-level labels only.

The driver turns the labelled manifest into a Ray Data dataset of resized images (decoded once, then reused every
epoch) and starts a ``TorchTrainer`` with N workers (DDP; CPU or GPU from config). Rank 0 evaluates on the
validation split after every epoch and writes a self-describing checkpoint, ``latest.json`` and the metrics history
to object storage; every worker resumes from the latest checkpoint when the run (or a restarted worker group)
starts again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

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
    type_ratio: dict[str, float] | None = Field(
        None, description="training images kept per type, relative (5:1:1 is seed 002's mix); the scale is the "
        "largest every named type can fill, types left out keep all, subsampled reproducibly by seed"
    )  # fmt: skip

    @model_validator(mode="after")
    def _check_ratio(self) -> CamDataSettings:
        if self.type_ratio is not None:
            unknown = set(self.type_ratio) - set(self.image_types)
            if unknown or any(v <= 0 for v in self.type_ratio.values()):
                raise ValueError(f"data.type_ratio: positive ratios of data.image_types only (got {self.type_ratio})")
        return self


class TrainCamSettings(TrainSettings):
    """``mediascore train cam`` config."""

    data: CamDataSettings
    model: CamNetConfig = Field(default_factory=CamNetConfig)
    train: CamTrainConfig = Field(default_factory=CamTrainConfig)
    val_tau_step: float = Field(0.01, gt=0, le=0.1, description="coarser than the eval's 0.001: it runs every epoch")

    @model_validator(mode="after")
    def _check_types(self) -> TrainCamSettings:
        adv = self.train.adversarial_type
        if adv.enabled and set(adv.image_types) != set(self.data.image_types):
            raise ValueError(
                f"train.adversarial_type.image_types {list(adv.image_types)} must be the training types "
                f"data.image_types {self.data.image_types}: D classifies every training image"
            )
        if self.train.batches.stratify_by not in (None, "image_type"):
            raise ValueError(
                f"train.batches.stratify_by: only image_type (or null), got {self.train.batches.stratify_by}"
            )
        return self

    def type_index(self, image_type: str) -> int:
        """The index D uses for an image type (the adversarial head's order when it is enabled)."""
        adv = self.train.adversarial_type
        return list(adv.image_types if adv.enabled else self.data.image_types).index(image_type)


def load_train_settings(path: str | Path, overrides: dict | None = None) -> TrainCamSettings:
    return load_yaml(TrainCamSettings, path, overrides)


class _LoadImages:
    """Ray Data step: uri -> resized uint8 image."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, batch: dict) -> dict:
        images = np.stack([load_resized(str(u), self.size) for u in batch["uri"]])
        return {"image": images} | {k: batch[k] for k in ("label", "type", "worker", "index")}


def subsample_types(rows: pd.DataFrame, ratio: dict[str, float] | None, seed: int) -> pd.DataFrame:
    """``rows`` with each type in ``ratio`` cut to ``ratio[type] * scale`` images, ``scale`` the largest that
    every named type can fill."""
    if not ratio:
        return rows
    counts = rows.image_type.value_counts()
    scale = min(counts.get(t, 0) / r for t, r in ratio.items())
    keep = [
        group.sample(n=int(round(ratio[t] * scale)), random_state=seed) if t in ratio else group
        for t, group in rows.groupby("image_type", sort=True)
    ]
    return pd.concat(keep).sort_index().reset_index(drop=True)


def training_items(rows: pd.DataFrame, classes: list[str], settings: TrainCamSettings) -> pd.DataFrame:
    """What the training dataset carries per image: uri, label and type indices, its row number, and the worker
    whose stratified partition holds it (each type dealt round-robin, so every worker holds every type)."""
    world = settings.scaling.num_workers
    return pd.DataFrame({
        "uri": rows.uri.to_numpy(),
        "label": [classes.index(label) for label in rows.label],
        "type": [settings.type_index(t) for t in rows.image_type],
        "worker": (rows.groupby("image_type").cumcount() % world).to_numpy(),
        "index": np.arange(len(rows)),
    })  # fmt: skip


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
    batches = _Batches(ray.train.get_dataset_shard("train"), train_cfg, steps, rank, settings.seed, device)

    def one_epoch(epoch: int) -> dict:
        sums: dict[str, float] = {}
        n, stats = 0, {}
        for batch in batches(epoch):
            x = (batch["image"].permute(0, 3, 1, 2).float() - mean) / std  # (B, 3, S, S)
            stats = recipe.train_step(recipe.augment(x), batch["label"].long(), batch["type"].long())
            sums = {k: sums.get(k, 0.0) + float(v) for k, v in stats.items() if k != "lr"}
            n += 1
        metrics = {f"train_{k}": v / max(n, 1) for k, v in sums.items()}
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

    stop, retry = functools.partial(_error_reached, train_cfg.stop_val_error), settings.retry.policy()
    train_epochs("cam", files, progress, train_cfg.epochs, one_epoch, checkpoint, retry=retry, stop=stop)


def _error_reached(threshold: float | None, metrics: dict) -> bool:
    """``train.stop_val_error``: the validation top-1 error (a fraction) is at or below ``threshold``."""
    return threshold is not None and 1 - metrics.get("val_top1", 0.0) / 100 <= threshold


class _Batches:
    """A worker's training batches of one epoch: Ray Data's shuffled shard, or, with ``batches.stratify_by``, the
    worker's own partition (held in memory: the dataset reaches every worker whole and each keeps the rows dealt
    to it) drawn as type-stratified batches, ``steps`` of them on every worker so that DDP stays in step."""

    def __init__(self, shard, cfg: CamTrainConfig, steps: int, rank: int, seed: int, device):
        self.shard, self.cfg, self.steps, self.rank, self.seed, self.device = shard, cfg, steps, rank, seed, device
        self.part: dict[str, np.ndarray] | None = None

    def _partition(self) -> dict[str, np.ndarray]:
        kept = [
            {k: v[b["worker"] == self.rank] for k, v in b.items()}
            for b in self.shard.iter_batches(batch_size=256, batch_format="numpy")
        ]
        part = {k: np.concatenate([b[k] for b in kept]) for k in kept[0]}
        order = np.argsort(part["index"], kind="stable")  # the dataset's block order is not the row order
        return {k: v[order] for k, v in part.items()}

    def __call__(self, epoch: int):
        import torch

        from models.batches import StratifiedBatches

        if self.cfg.batches.stratify_by is None:
            bs = self.cfg.batch_size
            yield from self.shard.iter_torch_batches(
                batch_size=bs, local_shuffle_buffer_size=4 * bs, device=self.device
            )
            return
        if self.part is None:
            self.part = self._partition()
        seed = (self.seed * 1000 + self.rank) * 100_003 + epoch
        sampler = StratifiedBatches(self.part["type"], self.cfg.batch_size, self.cfg.batches, seed, self.steps)
        for idx in sampler:
            yield {k: torch.as_tensor(self.part[k][idx], device=self.device) for k in ("image", "label", "type")}


def run_train_cam(settings: TrainCamSettings, address: str | None = None) -> dict:
    """Prepare the data, run the trainer, return the last metrics."""
    import ray.data

    from jobs.common.session import ray_session

    with ray_session(settings.ray, address):
        manifest_bytes = storage.read_bytes(settings.data.manifest)
        manifest = read_manifest(settings.data.manifest)
        classes = sorted(manifest.label.dropna().unique().tolist())
        rows = labelled_images(manifest, settings.data.train_splits, settings.data.image_types)
        rows = subsample_types(rows, settings.data.type_ratio, settings.seed)
        val_rows = labelled_images(manifest, settings.data.val_splits, settings.data.val_image_types)
        if settings.train.stop_val_error is not None and val_rows.empty:
            raise ValueError("train.stop_val_error needs validation images: data.val_splits has none")
        items = training_items(rows, classes, settings)
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
        split = settings.train.batches.stratify_by is None  # stratified: every worker deals itself its partition
        fit(train_func, loop_config, settings.scaling, ds, "train-cam", split=split)
        return (read_json(RunFiles(settings.output).latest) or {}).get("metrics", {})
