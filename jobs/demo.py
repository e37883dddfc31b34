"""``mediascore demo``: the whole system on one machine, from an empty object store to a report."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from jobs.common import storage
from jobs.common.config import REPO_ROOT, load_config
from jobs.common.s3server import EmbeddedS3, export_lines
from jobs.common.storage import read_json

BUCKET = "s3://mediascore-demo"
ROOT = REPO_ROOT
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
CHECKPOINTS = ROOT / "checkpoints"
# The demo's checkpoints: name -> (training config, the file it becomes). `mediascore train demo` remakes them.
# `cam` is the localizer the demo and Serve run: ImageNet EfficientNet-Lite0 fine-tuned on the corpus, and the
# fusion model's frozen upstream, so it trains before fusion. `cam_tiny` is the small from-scratch network that the
# test suite's short training runs use as their upstream (it builds and runs in a fraction of Lite0's time).
DEMO_MODELS = {
    "cam": (ROOT / "configs" / "train_cam_demo.yaml", CHECKPOINTS / "cam_lite0.pt"),
    "cam_tiny": (ROOT / "configs" / "train_cam.yaml", CHECKPOINTS / "cam_tiny.pt"),
    "fusion": (ROOT / "configs" / "train_fusion.yaml", CHECKPOINTS / "fusion_lite0.pt"),
    "restore": (ROOT / "configs" / "train_restore.yaml", CHECKPOINTS / "restore_tiny.pt"),
}
QUALITY_CHECKPOINT = CHECKPOINTS / "quality_tiny.pt"  # made by the restore run, beside its generator
# The fusion scorer trains on a risk corpus four times the demo's (see configs/train_fusion.yaml), made beside it.
FUSION_CORPUS_SCALE = 4.0


def _corpus(uri: str, seed: int, scale: float) -> None:
    from jobs.corpus import make_corpus

    meta = read_json(storage.join(uri, "meta.json"))
    if (
        meta
        and meta.get("seed") == seed
        and meta.get("scale") == scale
        and meta.get("risk")
        and storage.exists(storage.join(uri, "manifest.parquet"))
    ):
        print(f"[demo] corpus already in {uri} (seed {seed}, scale {scale})")
        return
    print(f"[demo] writing the sample corpus to {uri} ...")
    print(
        make_corpus(uri, seed=seed, scale=scale, workers=8, risk=True, progress=lambda line: print(f"[corpus] {line}"))
    )


def _start_store(scale: float, seed: int) -> tuple:
    state = EmbeddedS3().up()
    os.environ.update(state.env())
    print(f"[demo] S3 object store (SeaweedFS) on {state.endpoint}")
    corpus = f"{BUCKET}/corpus"
    _corpus(corpus, seed, scale)
    return state, corpus


def train_demo_models(seed: int = 0, only: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Train every demo model on the sample corpus and copy its final checkpoint into ``checkpoints/``.

    Each file is the self-describing checkpoint the training job wrote (config, classes, metrics, epoch) as shipped
    (:func:`models.checkpoint.release_bytes`: no optimizer state, float16 weights); a JSON file beside it records
    the command and the final metrics, so the committed weights say how they were made.
    """
    from jobs.train import cam as train_cam
    from jobs.train import fusion as train_fusion
    from jobs.train import restore as train_restore
    from models.checkpoint import release_bytes

    unknown = sorted(set(only or ()) - set(DEMO_MODELS))
    if unknown:
        raise ValueError(f"unknown demo models {unknown}; choose from {sorted(DEMO_MODELS)}")

    _start_store(1.0, seed)
    made, clean = {}, {"resume": False}  # a clean run: the committed file must be reproducible from the config alone
    for name, (config, target) in DEMO_MODELS.items():
        if only is not None and name not in only:
            continue
        started = time.monotonic()
        print(f"[train demo] {name}: {config.relative_to(ROOT)} -> {target.relative_to(ROOT)}")
        if name.startswith("cam"):
            settings = train_cam.load_train_settings(config, clean)
            metrics = train_cam.run_train_cam(settings)
            latest = read_json(storage.join(settings.output, "latest.json"))
        elif name == "fusion":
            settings = train_fusion.load_fusion_settings(config, clean)
            _corpus(settings.data.manifest.rsplit("/", 1)[0], seed, FUSION_CORPUS_SCALE)
            latest = train_fusion.run_train_fusion(settings)  # the best epoch (lowest validation loss)
            metrics = latest["metrics"]
        else:
            settings = train_restore.load_restore_settings(config, clean)
            metrics = train_restore.run_train_restore(settings)
            latest = read_json(train_restore.paths(settings.output)["latest"])
            latest["checkpoint"] = latest["generator"]  # the EMA weights only, no optimizer state
            QUALITY_CHECKPOINT.write_bytes(storage.read_bytes(train_restore.paths(settings.output)["quality"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(release_bytes(storage.read_bytes(latest["checkpoint"])))
        made[name] = {
            "file": str(target.relative_to(ROOT)),
            "command": f"mediascore train {name.split('_')[0]} --config {config.relative_to(ROOT)}  (via `make train`)",
            "config": str(config.relative_to(ROOT)),
            "epoch": latest["epoch"],
            "train_s": round(time.monotonic() - started, 1),
            "metrics": metrics,
        }
        target.with_suffix(".json").write_text(json.dumps(made[name], indent=2, sort_keys=True, default=str) + "\n")
        print(f"[train demo] {name}: wrote {target.relative_to(ROOT)} ({target.stat().st_size // 1024} KiB)")
    return made


def run_demo(scale: float = 1.0, config: str | None = None, seed: int = 0) -> None:
    """Start S3, write the corpus (once), score it into a new output, write the report, say where it all is."""
    from jobs.score.pipeline import run_score
    from jobs.score.report import write_report

    started = time.monotonic()
    state, corpus = _start_store(scale, seed)
    output = f"{BUCKET}/scores/{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"[demo] scoring {corpus} -> {output}")
    summary = run_score(corpus, output, load_config(config or DEMO_CONFIG))
    report = write_report(output)
    local = Path(os.environ.get("MEDIASCORE_HOME", ".mediascore")) / "reports" / f"{output.rsplit('/', 1)[-1]}.html"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(storage.read_bytes(report))
    print("\n== summary ==")
    print(summary)
    print(f"report           {report} (local copy: {local})")
    print(f"\n[demo] done in {time.monotonic() - started:.0f} s. To read the results:")
    print(export_lines(state))
    print(
        f'{sys.executable} -c "import pyarrow.parquet as pq; from jobs.common import storage; '
        f"fs, path = storage.resolve('{output}/rows'); print(pq.read_table(path, filesystem=fs).to_pandas())\""
    )
    print("make s3-down   # stops the object store; its data stays in .mediascore/s3")
