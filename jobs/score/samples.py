"""``mediascore score --samples MANIFEST``: multi-modal samples scored with a ``train scorefusion`` checkpoint.

The manifest has one row per (sample, modality) (``sample_id``, ``modality``, ``uri``, optionally ``label``). Ray
Data groups the rows by ``sample_id`` into one row per sample, then an actor pool holding the checkpoint scores
batches of samples (one network call per modality per batch, :class:`jobs.media.scorefusion.ScoreFusionScorer`)
and writes each batch to ``<output>/samples/part-<hash>.parquet``. One object per batch is the unit of commit:
a rerun lists the parts, skips the samples they hold and scores the rest, so a stopped run resumes without
scoring anything twice. ``<output>/samples_job.json`` records the checkpoint and manifest; a rerun with another
checkpoint is refused rather than mixing two models in one table.

Columns: ``sample_id``, ``label`` (the manifest's, when it has one), ``sf_class``, ``sf_score``, ``sf_scores``
and ``sf_weights`` (maps modality -> value; the weights actually used, after renormalising over what was there),
``sf_missing`` (modalities absent or unreadable, with the reason), ``sf_model`` (the checkpoint's version) and
``error`` (why a sample has no score). A missing object, a corrupt file or an unknown modality never stops the
run: the sample keeps its row with the reason.
"""

from __future__ import annotations

import hashlib
import html
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.common import storage
from jobs.common.storage import read_json, write_json

SAMPLES_FOLDER = "samples"
JOB_FILE = "samples_job.json"
SCORES = pa.map_(pa.string(), pa.float64())
SAMPLES_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("label", pa.string()), ("sf_class", pa.string()), ("sf_score", pa.float64()),
    ("sf_scores", SCORES), ("sf_weights", SCORES), ("sf_missing", pa.list_(pa.string())), ("sf_model", pa.string()),
    ("error", pa.string()),
])  # fmt: skip


SAMPLE_COLUMNS = ("sample_id", "modality", "uri")


def read_samples_manifest(uri: str, required=SAMPLE_COLUMNS) -> pd.DataFrame:
    """A samples manifest, checked for the ``required`` columns (training also needs ``label`` and ``split``)."""
    table = pd.read_parquet(io.BytesIO(storage.read_bytes(uri)))
    missing = set(required) - set(table.columns)
    if missing:
        raise ValueError(f"{uri}: a samples manifest needs the columns {sorted(missing)}")
    return table


def _inference_rows(uri: str) -> pd.DataFrame:
    """The rows ``score --samples`` groups; ``label`` is optional at inference."""
    table = read_samples_manifest(uri)
    if "label" not in table:
        table["label"] = None
    return table[["sample_id", "modality", "uri", "label"]].astype({"sample_id": str, "modality": str, "uri": str})


def done_samples(output: str) -> set[str]:
    """The sample ids that committed parts of ``output`` already hold."""
    done: set[str] = set()
    for obj in storage.list_objects(storage.join(output, SAMPLES_FOLDER), extensions=[".parquet"]):
        table = pq.read_table(io.BytesIO(storage.read_bytes(obj.uri)), columns=["sample_id"])
        done.update(table.column("sample_id").to_pylist())
    return done


def _pack(group: pd.DataFrame) -> pd.DataFrame:
    """One sample's rows -> one row with its modalities and URIs as lists (the ``map_groups`` step)."""
    labels = group.label.dropna()
    return pd.DataFrame({
        "sample_id": [str(group.sample_id.iloc[0])], "label": [str(labels.iloc[0]) if len(labels) else None],
        "modalities": [group.modality.astype(str).tolist()], "uris": [group.uri.astype(str).tolist()],
    })  # fmt: skip


def read_sample_files(modalities, uris, names) -> tuple[dict[str, tuple[bytes, str]], dict[str, str]]:
    """One sample's files as :meth:`ScoreFusionScorer.score_samples` takes them, for the modalities in ``names``
    (others are not this model's), and the reason for each that could not be read."""
    from jobs.media.decode import describe

    files, reasons = {}, {}
    for name, uri in zip(modalities, uris, strict=True):
        if name not in names:
            continue
        try:
            files[name] = (storage.read_bytes(uri), uri)
        except (FileNotFoundError, OSError) as exc:
            reasons[name] = describe(exc)
    return files, reasons


class ScoreSampleBatches:
    """Ray Data actor: the checkpoint, loaded once; each batch of samples read, scored and committed as a part."""

    def __init__(self, checkpoint: str, output: str, missing: str = "renormalise", device: str | None = None):
        from jobs.media.scorefusion import ScoreFusionScorer

        self.scorer = ScoreFusionScorer(checkpoint, device, missing)
        self.output = output

    def __call__(self, batch: dict) -> dict:
        names = self.scorer.names
        read = [read_sample_files(m, u, names) for m, u in zip(batch["modalities"], batch["uris"], strict=True)]
        samples, reasons = [files for files, _ in read], [why for _, why in read]
        results = self.scorer.score_samples(samples)
        rows = []
        for sid, label, result, why in zip(batch["sample_id"], batch["label"], results, reasons, strict=True):
            missing = [f"{m} ({why[m]})" if m in why else m for m in result.sf_missing]
            error = result.error
            if error and why:
                error = f"{error}; " + "; ".join(f"{m}: {r}" for m, r in why.items())
            rows.append({"sample_id": str(sid), "label": None if label is None else str(label),
                         "sf_class": result.sf_class, "sf_score": result.sf_score,
                         "sf_scores": list(result.sf_scores.items()), "sf_weights": list(result.sf_weights.items()),
                         "sf_missing": missing, "sf_model": self.scorer.version, "error": error})  # fmt: skip
        table = pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA)
        digest = hashlib.sha1("\n".join(sorted(r["sample_id"] for r in rows)).encode()).hexdigest()[:16]
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        storage.write_bytes(storage.join(self.output, SAMPLES_FOLDER, f"part-{digest}.parquet"), buf.getvalue())
        return {"sample_id": np.array([r["sample_id"] for r in rows]),
                "error": np.array([r["error"] or "" for r in rows])}  # fmt: skip


