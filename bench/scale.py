"""Listing and resume at scale: keys/s of a serial vs a parallel listing on the embedded S3 server, and the driver's
peak memory for the resume state of 10k, 100k and 1M committed rows (synthetic commit records), with the old
read-everything resume as the baseline in the same run.

    python bench/scale.py [--keys 100000] [--folders 100] [--rows 10000,100000,1000000] [--rows-per-file 512]

Each memory figure is measured in a fresh process: its peak resident set (VmHWM) less its resident set after the
imports and a first resume of a small output, so the interpreter, pyarrow's lazy imports and memory pools do not
count. The last line is one JSON object with
``list_keys_per_s_serial``, ``list_keys_per_s_parallel``, ``list_speedup``, ``list_client_cpu_share_*``,
``resume_mem_mb`` (by rows),
``resume_mem_mb_full_read`` (the baseline, by rows) and ``resume_mem_ratio_1m_vs_100k``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.common import storage  # noqa: E402
from jobs.common.s3list import list_parallel  # noqa: E402
from jobs.common.s3server import temporary_store  # noqa: E402
from jobs.score.output import COMMIT_SCHEMA, _write_parquet  # noqa: E402

MEASURE = """
import sys, time
sys.path.insert(0, {root!r})
from jobs.score.output import load_state
from jobs.score.resume import scan_commits

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

def resume(out):
    if {mode!r} == "scan":
        with scan_commits(out) as scan:
            return scan.todo([])
    return load_state(out).complete_sources()

resume({warm!r})  # the first call's lazy imports and pools are not resume state
open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the resident set now
base = rss("VmRSS")
start = time.monotonic()
state = resume({out!r})
print(rss("VmHWM") - base, time.monotonic() - start)
"""


def put_keys(prefix: str, keys: int, folders: int) -> None:
    client = storage.s3_client()
    bucket, key = storage.split_s3(prefix)
    client.create_bucket(Bucket=bucket)
    names = [f"{key}/{i % folders:04d}/{i:08d}.jpg" for i in range(keys)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda name: client.put_object(Bucket=bucket, Key=name, Body=b""), names))


def time_listing(prefix: str, workers: int) -> tuple[float, int, float]:
    """Keys/s, keys, and the share of the wall time this process spent on a CPU (parsing the XML pages is GIL-bound
    in botocore: near 1.0, more streams cannot go faster in one process)."""
    start, cpu = time.monotonic(), time.process_time()
    n = len(list_parallel(prefix, workers=workers)) if workers > 1 else len(list(storage.list_objects(prefix)))
    wall = time.monotonic() - start
    return n / wall, n, (time.process_time() - cpu) / wall


def write_commits(out: str, rows: int, per_file: int) -> None:
    """Commit records of ``rows`` rows: a third video frames (sources of 8 samples), the rest images, 2 % dead."""
    for f, start in enumerate(range(0, rows, per_file)):
        i = np.arange(start, min(rows, start + per_file))
        video = i % 3 == 0
        source = [f"s3://media/{'v' if v else 'i'}/{(n // 8 if v else n):09d}.{'mp4' if v else 'jpg'}"
                  for n, v in zip(i, video, strict=True)]  # fmt: skip
        sample = np.where(video, i % 8, 0).astype(np.int32)
        dead = (i % 50 == 7) & ~video
        table = pa.table(
            {"source_uri": source, "sample": sample, "last": ~video | (sample == 7), "dead": dead,
             "media_type": np.where(video, "video", "image"), "error_code": [("bad" if d else None) for d in dead]},
            schema=COMMIT_SCHEMA,
        )  # fmt: skip
        _write_parquet(table, f"{out}/_commits/{f:07d}.parquet", "zstd")


def peak_mb(out: str, mode: str, warm: str) -> tuple[float, float]:
    code = MEASURE.format(root=str(ROOT), mode=mode, out=out, warm=warm)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mb, seconds = map(float, result.stdout.split()[-2:])
    return round(mb, 1), round(seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--rows-per-file", type=int, default=512)
    args = parser.parse_args()
    figures: dict = {"keys": args.keys, "folders": args.folders, "workers": args.workers}
    with temporary_store():
        started = time.monotonic()
        put_keys("s3://scale/media", args.keys, args.folders)
        print(f"[scale] {args.keys} keys written in {time.monotonic() - started:.0f} s", flush=True)
        for name, workers in (("serial", 1), ("parallel", args.workers)):
            rate, n, cpu = time_listing("s3://scale/media", workers)
            assert n == args.keys, (name, n)
            figures[f"list_keys_per_s_{name}"] = round(rate)
            figures[f"list_client_cpu_share_{name}"] = round(cpu, 2)
            print(f"[scale] listing {name}: {rate:.0f} keys/s, client on a CPU {cpu:.0%} of the time", flush=True)
    figures["list_speedup"] = round(figures["list_keys_per_s_parallel"] / figures["list_keys_per_s_serial"], 2)
    figures["resume_mem_mb"], figures["resume_mem_mb_full_read"], figures["resume_s"] = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        warm = f"{tmp}/warm"
        write_commits(warm, 1000, args.rows_per_file)
        for rows in map(int, args.rows.split(",")):
            out = f"{tmp}/out{rows}"
            write_commits(out, rows, args.rows_per_file)
            figures["resume_mem_mb"][rows], figures["resume_s"][rows] = peak_mb(out, "scan", warm)
            figures["resume_mem_mb_full_read"][rows] = peak_mb(out, "full", warm)[0]
            print(f"[scale] resume of {rows} rows: {figures['resume_mem_mb'][rows]} MB "
                  f"(full read {figures['resume_mem_mb_full_read'][rows]} MB)", flush=True)  # fmt: skip
    mem = figures["resume_mem_mb"]
    if 1_000_000 in mem and 100_000 in mem:
        figures["resume_mem_ratio_1m_vs_100k"] = round(mem[1_000_000] / max(mem[100_000], 1e-9), 2)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
