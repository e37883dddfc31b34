"""The model deployments' batch handling, outside Serve: one image a model cannot process fails alone."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from serve.models import Model


class _PickyModel(Model):
    """A model that cannot process images narrower than 4 pixels (the batch raises, as torch would)."""

    name = "picky"

    def run(self, runner, images, params):
        if any(image.shape[1] < 4 for image in images):
            raise RuntimeError("/site-packages/torch/nn/functional.py: padding size should be less than ...")
        return [{"width": image.shape[1]} for image in images]


def _png(width: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, width, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_one_image_the_model_cannot_process_fails_alone_and_its_batch_is_answered():
    params = {"max_pixels": 10_000}
    items = [(_png(10), params), (_png(2), params), (b"not an image", params), (_png(5), params)]
    results = _PickyModel()._decode_and_run(None, items)
    assert results[0] == {"width": 10} and results[3] == {"width": 5}
    assert results[1]["error_code"] == "model_error" and "RuntimeError" in results[1]["error"]
    assert results[2]["error_code"] == "image_decode_error"
