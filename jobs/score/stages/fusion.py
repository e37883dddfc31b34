"""The ``fusion`` stage: the risk score of every row from its text, objects, whole image and key region.

It reads the ``text_*`` and ``obj_*`` columns of the earlier stages and the row's pixels, builds the model inputs
with the same code as the training cache (:mod:`jobs.media.fusion_inputs`), and runs the fusion checkpoint, whose frozen
upstream CNN encodes the whole image and the object crops. Columns:

* ``fusion_score``: probability of the positive class (``risky``);
* ``fusion_class``: the class name at the threshold: ``threshold`` when set, else the checkpoint's operating point
  (chosen on its validation split; 0.5 for a checkpoint without one);
* ``fusion_weights``: each present modality's weight (``text``, ``style``, ``object`` (the largest over objects),
  ``key``), null for an absent one;
* ``fusion_key_box``: the key region in the original image's pixels (``x0, y0, x1, y1``, exclusive ends);
* ``fusion_model``: the checkpoint URI and epoch.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from jobs.common.config import FusionStageConfig
from jobs.score.stages.base import Stage

WEIGHT_NAMES = ("text", "style", "object", "key")
WEIGHTS_TYPE = pa.struct([(name, pa.float32()) for name in WEIGHT_NAMES])


def modality_weights(weights: np.ndarray, mask: np.ndarray, kinds: np.ndarray) -> dict[str, float | None]:
    """One row's token weights -> the largest present weight per modality (``None`` when absent)."""
    from models.fusion import TOKEN_MODALITY

    out: dict[str, float | None] = dict.fromkeys(WEIGHT_NAMES)
    for w, present, k in zip(weights, mask, kinds, strict=True):
        name = TOKEN_MODALITY[int(k)]
        if present and (out[name] is None or w > out[name]):
            out[name] = float(w)
    return out


class FusionStage(Stage):
    """Adds the ``fusion_*`` columns."""

    name: ClassVar[str] = "fusion"
    columns: ClassVar[dict[str, pa.DataType]] = {
        "fusion_score": pa.float32(),
        "fusion_class": pa.string(),
        "fusion_weights": WEIGHTS_TYPE,
        "fusion_key_box": pa.list_(pa.int32()),
        "fusion_model": pa.string(),
    }
    cfg: FusionStageConfig

    def __init__(self, cfg: FusionStageConfig):
        from jobs.media.checkpoints import load_model

        super().__init__(cfg)
        if not cfg.checkpoint:
            raise ValueError("stages.fusion.checkpoint is required: a checkpoint from `mediascore train fusion`")
        self.model, meta, self.info = load_model(cfg.checkpoint)
        self.device = next(self.model.parameters()).device
        self.classes, self.max_tokens = meta["data"]["classes"], meta["data"]["max_tokens"]
        self.threshold = cfg.threshold if cfg.threshold is not None else meta["data"].get("threshold", 0.5)
        self.version = self.info["version"]

    def predict(self, images: list[np.ndarray], rows: list[dict]) -> dict[str, np.ndarray]:
        """Positive-class probability, token weights, mask, kinds and key boxes (``[0, 1]``) of the rows."""
        import torch

        from jobs.media.fusion_inputs import row_inputs, stack, to_tensors

        cfg = self.model.cfg
        batch = stack([row_inputs(im, row, cfg, self.max_tokens) for im, row in zip(images, rows, strict=True)])
        with torch.no_grad():
            out = self.model(to_tensors(batch, self.device))
        result = {k: out[k].cpu().numpy() for k in ("weights", "mask", "kinds")}
        result["prob"] = out["logits"].softmax(dim=1)[:, cfg.positive_class].cpu().numpy()
        result["key_box"] = out["key_box"].cpu().numpy() if "key_box" in out else None
        return result

    def process_rows(self, batch: dict[str, np.ndarray], rows: list[int]) -> dict[str, list]:
        names = ("text_tokens", "text_token_count", "text_sentence", "obj_crops", "obj_labels")
        records = [{key: batch[key][i] for key in names if key in batch} for i in rows]
        images = [batch["pixels"][i] for i in rows]
        pred = self.predict(images, records)
        positive, negative = (
            self.classes[self.model.cfg.positive_class],
            self.classes[1 - self.model.cfg.positive_class],
        )
        out: dict[str, list] = {name: [] for name in self.columns}
        for j, image in enumerate(images):
            height, width = image.shape[:2]
            prob = float(pred["prob"][j])
            out["fusion_score"].append(prob)
            out["fusion_class"].append(positive if prob >= self.threshold else negative)
            out["fusion_weights"].append(modality_weights(pred["weights"][j], pred["mask"][j], pred["kinds"][j]))
            box = pred["key_box"]
            scaled = None if box is None else [int(round(v)) for v in box[j] * [width, height, width, height]]
            out["fusion_key_box"].append(scaled)
            out["fusion_model"].append(self.version)
        return out
