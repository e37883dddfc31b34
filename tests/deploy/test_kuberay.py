"""The KubeRay manifests and the Dockerfile, checked without a cluster: each manifest parses, the Serve config
validates with Serve's own schema, the runtime environments with Ray's, every entrypoint with our CLI parser, and
the worker groups agree with the configs they run (labels that exist, a GPU group where a step asks for GPUs)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from ray.runtime_env import RuntimeEnv
from ray.serve.schema import ServeDeploySchema

from jobs.cli import build_parser
from jobs.common.config import load_config
from jobs.train.cam import TrainCamSettings
from jobs.train.fusion import TrainFusionSettings
from jobs.train.restore import TrainRestoreSettings
from serve.config import load_serve_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy/kuberay").glob("*.yaml"))
JOBS = [p for p in MANIFESTS if p.name.endswith(".rayjob.yaml")]
TRAIN = {"cam": TrainCamSettings, "fusion": TrainFusionSettings, "restore": TrainRestoreSettings}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _groups(cluster: dict) -> dict[str, dict]:
    """Group label -> what its pods offer: CPUs, GPUs."""
    groups = {}
    for spec in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        limits = spec["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus = float(spec.get("rayStartParams", {}).get("num-cpus", limits["cpu"]))
        groups[spec["labels"]["mediascore-group"]] = {"cpu": cpus, "gpu": float(limits.get("nvidia.com/gpu", 0))}
    return groups


def _fits(groups: dict[str, dict], selector: dict[str, str], cpus: float, gpus: float, what: str) -> None:
    candidates = [g for name, g in groups.items() if selector.get("mediascore-group", name) == name]
    assert candidates, f"{what}: no worker group is labelled {selector}"
    assert any(g["cpu"] >= cpus and g["gpu"] >= gpus for g in candidates), (
        f"{what}: no group fits {cpus} CPU {gpus} GPU"
    )


def test_every_manifest_parses_and_is_a_kuberay_or_core_object():
    kinds = {p.name: _load(p)["kind"] for p in MANIFESTS}
    assert sorted(kinds.values()) == ["RayJob", "RayJob", "RayJob", "RayJob", "RayService", "Secret"]
    for path in MANIFESTS:
        doc = _load(path)
        assert doc["apiVersion"] == ("v1" if doc["kind"] == "Secret" else "ray.io/v1"), path.name


def _entrypoint(path: Path):
    words = shlex.split(_load(path)["spec"]["entrypoint"])
    assert words[0] == "mediascore"
    return build_parser().parse_args(words[1:])


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_each_rayjob_runs_a_command_our_parser_takes_on_groups_that_fit_its_config(path):
    doc = _load(path)
    RuntimeEnv(**yaml.safe_load(doc["spec"]["runtimeEnvYAML"]))  # raises on an invalid runtime environment
    groups = _groups(doc["spec"]["rayClusterSpec"])
    assert groups["head"]["cpu"] == 0  # the head only drives
    args = _entrypoint(path)
    assert args.config and (ROOT / args.config).exists()
    if args.command == "score":
        cfg = load_config(ROOT / args.config)
        steps = {"decode": (cfg.decode.resources.label_selector, cfg.decode.resources.num_cpus, 0.0)}
        steps |= {n: (r.label_selector, r.num_cpus, r.num_gpus) for n in cfg.stages.run
                  for r in [getattr(cfg.stages, n).resources]}  # fmt: skip
        steps["writer"] = (cfg.output.label_selector, cfg.output.num_cpus, 0.0)
        assert any(gpus for _, _, gpus in steps.values())  # the cluster config puts model stages on GPUs
        for step, (selector, cpus, gpus) in steps.items():
            _fits(groups, selector, cpus, gpus, f"{path.name} {step}")
    else:
        settings = TRAIN[args.model].model_validate(yaml.safe_load((ROOT / args.config).read_text()))
        s = settings.scaling
        selectors = s.label_selector if isinstance(s.label_selector, list) else [s.label_selector]
        for selector in selectors:
            _fits(groups, selector, s.cpus_per_worker, 1.0 if s.use_gpu else 0.0, f"{path.name} workers")


def test_every_pod_reads_the_aws_settings_from_the_secret():
    secret = next(_load(p) for p in MANIFESTS if _load(p)["kind"] == "Secret")["metadata"]["name"]
    for path in MANIFESTS:
        doc = _load(path)
        if doc["kind"] == "Secret":
            continue
        cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
        for spec in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            for container in spec["template"]["spec"]["containers"]:
                assert {"secretRef": {"name": secret}} in container["envFrom"], (path.name, spec.get("groupName"))


def test_the_rayservice_config_validates_with_serve_and_its_deployments_fit_the_groups():
    doc = _load(ROOT / "deploy/kuberay/serve.rayservice.yaml")
    schema = ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    (app,) = schema.applications
    assert app.import_path == "serve.app:app_builder"
    settings = load_serve_settings(ROOT / app.args["config"])
    assert settings.host == "0.0.0.0"
    groups = _groups(doc["spec"]["rayClusterConfig"])
    deployments = {n: getattr(settings, n) for n in type(settings).model_fields if n.endswith("_deployment")}
    deployments["gateway"] = settings.gateway
    assert any(d.num_gpus for d in deployments.values())
    for name, d in deployments.items():
        _fits(groups, d.label_selector, d.num_cpus, d.num_gpus, name)


def test_the_image_installs_from_the_lock_and_carries_what_the_manifests_name():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r requirements.lock" in dockerfile
    for folder in ("jobs/", "models/", "serve/", "configs/", "checkpoints/"):
        assert f"COPY {folder} {folder}" in dockerfile
    images = {c["image"].split(":")[0] for p in MANIFESTS if _load(p)["kind"] != "Secret"
              for c in _containers(_load(p))}  # fmt: skip
    assert images == {"mediascore"}


def _containers(doc: dict):
    cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
    for spec in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        yield from spec["template"]["spec"]["containers"]
