import os
import re
import subprocess
import sys

import pytest


def test_demo_runs_end_to_end_on_its_own_store(tmp_path, free_port):
    port = free_port
    env = {**os.environ, "MEDIASCORE_HOME": str(tmp_path), "MEDIASCORE_S3_PORT": str(port)}
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        env.pop(key, None)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "demo", "--scale", "0.2"], env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        shown = _read_back(result.stdout, env) if result.returncode == 0 else None
    finally:
        subprocess.run([sys.executable, "-m", "jobs.cli", "s3", "down"], env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert shown.returncode == 0 and "source_uri" in shown.stdout, shown.stderr[-2000:]  # its "to read" line works
    out = result.stdout
    for expected in ("rows written", "dead letter", "errors by reason", "image_truncated=1", "report"):
        assert expected in out, expected
    assert list((tmp_path / "reports").glob("*.html"))


def _read_back(out: str, env: dict) -> subprocess.CompletedProcess:
    """Run the lines the demo prints for reading its results: its exports, then its Python one-liner."""
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", out, re.MULTILINE))
    command = next(line for line in out.splitlines() if line.startswith(sys.executable))
    return subprocess.run(command, shell=True, env={**env, **exports}, capture_output=True, text=True, timeout=120)


def test_train_demo_refuses_unknown_model_names_before_starting_anything():
    from jobs.demo import DEMO_MODELS, train_demo_models

    assert list(DEMO_MODELS) == ["cam", "cam_tiny", "fusion", "restore"]  # fusion's upstream is trained before it
    with pytest.raises(ValueError, match="unknown demo models"):
        train_demo_models(only=("cam", "gan"))
