import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image

from jobs.common import storage
from jobs.common.config import ObjectsConfig
from jobs.media.detect import box_iou
from jobs.score.stages import STAGES
from jobs.score.stages.objects import ObjectsStage, pixel_box

ASTRONAUT_FACE = (173, 68, 273, 168)  # drawn on the image and checked by eye (see jobs/eval/objects.py)


@pytest.fixture(scope="module")
def stage() -> ObjectsStage:
    return ObjectsStage(ObjectsConfig(crop_size=32))


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_pixel_box_covers_the_float_box_inside_the_image():
    assert pixel_box(np.array([10.2, 5.7, 20.1, 30.0]), 100, 50) == (10, 5, 21, 30)
    assert pixel_box(np.array([-3, -1, 200, 80]), 100, 50) == (0, 0, 100, 50)
    assert pixel_box(np.array([100, 50, 100, 50]), 100, 50) == (99, 49, 100, 50)  # at least one pixel


def test_stage_is_registered():
    assert STAGES["objects"] is ObjectsStage


def test_stage_on_a_batch_with_a_face_an_empty_image_and_a_row_without_pixels(stage):
    astronaut = skimage.data.astronaut()
    pixels = np.empty(3, dtype=object)
    pixels[:] = [astronaut, np.full((240, 320, 3), 200, np.uint8), np.zeros((0, 0, 3), np.uint8)]
    batch = {"source_uri": np.array(["a", "b", "c"]), "error": np.array([""] * 3), "error_code": np.array([""] * 3)}
    out = stage({**batch, "pixels": pixels})

    boxes, labels, scores = out["obj_boxes"][0], out["obj_labels"][0], out["obj_scores"][0]
    assert out["obj_count"][0] == len(boxes) == len(labels) == len(scores) == len(out["obj_crops"][0]) >= 1
    faces = [box for box, label in zip(boxes, labels, strict=True) if label == "face"]
    assert box_iou(np.array(faces), np.array([ASTRONAUT_FACE])).max() >= 0.5
    assert all(0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512 for x0, y0, x1, y1 in boxes)
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3
    assert all(Image.open(io.BytesIO(crop)).size == (32, 32) for crop in out["obj_crops"][0])
    assert out["obj_model"][0] == stage.detector.version

    # no objects: empty lists and 0, not nulls; no pixels: nulls
    assert out["obj_count"][1] == 0 and out["obj_boxes"][1] == [] and out["obj_crops"][1] == []
    assert out["obj_model"][1] == stage.detector.version
    assert all(out[name][2] is None for name in ObjectsStage.columns)
    assert list(out["error"]) == ["", "", ""]

    for name, dtype in ObjectsStage.columns.items():  # what the writer does with each column
        column = pa.array(out[name], type=dtype, from_pandas=True)
        assert column.null_count == 1 and column[1].is_valid


def test_objects_stage_inside_a_real_score_run(ray_local, corpus):
    from jobs.common.config import load_config
    from jobs.score.output import output_schema
    from jobs.score.pipeline import run_score

    _, manifest = corpus
    media = "s3://test-objects/media"
    storage.ensure_bucket(media)
    storage.write_bytes(f"{media}/astronaut.png", _png(skimage.data.astronaut()))
    storage.write_bytes(f"{media}/flat.png", _png(np.full((240, 320, 3), (30, 120, 60), np.uint8)))
    video = manifest[manifest.format.isin(["mkv", "webm"]) & manifest.broken.isna()].iloc[0]
    data = storage.read_bytes(video.uri)
    storage.write_bytes(f"{media}/cut.{video.format}", data[: int(len(data) * 0.6)])  # frames, then an error row
    picks = [
        manifest[(manifest.media_type == "image") & manifest.broken.isna()].uri.iloc[0],
        manifest[manifest.broken == "empty"].uri.iloc[0],  # dead letter
    ]
    uris = [f"{media}/astronaut.png", f"{media}/flat.png", f"{media}/cut.{video.format}", *picks]
    listing = "s3://test-objects/input.parquet"
    fs, path = storage.resolve(listing)
    pq.write_table(pa.table({"uri": uris}), path, filesystem=fs)

    cfg = load_config(overrides={"stages": {"run": ["objects"], "objects": {"crop_size": 48}}})
    out = "s3://test-scores/with-objects"
    summary = run_score(listing, out, cfg, echo=lambda s: None)
    fs, path = storage.resolve(storage.join(out, "rows"))
    table = pq.read_table(path, filesystem=fs)
    for name, dtype in ObjectsStage.columns.items():
        assert table.schema.field(name).type == dtype == output_schema().field(name).type
    rows = table.to_pandas()
    assert len(rows) == summary.rows_written and summary.dead_letter == 1

    by_uri = rows.set_index("source_uri")
    astronaut = by_uri.loc[f"{media}/astronaut.png"]
    faces = [list(box) for box, label in zip(astronaut.obj_boxes, astronaut.obj_labels, strict=True) if label == "face"]
    assert box_iou(np.array(faces), np.array([ASTRONAUT_FACE])).max() >= 0.5
    assert astronaut.obj_count == len(astronaut.obj_boxes) == len(astronaut.obj_crops)
    assert all(Image.open(io.BytesIO(crop)).size == (48, 48) for crop in astronaut.obj_crops)
    assert by_uri.loc[f"{media}/flat.png"].obj_count == 0 and len(by_uri.loc[f"{media}/flat.png"].obj_boxes) == 0

    good, bad = rows[rows.error.isna()], rows[rows.error.notna()]
    assert good.obj_count.notna().all() and good.obj_model.str.startswith("opencv-").all()
    assert len(bad) >= 1 and bad.obj_count.isna().all() and bad.obj_boxes.isna().all()