@dataclass
class SamplesSummary:
    output: str
    samples: int
    scored: int
    errors: int
    skipped_done: int
    report: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        return (f"score --samples: {self.scored} of {self.samples} samples scored this run, {self.errors} without a "
                f"score (reasons in the error column), {self.skipped_done} done before; results in "
                f"{storage.join(self.output, SAMPLES_FOLDER)}/, report {self.report}")  # fmt: skip


def _check_job(output: str, job: dict) -> None:
    earlier = read_json(storage.join(output, JOB_FILE))
    if earlier and earlier.get("sf_model") != job["sf_model"]:
        raise ValueError(f"{output} holds samples scored by model {earlier['sf_model']} ({earlier['checkpoint']}); "
                         f"scoring with {job['sf_model']} would mix two models: use another output")  # fmt: skip
    write_json(storage.join(output, JOB_FILE), job)


def run_score_samples(manifest_uri: str, output: str, checkpoint: str, missing: str = "renormalise",
                      batch_size: int = 32, workers: int = 1, address: str | None = None,
                      progress=print) -> SamplesSummary:  # fmt: skip
    """Score every sample of the manifest not yet in ``output`` (see the module docstring)."""
    import ray.data

    from jobs.common.config import RayConfig
    from jobs.common.session import ray_session
    from jobs.media.checkpoints import read_checkpoint
    from models.checkpoint import describe

    info = describe(read_checkpoint(checkpoint), checkpoint)
    _check_job(output, {"checkpoint": checkpoint, "sf_model": info["version"], "manifest": manifest_uri})
    rows = _inference_rows(manifest_uri)
    done = done_samples(output)
    todo = rows[~rows.sample_id.isin(done)]
    total = int(todo.sample_id.nunique())
    scored = errors = 0
    if total:
        with ray_session(RayConfig(), address):
            ds = ray.data.from_pandas(todo).groupby("sample_id").map_groups(_pack, batch_format="pandas")
            ds = ds.map_batches(ScoreSampleBatches, fn_constructor_args=(checkpoint, output, missing),
                                batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                                batch_format="numpy", num_cpus=1)  # fmt: skip
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                scored += int((batch["error"] == "").sum())
                errors += int((batch["error"] != "").sum())
                progress(f"[score samples] {scored + errors}/{total} samples")
    weights = dict(zip(info["metrics"].get("modalities", []), info["metrics"].get("weights", []), strict=False))
    report = storage.join(output, "samples_report.html")
    storage.write_bytes(report, build_samples_report(output, weights).encode())
    return SamplesSummary(output, total + len(done & set(rows.sample_id)), scored, errors, len(done), report)


def read_samples_table(output: str) -> pd.DataFrame:
    """Every committed part of ``output`` as one table, one row per sample."""
    parts = [pq.read_table(io.BytesIO(storage.read_bytes(o.uri)))
             for o in storage.list_objects(storage.join(output, SAMPLES_FOLDER), extensions=[".parquet"])]  # fmt: skip
    return pa.concat_tables(parts).to_pandas() if parts else SAMPLES_SCHEMA.empty_table().to_pandas()


def build_samples_report(output: str, checkpoint_weights: dict[str, float]) -> str:
    """The HTML report of a ``score --samples`` output (module docstring)."""
    from jobs.score.report import histogram_svg, weights_svg

    table = read_samples_table(output)
    names = list(checkpoint_weights)
    used = {n: float(np.mean([dict(w).get(n, 0.0) for w in table.sf_weights])) if len(table) else None
            for n in names}  # fmt: skip
    hists = [histogram_svg(table.sf_score.to_numpy(float), "sf_score (all)")]
    for label in sorted(table.label.dropna().unique()):
        hists.append(histogram_svg(table.sf_score[table.label == label].to_numpy(float), f"sf_score, label {label}"))
    for n in names:
        hists.append(histogram_svg(np.array([dict(s).get(n, np.nan) for s in table.sf_scores], float), f"score {n}"))
    gaps = table[table.sf_missing.map(len) > 0].head(100)
    gap_rows = "".join(
        f"<tr><td>{html.escape(r.sample_id)}</td><td>{html.escape('; '.join(r.sf_missing))}</td>"
        f"<td>{html.escape(r.error if isinstance(r.error, str) else '')}</td></tr>"
        for r in gaps.itertuples()
    )
    size = 40 + 22 * len(names)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mediascore samples report</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
.hist{{display:inline-block;margin:8px}} table{{border-collapse:collapse}}</style></head><body>
<h1>mediascore samples report</h1><p>{html.escape(output)}: {len(table)} samples,
{int(table.error.notna().sum())} without a score</p>
<h2>Modality weights</h2><p>fitted (the checkpoint) {weights_svg(checkpoint_weights, 320, size, names)}
mean used per sample (renormalised over what each sample had) {weights_svg(used, 320, size, names)}</p>
<h2>Score distributions</h2>{"".join(hists)}
<h2>Samples with a gap ({len(gaps)} shown)</h2><table><tr><th>sample</th><th>missing</th><th>error</th></tr>
{gap_rows}</table></body></html>"""
