"""cluster.yaml against the Ray cluster launcher's own schema, and the cluster config against its node types."""

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.commands import prepare_config
from ray.autoscaler._private.util import validate_config

from jobs.common.config import load_config


@pytest.fixture(scope="module")
def cluster():
    with open("cluster.yaml") as f:
        return yaml.safe_load(f)


def test_the_launcher_accepts_cluster_yaml(cluster):
    validate_config(prepare_config(copy.deepcopy(cluster)))
    nodes = cluster["available_node_types"]
    assert nodes[cluster["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert any(n["resources"].get("GPU", 0) >= 1 for n in nodes.values())
    assert cluster["file_mounts"] == {"~/mediascore": "."}  # the project travels to every node


def test_the_schema_check_is_real(cluster):
    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["head"]["cpus"] = 4
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_cluster_config_fits_the_node_types(cluster):
    cfg = load_config("configs/cluster.yaml")
    biggest_cpu = max(n["resources"].get("CPU", 0) for n in cluster["available_node_types"].values())
    for name in cfg.stages.run:
        assert getattr(cfg.stages, name).resources.num_cpus <= biggest_cpu
    assert cfg.decode.resources.num_cpus <= biggest_cpu


def test_every_pinned_step_has_a_node_type_with_its_label_and_resources(cluster):
    cfg = load_config("configs/cluster.yaml")
    steps = [("decode", cfg.decode.resources.label_selector, cfg.decode.resources.num_gpus)]
    steps += [(n, getattr(cfg.stages, n).resources.label_selector, getattr(cfg.stages, n).resources.num_gpus)
              for n in cfg.stages.run]  # fmt: skip
    steps.append(("writer", cfg.output.label_selector, 0.0))
    types = cluster["available_node_types"].values()
    for step, selector, gpus in steps:
        assert selector, f"{step} is not pinned to a node group"
        fits = [t for t in types if selector.items() <= t.get("labels", {}).items()]
        assert fits, f"{step}: no node type has the labels {selector}"
        assert all(t["resources"].get("GPU", 0) >= gpus for t in fits), f"{step} asks for a GPU its nodes lack"
        assert gpus or all(t["resources"].get("GPU", 0) == 0 for t in fits), f"{step}: a CPU step on GPU nodes"
    assert any(gpus for _, _, gpus in steps)
