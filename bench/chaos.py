"""Chaos benchmark: `mediascore score` under the faults a cluster job meets, with what was lost and what doubled.

Loopback only: its own SeaweedFS S3 server, its own corpus, `mediascore score` as a user runs it (a subprocess that
starts a local Ray). First an undisturbed run gives the expected rows and the baseline time; then each scenario
scores the same input into a new output while faults are injected, and reruns the same command until it exits 0
(at most ``--max-reruns``). Per scenario:

* ``lost``: (source, frame) rows of the undisturbed run missing from the scenario's rows (a good input that went to
  the dead letter or was never written counts once per missing row);
* ``duplicated``: rows beyond one per (source, frame);
* ``wrong_dead_letter``: sources dead-lettered that the undisturbed run wrote;
* ``reruns``: runs after the first one that it took to exit 0;
* ``seconds`` and ``seconds_ratio`` (all runs of the scenario against the undisturbed run).

Scenarios of ``score``: ``s3_restart`` (the store killed and restarted twice while reads and writes are in flight,
output on S3), ``actor_kill`` (a decode/stage actor process killed mid-run, twice), ``driver_kill`` (the driver
killed at three random points, then the command rerun until it completes).

Scenarios of ``train cam`` (2 Ray Train workers, DDP over gloo, output on S3), each against an undisturbed run with
the same seed: ``train_worker_kill`` (one worker process killed in the middle of an epoch: Ray Train restarts the
group, the job resumes after the last committed epoch) and ``train_s3_restart`` (the store down for 4 s across two
checkpoint writes). ``lost`` and ``duplicated`` count epochs missing from or doubled in ``history.json``,
``corrupt_loaded`` the checkpoints named by ``latest.json``, ``best.json`` or the history that do not load as the
epoch they claim, ``metric_delta`` the largest difference of a final validation metric (top-1, MaxBoxAcc, in
points) from the undisturbed run's, and ``metric_noise`` the same between two undisturbed runs.

``serve_overload`` is in ``bench/chaos_serve.py``'s terms (see there). The last line is one JSON object of every
figure.

    python bench/chaos.py [--scale 0.3] [--scenarios s3_restart,actor_kill,driver_kill,...] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from jobs.common import storage
from jobs.common.s3server import EmbeddedS3, _free_port

SCORE_SCENARIOS = ("s3_restart", "actor_kill", "driver_kill")
TRAIN_SCENARIOS = ("train_worker_kill", "train_s3_restart")
SCENARIOS = (*SCORE_SCENARIOS, *TRAIN_SCENARIOS, "serve_overload")
TRAIN_CONFIG = """\
data: {{manifest: s3://chaos/corpus/manifest.parquet, image_size: 64, val_splits: [val, test],
        val_image_types: [photo, sketch, cartoon]}}
