"""What every training job shares: settings, the Ray Train ``fit`` call, and the resumable epoch loop.

A run writes under its ``output`` (local or ``s3://``)::

    checkpoints/epoch_NNNN.pt   one self-describing checkpoint per epoch (weights, optimizer state, metrics)
    latest.json                 {"epoch", "checkpoint", "metrics", ...}: the last committed epoch
    best.json                   the same for the best epoch so far (jobs that monitor a metric)
    history.json                every committed epoch's metrics

An epoch counts once ``latest.json`` points at it: a run killed before that redoes the epoch, and a rerun with
``resume: true`` starts after the latest one (:func:`resume`). :func:`train_epochs` is the loop every job's Ray
Train worker runs: the job's own epoch function, then on rank 0 the checkpoint, the pointers and the history.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from jobs.common import storage, transient
from jobs.common.config import LabelSelector, RayConfig, RetryConfig, StrictModel
from jobs.common.storage import read_json, write_json


class ScalingSettings(StrictModel):
    """Ray Train workers: one process each, DDP across them.

    ``max_failures``: how often Ray Train restarts the worker group after a worker dies (a killed process, a lost
    node) before the run fails. A restarted group starts the job again, which resumes after the last epoch that
    ``latest.json`` points at (with ``resume: true``, the default), so at most the epoch in flight is redone.
    """

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(3, ge=-1, description="worker-group restarts before the run fails; -1: no limit")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how the workers' bundles share nodes; STRICT_SPREAD: one worker per node"
    )
    label_selector: LabelSelector | list[LabelSelector] = Field(
        {}, description="node labels every worker needs, or one selector per worker; empty: any node"
    )

    @model_validator(mode="after")
    def _check_selectors(self) -> ScalingSettings:
        if isinstance(self.label_selector, list) and len(self.label_selector) != self.num_workers:
            raise ValueError(f"label_selector: {len(self.label_selector)} selectors for {self.num_workers} workers")
        return self


class TrainSettings(StrictModel):
    """What every training job's config has: where it writes, how it scales, the Ray session, seed, resume."""

    output: str
    scaling: ScalingSettings = ScalingSettings()
    ray: RayConfig = RayConfig()
    seed: int = 0
    resume: bool = True
    retry: RetryConfig = RetryConfig()  # transient store errors while writing checkpoints and pointers


def fit(train_func, loop_config: dict, scaling: ScalingSettings, train_dataset, name: str, split: bool = True) -> None:
    """Run ``train_func`` on ``scaling.num_workers`` Ray Train workers (DDP), the ``train`` dataset sharded across
    them (or, ``split`` false, whole on every worker); Ray's own run records go under ``.mediascore/ray_results``."""
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
            placement_strategy=scaling.placement_strategy,
            label_selector=scaling.label_selector or None,
        ),
        datasets={"train": train_dataset},
        dataset_config=DataConfig(datasets_to_split="all" if split else []),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(".mediascore/ray_results").resolve()),
            failure_config=FailureConfig(max_failures=scaling.max_failures),
        ),
    ).fit()


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Where a run's checkpoints and pointers live (see the module docstring)."""

    output: str

    def uri(self, name: str) -> str:
        return storage.join(self.output, name)

    @property
    def latest(self) -> str:
        return self.uri("latest.json")

    @property
    def best(self) -> str:
        return self.uri("best.json")

    @property
    def history(self) -> str:
        return self.uri("history.json")

    def checkpoint(self, epoch: int) -> str:
        return self.uri(f"checkpoints/epoch_{epoch:04d}.pt")


@dataclasses.dataclass
class Progress:
    """Where a run stands: the next epoch, the metrics of every epoch so far, and the best of them by ``monitor``
    (a metric to minimize; ``None``: the job keeps no best epoch)."""

    start: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    monitor: str | None = None

    def _monitored(self) -> list[float]:
        """The monitored value of every epoch; NaN (an empty validation split) never counts as an improvement."""
        values = [float(m[self.monitor]) for m in self.history] if self.monitor else []
        return [math.inf if math.isnan(v) else v for v in values]

    def best(self) -> float:
        return min(self._monitored(), default=math.inf)

    def epochs_since_best(self) -> int:
        """Epochs after the first one that reached the best value (all of them when none has a value)."""
        values = self._monitored()
        best = min(values, default=math.inf)
        return len(values) - 1 - values.index(best) if best < math.inf else len(values)


