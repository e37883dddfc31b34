"""``mediascore train scorefusion``: seed 003's per-modality networks, cross-validated, and their fitted weights.

For every modality in turn the driver decodes that modality of every training sample once (Ray Data, bad files
recorded and left out) and starts a ``TorchTrainer``. Its workers train the modality's EfficientNet on each of the
``folds`` cross-validation splits and score the held-out fold (its *out-of-fold* scores), then train once more on
every training sample: the network that ships. The networks are trained separately, each on its own modality
with binary cross-entropy (the patent's most plausible reading; it never says); the weights come after, from the
out-of-fold scores only, so neither the networks' selection nor the weights ever see the test split.

A run writes under ``output``::

    oof/<modality>/fold_<k>.parquet   sample_id, label, fold, score of the held-out fold k (a fold's commit record)
    networks/<modality>.pt            the network trained on every training sample
    oof.parquet                       one row per training sample, a score column per modality
    weights.json                      fitted weights, how they were fitted, out-of-fold AUROC per modality and fused
    scorefusion.pt                    the self-describing checkpoint: every network, the weights, mode, threshold

A rerun skips every fold whose record exists and every network that was saved (``resume: true``): the unit of
resume is a fold, a minute or two of work, not an epoch.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from jobs.common import storage
from jobs.common.config import StrictModel, load_yaml
from jobs.common.storage import read_json, write_json
from jobs.train.common import TrainSettings, fit, start_worker


class ModalitySettings(StrictModel):
    """One modality and its network (see :class:`models.scorefusion.ModalitySpec`)."""

    name: str
    dims: Literal[2, 3] = 2
    in_channels: int = Field(3, ge=1)
    variant: Literal["lite0", "b0"] = "lite0"
    init: Literal["imagenet", "inflate", "scratch"] = "imagenet"
    removal: Literal["none", "frame_code", "boxes"] = "none"

    @model_validator(mode="after")
    def _check_init(self) -> ModalitySettings:
        if self.init != "scratch" and self.variant != "lite0":
            raise ValueError(f"{self.name}: only lite0 has ImageNet weights; use init: scratch for {self.variant}")
        if (self.init == "imagenet" and self.dims == 3) or (self.init == "inflate" and self.dims == 2):
            raise ValueError(f"{self.name}: init imagenet is for 2D networks, inflate for 3D")
        return self


class ScoreFusionData(StrictModel):
    manifest: str = Field(description="one row per (sample, modality): sample_id, modality, uri, label, split, fold")
    modalities: list[ModalitySettings] = Field(min_length=2)
    positive: str = Field("present", description="the label whose probability is the score")
    image_size: int = Field(64, ge=16)
    depth: int = Field(8, ge=1, description="slices or frames of a 3D input")
    folds: int = Field(5, ge=2)
    train_split: str = "train"
    test_split: str = "test"


class ScoreFusionTrain(StrictModel):
    """Per-modality fine-tuning: Adam at the patent's 1e-3; the patent's 100 epochs are far beyond a CPU budget and
    this set's needs. ``crop``: the smallest crop side of claim 2's expansion (1: none); with ``augment`` every
    epoch draws a flip, a quarter-turn rotation and a crop per sample, the same for every modality of the sample."""

    epochs: int = Field(6, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = True
    crop: float = Field(0.8, gt=0, le=1)
    threads: int | None = Field(None, ge=1, description="torch CPU threads per worker; unset: torch's default")


class ScoreFusionFit(StrictModel):
    """How the weights are fitted on the out-of-fold scores (:mod:`models.scorefusion`): ``grid`` (the embodiment:
    every weight vector in steps of ``step``, the best AUROC) or ``loss`` (claim 7's loop). The embodiment's own
    selection on the test split is leakage; ``mediascore eval scorefusion`` reports it apart, labelled."""

    mode: Literal["literal", "average"] = "average"
    method: Literal["grid", "loss"] = "grid"
    step: float = Field(0.1, gt=0, le=0.5)
    loss_threshold: float = Field(0.3, ge=0)
    max_iters: int = Field(500, ge=1)
    loss_lr: float = Field(0.05, gt=0)
    threshold: float = Field(0.5, gt=0, lt=1, description="class threshold on the average-mode scale")


class TrainScoreFusionSettings(TrainSettings):
    data: ScoreFusionData
    train: ScoreFusionTrain = Field(default_factory=ScoreFusionTrain)
    fusion: ScoreFusionFit = Field(default_factory=ScoreFusionFit)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.data.modalities]


def load_scorefusion_settings(path: str | Path, overrides: dict | None = None) -> TrainScoreFusionSettings:
    return load_yaml(TrainScoreFusionSettings, path, overrides)


def read_samples(uri: str) -> pd.DataFrame:
    """The samples manifest, with the columns training needs."""
    from jobs.score.samples import SAMPLE_COLUMNS, read_samples_manifest

    return read_samples_manifest(uri, (*SAMPLE_COLUMNS, "label", "split"))


class _LoadModality:
    """Ray Data step: one modality's files -> network inputs; an unreadable file keeps its row with ``error``."""

    def __init__(self, spec: dict, size: int, depth: int):
        self.spec, self.size, self.depth = spec, size, depth

    def __call__(self, batch: dict) -> dict:
        from jobs.media.decode import DecodeError, describe
        from jobs.media.modalities import load_modality

        s = self.spec
        shape = (s["in_channels"], *((self.depth,) if s["dims"] == 3 else ()), self.size, self.size)
        xs, errors = [], []
        for uri in batch["uri"]:
            try:
                data = storage.read_bytes(str(uri))
                xs.append(load_modality(data, str(uri), s["dims"], s["in_channels"], self.size, self.depth,
                                        s["removal"]))  # fmt: skip
                errors.append("")
            except (DecodeError, FileNotFoundError, OSError) as exc:
                xs.append(np.zeros(shape, np.float32))
                errors.append(describe(exc))
        return {k: batch[k] for k in ("sample_id", "label", "fold")} | {"x": np.stack(xs), "error": np.array(errors)}


def modality_rows(manifest: pd.DataFrame, settings: TrainScoreFusionSettings, name: str) -> pd.DataFrame:
    """The training split's rows of one modality: sample_id, uri, label (1: positive), fold."""
    rows = manifest[(manifest.modality == name) & (manifest.split == settings.data.train_split)]
    if "fold" not in rows or rows.fold.isna().any():
        ids = sorted(rows.sample_id.unique())
        rows = rows.assign(fold=rows.sample_id.map({s: i % settings.data.folds for i, s in enumerate(ids)}))
    return pd.DataFrame({
        "sample_id": rows.sample_id.astype(str).to_numpy(),
        "uri": rows.uri.astype(str).to_numpy(),
        "label": (rows.label.astype(str) == settings.data.positive).astype(np.int64).to_numpy(),
        "fold": rows.fold.astype(np.int64).to_numpy(),
    }).sort_values("sample_id", kind="stable").reset_index(drop=True)  # fmt: skip


def _uri(settings: TrainScoreFusionSettings, *parts: str) -> str:
    return storage.join(settings.output, *parts)


def fold_uri(settings, name: str, fold: int) -> str:
    return _uri(settings, "oof", name, f"fold_{fold}.parquet")


def network_uri(settings, name: str) -> str:
    return _uri(settings, "networks", f"{name}.pt")


def _load_shard() -> dict[str, np.ndarray]:
    """The whole (unsplit) dataset on this worker, rows ordered by sample_id."""
    import ray.train

    parts = list(ray.train.get_dataset_shard("train").iter_batches(batch_size=256, batch_format="numpy"))
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(data["sample_id"], kind="stable")
    return {k: v[order] for k, v in data.items()}


def _train_network(spec, settings: TrainScoreFusionSettings, x, y, ids, seed: int, rank: int, world: int, device):
    """One modality network trained on ``x`` (this worker takes every ``world``-th row), DDP across workers."""
    import ray.train.torch
    import torch

    from jobs.media.modalities import augment, sample_augment_params
    from models.scorefusion import ScoreFusionConfig, modality_net

    torch.manual_seed(seed)
    net = modality_net(spec, ScoreFusionConfig(modalities=[spec, spec]))
    model = ray.train.torch.prepare_model(net) if world > 1 else net.to(device)
    cfg = settings.train
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    mine = np.arange(rank, len(x), world)
    steps = max(1, int(np.ceil(len(x) / world / cfg.batch_size)))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(cfg.epochs):
        model.train()
        rng = np.random.default_rng([seed, epoch, rank])
        order = rng.permutation(np.resize(rng.permutation(mine), steps * cfg.batch_size))
        total = 0.0
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            batch = x[idx]
            if cfg.augment:  # the same draw for every modality of a sample
                batch = np.stack([augment(b, sample_augment_params(settings.seed, ids[i], epoch, cfg.crop))
                                  for b, i in zip(batch, idx, strict=True)])  # fmt: skip
            xb = torch.from_numpy(batch).to(device)
            yb = torch.as_tensor(y[idx], dtype=torch.float32, device=device)
            loss = loss_fn(model(xb).squeeze(-1), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        if rank == 0:
            print(f"[train scorefusion] {spec.name} epoch {epoch}: loss={total / steps:.4f}")
    return net


def predict(net, x: np.ndarray, device, batch: int = 64) -> np.ndarray:
    """Sigmoid scores of ``net`` over ``x`` in eval mode."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(torch.sigmoid(net(torch.from_numpy(x[i : i + batch]).to(device)).squeeze(-1)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_func(config: dict) -> None:
    """The per-worker loop (inside Ray Train): every fold not yet done, then the network on all training samples."""
    import ray.train
    import torch
    import torch.distributed as dist

    from models.scorefusion import ModalitySpec

    settings = TrainScoreFusionSettings.model_validate(config["settings"])
    if settings.train.threads:
        torch.set_num_threads(settings.train.threads)
    spec = ModalitySpec(**config["spec"])
    rank, world, device = start_worker(settings.seed)
    data = _load_shard()
    x, y, folds, ids = data["x"], data["label"], data["fold"], data["sample_id"]
    for fold in [*range(settings.data.folds), None]:
        target = fold_uri(settings, spec.name, fold) if fold is not None else network_uri(settings, spec.name)
        if settings.resume and storage.exists(target):
            continue
        train = folds != fold if fold is not None else np.ones(len(x), bool)
        seed = settings.seed * 1000 + (fold if fold is not None else settings.data.folds)
        net = _train_network(spec, settings, x[train], y[train], ids[train], seed, rank, world, device)
        if rank == 0:
            if fold is not None:
                held = ~train
                scores = predict(net, x[held], device)
                table = pd.DataFrame({"sample_id": ids[held], "label": y[held], "fold": fold, "score": scores})
                buf = io.BytesIO()
                table.to_parquet(buf, index=False)
                storage.write_bytes(target, buf.getvalue())
            else:
                buf = io.BytesIO()
                torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
                storage.write_bytes(target, buf.getvalue())
            print(f"[train scorefusion] {spec.name} {'fold ' + str(fold) if fold is not None else 'all'}: done")
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        ray.train.report({"fold": -1 if fold is None else fold})


def _train_modality(settings: TrainScoreFusionSettings, spec: ModalitySettings, manifest: pd.DataFrame) -> int:
    """Decode one modality's training files and run its trainer; returns how many files could not be read."""
    import ray.data

    rows = modality_rows(manifest, settings, spec.name)
    targets = [fold_uri(settings, spec.name, k) for k in range(settings.data.folds)]
    if settings.resume and all(storage.exists(u) for u in [*targets, network_uri(settings, spec.name)]):
        print(f"[train scorefusion] {spec.name}: every fold and the network are done already")
        return 0
    args = (spec.model_dump(), settings.data.image_size, settings.data.depth)
    ds = ray.data.from_pandas(rows).map_batches(
        _LoadModality, fn_constructor_args=args, batch_size=32, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1
    )
    ds = ds.materialize()
    errors = ds.filter(lambda r: r["error"] != "").select_columns(["sample_id", "error"]).to_pandas()
    for row in errors.itertuples():
        print(f"[train scorefusion] {spec.name}: {row.sample_id} left out: {row.error}")
    ds = ds.filter(lambda r: r["error"] == "").drop_columns(["error"]).materialize()
    loop_config = {"settings": settings.model_dump(mode="json"), "spec": _spec(spec).__dict__}
    fit(train_func, loop_config, settings.scaling, ds, f"train-scorefusion-{spec.name}", split=False)
    return len(errors)


def _spec(m: ModalitySettings):
    from models.scorefusion import ModalitySpec

    return ModalitySpec(name=m.name, dims=m.dims, in_channels=m.in_channels, variant=m.variant, init=m.init)


def oof_table(settings: TrainScoreFusionSettings) -> pd.DataFrame:
    """One row per training sample: ``sample_id``, ``label``, ``fold`` and a score column per modality (NaN where
    the sample lacks that modality or its file could not be read)."""
    table = None
    for name in settings.names:
        parts = [pd.read_parquet(io.BytesIO(storage.read_bytes(fold_uri(settings, name, k))))
                 for k in range(settings.data.folds)]  # fmt: skip
        scores = pd.concat(parts).rename(columns={"score": name})
        table = scores if table is None else table.merge(scores, on=["sample_id", "label", "fold"], how="outer")
    return table.sort_values("sample_id").reset_index(drop=True)


def auroc(labels, scores) -> float:
    """Area under the ROC curve (scikit-learn); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


def fit_weights(scores: np.ndarray, labels: np.ndarray, fusion: ScoreFusionFit) -> dict:
    """The weights by ``fusion.method`` on complete rows of ``scores`` ``(N, M)``; with what they reach."""
    from models.scorefusion import fit_weights_grid, fit_weights_loss, fused_score

    complete = ~np.isnan(scores).any(axis=1)
    s, y = scores[complete], labels[complete]
    if fusion.method == "grid":
        weights, _ = fit_weights_grid(s, y, auroc, fusion.step)
        record = {"method": "grid", "step": fusion.step}
    else:
        result = fit_weights_loss(s, y, fusion.mode, fusion.loss_threshold, fusion.max_iters, fusion.loss_lr)
        weights = result.weights
        record = {"method": "loss", "loss": result.loss, "iters": result.iters, "converged": result.converged}
    return record | {"weights": [float(w) for w in weights], "auroc": auroc(y, fused_score(s, weights)),
                     "samples": int(complete.sum())}  # fmt: skip


def _final_checkpoint(settings: TrainScoreFusionSettings, weights: list[float], metrics: dict, sha1: str) -> bytes:
    import torch

    from models.checkpoint import checkpoint_bytes
    from models.scorefusion import ScoreFusionConfig, ScoreFusionNet, config_dict

    cfg = ScoreFusionConfig(modalities=[_spec(m) for m in settings.data.modalities], mode=settings.fusion.mode,
                            threshold=settings.fusion.threshold)  # fmt: skip
    net = ScoreFusionNet(cfg, weights, pretrained=False)
    for name in settings.names:
        state = torch.load(io.BytesIO(storage.read_bytes(network_uri(settings, name))), weights_only=True)
        net.nets[name].load_state_dict(state)
    data = {"manifest": settings.data.manifest, "manifest_sha1": sha1, "positive": settings.data.positive,
            "image_size": settings.data.image_size, "depth": settings.data.depth, "folds": settings.data.folds,
            "removal": {m.name: m.removal for m in settings.data.modalities}}  # fmt: skip
    return checkpoint_bytes(net, "scorefusion", config_dict(cfg), step=0, epoch=settings.train.epochs - 1,
                            metrics=metrics, data=data)  # fmt: skip


def run_train_scorefusion(settings: TrainScoreFusionSettings, address: str | None = None) -> dict:
    """Train every modality's network over the folds, fit the weights on the out-of-fold scores, write the
    checkpoint; returns ``weights.json``'s content."""
    from jobs.common.session import ray_session

    manifest_bytes = storage.read_bytes(settings.data.manifest)
    manifest = read_samples(settings.data.manifest)
    unknown = set(settings.names) - set(manifest.modality.unique())
    if unknown:
        raise ValueError(f"{settings.data.manifest} has no rows of the modalities {sorted(unknown)}")
    with ray_session(settings.ray, address):
        unreadable = {m.name: _train_modality(settings, m, manifest) for m in settings.data.modalities}
    table = oof_table(settings)
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    storage.write_bytes(_uri(settings, "oof.parquet"), buf.getvalue())
    scores, labels = table[settings.names].to_numpy(float), table.label.to_numpy()
    fitted = fit_weights(scores, labels, settings.fusion)
    record = fitted | {
        "modalities": settings.names, "mode": settings.fusion.mode, "fitted_on": "out_of_fold",
        "oof_auroc_by_modality": {n: auroc(labels[~np.isnan(scores[:, i])], scores[~np.isnan(scores[:, i]), i])
                                  for i, n in enumerate(settings.names)},
        "unreadable": unreadable,
    }  # fmt: skip
    write_json(_uri(settings, "weights.json"), record)
    ckpt = _final_checkpoint(settings, fitted["weights"], record, hashlib.sha1(manifest_bytes).hexdigest())
    storage.write_bytes(_uri(settings, "scorefusion.pt"), ckpt)
    print(f"[train scorefusion] weights {dict(zip(settings.names, fitted['weights'], strict=True))}, "
          f"out-of-fold AUROC {fitted['auroc']:.4f}; checkpoint {_uri(settings, 'scorefusion.pt')}")  # fmt: skip
    return read_json(_uri(settings, "weights.json")) or record
