"""Ingestion: list the media under a URI, and the Ray-free decode step that turns objects into rows.

A decoded row is one image or one sampled video frame. Rows carry four bookkeeping columns used for
exactly-once resume: ``_sample`` (0, 1, 2, ... per source, in decode order), ``_last`` (the source's final row),
``_dead`` (the source failed as a whole: a dead-letter row) and ``_pending`` (the store stayed unavailable: the
row is not written and the source stays open for the next run). Missing values travel as sentinels
(``frame_index`` -1, ``timestamp_s`` NaN, ``error`` "") and become nulls when written.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from jobs.common import storage, transient
from jobs.common.config import DecodeConfig, ListingConfig
from jobs.common.s3list import list_parallel
from jobs.media.decode import DecodeError, DecodeLimits, VideoFrame, VideoInfo, decode_image, sample_video, sniff

log = logging.getLogger(__name__)

PENDING = "store_unavailable"  # the error code of a row left for the next run (never written)
IN_MEMORY_VIDEO_BYTES = 256 << 20  # larger videos are read with ranged requests instead of in one piece
ROW_COLUMNS = (
    "source_uri", "media_type", "source_format", "source_size", "frame_index", "timestamp_s", "width", "height",
    "error", "error_code", "_sample", "_last", "_dead", "_pending",
)  # fmt: skip


@dataclass(frozen=True)
class MediaObject:
    uri: str
    size: int
    kind: str  # "image" | "video"


@dataclass
class Listing:
    media: list[MediaObject]
    skipped: int  # objects that are not media by name (text, JSON, ...)


def media_kind(uri: str, cfg: ListingConfig) -> str | None:
    ext = os.path.splitext(uri)[1].lower()
    if ext in {e.lower() for e in cfg.image_extensions}:
        return "image"
    if ext in {e.lower() for e in cfg.video_extensions}:
        return "video"
    return None


def list_inputs(uri: str, cfg: ListingConfig) -> Listing:
    """List media under ``uri``, or read the ``uri`` column of a Parquet manifest when ``uri`` ends in .parquet."""
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        fs, path = storage.resolve(uri)
        uris = pq.read_table(path, columns=["uri"], filesystem=fs).column("uri").to_pylist()
        objects = [storage.ObjectInfo(u, -1) for u in uris]
    elif cfg.workers > 1 and storage.is_s3(uri):
        objects = list_parallel(uri, None, cfg.min_size, cfg.max_size, cfg.workers)
    else:
        objects = storage.list_objects(uri, min_size=cfg.min_size, max_size=cfg.max_size, page_size=cfg.page_size)
    media, skipped = [], 0
    for obj in objects:
        kind = media_kind(obj.uri, cfg)
        if kind is None:
            skipped += 1
        else:
            media.append(MediaObject(obj.uri, obj.size, kind))
    return Listing(media=media, skipped=skipped)


class Decoder:
    """Decode step: a batch of objects (``uri``, ``size``, ``kind``, ``skip``) -> batches of rows.

    ``skip`` is a comma-separated list of ``_sample`` numbers already written by an earlier run; they are
    decoded (sampling must stay the same) but not emitted. Never raises for a bad input: it becomes a dead-letter
    row, or, for a video that fails after some frames, those frames plus one error row.

    Args:
        cfg: the decode section of the config.
        keep_pixels: carry pixels downstream (``False`` for an inventory run).
        retry: how long to retry transient store errors before leaving an object for the next run.
    """

    def __init__(self, cfg: DecodeConfig, keep_pixels: bool = True, retry: transient.RetryPolicy | None = None):
        self.cfg = cfg
        self.keep_pixels = keep_pixels
        self.retry = retry or transient.RetryPolicy()
        self.limits = DecodeLimits(cfg.max_pixels, cfg.max_frames_total, cfg.max_seconds)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        rows: list[dict] = []
        for uri, size, kind, skip in zip(batch["uri"], batch["size"], batch["kind"], batch["skip"], strict=True):
            skipped = {int(s) for s in str(skip).split(",") if s}
            for row in self.rows_for(str(uri), int(size), str(kind)):
                if row["_sample"] not in skipped:
                    rows.append(row)
                if len(rows) >= self.cfg.rows_per_block:
                    yield self._to_batch(rows)
                    rows = []
        if rows:
            yield self._to_batch(rows)

    def rows_for(self, uri: str, size: int, kind: str) -> Iterator[dict]:
        """All rows of one object, the last one flagged ``_last``."""
        base = {"source_uri": uri, "media_type": kind, "source_format": "", "source_size": size}
        pending = None
        sample = 0
        try:
            for frame_row in self._frames(uri, kind, base):
                if pending is not None:
                    yield pending
                pending = {**frame_row, "_sample": sample, "_last": False, "_dead": False, "_pending": False}
                sample += 1
        except transient.TransientError as exc:
            if pending is not None:
                yield pending  # decoded before the outage: written; the source stays open (no last row)
            yield self._pending_row(base, exc, sample)
            return
        except DecodeError as exc:
            if pending is None:
                yield self._error_row(base, exc, sample=0, dead=True)
                return
            yield pending
            yield self._error_row(base | {"source_format": pending["source_format"]}, exc, sample=sample, dead=False)
            return
        if pending is None:
            yield self._error_row(base, DecodeError("video_no_frames", "no frame could be sampled"), 0, dead=True)
            return
        pending["_last"] = True
        yield pending

    def _open(self, uri: str, kind: str, base: dict):
        """``(data, handle, head)``: the whole object, or for a large video a ranged-read handle."""
        fs, path = storage.resolve(uri, object_key=True)
        if base["source_size"] < 0:  # listed from a manifest: size unknown
            info = fs.get_file_info(path)
            if info.size is None:
                raise FileNotFoundError(uri)
            base["source_size"] = info.size
        if kind == "video" and base["source_size"] > IN_MEMORY_VIDEO_BYTES:
            handle = transient.RetryingReader(fs.open_input_file(path), self.retry, f"read {uri}")
            head = handle.read(64)
            handle.seek(0)
            return None, handle, head
        if kind == "image" and base["source_size"] > self.cfg.max_image_bytes:
            raise storage.ObjectTooLarge(uri, self.cfg.max_image_bytes)
        data = storage.read_bytes(uri, self.cfg.max_image_bytes if kind == "image" else None)
        base["source_size"] = len(data)
        return data, None, data[:64]

    def _frames(self, uri: str, kind: str, base: dict) -> Iterator[dict]:
        try:
            data, handle, head = transient.retrying(lambda: self._open(uri, kind, base), self.retry, f"read {uri}")
        except transient.TransientError:  # an OSError too, but not one of the object: the caller leaves it pending
            raise
        except storage.InvalidURI as exc:
            raise DecodeError("invalid_uri", exc.reason) from None
        except storage.ObjectTooLarge:
            size, limit = base["source_size"], self.cfg.max_image_bytes
            raise DecodeError("object_too_large", f"{size} bytes > limit {limit} (decode.max_image_bytes)") from None
        except FileNotFoundError:
            raise DecodeError("not_found", "the object does not exist (deleted after listing?)") from None
        except OSError as exc:
            raise DecodeError("read_error", str(exc)) from None
        if base["source_size"] == 0:
            raise DecodeError("empty_object", "the object has 0 bytes")
        actual = sniff(head) or kind
        if actual != kind:
            if self.cfg.mismatched_content == "reject":
                raise DecodeError("media_type_mismatch", f"the name says {kind} but the content is a {actual}")
            kind = base["media_type"] = actual
        if kind == "image":
            yield self._image_row(data, base)
            return
        source = handle if base["source_size"] > IN_MEMORY_VIDEO_BYTES else io.BytesIO(data)
        info = None
        for item in sample_video(source, self.cfg.video, keep_pixels=self.keep_pixels, limits=self.limits):
            if isinstance(item, VideoInfo):
                info = item
                continue
            yield self._frame_row(item, base, info)

    def _image_row(self, data: bytes, base: dict) -> dict:
        pixels, fmt = decode_image(data, self.cfg.max_pixels)
        height, width = pixels.shape[:2]
        row = {**base, "source_format": fmt, "frame_index": 0, "timestamp_s": float("nan"), "width": width}
        row.update(height=height, error="", error_code="")
        if self.keep_pixels:
            row["pixels"] = pixels
        return row

    def _frame_row(self, frame: VideoFrame, base: dict, info: VideoInfo) -> dict:
        row = {**base, "source_format": info.codec, "frame_index": frame.index, "timestamp_s": frame.timestamp_s}
        height, width = frame.pixels.shape[:2] if self.keep_pixels else (info.height, info.width)
        row.update(width=width, height=height, error="", error_code="")
        if self.keep_pixels:
            row["pixels"] = frame.pixels
        return row

    def _error_row(self, base: dict, exc: DecodeError, sample: int, dead: bool) -> dict:
        log.info("%s %s", base["source_uri"], exc)
        row = {**base, "frame_index": -1, "timestamp_s": float("nan"), "width": 0, "height": 0}
        row.update(error=str(exc), error_code=exc.code, _sample=sample, _last=True, _dead=dead, _pending=False)
        if self.keep_pixels:
            row["pixels"] = np.zeros((0, 0, 3), np.uint8)
        return row

    def _pending_row(self, base: dict, exc: transient.TransientError, sample: int) -> dict:
        """A marker the writer counts and drops: nothing of the source is committed by it."""
        log.warning("%s left for the next run: %s", base["source_uri"], exc)
        row = self._error_row(base, DecodeError(PENDING, str(exc)), sample, dead=False)
        row.update(_last=False, _pending=True)
        return row

    def _to_batch(self, rows: list[dict]) -> dict[str, np.ndarray]:
        batch = {name: np.array([r[name] for r in rows]) for name in ROW_COLUMNS}
        if self.keep_pixels:
            pixels = np.empty(len(rows), dtype=object)
            pixels[:] = [r["pixels"] for r in rows]
            batch["pixels"] = pixels
        return batch
