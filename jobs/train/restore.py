"""``mediascore train restore``: the restoration GAN on Ray Train.

1. The quality classifier: reused from ``quality_checkpoint`` or from an earlier run's ``quality.pt``, else trained
   in the driver on measured labels (:mod:`jobs.train.quality`) and written to ``<output>/quality.pt``.
2. Sample images (claims 7-11): the source photos (and corpus images) that meet the size and that the classifier
   calls good; every decision and its reason goes to ``<output>/samples.json``. The kept images are cut into
   patches; every ``val_every``-th patch is kept for validation.
3. A ``TorchTrainer`` with N workers (DDP) fed by ``get_dataset_shard``. Each worker degrades its patches on the
   fly, seeded by (run seed, epoch, patch id): the pairs are reproducible and every epoch sees new degradations.
   Rank 0 scores the EMA generator on the fixed validation pairs after every epoch and writes the full checkpoint
   (generator, EMA generator, discriminator, optimizers), ``latest.json``, ``history.json`` and the inference
   checkpoint ``generator.pt`` (EMA weights only) to object storage; a rerun resumes from ``latest.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from pydantic import Field

from jobs.common import storage
from jobs.common.config import load_yaml
from jobs.common.storage import read_json, write_json
from jobs.media.degrade import DegradeConfig, degrade
from jobs.train.common import RunFiles, TrainSettings, fit, resume, start_worker, train_epochs
from jobs.train.data.restore import QualityLabelSettings, SourceSettings
from models.quality_net import QualityNetConfig
from models.restore_net import DiscriminatorConfig, GeneratorConfig
from models.restore_recipe import RestoreTrainConfig


class TrainRestoreSettings(TrainSettings):
    """``mediascore train restore`` config."""

    sources: SourceSettings = SourceSettings()
    quality: QualityLabelSettings = QualityLabelSettings()
    quality_model: QualityNetConfig = Field(default_factory=QualityNetConfig)
    quality_checkpoint: str | None = Field(None, description="an existing classifier; unset: <output>/quality.pt")
    degrade: DegradeConfig = DegradeConfig()
    patch: int = Field(64, ge=16, description="training crop side (the method's 256; smaller trains faster on CPU)")
    patch_stride: int = Field(48, ge=8)
    min_patch_std: float = Field(
        6.0, ge=0, description="drop flat patches (grey-level std below this): no detail to restore, nothing learned"
    )
    max_patches_per_image: int = Field(96, ge=1, description="a seeded random subset of each image's patches")
    permute_channels: bool = Field(True, description="augmentation: RGB channels in a random order")
    val_every: int = Field(10, ge=2, description="every n-th patch validates instead of training")
    max_val: int = Field(256, ge=1)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    train: RestoreTrainConfig = Field(default_factory=RestoreTrainConfig)


def load_restore_settings(path: str | Path, overrides: dict | None = None) -> TrainRestoreSettings:
    return load_yaml(TrainRestoreSettings, path, overrides)


def paths(output: str) -> dict[str, str]:
    names = ("latest.json", "history.json", "samples.json", "quality.pt", "generator.pt")
    return {name.split(".")[0]: storage.join(output, name) for name in names} | {
        "checkpoints": storage.join(output, "checkpoints")
    }


def make_pairs(patches: np.ndarray, ids: np.ndarray, epoch: int, settings: TrainRestoreSettings):
    """Degraded and clean patches as float tensors ``(B, 3, S, S)`` in [0, 1]; the clean patch is flipped,
    transposed and its channels permuted at random first."""
    from jobs.media.quality import to_tensor

    lq, hq = [], []
    for patch, pid in zip(patches, ids, strict=True):
        rng = np.random.default_rng([settings.seed, epoch, int(pid)])
        clean = patch[:, ::-1] if rng.random() < 0.5 else patch
        clean = clean.transpose(1, 0, 2) if rng.random() < 0.5 else clean
        clean = np.ascontiguousarray(clean[:, :, rng.permutation(3)] if settings.permute_channels else clean)
        lq.append(degrade(clean, settings.degrade, rng)[0])
        hq.append(clean)
    return to_tensor(np.stack(lq)), to_tensor(np.stack(hq))


def validation_pairs(patches: np.ndarray, settings: TrainRestoreSettings):
    """The fixed validation pairs: each patch degraded with its own seed, the same every epoch and run."""
    from jobs.media.quality import to_tensor

    lq = np.stack([degrade(p, settings.degrade, [settings.seed, 1_000_003, i])[0] for i, p in enumerate(patches)])
    return to_tensor(lq), to_tensor(patches)


def validate(generator, val, device) -> dict[str, float]:
    """Mean L1 and PSNR of the generator's output and of the degraded input against the clean patches."""
    import torch

    lq, hq = val
    with torch.no_grad():
        out = torch.cat([generator(lq[i : i + 32].to(device)).clamp(0, 1).cpu() for i in range(0, len(lq), 32)])

    def psnr(a):
        mse = ((a - hq) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
        return float((10 * torch.log10(1 / mse)).mean())

    return {
        "val_l1": float((out - hq).abs().mean()),
        "val_l1_input": float((lq - hq).abs().mean()),
        "val_psnr": psnr(out),
        "val_psnr_input": psnr(lq),
    }


def _networks(settings: TrainRestoreSettings, quality_uri: str):
    """Generator, discriminator (``None`` for L1-only), feature network (``None`` without a perceptual term)."""
    from jobs.media.checkpoints import load_model
    from models.restore_net import build_discriminator, build_generator

    cfg = settings.train
    g = build_generator(settings.generator)
    d = build_discriminator(settings.discriminator) if cfg.adversarial != "none" else None
    feature = load_model(quality_uri, "cpu")[0] if cfg.perceptual > 0 else None
    return cfg, g, d, feature


def _resume_state(recipe, settings: TrainRestoreSettings) -> dict:
    """The raw (not EMA) generator and the discriminator, to resume training from."""
    from models.restore_recipe import unwrap

    def weights(net):
        return {k: v.detach().cpu() for k, v in unwrap(net).state_dict().items()} if net is not None else None

    return {
        "generator": weights(recipe.g),
        "discriminator": weights(recipe.d),
        "discriminator_config": dataclasses.asdict(settings.discriminator),
    }


def _load_recipe(recipe, ckpt: dict) -> None:
    """Optimizer state and EMA weights of a resumed run."""
    recipe.load_state_dict(ckpt["optimizer"])
    if recipe.ema is not None:
        recipe.ema.model.load_state_dict(ckpt["state_dict"])


def train_func(config: dict) -> None:
    """The per-worker loop (runs inside Ray Train)."""
    import ray.train
    import ray.train.torch

    from models.checkpoint import checkpoint_bytes
    from models.restore_recipe import RestoreRecipe

    settings = TrainRestoreSettings.model_validate(config["settings"])
    rank, _, device = start_worker(settings.seed)
    cfg, g, d, feature = _networks(settings, config["quality"])
    files, generator_uri = RunFiles(settings.output), paths(settings.output)["generator"]
    ckpt, progress = resume(files, settings.resume)
    for net, key in ((g, "generator"), (d, "discriminator")):
        if ckpt and net is not None:
            net.load_state_dict(ckpt["extra"][key])
    model_d = ray.train.torch.prepare_model(d) if d is not None else None
    feature = feature.to(device) if feature is not None else None
    recipe = RestoreRecipe(ray.train.torch.prepare_model(g), model_d, cfg, feature)
    if ckpt:
        _load_recipe(recipe, ckpt)
    val = validation_pairs(config["val_patches"], settings) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")

    def one_epoch(epoch: int) -> dict:
        sums, n = {}, 0
        for batch in shard.iter_batches(
            batch_size=cfg.batch_size, batch_format="numpy", local_shuffle_buffer_size=4 * cfg.batch_size
        ):
            lq, hq = make_pairs(batch["patch"], batch["id"], epoch, settings)
            stats = recipe.train_step(lq.to(device), hq.to(device))
            sums = {k: sums.get(k, 0.0) + float(v) for k, v in stats.items()}
            n += 1
        metrics = {"step": recipe.step} | {f"train_{k}": v / max(n, 1) for k, v in sums.items()}
        return metrics | (validate(recipe.inference_generator(), val, device) if val is not None else {})

    def checkpoint(epoch: int, metrics: dict) -> bytes:
        """The full checkpoint (to resume); first ``generator.pt`` (EMA weights only, to restore with)."""
        data = config["data"] | {"quality_checkpoint": config["quality"], "degrade": settings.degrade.model_dump()}
        data["train"] = dataclasses.asdict(settings.train)
        inference = recipe.inference_generator()
        common = {"step": recipe.step, "epoch": epoch, "metrics": metrics, "data": data}
        storage.write_bytes(
            generator_uri, checkpoint_bytes(inference, "restore_generator", settings.generator, **common)
        )
        return checkpoint_bytes(
            inference, "restore_generator", settings.generator, **common, optimizer_state=recipe.state_dict(),
            extra=_resume_state(recipe, settings),
        )  # fmt: skip

    train_epochs(
        "restore",
        files,
        progress,
        cfg.epochs,
        one_epoch,
        checkpoint,
        pointer={"generator": generator_uri},
        retry=settings.retry.policy(),
    )


def source_images(settings: SourceSettings) -> list[tuple[str, np.ndarray]]:
    """(name, RGB image) of every configured source: the photos, then the corpus's images (largest first)."""
    from jobs.media.decode import decode_image
    from jobs.train.data.cam import read_manifest
    from jobs.train.data.restore import check_held_out, load_photo

    check_held_out(settings)
    out = [(f"skimage:{name}", load_photo(name)) for name in settings.photos]
    if settings.corpus_manifest and settings.corpus_limit:
        rows = read_manifest(settings.corpus_manifest)
        usable = (rows.media_type == "image") & rows.broken.isna() & rows.image_type.isin(settings.corpus_image_types)
        rows = rows[usable]
        rows = rows.assign(pixels=rows.width * rows.height).sort_values(["pixels", "uri"], ascending=[False, True])
        for uri in rows.uri.head(settings.corpus_limit):
            out.append((uri, decode_image(storage.read_bytes(uri))[0]))
    return out


def select_samples(images: list[tuple[str, np.ndarray]], settings: SourceSettings, quality_uri: str):
    """The method's filter: size, then quality class. Returns the kept images and a record of every decision."""
    from jobs.media.quality import QualityJudge
    from jobs.train.data.restore import meets_size

    judge = QualityJudge(quality_uri, device="cpu") if settings.quality_filter else None
    kept, record = [], []
    for name, image in images:
        entry = {"source": name, "width": int(image.shape[1]), "height": int(image.shape[0])}
        if not meets_size(image, settings.min_size):
            entry["kept"], entry["reason"] = False, f"smaller than {settings.min_size}x{settings.min_size}"
        elif judge is not None:
            numbers, classes = judge.judge([image])
            entry |= {"quality": round(numbers[0], 2), "quality_class": classes[0]}
            entry["kept"] = classes[0] == "good"
            entry["reason"] = "good" if entry["kept"] else f"quality class {classes[0]}"
        else:
            entry["kept"], entry["reason"] = True, "no quality filter"
        record.append(entry)
        if entry["kept"]:
            kept.append((name, image))
    return kept, record


def _quality_checkpoint(settings: TrainRestoreSettings, images: list[tuple[str, np.ndarray]]) -> str:
    from jobs.train.quality import train_quality_classifier

    if settings.quality_checkpoint:
        return settings.quality_checkpoint
    uri = paths(settings.output)["quality"]
    if settings.resume and storage.exists(uri):
        return uri
    photos = [im for name, im in images if name.startswith("skimage:")] or [im for _, im in images]
    blob = train_quality_classifier(photos, settings.quality, settings.degrade, settings.quality_model, settings.seed)
    storage.write_bytes(uri, blob)
    return uri


def prepare_patches(settings: TrainRestoreSettings) -> dict:
    """Steps 1 and 2: the classifier, the sample filter, the patches (train and validation)."""
    from jobs.train.data.restore import cut_patches

    storage.ensure_bucket(settings.output)
    images = source_images(settings.sources)
    quality_uri = _quality_checkpoint(settings, images)
    kept, record = select_samples(images, settings.sources, quality_uri)
    write_json(paths(settings.output)["samples"], record)
    print(f"[train restore] sample images: kept {len(kept)} of {len(images)} (see {paths(settings.output)['samples']})")
    if not kept:
        raise ValueError("no source image passed the size and quality filter: nothing to train on")
    rng = np.random.default_rng(settings.seed)
    patches = []
    for _, image in kept:
        cut = cut_patches(image, settings.patch, settings.patch_stride)
        cut = cut[cut.reshape(len(cut), -1).std(axis=1) >= settings.min_patch_std]
        patches.append(cut[np.sort(rng.permutation(len(cut))[: settings.max_patches_per_image])])
    patches = np.concatenate(patches)
    is_val = np.arange(len(patches)) % settings.val_every == settings.val_every - 1
    val = patches[is_val][: settings.max_val]
    data = {"sources": [name for name, _ in kept], "held_out": settings.sources.held_out}
    data |= {"train_patches": int((~is_val).sum()), "val_patches": len(val), "patch": settings.patch}
    return {"quality": quality_uri, "train": patches[~is_val], "val": val, "data": data}


def run_train_restore(settings: TrainRestoreSettings, address: str | None = None) -> dict:
    """Prepare the patches, run the trainer, return the last epoch's metrics."""
    import ray.data

    from jobs.common.session import ray_session

    with ray_session(settings.ray, address):
        prepared = prepare_patches(settings)
        train = prepared["train"]
        ds = ray.data.from_items([{"patch": p, "id": i} for i, p in enumerate(train)]).materialize()
        loop_config = {
            "settings": settings.model_dump(mode="json"),
            "quality": prepared["quality"],
            "val_patches": prepared["val"],
            "data": prepared["data"],
        }
        fit(train_func, loop_config, settings.scaling, ds, "train-restore")
        return (read_json(RunFiles(settings.output).latest) or {}).get("metrics", {})
