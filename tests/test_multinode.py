"""A real two-node Ray on this machine: a head labelled ``mediascore-group=decode`` and a second node labelled
``mediascore-group=model``, each started with ``ray start`` and one of the two cores.

Scoring with ``configs/two_node.yaml`` must run every pinned step on its node (read back from ``_manifest.json``'s
``nodes``), training must put one DDP worker on each node, ``ray job submit`` must run ``score`` on the head, and
a score whose second node is killed half-way must end with exactly one row per (source, frame) after at most one
rerun. The kill test goes last: it takes the second node away.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from jobs.common import storage
from jobs.common.storage import read_json

pytestmark = pytest.mark.multinode

BIN = Path(sys.executable).parent
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # a throwaway cluster on loopback


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    """This process's environment (the AWS variables of the test S3 server included), with the venv on PATH so
    that the jobs the head starts find the project's Python."""
    return {**os.environ, **ENV, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class Cluster:
    """The two ``ray start --block`` processes, each in its own process group (so a kill takes its workers)."""

    def __init__(self):
        self.port, self.dashboard = _port(), _port()
        self.address = f"127.0.0.1:{self.port}"
        self.head = self._start(
            "--head", f"--port={self.port}", "--include-dashboard=true", f"--dashboard-port={self.dashboard}",
            "--dashboard-host=127.0.0.1", "--labels=mediascore-group=decode",
        )  # fmt: skip
        self._wait(1)
        self.model = self._start(f"--address={self.address}", "--labels=mediascore-group=model")
        self._wait(2)

    def _start(self, *args: str) -> subprocess.Popen:
        # The agent ports default to fixed numbers that another Ray on this machine (the suite's own local one)
        # may already hold; a head whose agent cannot bind its HTTP port takes no job submissions.
        ports = [f"--{flag}={_port()}" for flag in ("dashboard-agent-listen-port", "metrics-export-port")]
        cmd = [str(BIN / "ray"), "start", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--block",
               "--object-store-memory=150000000", *ports, *args]  # fmt: skip
        return subprocess.Popen(
            cmd, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait(self, nodes: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive_nodes() < nodes:
            assert time.monotonic() < deadline, f"the cluster did not reach {nodes} nodes"
            time.sleep(1)

    def alive_nodes(self) -> int:
        status = subprocess.run(
            [str(BIN / "ray"), "status", f"--address={self.address}"], env=_env(), capture_output=True, text=True
        )
        return status.stdout.count("node_") if status.returncode == 0 else 0

    def kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def labels(self) -> dict[str, str]:
        """Node ID -> its ``mediascore-group`` label, as the cluster reports it."""
        script = (
            "import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(json.dumps({n['NodeID']: n.get('Labels', {}).get('mediascore-group') for n in ray.nodes() "
            "if n['Alive']}))"
        )
        cmd = [sys.executable, "-c", script, self.address]
        out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster(s3):
    c = Cluster()
    yield c
    c.kill(c.model)
    c.kill(c.head)


def _cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _rows(out: str) -> pd.DataFrame:
    fs, path = storage.resolve(storage.join(out, "rows"))
    return pd.read_parquet(path, filesystem=fs)


def _commits(out: str) -> int:
    return sum(1 for _ in storage.list_objects(storage.join(out, "_commits")))


def _check_exactly_once(out: str, corpus_uri: str, manifest: pd.DataFrame) -> pd.DataFrame:
    rows = _rows(out)
    counts = collections.Counter(zip(rows.source_uri, rows.frame_index, strict=True))
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1][:5]
    fs, path = storage.resolve(storage.join(out, "dead_letter"))
    dead = pd.read_parquet(path, filesystem=fs)
    assert set(rows.source_uri) | set(dead.source_uri) == set(manifest.uri)
    assert set(rows.source_uri).isdisjoint(dead.source_uri)
    return rows


def test_score_runs_every_pinned_step_on_its_node(cluster, corpus):
    corpus_uri, manifest = corpus
    out = "s3://test-scores/two-node"
    result = _cli("score", "--input", corpus_uri, "--output", out, "--address", cluster.address,
                  "--config", "configs/two_node.yaml")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _check_exactly_once(out, corpus_uri, manifest)
    assert rows.cam_class.notna().all() and rows.quality_sharpness.notna().all()
    report = read_json(storage.join(out, "_manifest.json"))
    groups = cluster.labels()
    where: dict[str, set[str]] = collections.defaultdict(set)
    totals: collections.Counter = collections.Counter()
    for node, entry in report["nodes"].items():
        assert entry["labels"].get("mediascore-group") == groups[node]
        for step, count in entry["rows"].items():
            where[step].add(groups[node])
            totals[step] += count
    assert dict(where) == {"decode": {"decode"}, "writer": {"decode"}, "quality": {"model"}, "cam": {"model"}}
    summary = report["summary"]
    assert set(totals.values()) == {summary["rows_written"] + summary["dead_letter"]}, totals


@pytest.mark.slow  # about a minute on 2 cores
def test_train_cam_puts_one_ddp_worker_on_each_node(cluster, corpus, tmp_path):
    from conftest import _cam_settings

    corpus_uri, _ = corpus
    settings = _cam_settings(corpus_uri, "s3://test-train/two-node-cam", epochs=1).model_dump(mode="json")
    settings["scaling"] = {"num_workers": 2, "cpus_per_worker": 0.5, "placement_strategy": "STRICT_SPREAD"}
    settings["ray"] = {}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(settings))
    result = _cli("train", "cam", "--config", str(config), "--address", cluster.address)
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_json("s3://test-train/two-node-cam/history.json")
    assert [h["world_size"] for h in history] == [2]
    assert sorted(cluster.labels()[n] for n in history[0]["nodes"]) == ["decode", "model"]
    assert storage.exists(read_json("s3://test-train/two-node-cam/latest.json")["checkpoint"])


def test_ray_job_submit_runs_score_on_the_head(cluster, corpus):
    corpus_uri, manifest = corpus
    out = "s3://test-scores/submitted"
    submit = [str(BIN / "ray"), "job", "submit", f"--address=http://127.0.0.1:{cluster.dashboard}",
              "--working-dir", ".", "--", "python", "-m", "jobs.cli", "score", "--input", corpus_uri, "--output",
              out, "--stages", "quality"]  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # the head's job agent registers a while after the node itself, longer on two busy cores
        result = subprocess.run(submit, env=_env(), capture_output=True, text=True, timeout=400)
        if "No available agent" not in result.stdout + result.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "succeeded" in result.stdout.lower()
    _check_exactly_once(out, corpus_uri, manifest)
    summary = read_json(storage.join(out, "_manifest.json"))["summary"]
    assert summary["rows_written"] == len(_rows(out)) and summary["input"] == corpus_uri


@pytest.mark.slow  # about 35 s on 2 cores
def test_killing_the_second_node_mid_score_loses_and_doubles_nothing(cluster, corpus, tmp_path):
    corpus_uri, manifest = corpus
    out = "s3://test-scores/node-killed"
    config = tmp_path / "small_files.yaml"
    pools = {"num_cpus": 0.25, "batch_size": 1, "concurrency": [1, 2]}  # all of them fit on the head alone
    config.write_text(yaml.safe_dump({"output": {"rows_per_file": 2}, "decode": {"resources": pools},
                                      "stages": {"quality": {"resources": pools}}}))  # fmt: skip
    args = ["score", "--input", corpus_uri, "--output", out, "--address", cluster.address, "--config", str(config),
            "--stages", "quality"]  # fmt: skip
    run = subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not _commits(out) and run.poll() is None:
        assert time.monotonic() < deadline, "no batch was committed"
        time.sleep(0.5)
    cluster.kill(cluster.model)
    committed_at_kill = _commits(out)
    try:
        first = run.wait(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
        first = run.wait()
    log = run.stdout.read()
    if first != 0:  # the run may fail with the node: one rerun on the head alone must finish the work
        again = _cli(*args)
        assert again.returncode == 0, log[-2000:] + again.stderr[-3000:]
    _check_exactly_once(out, corpus_uri, manifest)
    assert _commits(out) > committed_at_kill  # work went on after it