def start_worker(seed: int):
    """``(rank, world size, device)`` of this Ray Train worker, with torch seeded per rank (``seed * 1000 + rank``)."""
    import ray.train
    import ray.train.torch
    import torch

    ctx = ray.train.get_context()
    torch.manual_seed(seed * 1000 + ctx.get_world_rank())
    return ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()


def worker_nodes() -> list[str]:
    """The Ray node ID of every Ray Train worker, by rank (gathered over the process group when there is one)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()):
        return [node]
    nodes: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return [str(n) for n in nodes]


def resume(files: RunFiles, enabled: bool, monitor: str | None = None) -> tuple[dict | None, Progress]:
    """The latest checkpoint (``None`` when there is none or ``enabled`` is false) and the progress it stands
    for; the checkpoint's weights and optimizer state are the job's to load."""
    from jobs.media.checkpoints import read_checkpoint

    latest = read_json(files.latest) if enabled else None
    if not latest:
        return None, Progress(monitor=monitor)
    ckpt = read_checkpoint(latest["checkpoint"])
    return ckpt, Progress(ckpt["epoch"] + 1, read_json(files.history) or [], monitor)


def train_epochs(
    job: str,
    files: RunFiles,
    progress: Progress,
    epochs: int,
    one_epoch: Callable[[int], dict],
    checkpoint: Callable[[int, dict], bytes],
    patience: int = 0,
    pointer: dict | None = None,
    retry: transient.RetryPolicy | None = None,
    stop: Callable[[dict], bool] | None = None,
) -> None:
    """The epoch loop of a Ray Train worker, written once for every job.

    Each epoch runs ``one_epoch(epoch)`` (train, then validate: its metrics) on every worker and adds ``epoch``
    and ``epoch_s`` (wall seconds of both). Rank 0 then writes ``checkpoint(epoch, metrics)`` (bytes), the history,
    ``latest.json`` and, when the monitored metric improved, ``best.json``; both pointers also carry ``pointer``.
    Every worker reports the metrics to Ray Train. With ``patience`` the loop stops after that many epochs without
    a lower monitored value; the decision uses numbers every worker has, so all stop together. ``stop(metrics)``
    true after an epoch (rank 0 decides, as only it may have validation metrics) ends the run. Each write retries
    transient store errors under ``retry``; the checkpoint is complete before ``latest.json`` points at it.
    """
    import ray.train

    policy = retry or transient.RetryPolicy()

    def put(uri: str, data: bytes | dict | list) -> None:
        write = storage.write_bytes if isinstance(data, bytes) else write_json
        transient.retrying(lambda: write(uri, data), policy, f"write {uri}")

    ctx = ray.train.get_context()
    rank, placement = ctx.get_world_rank(), {"world_size": ctx.get_world_size(), "nodes": worker_nodes()}
    if stop is not None and progress.history and _from_rank0(rank == 0 and stop(progress.history[-1])):
        return  # a rerun of a run that already stopped on its condition
    for epoch in range(progress.start, epochs):
        if patience and progress.epochs_since_best() >= patience:
            break
        started = time.monotonic()
        metrics = {"epoch": epoch} | one_epoch(epoch)
        metrics["epoch_s"] = round(time.monotonic() - started, 2)
        improved = progress.monitor is not None and metrics[progress.monitor] < progress.best()
        progress.history.append(metrics | placement)
        if rank == 0:
            uri = files.checkpoint(epoch)
            put(uri, checkpoint(epoch, metrics))
            put(files.history, progress.history)
            record = {"epoch": epoch, "checkpoint": uri, "metrics": metrics} | (pointer or {})
            put(files.latest, record)
            if improved:
                put(files.best, record)
            print(f"[train {job}] epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        ray.train.report(metrics)
        if stop is not None and _from_rank0(rank == 0 and stop(metrics)):
            if rank == 0:
                print(f"[train {job}] stopping after epoch {epoch}: the stop condition is met")
            break


def _from_rank0(flag: bool) -> bool:
    """Rank 0's ``flag`` on every worker."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])
