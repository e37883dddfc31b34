"""``mediascore score``: list -> decode -> stages -> Parquet, as one streaming Ray Data pipeline.

The driver lists the input, skips what earlier runs completed (see :mod:`jobs.score.output`), and drains the writer's
small per-file summaries to show progress; pixels never come back to it. Resources of every step come from the
config, at its ``map_batches`` call.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field

import numpy as np

from jobs.common import storage
from jobs.common.config import DecodeConfig, Resources, ScoreConfig
from jobs.common.session import ray_session
from jobs.common.storage import read_json, write_json
from jobs.score.ingest import Decoder, Listing, MediaObject, list_inputs
from jobs.score.output import Writer, load_state, output_schema, remove_orphans, reopen_dead_letters
from jobs.score.resume import scan_commits
from jobs.score.stages import ChainedStages, build_stage

MAX_INPUT_BLOCKS = 2000


class OutputConflict(RuntimeError):
    """The output URI belongs to a run with another input, other stages or another sampling config."""


@dataclass
class ScoreSummary:
    """What a run did, from the commit records (so a resumed run reports the whole output)."""

    input: str
    output: str
    media_objects: int
    skipped_non_media: int
    already_complete: int
    processed_this_run: int
    images: int
    videos: int
    frames: int
    rows_written: int
    dead_letter: int
    errors_by_reason: dict[str, int]
    elapsed_s: float
    rows_per_s: float
    pending: int = 0  # inputs left uncommitted because the store stayed unavailable: a rerun does them
    pending_sources: list[str] = field(default_factory=list)  # the first 100 of them
    locations: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        errors = ", ".join(f"{k}={v}" for k, v in sorted(self.errors_by_reason.items())) or "none"
        lines = [
            f"input            {self.input}",
            f"media objects    {self.media_objects} ({self.skipped_non_media} non-media objects skipped)",
            f"this run         {self.processed_this_run} processed, {self.already_complete} already complete",
            f"decoded          {self.images} images, {self.videos} videos, {self.frames} sampled frames",
            f"rows written     {self.rows_written}",
            f"dead letter      {self.dead_letter}",
            *(
                [f"pending          {self.pending} (store unavailable: run the same command again)"]
                if self.pending
                else []
            ),
            f"errors by reason {errors}",
            f"throughput       {self.rows_per_s:.1f} rows/s over {self.elapsed_s:.1f} s",
        ]
        lines += [f"{name:<16} {uri}" for name, uri in self.locations.items()]
        return "\n".join(lines)


def fingerprint(cfg: ScoreConfig, stages: list[str]) -> str:
    """Hash of what decides the rows' content and keys (sampling, limits, stage settings), not of resources."""
    parts = {
        "decode": cfg.decode.model_dump(mode="json", exclude={"resources", "rows_per_block", "batches_per_task"}),
        "stages": {name: getattr(cfg.stages, name).model_dump(mode="json", exclude={"resources"}) for name in stages},
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _pool(res: Resources) -> dict:
    import ray.data

    if isinstance(res.concurrency, int):
        compute = ray.data.ActorPoolStrategy(size=res.concurrency)
    else:
        compute = ray.data.ActorPoolStrategy(min_size=res.concurrency[0], max_size=res.concurrency[1])
    args = {"compute": compute, "num_cpus": res.num_cpus, "batch_size": res.batch_size, "batch_format": "numpy"}
    if res.num_gpus:
        args["num_gpus"] = res.num_gpus
    if res.label_selector:
        args["label_selector"] = dict(res.label_selector)
    return args


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _route(batch: dict, step: str, node: str) -> dict:
    """Append ``step@node`` to every row's ``_route``: the writer counts from it which node did each step."""
    hop = f"{step}@{node}"
    old = batch.get("_route")
    n = len(batch["source_uri"])
    batch["_route"] = np.array([hop] * n if old is None else [f"{r},{hop}" for r in old], dtype=object)
    return batch


class _DecodeActor(Decoder):
    """The decode step, its rows routed through this node."""

    def __init__(self, *args):
        super().__init__(*args)
        self.node = _node_id()

    def __call__(self, batch):
        for block in super().__call__(batch):
            yield _route(block, "decode", self.node)


class _StageActor:
    """Builds a group of stages inside the actor, so only configs travel to it. The last group drops the pixels:
    the writer does not need them, and they are the bulk of every batch."""

    def __init__(self, names: list[str], cfg: ScoreConfig, last: bool):
        stages = [build_stage(name, cfg.stages) for name in names]
        self.names = names
        self.fn = stages[0] if len(stages) == 1 else ChainedStages(stages)
        self.last = last
        self.node = _node_id()

    def __call__(self, batch):
        batch = self.fn(batch)
        for name in self.names:
            _route(batch, name, self.node)
        if self.last:
            batch.pop("pixels", None)
        return batch


class _DecodeAndStages:
    """Decode and every stage in one actor (``stages.fuse: decode``): pixels never leave the process."""

    def __init__(self, cfg: ScoreConfig, names: list[str]):
        self.decoder = _DecodeActor(cfg.decode, True, cfg.retry.policy())
        self.stages = _StageActor(names, cfg, last=True)

    def __call__(self, batch):
        for block in self.decoder(batch):
            yield self.stages(block)


class _WriterActor(Writer):
    """The writer, which also counts the rows each node did for each step (from ``_route``) into its summary."""

    def __init__(self, *args):
        super().__init__(*args)
        self.node = _node_id()

    def __call__(self, batch):
        routes = batch.pop("_route", None)
        hops = collections.Counter(hop for r in ([] if routes is None else routes) for hop in str(r).split(","))
        hops[f"writer@{self.node}"] += len(batch["source_uri"])
        return super().__call__(batch) | {"nodes": np.array([json.dumps(hops)])}


def _chain_resources(cfg: ScoreConfig, names: list[str]) -> Resources:
    """The pool of stages that run in one actor: the most CPU and GPU any asks for, the smallest batch, and every
    stage's node labels (stages pinned to different groups cannot share an actor)."""
    sections = [getattr(cfg.stages, n).resources for n in names]
    labels: dict[str, str] = {}
    for name, r in zip(names, sections, strict=True):
        for key, value in r.label_selector.items():
            if labels.setdefault(key, value) != value:
                raise ValueError(f"stages.fuse: {name} needs {key}={value}, another fused stage {key}={labels[key]}")
    return Resources(
        num_cpus=max(r.num_cpus for r in sections),
        num_gpus=max(r.num_gpus for r in sections),
        batch_size=min(r.batch_size for r in sections),
        concurrency=sections[0].concurrency,
        label_selector=labels,
    )


def input_blocks(n_sources: int, decode: DecodeConfig) -> int:
    """Input blocks (one Ray Data task each) of ``decode.batches_per_task`` batches, but never fewer than 8 per decode
    actor while the sources allow it (so that one slow task, a long video, does not leave the others idle)."""
    res = decode.resources
    actors = res.concurrency if isinstance(res.concurrency, int) else res.concurrency[1]
    batches = math.ceil(n_sources / res.batch_size)
    blocks = max(math.ceil(batches / decode.batches_per_task), min(batches, 8 * actors))
    return max(1, min(MAX_INPUT_BLOCKS, blocks))


def build_dataset(todo: list[MediaObject], partial: dict[str, list[int]], cfg: ScoreConfig, stages: list[str], out):
    """The lazy pipeline; nothing runs until it is iterated."""
    import ray.data
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = cfg.ray.progress_bars
    items = [
        {"uri": m.uri, "size": m.size, "kind": m.kind, "skip": ",".join(map(str, partial.get(m.uri, [])))} for m in todo
    ]
    ds = ray.data.from_items(items, override_num_blocks=input_blocks(len(items), cfg.decode))
    if stages and cfg.stages.fuse == "decode":
        ds = ds.map_batches(_DecodeAndStages, fn_constructor_args=(cfg, stages), **_pool(cfg.decode.resources))
    else:
        decode_args = (cfg.decode, bool(stages), cfg.retry.policy())
        ds = ds.map_batches(_DecodeActor, fn_constructor_args=decode_args, **_pool(cfg.decode.resources))
        groups = [stages] if cfg.stages.fuse == "stages" and stages else [[name] for name in stages]
        for i, group in enumerate(groups):
            res, last = _chain_resources(cfg, group), i == len(groups) - 1
            ds = ds.map_batches(_StageActor, fn_constructor_args=(group, cfg, last), **_pool(res))
    writer = Resources(
        num_cpus=cfg.output.num_cpus, batch_size=cfg.output.rows_per_file, concurrency=cfg.output.concurrency,
        label_selector=cfg.output.label_selector,
    )  # fmt: skip
    writer_args = (out, cfg.output.compression, cfg.retry.policy())
    return ds.map_batches(_WriterActor, fn_constructor_args=writer_args, **_pool(writer))


def _drain(ds, total: int, interval_s: float, echo: Callable[[str], None]) -> tuple[list[str], collections.Counter]:
    """Run the pipeline, echoing progress. Returns the sources left pending (store unavailable past the retry
    budget) and the rows done per ``step@node``."""
    start = last = time.monotonic()
    rows = dead = done = 0
    pending: set[str] = set()
    hops: collections.Counter = collections.Counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows += int(batch["rows"].sum())
        dead += int(batch["dead"].sum())
        done += int(batch["sources_done"].sum())
        pending.update(uri for text in batch["pending_sources"] for uri in str(text).split("\n") if uri)
        for text in batch["nodes"]:
            hops.update(json.loads(str(text)))
        now = time.monotonic()
        if now - last >= interval_s:
            rate = rows / max(now - start, 1e-9)
            echo(f"[score] {done}/{total} sources, {rows} rows, {dead} dead-lettered, {rate:.1f} rows/s")
            last = now
    return sorted(pending), hops


def node_report(hops: collections.Counter) -> dict[str, dict]:
    """``_manifest.json``'s ``nodes``: for each node of this run, its Ray labels and the rows it did per step."""
    import ray

    labels = {n["NodeID"]: n.get("Labels", {}) for n in ray.nodes()}
    report: dict[str, dict] = {}
    for hop, count in sorted(hops.items()):
        step, node = hop.split("@", 1)
        entry = report.setdefault(node, {"labels": _user_labels(labels.get(node, {})), "rows": {}})
        entry["rows"][step] = entry["rows"].get(step, 0) + count
    return report


def _user_labels(labels: dict[str, str]) -> dict[str, str]:
    """A node's labels without Ray's own (``ray.io/node-id`` and the like)."""
    return {k: v for k, v in labels.items() if not k.startswith("ray.io/")}


def _check_job(output_uri: str, job: dict) -> None:
    previous = read_json(storage.join(output_uri, "_job.json"))
    if previous is None:
        return
    for key in ("input", "stages", "fingerprint"):
        if previous.get(key) != job[key]:
            raise OutputConflict(
                f"{output_uri} holds a run with another {key} ({previous.get(key)!r}, now {job[key]!r}): "
                "write to a new output URI, or delete the old output"
            )


def run_score(
    input_uri: str,
    output_uri: str,
    cfg: ScoreConfig,
    stages: list[str] | None = None,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    retry_dead_letter: Collection[str] = (),
) -> ScoreSummary:
    """Score every media object under ``input_uri`` into ``output_uri``; rerunning resumes.

    A rerun leaves dead-lettered inputs alone, except those whose error code is in ``retry_dead_letter``: they are
    taken out of the dead letter and done again.

    Raises ``storage.InvalidURI`` before anything touches a store when either URI cannot name a location.
    """
    started = time.monotonic()
    storage.check_uri(input_uri)
    storage.check_uri(output_uri)
    stages = list(cfg.stages.run if stages is None else stages)
    if "restore" in stages and cfg.stages.restore.output is None:
        restore = cfg.stages.restore.model_copy(update={"output": storage.join(output_uri, "restored")})
        cfg = cfg.model_copy(update={"stages": cfg.stages.model_copy(update={"restore": restore})})
    job = {"input": input_uri, "stages": stages, "fingerprint": fingerprint(cfg, stages)}  # of the paths as written
    listing = list_inputs(input_uri, cfg.listing)
    if not listing.media and not listing.skipped:
        raise FileNotFoundError(f"nothing to score: no objects under {input_uri}")
    storage.ensure_bucket(output_uri)
    _check_job(output_uri, job)
    write_json(storage.join(output_uri, "_job.json"), {**job, "config": cfg.model_dump(mode="json")})
    if retry_dead_letter:
        codes = set(retry_dead_letter)
        reopened = reopen_dead_letters(output_uri, load_state(output_uri), codes, cfg.output.compression)
        echo(f"[score] {len(reopened)} dead-lettered inputs reopened ({', '.join(sorted(codes))})")
    with scan_commits(output_uri) as scan:
        removed = remove_orphans(output_uri, scan.names)
        todo, partial = scan.todo(listing.media)
    echo(
        f"[score] {len(listing.media)} media objects ({listing.skipped} non-media skipped), "
        f"{len(listing.media) - len(todo)} already complete, {len(todo)} to do"
        + (f", {removed} files of an interrupted run removed" if removed else "")
    )
    pending: list[str] = []
    nodes: dict[str, dict] = {}
    if todo:
        run_cfg = cfg.model_copy(update={"stages": cfg.stages.resolved()})  # absolute paths, for the workers
        with ray_session(cfg.ray, address):
            ds = build_dataset(todo, partial, run_cfg, stages, output_uri)
            pending, hops = _drain(ds, len(todo), cfg.progress_interval_s, echo)
            nodes = node_report(hops)
    summary = _finish(input_uri, output_uri, listing, len(todo), time.monotonic() - started, pending, nodes)
    if pending:
        echo(f"[score] {len(pending)} inputs pending: the store stayed unavailable past retry.budget_s "
             f"({cfg.retry.budget_s:g} s); run the same command again to do them")  # fmt: skip
    elif cfg.temporal.enabled:
        _temporal(output_uri, cfg, summary, echo)
    return summary


def _temporal(output_uri: str, cfg: ScoreConfig, summary: ScoreSummary, echo: Callable[[str], None]) -> None:
    """The ``temporal:`` pass over the finished output (only once nothing is pending)."""
    from jobs.score.temporal import run_temporal

    result = run_temporal(output_uri, cfg.temporal)
    echo(f"[score] temporal agreement (N={result['n']}): {result['agreed_frames']}/{result['frames']} video rows "
         f"agreed, {result['videos_with_class']}/{result['videos']} videos with a class")  # fmt: skip
    summary.locations["videos"] = storage.join(output_uri, "videos/")


def _finish(
    input_uri: str,
    output_uri: str,
    listing: Listing,
    processed: int,
    elapsed: float,
    pending: list[str] | None = None,
    nodes: dict[str, dict] | None = None,
) -> ScoreSummary:
    with scan_commits(output_uri) as scan:
        totals, sources = scan.totals, scan.sources()
    locations = {
        "rows": storage.join(output_uri, "rows/"),
        "dead letter": storage.join(output_uri, "dead_letter/"),
        "manifest": storage.join(output_uri, "_manifest.json"),
    }
    summary = ScoreSummary(
        input=input_uri, output=output_uri, media_objects=len(listing.media), skipped_non_media=listing.skipped,
        already_complete=len(listing.media) - processed, processed_this_run=processed,
        images=sources["image"], videos=sources["video"], frames=totals.frames, rows_written=totals.rows,
        dead_letter=totals.records - totals.rows, errors_by_reason=dict(totals.errors), elapsed_s=round(elapsed, 2),
        rows_per_s=round(totals.rows / elapsed, 2) if elapsed else 0.0, pending=len(pending or []),
        pending_sources=list(pending or [])[:100], locations=locations,
    )  # fmt: skip
    _write_manifest(output_uri, totals.files, summary, nodes or {})
    return summary


def _write_manifest(output_uri: str, files: dict[str, dict[str, int]], summary: ScoreSummary, nodes: dict) -> None:
    """Every data file with its row count, the schema, the summary, and ``nodes``: per node of the run that wrote
    the manifest, its labels and the rows it did for each step (``decode``, each stage, ``writer``)."""
    manifest = {
        "rows": [{"path": f"rows/{n}.parquet", "num_rows": c["rows"]} for n, c in sorted(files.items()) if c["rows"]],
        "dead_letter": [
            {"path": f"dead_letter/{n}.parquet", "num_rows": c["dead_letter"]}
            for n, c in sorted(files.items())
            if c["dead_letter"]
        ],
        "schema": [f"{f.name}: {f.type}" for f in output_schema()],
        "summary": summary.as_dict(),
        "nodes": nodes,
    }
    write_json(storage.join(output_uri, "_manifest.json"), manifest)
