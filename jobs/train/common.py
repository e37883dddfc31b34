"""What every training job shares: the scaling settings and the Ray Train ``fit`` call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from jobs.common.config import RayConfig, StrictModel


class ScalingSettings(StrictModel):
    """Ray Train workers: one process each, DDP across them."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)


class TrainSettings(StrictModel):
    """What every training job's config has: where it writes, how it scales, the Ray session, seed, resume."""

    output: str
    scaling: ScalingSettings = ScalingSettings()
    ray: RayConfig = RayConfig()
    seed: int = 0
    resume: bool = True


def checked_section(build: Callable[[dict], Any], value: dict) -> dict:
    """A ``dict`` config section checked once, at load, by its model dataclass builder (an unknown or bad key fails
    there, not inside a Ray Train worker); returns the section with every default filled in."""
    try:
        return dataclasses.asdict(build(value))
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def fit(train_func, loop_config: dict, scaling: ScalingSettings, train_dataset, name: str) -> None:
    """Run ``train_func`` on ``scaling.num_workers`` Ray Train workers (DDP), the ``train`` dataset sharded across
    them; Ray's own run records go under ``.mediascore/ray_results``."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
        ),
        datasets={"train": train_dataset},
        run_config=RunConfig(name=name, storage_path=str(Path(".mediascore/ray_results").resolve())),
    ).fit()
