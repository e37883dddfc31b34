"""Building a whole corpus: scenes, videos and broken files in a thread pool, then the manifest.

Every object is written through :mod:`jobs.common.storage` under ``output``; the manifest is written last, so its
presence means the corpus is complete. A rerun with the same seed and scale rewrites identical bytes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from jobs.common import storage
from jobs.corpus import broken, encode, fonts, manifest, render, scene, video, videoenc
from jobs.corpus.spec import (
    BROKEN_KINDS,
    CLASSES,
    DISTRACTOR_CLASSES,
    EXTENSIONS,
    IMAGE_TYPES,
    MANIFEST_NAME,
    RISK_CAUSES,
    STREAM_IMAGE,
    counts_for_scale,
    item_rng,
    split_of,
)

SPLIT_KIND_SCENE = 0
SPLIT_KIND_VIDEO = 1
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`make_corpus` wrote."""

    output: str
    images: int
    videos: int
    broken: int
    other: int
    total_bytes: int
    manifest_uri: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"corpus at {self.output}: {self.images} images, {self.videos} videos, {self.broken} broken, "
            f"{self.other} other; {self.total_bytes / 1e6:.1f} MB in {self.seconds:.1f} s; manifest {self.manifest_uri}"
        )


@dataclass
class _Done:
    """What one task wrote: manifest rows and byte count."""

    rows: list[manifest.Row]
    nbytes: int


def _write(output: str, key: str, data: bytes) -> str:
    uri = storage.join(output, key)
    storage.write_bytes(uri, data)
    return uri


def make_scene(output: str, seed: int, scene_id: int, cjk: bool, risk: bool = False) -> _Done:
    """Render, encode and write one scene in all image types (``risk``: with its risk label)."""
    sample = scene.sample_scene(seed, scene_id, cjk, risk)
    split = split_of(seed, SPLIT_KIND_SCENE, scene_id)
    mask = render.instance_mask(sample.objects, sample.draw_order(), sample.width, sample.height)
    mask_png = encode.encode_mask(mask)
    done = _Done([], 0)
    for type_index, image_type in enumerate(IMAGE_TYPES):
        rng = item_rng(seed, STREAM_IMAGE, scene_id, type_index)
        encoding = encode.choose_encoding(rng)
        data = encode.encode_image(render.render_scene(sample, image_type, rng), encoding)
        key = f"images/{split}/{scene_id:05d}_{image_type}.{EXTENSIONS[encoding.format]}"
        uri = _write(output, key, data)
        done.rows.append(manifest.image_row(uri, key, sample, image_type, encoding, split, mask_png))
        done.nbytes += len(data)
    return done


def make_video(output: str, seed: int, video_id: int) -> _Done:
    """Render, encode and write one video."""
    spec = video.sample_video(seed, video_id)
    data = videoenc.encode_video(spec)
    key = f"videos/{spec.name}.{EXTENSIONS[spec.container]}"
    uri = _write(output, key, data)
    return _Done([manifest.video_row(uri, key, spec, split_of(seed, SPLIT_KIND_VIDEO, video_id))], len(data))


def make_broken(output: str, seed: int) -> _Done:
    """Write every broken file."""
    done = _Done([], 0)
    for file in broken.broken_files(seed):
        done.rows.append(manifest.broken_row(_write(output, file.key, file.data), file))
        done.nbytes += len(file.data)
    return done


class _Progress:
    """Calls ``callback`` each time another tenth of the media objects is done."""

    def __init__(self, total: int, callback: Callable[[str], None] | None):
        self.total, self.callback, self.done, self.tenths = max(total, 1), callback, 0, 0

    def add(self, n: int) -> None:
        self.done += n
        tenths = self.done * 10 // self.total
        if self.callback is not None and tenths > self.tenths:
            self.callback(f"corpus: {self.done}/{self.total} media objects ({100 * self.done // self.total}%)")
        self.tenths = max(self.tenths, tenths)


def _run_all(tasks: list[Callable[[], _Done]], workers: int, progress: _Progress) -> list[_Done]:
    """Run the tasks in a pool; the first failure cancels what has not started and is raised."""
    results: list[_Done] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="corpus") as pool:
        pending = {pool.submit(task) for task in tasks}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                results.append(future.result())
                progress.add(len(future.result().rows))
    return results


README = """Labelled sample corpus made by jobs.corpus (seed {seed}, scale {scale}).

images/<split>/<scene_id>_<image_type>.<ext>  one scene drawn as photo, sketch and cartoon (JPEG, PNG or WebP)
videos/<id>_<image_type>.<ext>              short MP4 / WebM / MKV clips with moving objects and a frame code
broken/                                     files broken on purpose (empty, truncated, misnamed, pixel bomb)
{manifest}                            one row per media object: labels, boxes, masks, texts, frames

Classes: {classes}. The label is the class of the largest (primary) object.
A striped-bar distractor (cls "distractor") co-occurs with {distractor_classes} 70 % of the time.
Boxes are in display pixels (after EXIF orientation), x1/y1 exclusive.
{risk}"""
RISK_README = """Risk label (columns risk, risk_cause, risk_box): 1 for about half the scenes, each risky for one
cause drawn on purpose: {causes} (see jobs/corpus/scene.py). risk_box is the text, face or sign.
"""


