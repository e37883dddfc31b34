"""A whole tiny corpus: layout, manifest, decodability of every object, ground truth, determinism."""

from __future__ import annotations

import io
import os
import re
import struct

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from jobs.common import storage
from jobs.corpus import BROKEN_KINDS, CLASSES, IMAGE_TYPES, MANIFEST_NAME, fonts, make_corpus, read_frame_code
from jobs.corpus.video import STRIP_HEIGHT

N_SCENES, N_VIDEOS = 8, 6
COLUMNS = [
    "uri", "key", "media_type", "format", "label", "image_type", "split", "scene_id", "width", "height",
    "exif_orientation", "objects", "texts", "mask_png", "broken", "fps", "num_frames", "duration_s", "gop", "codec",
    "keyframes", "frames", "risk", "risk_cause", "risk_box",
]  # fmt: skip
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
CONTAINERS = {"mp4": "mp4", "webm": "webm", "mkv": "matroska"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus"))
    lines: list[str] = []
    summary = make_corpus(out, seed=0, n_scenes=N_SCENES, n_videos=N_VIDEOS, workers=2, progress=lines.append)
    rows = pq.read_table(summary.manifest_uri).to_pylist()
    return out, summary, rows, lines


def _files(root: str) -> dict[str, bytes]:
    return {os.path.relpath(o.uri, root): storage.read_bytes(o.uri) for o in storage.list_objects(root)}


def test_summary_layout_and_progress(corpus):
    out, summary, rows, lines = corpus
    assert (summary.images, summary.videos, summary.broken, summary.other) == (3 * N_SCENES, N_VIDEOS, 5, 2)
    assert summary.manifest_uri == storage.join(out, MANIFEST_NAME)
    files = _files(out)
    assert summary.total_bytes == sum(len(b) for b in files.values())
    assert {"README.txt", "meta.json", MANIFEST_NAME} <= set(files)
    assert len(files) == len(rows) + 3 and str(summary).startswith(f"corpus at {out}")
    assert 5 <= len(lines) <= 11 and lines[-1].endswith("(100%)")


def test_manifest_schema(corpus):
    table = pq.read_table(corpus[0] + "/" + MANIFEST_NAME)
    assert table.schema.names == COLUMNS
    types = {f.name: str(f.type) for f in table.schema}
    for name in ("scene_id", "width", "height", "exif_orientation", "num_frames", "gop"):
        assert types[name] == "int32"
    assert types["fps"] == types["duration_s"] == "double" and types["mask_png"] == "binary"
    obj = table.schema.field("objects").type.value_type
    assert [(f.name, str(f.type)) for f in obj] == [
        ("cls", "string"), ("x0", "int32"), ("y0", "int32"), ("x1", "int32"), ("y1", "int32"),
        ("instance_id", "int32"), ("distractor", "bool"),
    ]  # fmt: skip
    frame = table.schema.field("frames").type.value_type
    assert [f.name for f in frame] == ["frame_index", "timestamp_s", "objects", "texts"]
    assert frame.field("objects").type == table.schema.field("objects").type


def test_keys_splits_and_labels(corpus):
    _, _, rows, _ = corpus
    images = [r for r in rows if r["media_type"] == "image" and r["broken"] is None]
    for r in images:
        ext = {"jpeg": "jpg"}.get(r["format"], r["format"])
        assert r["key"] == f"images/{r['split']}/{r['scene_id']:05d}_{r['image_type']}.{ext}"
        assert r["uri"].endswith(r["key"]) and r["label"] in CLASSES and r["label"] == r["objects"][0]["cls"]
    by_scene: dict[int, list[dict]] = {}
    for r in images:
        by_scene.setdefault(r["scene_id"], []).append(r)
    assert sorted(by_scene) == list(range(N_SCENES))
    for same in by_scene.values():
        assert sorted(r["image_type"] for r in same) == sorted(IMAGE_TYPES)
        assert len({(r["split"], r["label"], r["mask_png"], str(r["objects"])) for r in same}) == 1
    for r in rows:
        if r["media_type"] == "video" and r["broken"] is None:
            assert re.fullmatch(r"videos/\d{5}_(photo|sketch|cartoon)\.(mp4|webm|mkv)", r["key"])


def _check_image(r: dict) -> None:
    image = Image.open(io.BytesIO(storage.read_bytes(r["uri"])))
    assert image.format == PIL_FORMATS[r["format"]]
    assert image.getexif().get(0x0112, 1) == r["exif_orientation"]
    display = ImageOps.exif_transpose(image)
    assert display.size == (r["width"], r["height"])
    mask = np.asarray(Image.open(io.BytesIO(r["mask_png"])))
    assert mask.shape == (r["height"], r["width"]) and mask.max() == len(r["objects"])
    for k, obj in enumerate(r["objects"], start=1):
        assert obj["instance_id"] == k and obj["distractor"] == (obj["cls"] == "distractor")
        assert 0 <= obj["x0"] < obj["x1"] <= r["width"] and 0 <= obj["y0"] < obj["y1"] <= r["height"]
        ys, xs = np.nonzero(mask == k)
        assert xs.size and xs.min() >= obj["x0"] and xs.max() < obj["x1"]
        assert ys.min() >= obj["y0"] and ys.max() < obj["y1"]
    for text in r["texts"]:
        assert text["lang"] in ("en", "zh") and 0 <= text["x0"] < text["x1"] <= r["width"]


def test_every_image_decodes_and_matches_its_ground_truth(corpus):
    _, _, rows, _ = corpus
    images = [r for r in rows if r["media_type"] == "image" and r["broken"] is None]
    assert len(images) == 3 * N_SCENES
    for r in images:
        assert r["frames"] is None and r["fps"] is None
        _check_image(r)


def test_exif_rotated_jpeg_matches_display_orientation(tmp_path):
    from jobs.corpus import encode

    rgb = np.zeros((60, 100, 3), np.uint8)
    rgb[:20, :30] = (255, 0, 0)  # a red block at the top left of the display
    for orientation in (3, 6, 8):
        data = encode.encode_image(rgb, encode.Encoding("jpeg", 95, orientation))
        stored = Image.open(io.BytesIO(data))
        assert stored.size == ((100, 60) if orientation == 3 else (60, 100))
        shown = np.asarray(ImageOps.exif_transpose(stored)).astype(int)
        assert shown.shape == rgb.shape and np.abs(shown - rgb).mean() < 4


def _mp4_top_level_boxes(data: bytes) -> list[bytes]:
    pos, boxes = 0, []
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
        boxes.append(kind)
        pos += size if size else len(data)
    return boxes


def _check_video(r: dict) -> None:
    data = storage.read_bytes(r["uri"])
    with av.open(io.BytesIO(data)) as container:
        assert CONTAINERS[r["format"]] in container.format.name
        stream = container.streams.video[0]
        assert stream.codec_context.name == r["codec"]
        frames = list(container.decode(stream))
    assert (frames[0].width, frames[0].height) == (r["width"], r["height"])
    assert [read_frame_code(f.to_ndarray(format="rgb24")) for f in frames] == list(range(r["num_frames"]))
    assert [i for i, f in enumerate(frames) if f.key_frame] == r["keyframes"]
    assert r["keyframes"] == list(range(0, r["num_frames"], r["gop"]))
    assert [f.time for f in frames] == pytest.approx([i / r["fps"] for i in range(r["num_frames"])], abs=1e-3)
    assert r["duration_s"] == pytest.approx(r["num_frames"] / r["fps"])
    assert len(r["frames"]) == r["num_frames"] and r["objects"] == r["frames"][0]["objects"]
    for i, fr in enumerate(r["frames"]):
        assert fr["frame_index"] == i and fr["timestamp_s"] == pytest.approx(i / r["fps"])
        assert fr["objects"][0]["cls"] == r["label"]
        for box in fr["objects"] + fr["texts"]:
            assert 0 <= box["x0"] < box["x1"] <= r["width"] and 0 <= box["y0"] < box["y1"]
            assert box["y1"] <= r["height"] - STRIP_HEIGHT, "the frame code strip is covered"
    if r["format"] == "mp4":
        boxes = _mp4_top_level_boxes(data)
        assert boxes.index(b"mdat") < boxes.index(b"moov"), "moov should stay at the end"


def test_every_video_decodes_frame_codes_and_keyframes(corpus):
    _, _, rows, _ = corpus
    videos = [r for r in rows if r["media_type"] == "video" and r["broken"] is None]
    assert len(videos) == N_VIDEOS and {r["format"] for r in videos} == {"mp4", "webm", "mkv"}
    for r in videos:
        assert r["scene_id"] == -1 and r["mask_png"] is None and r["image_type"] in IMAGE_TYPES
        _check_video(r)


def test_mp4_keyframes_by_skipping_non_key_frames(corpus):
    _, _, rows, _ = corpus
    r = next(r for r in rows if r["format"] == "mp4" and r["broken"] is None)
    with av.open(io.BytesIO(storage.read_bytes(r["uri"]))) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        codes = [read_frame_code(f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    assert codes == r["keyframes"]


def test_broken_rows(corpus):
    _, _, rows, _ = corpus
    bad = {r["broken"]: r for r in rows if r["broken"] is not None}
    assert sorted(bad) == sorted(BROKEN_KINDS)
    for r in bad.values():
        assert r["key"].startswith("broken/") and storage.exists(r["uri"])
        assert r["label"] is None and r["image_type"] is None and r["width"] is None and r["mask_png"] is None
    assert storage.read_bytes(bad["empty"]["uri"]) == b""
    with pytest.raises(OSError):
        Image.open(io.BytesIO(storage.read_bytes(bad["truncated_jpeg"]["uri"]))).load()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = dict(n_scenes=3, n_videos=1, workers=3)
    out = str(tmp_path / "a")
    make_corpus(out, seed=5, **kwargs)
    first = _files(out)
    make_corpus(out, seed=5, **{**kwargs, "workers": 1})
    assert _files(out) == first
    other = str(tmp_path / "b")
    make_corpus(other, seed=6, **kwargs)
    second = _files(other)
    assert first.keys() - second.keys() or any(first[k] != second[k] for k in first.keys() & second.keys())
    rows_a = pq.read_table(os.path.join(out, MANIFEST_NAME)).drop_columns(["uri"]).to_pylist()
    rows_b = pq.read_table(os.path.join(other, MANIFEST_NAME)).drop_columns(["uri"]).to_pylist()
    assert rows_a != rows_b
    for key in ("broken/empty.png", "README.txt"):
        assert key in second


def test_corpus_without_cjk_font_has_no_chinese(tmp_path, monkeypatch):
    monkeypatch.setattr(fonts, "cjk_font_path", lambda: None)
    summary = make_corpus(str(tmp_path), seed=1, n_scenes=12, n_videos=0)
    rows = pq.read_table(summary.manifest_uri).to_pylist()
    assert summary.images == 36 and all(t["lang"] == "en" for r in rows for t in (r["texts"] or []))


@pytest.mark.parametrize("kwargs", [dict(seed=-1), dict(n_scenes=-1), dict(n_videos=-2), dict(scale=0.0)])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_corpus(str(tmp_path), **kwargs)
