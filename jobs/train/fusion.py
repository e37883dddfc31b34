"""``mediascore train fusion``: the fusion scorer trained with Ray Train on frozen features cached as Parquet.

1. Features: ``mediascore score`` with the ``ocr``, ``text_embed`` and ``objects`` stages over the corpus images
   (resumable; skipped when complete).
2. Cache: Ray Data joins those rows with the manifest's risk labels, decodes each image once and runs the frozen
   upstream CNN (the CAM localizer's backbone) over the whole image and every object crop; the pooled maps, the
   text features and a small copy of the image (for the trainable key module) go to Parquet.
3. Training: a ``TorchTrainer`` with N workers fed by ``get_dataset_shard``. Every worker scores the validation
   split after each epoch (the same numbers on every worker, so all stop together without talking); rank 0 writes
   the epoch's checkpoint, ``latest.json``, ``best.json`` (lowest validation loss) and the metrics history to
   object storage. A rerun resumes after the latest epoch; training stops early after ``patience`` epochs without
   a lower validation loss.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from jobs.common import storage
from jobs.common.config import StrictModel, load_config, load_yaml, resolve_path
from jobs.common.storage import read_json, write_json
from jobs.train.common import RunFiles, TrainSettings, fit, resume, start_worker, train_epochs
from models.fusion import FusionConfig
from models.fusion_recipe import FusionTrainConfig

CLASSES = ["safe", "risky"]
CAUSE_MODALITY = {"text": "text", "object": "object", "region": "key", "style": "style"}
FEATURE_STAGES = ["ocr", "text_embed", "objects"]
TEXT_COLUMNS = ["text_tokens", "text_token_mask", "text_sentence", "text_token_count"]
SCORE_COLUMNS = ["source_uri", "error", *TEXT_COLUMNS, "obj_crops", "obj_labels"]


class FusionDataSettings(StrictModel):
    """Where the labelled images, their frozen features and the cache live."""

    manifest: str = Field(description="a corpus manifest made with --risk")
    features: str = Field(description="output of the feature `score` run (made when missing)")
    cache: str = Field(description="Parquet model inputs (made when missing)")
    cam_checkpoint: str = Field(description="the CAM localizer whose backbone is the frozen upstream CNN")
    score_config: str | None = Field(None, description="score YAML for the feature run; its stages are replaced")
    max_tokens: int = Field(32, ge=1)
    materialize: bool = Field(
        True,
        description="read the training split from the cache once and keep it in Ray's object store (which spills to "
        "disk past its size) instead of reading and filtering the cache again every epoch",
    )
    image_types: list[str] = ["photo", "sketch", "cartoon"]
    train_splits: list[str] = ["train"]
    val_splits: list[str] = ["val"]
    test_splits: list[str] = ["test"]

    @field_validator("cam_checkpoint", "score_config")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """Local paths become absolute here, in the driver: Ray workers may run elsewhere."""
        return resolve_path(value)


class TrainFusionSettings(TrainSettings):
    """``mediascore train fusion`` config. ``model.upstream`` is filled from ``data.cam_checkpoint``."""

    data: FusionDataSettings
    model: FusionConfig = Field(default_factory=FusionConfig)
    train: FusionTrainConfig = Field(default_factory=FusionTrainConfig)


def load_fusion_settings(path: str | Path, overrides: dict | None = None) -> TrainFusionSettings:
    return load_yaml(TrainFusionSettings, path, overrides)


def labels_of(manifest: pd.DataFrame) -> pd.DataFrame:
    """``uri``, ``label`` (1 risky), ``cause`` and ``split`` of the corpus images that carry a risk label."""
    if "risk" not in manifest.columns or manifest["risk"].isna().all():
        raise ValueError("the manifest has no risk labels: make the corpus with `mediascore make-corpus --risk`")
    rows = manifest[(manifest.media_type == "image") & manifest.broken.isna() & manifest["risk"].notna()]
    return pd.DataFrame(
        {
            "uri": rows.uri,
            "label": rows["risk"].astype(np.int64),
            "cause": rows.risk_cause.fillna(""),
            "split": rows.split,
            "image_type": rows.image_type,
        }
    ).reset_index(drop=True)


def build_upstream_model(settings: TrainFusionSettings):
    """A fusion model whose frozen upstream CNN carries the CAM checkpoint's weights."""
    from jobs.media.checkpoints import read_checkpoint
    from models.fusion import build_fusion, load_upstream

    cam = read_checkpoint(settings.data.cam_checkpoint)
    upstream = cam["config"] | {"pretrained": False}  # its weights are the CAM checkpoint's, not ImageNet's
    model = build_fusion(dataclasses.replace(settings.model, upstream=upstream))
    load_upstream(model, cam["state_dict"])
    return model