def _meta(seed: int, scale: float, n_scenes: int, n_videos: int, counts: dict[str, int], risk: bool) -> bytes:
    latin = fonts.latin_font_path()
    meta = {
        "generator": "jobs.corpus",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "scale": scale,
        "n_scenes": n_scenes,
        "n_videos": n_videos,
        "classes": list(CLASSES),
        "distractor_classes": list(DISTRACTOR_CLASSES),
        "image_types": list(IMAGE_TYPES),
        "broken_kinds": list(BROKEN_KINDS),
        "latin_font": os.path.basename(latin) if latin else None,
        "chinese_text": fonts.cjk_available(),
        "counts": counts,
        "manifest": MANIFEST_NAME,
        "risk": risk,
    }
    return (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()


def _tasks(output: str, seed: int, n_scenes: int, n_videos: int, risk: bool) -> list[Callable[[], _Done]]:
    """Videos first: they take longest, so the pool finishes evenly."""
    cjk = fonts.cjk_available()
    tasks: list[Callable[[], _Done]] = [lambda i=i: make_video(output, seed, i) for i in range(n_videos)]
    tasks.append(lambda: make_broken(output, seed))
    tasks += [lambda i=i: make_scene(output, seed, i, cjk, risk) for i in range(n_scenes)]
    return tasks


def _counts(rows: list[manifest.Row]) -> dict[str, int]:
    return {
        "images": sum(r["media_type"] == "image" and r["broken"] is None for r in rows),
        "videos": sum(r["media_type"] == "video" and r["broken"] is None for r in rows),
        "broken": sum(r["broken"] is not None for r in rows),
        "other": 2,  # README.txt and meta.json
    }


def _write_extras(
    output: str, seed: int, scale: float, sizes: tuple[int, int], rows: list[manifest.Row], risk: bool
) -> int:
    """Write the README, meta.json and, last, the manifest; returns their bytes."""
    readme = README.format(
        seed=seed, scale=scale, manifest=MANIFEST_NAME, classes=", ".join(CLASSES),
        distractor_classes=" and ".join(DISTRACTOR_CLASSES),
        risk=RISK_README.format(causes=", ".join(RISK_CAUSES)) if risk else "",
    )  # fmt: skip
    extras = {
        "README.txt": readme.encode(),
        "meta.json": _meta(seed, scale, *sizes, _counts(rows), risk),
        MANIFEST_NAME: manifest.to_parquet_bytes(manifest.to_table(rows)),
    }
    for key, data in extras.items():
        _write(output, key, data)
    return sum(len(data) for data in extras.values())


def make_corpus(
    output: str,
    seed: int = 0,
    scale: float = 1.0,
    workers: int = 4,
    progress: Callable[[str], None] | None = None,
    n_scenes: int | None = None,
    n_videos: int | None = None,
    risk: bool = False,
) -> CorpusSummary:
    """Generate a deterministic labelled corpus under ``output`` (``s3://bucket/prefix`` or a folder).

    Args:
        output: where to write; every object goes through :func:`jobs.common.storage.write_bytes`.
        seed: the same seed and sizes give byte-identical files and manifest.
        scale: 1.0 gives 100 scenes (300 images) and 12 videos; 10 gives 1000 scenes and 40 videos.
        workers: threads that generate and write objects.
        progress: called with a short line every tenth of the media objects.
        n_scenes: number of scenes, overriding ``scale``.
        n_videos: number of videos, overriding ``scale``.
        risk: give every image a binary risk label (manifest columns ``risk``, ``risk_cause``, ``risk_box``; see
            :mod:`jobs.corpus.scene`); off, the corpus's images are what they were without the option.
    """
    start = time.perf_counter()
    storage.ensure_bucket(output)
    scenes_for_scale, videos_for_scale = counts_for_scale(scale)
    n_scenes = scenes_for_scale if n_scenes is None else n_scenes
    n_videos = videos_for_scale if n_videos is None else n_videos
    if seed < 0 or n_scenes < 0 or n_videos < 0:
        raise ValueError(f"seed, n_scenes and n_videos must be >= 0, got {seed}, {n_scenes}, {n_videos}")
    total = n_videos + len(BROKEN_KINDS) + n_scenes * len(IMAGE_TYPES)
    results = _run_all(_tasks(output, seed, n_scenes, n_videos, risk), workers, _Progress(total, progress))
    rows = [row for done in results for row in done.rows]
    extra_bytes = _write_extras(output, seed, scale, (n_scenes, n_videos), rows, risk)
    counts = _counts(rows)
    return CorpusSummary(
        output, counts["images"], counts["videos"], counts["broken"], counts["other"],
        sum(done.nbytes for done in results) + extra_bytes, storage.join(output, MANIFEST_NAME),
        time.perf_counter() - start,
    )  # fmt: skip