output: {output}
model: {{arch: tiny, num_classes: 6, width_mult: 0.25, insert_after: [conv3_2]}}
train: {{epochs: {epochs}, batch_size: 16}}
scaling: {{num_workers: 2, cpus_per_worker: 0.9, max_failures: 3}}
ray: {{num_cpus: 2}}
retry: {{budget_s: 60}}
seed: 0
"""
CONFIG = "retry: {budget_s: 60}\nray: {num_cpus: 2}\nstages: {run: [quality]}\nprogress_interval_s: 2\n"


def _score(input_uri: str, output_uri: str, config: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "jobs.cli", "score", "--input", input_uri, "--output", output_uri,
               "--config", str(config)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # fmt: skip


def _rows(output_uri: str):
    import pyarrow.dataset as pads

    fs, path = storage.resolve(storage.join(output_uri, "rows/"))
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["source_uri", "frame_index"])
    return list(zip(table.column("source_uri").to_pylist(), table.column("frame_index").to_pylist(), strict=True))


def _dead_sources(output_uri: str) -> set[str]:
    import pyarrow.dataset as pads

    fs, path = storage.resolve(storage.join(output_uri, "dead_letter/"))
    try:
        table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["source_uri"])
    except (FileNotFoundError, OSError):
        return set()
    return set(table.column("source_uri").to_pylist())


def _ray_workers(parent: int, kind: str = "MapWorker") -> list[psutil.Process]:
    """The Ray actor processes whose command line names ``kind`` (``ray::MapWorker``: Ray Data's actors,
    ``RayTrainWorker``: Ray Train's) under the driver ``parent``'s Ray."""
    try:
        children = psutil.Process(parent).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for proc in children:
        try:
            if kind in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            continue
    return out


class Faults:
    """The fault of one scenario, injected from a thread while the first run goes."""

    def __init__(self, name: str, server: EmbeddedS3, baseline_s: float, rng: random.Random):
        self.name, self.server, self.baseline_s, self.rng = name, server, baseline_s, rng
        self.injected: list[str] = []

    def _at(self, fraction: float) -> None:
        time.sleep(max(0.0, self.t0 + fraction * self.baseline_s - time.monotonic()))

    def during(self, proc: subprocess.Popen) -> None:
        for fraction in (0.25, 0.6):
            self._at(fraction)
            if proc.poll() is not None:
                return
            if self.name == "s3_restart":
                self.server.down()
                self.injected.append(f"store down at {time.monotonic() - self.t0:.1f} s for 4 s")
                time.sleep(4.0)
                self.server.up()
            elif self.name == "actor_kill":
                while proc.poll() is None and not (workers := _ray_workers(proc.pid)):
                    time.sleep(0.1)  # the actors start a few seconds into the run
                if proc.poll() is None:
                    victim = self.rng.choice(workers)
                    victim.send_signal(signal.SIGKILL)
                    self.injected.append(f"killed actor pid {victim.pid} at {time.monotonic() - self.t0:.1f} s")

    def start(self, proc: subprocess.Popen) -> threading.Thread:
        self.t0 = time.monotonic()
        thread = threading.Thread(target=self.during, args=(proc,), daemon=True)
        thread.start()
        return thread


def run_scenario(name: str, input_uri: str, out: str, config: Path, server, baseline: dict, args) -> dict:
    rng = random.Random(args.seed)
    started, codes, injected, killed = time.monotonic(), [], [], 0
    kills = [rng.uniform(0.2, 0.9) * baseline["seconds"] for _ in range(3)] if name == "driver_kill" else []
    while len(codes) <= args.max_reruns + killed:
        proc = _score(input_uri, out, config)
        faults = Faults(name, server, baseline["seconds"], rng)
        thread = faults.start(proc) if not codes and name != "driver_kill" else None
        if kills:
            at = kills.pop(0)
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                injected.append(f"driver killed at {at:.1f} s")
                killed += 1
        proc.wait()
        if thread is not None:
            thread.join()
            injected += faults.injected
        codes.append(proc.returncode)
        if proc.returncode == 0:  # done (a kill planned after the run had finished never happens)
            break
    reruns = len(codes) - 1 - killed  # runs the faults made necessary beyond our own kills
    seconds = time.monotonic() - started
    rows = _rows(out)
    expected = set(baseline["rows"])
    dead = _dead_sources(out)
    return {
        "lost": len(expected - set(rows)),
        "duplicated": len(rows) - len(set(rows)),
        "wrong_dead_letter": len(dead & {source for source, _ in expected}),
        "reruns": reruns,
        "exit_codes": codes,
        "seconds": round(seconds, 1),
        "seconds_ratio": round(seconds / baseline["seconds"], 2),
        "injected": injected,
    }


def _train(config: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "jobs.cli", "train", "cam", "--config", str(config)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _history(output: str) -> list[dict]:
    return storage.read_json(storage.join(output, "history.json")) or []


def _corrupt_checkpoints(output: str, history: list[dict]) -> int:
    """Checkpoints named by the pointers or the history that do not load as the epoch they claim."""
    from jobs.media.checkpoints import read_checkpoint

    named = {int(h["epoch"]): storage.join(output, "checkpoints", f"epoch_{int(h['epoch']):04d}.pt") for h in history}
    for pointer in ("latest.json", "best.json"):
        if record := storage.read_json(storage.join(output, pointer)):
            named[int(record["epoch"])] = record["checkpoint"]
    bad = 0
    for epoch, uri in named.items():
        try:
            bad += int(read_checkpoint(uri)["epoch"] != epoch)
        except Exception:
            bad += 1
    return bad


VAL_METRICS = ("val_top1", "val_maxboxacc_50", "val_maxboxacc_v2")


def _val_metrics(history: list[dict]) -> dict[str, float]:
    return {k: round(float(v), 3) for k, v in (history[-1] if history else {}).items() if k in VAL_METRICS}


def _delta(a: dict[str, float], b: dict[str, float]) -> float:
    """The largest difference of a validation metric (in points) between two runs."""
    return round(max((abs(a[k] - b[k]) for k in VAL_METRICS if k in a and k in b), default=float("nan")), 3)


class TrainFaults:
    """The fault of a training scenario, from a thread, timed by the run's own progress (``history.json``): a
    worker killed half-way through the second epoch, or the store down for 4 s from 1 s before the ends of the
    second and fourth epochs, when rank 0 writes the checkpoint and the pointers."""

    def __init__(self, name: str, server: EmbeddedS3, output: str, epoch_s: float):
        self.name, self.server, self.output, self.epoch_s = name, server, output, epoch_s
        self.injected: list[str] = []

    def _after_epochs(self, proc: subprocess.Popen, count: int) -> bool:
        while proc.poll() is None:
            if len(_history(self.output)) >= count:
                return True
            time.sleep(0.2)
        return False

    def during(self, proc: subprocess.Popen, t0: float) -> None:
        if self.name == "train_worker_kill":
            if not self._after_epochs(proc, 1):
                return
            time.sleep(self.epoch_s / 2)
            workers = _ray_workers(proc.pid, "RayTrainWorker")
            if workers:
                victim = max(workers, key=lambda w: w.pid)
                victim.send_signal(signal.SIGKILL)
                self.injected.append(f"killed train worker pid {victim.pid} at {time.monotonic() - t0:.1f} s")
            else:
                self.injected.append("no Ray Train worker process found to kill")
            return
        for count in (1, 3):
            if not self._after_epochs(proc, count):
                return
            time.sleep(max(0.0, self.epoch_s - 1.0))
            self.server.down()
            self.injected.append(f"store down at {time.monotonic() - t0:.1f} s for 4 s (epoch {count})")
            time.sleep(4.0)
            self.server.up()


def run_train_scenario(name: str, home: Path, server: EmbeddedS3, baseline: dict, args) -> dict:
    output = f"s3://chaos/train/{name}"
    config = home / f"{name}.yaml"
    config.write_text(TRAIN_CONFIG.format(output=output, epochs=args.train_epochs))
    started, codes, injected = time.monotonic(), [], []
    while len(codes) <= args.max_reruns:
        proc = _train(config)
        faults = TrainFaults(name, server, output, baseline["epoch_s"])
        thread = None
        if not codes:
            thread = threading.Thread(target=faults.during, args=(proc, time.monotonic()), daemon=True)
            thread.start()
        proc.wait()
        if thread is not None:
            thread.join()
            injected += faults.injected
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
    seconds = time.monotonic() - started
    history = _history(output)
    epochs = [int(h["epoch"]) for h in history]
    final, reference = _val_metrics(history), baseline["val"]
    return {
        "lost": len(set(range(args.train_epochs)) - set(epochs)),
        "duplicated": len(epochs) - len(set(epochs)),
        "corrupt_loaded": _corrupt_checkpoints(output, history),
        "reruns": len(codes) - 1,
        "exit_codes": codes,
        "seconds": round(seconds, 1),
        "seconds_ratio": round(seconds / baseline["seconds"], 2),
        "metric_delta": _delta(final, reference),
        "metric_noise": baseline["noise"],
        "final_val": final,
        "injected": injected,
    }


def _train_baseline(home: Path, args) -> dict:
    """Two undisturbed runs with the same seed: the reference, and how far two such runs differ (``noise``: the data
    order of two workers is not the same from run to run)."""
    runs = []
    for k in range(2):
        output = f"s3://chaos/train/baseline_{k}"
        config = home / f"train_baseline_{k}.yaml"
        config.write_text(TRAIN_CONFIG.format(output=output, epochs=args.train_epochs))
        started = time.monotonic()
        proc = _train(config)
        proc.wait()
        history = _history(output)
        if proc.returncode != 0 or len(history) != args.train_epochs:
            raise SystemExit(f"the undisturbed training failed (exit {proc.returncode}, {len(history)} epochs)")
        runs.append((time.monotonic() - started, history))
    seconds, history = runs[0]
    epoch_s = sum(float(h["epoch_s"]) for h in history) / len(history)
    print(f"[chaos] undisturbed training: {args.train_epochs} epochs in {seconds:.1f} s", flush=True)
    noise = _delta(_val_metrics(runs[0][1]), _val_metrics(runs[1][1]))
    return {"seconds": seconds, "epoch_s": epoch_s, "val": _val_metrics(history), "noise": noise}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.3, help="corpus scale (1: a few hundred images)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-reruns", type=int, default=5)
    parser.add_argument("--train-epochs", type=int, default=6, help="epochs of the training scenarios")
    parser.add_argument("--serve-seconds", type=float, default=600, help="length of the Serve overload")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedS3(home=Path(home), port=_free_port())
        os.environ.update(server.up().env())
        try:
            figures = _bench(server, Path(home), scenarios, args)
        finally:
            server.down()
    print(json.dumps(figures, sort_keys=True))


def _bench(server: EmbeddedS3, home: Path, scenarios: list[str], args) -> dict:
    from jobs.corpus import make_corpus

    corpus = make_corpus("s3://chaos/corpus", seed=args.seed, scale=args.scale, workers=4)
    print(f"[chaos] corpus: {corpus.images} images, {corpus.videos} videos", flush=True)
    input_uri = "s3://chaos/corpus/"
    config = home / "score.yaml"
    config.write_text(CONFIG)
    started = time.monotonic()
    proc = _score(input_uri, "s3://chaos/out/baseline", config)
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"the undisturbed run failed (exit {proc.returncode})")
    baseline = {"seconds": time.monotonic() - started, "rows": _rows("s3://chaos/out/baseline")}
    print(f"[chaos] undisturbed: {len(baseline['rows'])} rows in {baseline['seconds']:.1f} s", flush=True)
    figures = {"baseline_seconds": round(baseline["seconds"], 1), "baseline_rows": len(baseline["rows"])}
    train_baseline = None
    for name in scenarios:
        if name in TRAIN_SCENARIOS:
            train_baseline = train_baseline or _train_baseline(home, args)
            figures["train_baseline_seconds"] = round(train_baseline["seconds"], 1)
            result = run_train_scenario(name, home, server, train_baseline, args)
        elif name == "serve_overload":
            from chaos_serve import run_serve_overload

            result = run_serve_overload(home, args.serve_seconds)
        else:
            result = run_scenario(name, input_uri, f"s3://chaos/out/{name}", config, server, baseline, args)
        print(f"[chaos] {name}: {json.dumps(result, sort_keys=True)}", flush=True)
        figures[name] = result
    return figures


if __name__ == "__main__":
    main()
