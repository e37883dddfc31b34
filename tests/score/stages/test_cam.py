import io

import numpy as np
from PIL import Image

from jobs.common import storage
from jobs.common.config import CamConfig
from jobs.common.storage import read_json
from jobs.media.images import crop_box
from jobs.media.masks import rle_to_mask
from jobs.score.stages.cam import CamStage, scale_box


def test_box_helpers():
    assert scale_box((16, 8, 48, 32), 64, 640, 320) == (160, 40, 480, 160)
    assert crop_box((10, 10, 30, 50), 0.5, 35, 100) == (0, 0, 35, 70)


def test_stage_gives_class_box_area_and_crop(trained, corpus):
    output, _ = trained
    latest = read_json(storage.join(output, "latest.json"))
    stage = CamStage(CamConfig(checkpoint=latest["checkpoint"], crop_size=32))
    _, manifest = corpus
    row = manifest[(manifest.media_type == "image") & manifest.broken.isna()].iloc[0]
    image = np.asarray(Image.open(io.BytesIO(storage.read_bytes(row.uri))).convert("RGB"))
    pixels = np.empty(2, dtype=object)
    pixels[:] = [image, np.zeros((0, 0, 3), np.uint8)]
    batch = {"source_uri": np.array(["a", "b"]), "error": np.array(["", ""]), "error_code": np.array(["", ""])}
    out = stage({**batch, "pixels": pixels})
    assert out["cam_class"][0] in stage.classes and out["cam_class"][1] is None
    x0, y0, x1, y1 = out["cam_box"][0]
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert 0 < out["cam_mask_area"][0] <= 1 and 0 < out["cam_score"][0] <= 1
    assert Image.open(io.BytesIO(out["cam_crop"][0])).size == (32, 32)
    assert out["cam_model"][0].endswith("#epoch=1")
    mask = rle_to_mask(out["cam_mask"][0])  # pycocotools reads it as it is
    cam = stage.localize([image])[2][0]
    assert np.array_equal(mask, stage.mask(cam, image.shape[1], image.shape[0])) and out["cam_mask"][1] is None
    assert abs(mask.mean() - out["cam_mask_area"][0]) < 0.1  # the same mask, at image size instead of the CAM's
    unmasked = CamStage(CamConfig(checkpoint=latest["checkpoint"], mask=False))({**batch, "pixels": pixels})
    assert unmasked["cam_mask"][0] is None


def test_cam_stage_inside_a_real_score_run(ray_local, trained, corpus):
    from jobs.common.config import load_config
    from jobs.score.pipeline import run_score

    output, _ = trained
    corpus_uri, _ = corpus
    checkpoint = read_json(storage.join(output, "latest.json"))["checkpoint"]
    cfg = load_config(overrides={"stages": {"run": ["quality", "cam"], "cam": {"checkpoint": checkpoint}}})
    out = "s3://test-scores/with-cam"
    summary = run_score(corpus_uri, out, cfg, echo=lambda s: None)
    fs, path = storage.resolve(storage.join(out, "rows"))
    import pyarrow.parquet as pq

    rows = pq.read_table(path, filesystem=fs).to_pandas()
    good = rows[rows.error.isna()]
    assert len(rows) == summary.rows_written and len(good) > 0
    assert good.cam_class.notna().all() and good.quality_sharpness.notna().all()
    assert all(len(box) == 4 for box in good.cam_box)
    assert all(rle_to_mask(m).shape == (h, w) for m, h, w in zip(good.cam_mask, good.height, good.width, strict=True))
    assert all(Image.open(io.BytesIO(crop)).size == (128, 128) for crop in good.cam_crop)
    from jobs.score.report import build_report

    page = build_report(out, samples=3)
    assert page.count("<figure>") == 3 and page.count("data:image/jpeg;base64,") == 6  # frame + CAM overlay
    assert page.count("CAM: <b>") == 3
