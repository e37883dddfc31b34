"""``mediascore demo``: the whole system on one machine, from an empty object store to a report."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from jobs import storage
from jobs.config import load_config
from jobs.output import read_json
from jobs.s3server import EmbeddedS3, export_lines

BUCKET = "s3://mediascore-demo"
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _corpus(uri: str, seed: int, scale: float) -> None:
    from jobs.corpus import make_corpus

    meta = read_json(storage.join(uri, "meta.json"))
    if (
        meta
        and meta.get("seed") == seed
        and meta.get("scale") == scale
        and storage.exists(storage.join(uri, "manifest.parquet"))
    ):
        print(f"[demo] corpus already in {uri} (seed {seed}, scale {scale})")
        return
    print(f"[demo] writing the sample corpus to {uri} ...")
    print(make_corpus(uri, seed=seed, scale=scale, workers=8, progress=lambda line: print(f"[corpus] {line}")))


def run_demo(scale: float = 1.0, config: str | None = None, seed: int = 0) -> None:
    """Start S3, write the corpus (once), score it into a new output, write the report, say where it all is."""
    from jobs.report import write_report
    from jobs.score import run_score

    started = time.monotonic()
    state = EmbeddedS3().up()
    os.environ.update(state.env())
    print(f"[demo] S3 object store (SeaweedFS) on {state.endpoint}")
    corpus = f"{BUCKET}/corpus"
    _corpus(corpus, seed, scale)
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
        f'{sys.executable} -c "import pyarrow.parquet as pq; from jobs import storage; '
        f"fs, path = storage.resolve('{output}/rows'); print(pq.read_table(path, filesystem=fs).to_pandas())\""
    )
    print("make s3-down   # stops the object store; its data stays in .mediascore/s3")