class _CacheRows:
    """Ray Data step: scored rows -> model inputs with the frozen maps, plus label, cause, split and uri."""

    def __init__(self, settings: dict, labels: pd.DataFrame):
        self.settings = TrainFusionSettings.model_validate(settings)
        self.labels = labels.set_index("uri")
        self.model = build_upstream_model(self.settings)

    def __call__(self, batch: dict) -> dict:
        from jobs.media.fusion_inputs import encode_upstream, pack, row_inputs, stack
        from jobs.media.images import load_resized

        cfg, rows, meta = self.model.cfg, [], []
        for i, uri in enumerate(batch["source_uri"]):
            row = {key: batch[key][i] for key in SCORE_COLUMNS}
            image = load_resized(uri, max(cfg.style_size, cfg.image_size))
            rows.append(row_inputs(image, row, cfg, self.settings.data.max_tokens))
            meta.append(self.labels.loc[uri])
        out, _ = pack(encode_upstream(self.model, stack(rows)))
        out["label"] = np.array([m.label for m in meta], np.int64)
        for key in ("cause", "split", "image_type"):
            out[key] = np.array([getattr(m, key) for m in meta], dtype=object)
        out["uri"] = np.asarray(batch["source_uri"], dtype=object)
        return out


def build_cache(settings: TrainFusionSettings, echo=print) -> dict:
    """Run the feature ``score`` (resumes) and write the Parquet cache unless it is complete; its summary."""
    import ray.data
    from ray.data.expressions import col

    from jobs.score.pipeline import run_score
    from jobs.train.data.cam import read_manifest

    done = storage.join(settings.data.cache, "_done.json")
    summary = read_json(done)
    manifest_uri = settings.data.manifest
    sha1 = hashlib.sha1(storage.read_bytes(manifest_uri)).hexdigest()
    if summary:
        if summary["manifest_sha1"] != sha1:
            raise ValueError(
                f"the cache {settings.data.cache} was made from another manifest: delete it and "
                f"{settings.data.features}, or choose new locations"
            )
        if summary["specs"] != input_specs(build_upstream_model(settings), settings.data.max_tokens):
            raise ValueError(
                f"the cache {settings.data.cache} holds the inputs of another model (upstream CNN, input sizes, "
                "map_side, max_tokens or freeze_upstream differ): delete it, or choose a new location"
            )
        return summary
    score_cfg = load_config(settings.data.score_config, overrides={"stages": {"run": FEATURE_STAGES}})
    score_cfg = score_cfg.model_copy(update={"ray": settings.ray})
    images = storage.join(manifest_uri.rsplit("/", 1)[0], "images/")
    echo(f"[train fusion] features: score {images} -> {settings.data.features} ({', '.join(FEATURE_STAGES)})")
    run_score(images, settings.data.features, score_cfg, echo=echo)
    labels = labels_of(read_manifest(manifest_uri))
    labels = labels[labels.image_type.isin(settings.data.image_types)]
    fs, rows_path = storage.resolve(storage.join(settings.data.features, "rows/"))
    scored = ray.data.read_parquet(rows_path, filesystem=fs, columns=SCORE_COLUMNS)
    wanted = set(labels.uri)
    scored = scored.filter(expr=col("source_uri").is_in(sorted(wanted)) & col("error").is_null())
    cache_fs, cache_path = storage.resolve(storage.join(settings.data.cache, "rows/"))
    scored.map_batches(
        _CacheRows,
        fn_constructor_args=(settings.model_dump(mode="json"), labels),
        batch_size=32,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    ).write_parquet(cache_path, filesystem=cache_fs)
    cached = load_cache(settings.data.cache, columns=["label", "split"])
    summary = {
        "specs": input_specs(build_upstream_model(settings), settings.data.max_tokens),
        "rows": len(cached),
        "positives": int(cached.label.sum()),
        "by_split": cached.split.value_counts().to_dict(),
        "manifest_sha1": sha1,
    }
    write_json(done, summary)
    echo(f"[train fusion] cache: {summary['rows']} rows ({summary['positives']} risky) in {settings.data.cache}")
    return summary


