"""Model inputs from scored rows: text present or not, 0..N objects, unknown labels, the cache's packing."""

import io

import numpy as np
import pytest
from PIL import Image

from jobs.media.fusion_inputs import pack, row_inputs, stack, to_tensors, unpack
from models.fusion import FusionConfig


def jpeg(colour, size=40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="JPEG")
    return buf.getvalue()


CFG = FusionConfig(max_objects=2, style_size=16, object_size=8, image_size=24)
IMAGE = np.full((30, 50, 3), 100, np.uint8)


def test_no_text_and_no_objects_give_zeros_and_masks():
    out = row_inputs(IMAGE, {"text_token_count": 0, "text_tokens": None, "obj_crops": [], "obj_labels": []}, CFG, 4)
    assert not out["text_present"] and not out["text_token_mask"].any() and not out["text_tokens"].any()
    assert not out["obj_mask"].any() and out["obj_images"].shape == (2, 8, 8, 3)
    assert out["style_image"].shape == (16, 16, 3) and out["image"].shape == (24, 24, 3)
    assert not row_inputs(IMAGE, {}, CFG, 4)["text_present"]  # columns of stages that did not run


def test_text_is_padded_and_cut_to_max_tokens():
    tokens = [np.full(384, i, np.float32) for i in range(6)]
    row = {"text_token_count": 6, "text_tokens": tokens, "text_sentence": np.ones(384)}
    out = row_inputs(IMAGE, row, CFG, 4)
    assert out["text_present"] and out["text_token_mask"].tolist() == [True] * 4
    assert out["text_tokens"][:, 0].tolist() == [0, 1, 2, 3]
    short = row_inputs(IMAGE, row | {"text_token_count": 2}, CFG, 4)
    assert short["text_token_mask"].tolist() == [True, True, False, False]


def test_objects_keep_known_kinds_in_order_up_to_max():
    row = {
        "obj_crops": [jpeg((255, 0, 0)), jpeg((0, 255, 0)), jpeg((0, 0, 255))],
        "obj_labels": ["cat", "person", "face"],
    }
    out = row_inputs(IMAGE, row, CFG, 4)
    assert out["obj_mask"].tolist() == [True, True] and out["obj_kind"].tolist() == [1, 0]
    assert out["obj_images"][0, 4, 4, 1] > 200 and out["obj_images"][1, 4, 4, 2] > 200  # green, then blue


def test_pack_unpack_round_trip_and_tensors():
    rows = [row_inputs(IMAGE, {}, CFG, 4), row_inputs(IMAGE * 2, {}, CFG, 4)]
    batch = stack(rows)
    cells, specs = pack(batch)
    assert all(isinstance(c, bytes) for c in cells["image"])
    again = unpack(cells, specs)
    for key, value in batch.items():
        assert np.array_equal(again[key], value), key
    tensors = to_tensors(again)
    assert tuple(tensors["obj_images"].shape) == (2, 2, 3, 8, 8) and tuple(tensors["image"].shape) == (2, 3, 24, 24)
    assert tensors["image"].dtype.is_floating_point and tensors["text_present"].dtype.is_floating_point is False
    assert tensors["image"][1].mean() > tensors["image"][0].mean()


def test_undecodable_crop_is_an_error():
    with pytest.raises(ValueError, match="undecodable"):
        row_inputs(IMAGE, {"obj_crops": [b"nope"], "obj_labels": ["face"]}, CFG, 4)


@pytest.mark.parametrize("frozen", [True, False])
def test_cache_form_keeps_pixels_only_for_an_upstream_that_trains(frozen):
    from jobs.media.fusion_inputs import encode_upstream
    from models.fusion import build_fusion

    tiny = {"arch": "tiny", "width_mult": 0.25, "num_classes": 6}
    model = build_fusion(FusionConfig(upstream=tiny, freeze_upstream=frozen, style_size=32, object_size=32))
    batch = stack([row_inputs(np.zeros((40, 50, 3), np.uint8), {}, model.cfg, 4)])
    out = encode_upstream(model, batch)
    assert ("style_map" in out and "obj_maps" in out) == frozen
    assert ("style_image" in out and "obj_images" in out) != frozen
    if frozen:
        assert out["style_map"].shape == (1, model.upstream.num_features, 4, 4) and out["style_map"].dtype == np.float16
