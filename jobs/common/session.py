"""The Ray session: a private local Ray or a cluster address, with the storage variables passed to workers."""

from __future__ import annotations

import contextlib
import os

from jobs.common.config import RayConfig

AWS_VARIABLES = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS",
)  # fmt: skip


def init_ray(cfg: RayConfig, address: str | None) -> bool:
    """Connect to a cluster, else start a private local Ray. Returns whether this call started or joined one.

    The cluster is ``address``, else the config's, else ``RAY_ADDRESS`` (set for drivers of ``ray job submit``).
    Without any, a new local Ray starts even if another runs on this machine. A local Ray's workers inherit this
    process's environment; a cluster's do not, so the ``AWS_*`` variables set here travel to them in the job's
    runtime environment.
    """
    import logging

    import ray

    if ray.is_initialized():
        return False
    address = address or cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        env = {key: os.environ[key] for key in AWS_VARIABLES if key in os.environ}
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, logging_level=logging.WARNING)
    else:
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    return True


@contextlib.contextmanager
def ray_session(cfg: RayConfig, address: str | None):
    """:func:`init_ray` for the length of a ``with`` block; Ray shuts down after it only if the block started it."""
    started = init_ray(cfg, address)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()