def load_cache(cache: str, splits: list[str] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Cache rows (optionally of some splits) as pandas; tensor columns come back as arrays."""
    import pyarrow.parquet as pq

    fs, path = storage.resolve(storage.join(cache, "rows/"))
    table = pq.read_table(path, filesystem=fs, columns=columns)
    frame = table.to_pandas()
    return frame[frame.split.isin(splits)].reset_index(drop=True) if splits else frame


def input_specs(model, max_tokens: int) -> dict[str, list]:
    """dtype and per-row shape of every packed cache column (from one blank row through the same code)."""
    from jobs.media.fusion_inputs import encode_upstream, pack, row_inputs, stack

    blank = row_inputs(np.zeros((8, 8, 3), np.uint8), {}, model.cfg, max_tokens)
    return pack(encode_upstream(model, stack([blank])))[1]


def frame_batch(frame: pd.DataFrame | dict, specs: dict[str, list]) -> dict[str, np.ndarray]:
    """Cache rows (a DataFrame or a Ray numpy batch) -> the model's numpy batch, with ``label``."""
    from jobs.media.fusion_inputs import unpack
    from models.fusion import WEIGHT_GROUPS

    out = unpack(frame, specs)
    out["label"] = np.asarray(frame["label"], np.int64)
    groups = [WEIGHT_GROUPS.index(CAUSE_MODALITY[c]) if c in CAUSE_MODALITY else -1 for c in frame["cause"]]
    out["weight_group"] = np.asarray(groups, np.int64)  # the modality holding the cause (weight_labels: modality)
    return out


def predict(recipe, batch: dict[str, np.ndarray], device, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Losses (means over rows), positive-class probabilities, weights, token mask and kinds of a numpy batch."""
    from jobs.media.fusion_inputs import to_tensors

    n, parts = len(batch["label"]), []
    for start in range(0, n, batch_size):
        chunk = {k: v[start : start + batch_size] for k, v in batch.items()}
        out = recipe.eval_step(to_tensors(chunk, device))
        parts.append({k: v.detach().cpu().numpy() for k, v in out.items()} | {"n": len(chunk["label"])})
    if not parts:
        return {"loss": np.nan, "prob": np.zeros(0)}
    weights = np.array([p["n"] for p in parts], np.float64)
    out = {k: float(np.average([p[k] for p in parts], weights=weights)) for k in ("loss", "l1", "l2", "l3")}
    return out | {k: np.concatenate([p[k] for p in parts]) for k in ("prob", "weights", "mask", "kinds")}


def _checkpoint_data(settings: TrainFusionSettings, manifest_sha1: str) -> dict:
    """What a fusion checkpoint says about its data: classes, token budget, manifest, upstream and cache."""
    return {
        "classes": CLASSES,
        "max_tokens": settings.data.max_tokens,
        "manifest": settings.data.manifest,
        "manifest_sha1": manifest_sha1,
        "cam_checkpoint": settings.data.cam_checkpoint,
        "cache": settings.data.cache,
    }


def validation_metrics(recipe, val: dict[str, np.ndarray], device, target_precision: float | None) -> dict:
    """The ``val_*`` figures of one epoch: losses, AUROC, and the operating point ``val_threshold`` with accuracy,
    F1, precision and recall at it. Every worker scores all of ``val``: the same numbers everywhere."""
    from jobs.train.metrics import binary_metrics, operating_threshold

    scored = predict(recipe, val, device)
    threshold = operating_threshold(val["label"], scored["prob"], target_precision)
    metrics = {f"val_{k}": scored[k] for k in ("loss", "l1", "l2", "l3")} | {"val_threshold": threshold}
    return metrics | {f"val_{k}": v for k, v in binary_metrics(val["label"], scored["prob"], threshold).items()}


def train_func(config: dict) -> None:
    """The per-worker loop (runs inside Ray Train)."""
    import ray.train
    import ray.train.torch

    from jobs.media.fusion_inputs import to_tensors
    from models.checkpoint import checkpoint_bytes
    from models.fusion import build_fusion, fusion_config_from_dict, load_upstream
    from models.fusion_recipe import FusionRecipe

    settings = TrainFusionSettings.model_validate(config["settings"])
    _, _, device = start_worker(settings.seed)
    model_cfg, train_cfg = fusion_config_from_dict(config["model"]), settings.train
    net = build_fusion(model_cfg)
    load_upstream(net, config["upstream_state"])
    model = ray.train.torch.prepare_model(net, parallel_strategy_kwargs={"find_unused_parameters": True})
    recipe = FusionRecipe(model, train_cfg, model_cfg.positive_class)
    files, specs = RunFiles(settings.output), config["specs"]
    ckpt, progress = resume(files, settings.resume, monitor="val_loss")
    if ckpt:
        net.load_state_dict(ckpt["state_dict"])
        recipe.load_state_dict(ckpt["optimizer"])
    val = frame_batch(load_cache(settings.data.cache, settings.data.val_splits), specs)
    shard = ray.train.get_dataset_shard("train")

    def one_epoch(epoch: int) -> dict:
        sums, n = {"loss": 0.0, "l1": 0.0, "l2": 0.0, "l3": 0.0, "acc": 0.0}, 0
        for cells in shard.iter_batches(
            batch_size=train_cfg.batch_size, batch_format="numpy", local_shuffle_buffer_size=4 * train_cfg.batch_size
        ):
            stats = recipe.train_step(to_tensors(frame_batch(cells, specs), device))
            sums = {k: sums[k] + float(stats[k]) for k in sums}
            n += 1
        metrics = {f"train_{k}": v / max(n, 1) for k, v in sums.items()}
        return metrics | validation_metrics(recipe, val, device, train_cfg.target_precision)

    data = _checkpoint_data(settings, config["manifest_sha1"])

    def checkpoint(epoch: int, metrics: dict) -> bytes:
        extra = {"best_loss": progress.best(), "bad_epochs": progress.epochs_since_best()}
        return checkpoint_bytes(
            net, "fusion", config["model"], step=epoch + 1, epoch=epoch, metrics=metrics,
            data=data | {"threshold": metrics["val_threshold"]},
            optimizer_state=recipe.state_dict(), extra=extra,
        )  # fmt: skip

    train_epochs(
        "fusion",
        files,
        progress,
        train_cfg.epochs,
        one_epoch,
        checkpoint,
        patience=train_cfg.patience,
        retry=settings.retry.policy(),
    )


def run_train_fusion(settings: TrainFusionSettings, address: str | None = None, echo=print) -> dict:
    """Build the cache if needed, train, return the best epoch's pointer (checkpoint URI and metrics)."""
    import ray.data
    from ray.data.expressions import col

    from jobs.common.session import ray_session

    with ray_session(settings.ray, address):
        summary = build_cache(settings, echo)
        model = build_upstream_model(settings)
        fs, path = storage.resolve(storage.join(settings.data.cache, "rows/"))
        train = ray.data.read_parquet(path, filesystem=fs).filter(expr=col("split").is_in(settings.data.train_splits))
        if settings.data.materialize:
            train = train.materialize()  # read once: every epoch then streams from the object store
        loop_config = {
            "settings": settings.model_dump(mode="json"),
            "model": dataclasses.asdict(model.cfg),
            "upstream_state": model.upstream.state_dict(),
            "specs": summary["specs"],
            "manifest_sha1": summary["manifest_sha1"],
        }
        fit(train_func, loop_config, settings.scaling, train, "train-fusion")
        return read_json(RunFiles(settings.output).best) or {}
