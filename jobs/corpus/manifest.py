"""The corpus manifest: one row per media object (images, videos, broken files), with an explicit schema.

Boxes are in display pixels, x1 and y1 exclusive; ``instance_id`` is the value of that object in ``mask_png``.
For videos, ``objects`` and ``texts`` hold the frame-0 state and ``frames`` every frame's. For broken files,
``media_type`` and ``format`` say what the file name claims, and the ground-truth columns are null.

In a risk corpus (``make_corpus(..., risk=True)``) images have ``risk`` 1 or 0, ``risk_cause`` (``text``,
``object``, ``region`` or ``style``; null when 0) and ``risk_box`` (x0, y0, x1, y1 of the risk text, face or sign;
null for ``style`` and when 0). Otherwise, and for videos and broken files, the three are null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.corpus.broken import BrokenFile
from jobs.corpus.encode import Encoding
from jobs.corpus.scene import Scene, SceneObject, SceneText
from jobs.corpus.video import VideoSpec

OBJECT_TYPE = pa.struct(
    [
        ("cls", pa.string()),
        ("x0", pa.int32()),
        ("y0", pa.int32()),
        ("x1", pa.int32()),
        ("y1", pa.int32()),
        ("instance_id", pa.int32()),
        ("distractor", pa.bool_()),
    ]
)
TEXT_TYPE = pa.struct(
    [
        ("text", pa.string()),
        ("lang", pa.string()),
        ("x0", pa.int32()),
        ("y0", pa.int32()),
        ("x1", pa.int32()),
        ("y1", pa.int32()),
    ]
)
FRAME_TYPE = pa.struct(
    [
        ("frame_index", pa.int32()),
        ("timestamp_s", pa.float64()),
        ("objects", pa.list_(OBJECT_TYPE)),
        ("texts", pa.list_(TEXT_TYPE)),
    ]
)
SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("key", pa.string()),
        ("media_type", pa.string()),
        ("format", pa.string()),
        ("label", pa.string()),
        ("image_type", pa.string()),
        ("split", pa.string()),
        ("scene_id", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("exif_orientation", pa.int32()),
        ("objects", pa.list_(OBJECT_TYPE)),
        ("texts", pa.list_(TEXT_TYPE)),
        ("mask_png", pa.binary()),
        ("broken", pa.string()),
        ("fps", pa.float64()),
        ("num_frames", pa.int32()),
        ("duration_s", pa.float64()),
        ("gop", pa.int32()),
        ("codec", pa.string()),
        ("keyframes", pa.list_(pa.int32())),
        ("frames", pa.list_(FRAME_TYPE)),
        ("risk", pa.int32()),
        ("risk_cause", pa.string()),
        ("risk_box", pa.list_(pa.int32())),
    ]
)

Row = dict[str, Any]


def object_rows(objects: Sequence[SceneObject]) -> list[Row]:
    """Manifest entries of objects; instance ids count from 1 in list order."""
    rows = []
    for i, obj in enumerate(objects):
        x0, y0, x1, y1 = obj.box()
        rows.append(dict(cls=obj.cls, x0=x0, y0=y0, x1=x1, y1=y1, instance_id=i + 1, distractor=obj.distractor))
    return rows


def text_rows(texts: Sequence[SceneText]) -> list[Row]:
    return [dict(text=t.text, lang=t.lang, x0=t.box[0], y0=t.box[1], x1=t.box[2], y1=t.box[3]) for t in texts]


def risk_fields(scene: Scene) -> Row:
    """The risk columns of a scene's images: all null outside a risk corpus."""
    risk = scene.risk
    if risk is None:
        return {}
    return dict(risk=risk.label, risk_cause=risk.cause, risk_box=list(risk.box) if risk.box else None)


def _row(uri: str, key: str, media_type: str, fmt: str, **fields: Any) -> Row:
    row: Row = dict.fromkeys(SCHEMA.names)
    row.update(uri=uri, key=key, media_type=media_type, format=fmt, scene_id=-1, exif_orientation=1)
    unknown = set(fields) - set(SCHEMA.names)
    if unknown:
        raise KeyError(f"not manifest columns: {sorted(unknown)}")
    row.update(fields)
    return row


def image_row(
    uri: str, key: str, scene: Scene, image_type: str, encoding: Encoding, split: str, mask_png: bytes
) -> Row:
    """The row of one rendered scene image."""
    return _row(
        uri, key, "image", encoding.format,
        label=scene.label, image_type=image_type, split=split, scene_id=scene.scene_id,
        width=scene.width, height=scene.height, exif_orientation=encoding.orientation,
        objects=object_rows(scene.objects), texts=text_rows(scene.texts), mask_png=mask_png, **risk_fields(scene),
    )  # fmt: skip


def frame_rows(spec: VideoSpec) -> list[Row]:
    """Per-frame ground truth of a video."""
    return [
        dict(
            frame_index=i,
            timestamp_s=i / spec.fps,
            objects=object_rows(spec.objects_at(i)),
            texts=text_rows(spec.texts_at(i)),
        )
        for i in range(spec.num_frames)
    ]


def video_row(uri: str, key: str, spec: VideoSpec, split: str) -> Row:
    """The row of one video."""
    frames = frame_rows(spec)
    return _row(
        uri, key, "video", spec.container,
        label=spec.label, image_type=spec.image_type, split=split, width=spec.width, height=spec.height,
        objects=frames[0]["objects"], texts=frames[0]["texts"], fps=float(spec.fps), num_frames=spec.num_frames,
        duration_s=spec.num_frames / spec.fps, gop=spec.gop, codec=spec.codec, keyframes=spec.keyframes,
        frames=frames,
    )  # fmt: skip


def broken_row(uri: str, file: BrokenFile) -> Row:
    return _row(uri, file.key, file.media_type, file.format, broken=file.kind)


def to_table(rows: Sequence[Row]) -> pa.Table:
    """The manifest table, rows in key order."""
    return pa.Table.from_pylist(sorted(rows, key=lambda r: r["key"]), schema=SCHEMA)


def to_parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()
