"""The ``cam`` stage: class, box, mask area and key-region crop from the CAM localizer.

The checkpoint (a self-describing file written by ``mediascore train cam``) names its classes, input size and the
binarization threshold that maximized MaxBoxAcc at IoU 0.5 on its validation split; ``tau`` overrides it. The box
is the bounding rectangle of the largest connected region of the CAM of the predicted class, in the pixels of the
original image; the crop is that box widened by ``crop_margin`` on each side, resized to ``crop_size`` and stored
as JPEG bytes (the key region that fusion consumes). ``cam_mask`` is the mask at image size (the CAM resized
bilinearly, then thresholded at tau, as ``/v1/localize`` returns it) in COCO's uncompressed RLE, ``{size: [h, w],
counts: [...]}``, which pycocotools reads as it is; ``mask: false`` leaves it null.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa

from jobs.common.config import CamConfig
from jobs.media.images import crop_box, encode_image
from jobs.score.stages.base import Stage


def scale_box(box: tuple[int, int, int, int], size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A box on the ``size x size`` network input -> the same box in the original image's pixels."""
    sx, sy = width / size, height / size
    x0, y0, x1, y1 = box
    return (
        max(0, int(np.floor(x0 * sx))),
        max(0, int(np.floor(y0 * sy))),
        min(width, int(np.ceil(x1 * sx))),
        min(height, int(np.ceil(y1 * sy))),
    )


class CamStage(Stage):
    """Adds the ``cam_*`` columns."""

    name: ClassVar[str] = "cam"
    columns: ClassVar[dict[str, pa.DataType]] = {
        "cam_class": pa.string(),
        "cam_score": pa.float32(),
        "cam_box": pa.list_(pa.int32()),
        "cam_mask_area": pa.float32(),
        "cam_mask": pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.list_(pa.int64()))]),
        "cam_crop": pa.binary(),
        "cam_model": pa.string(),
    }
    cfg: CamConfig

    def __init__(self, cfg: CamConfig):
        from jobs.media.checkpoints import load_model

        super().__init__(cfg)
        if not cfg.checkpoint:
            raise ValueError("stages.cam.checkpoint is required: the URI of a checkpoint from `mediascore train cam`")
        self.model, meta, self.info = load_model(cfg.checkpoint)
        self.device = next(self.model.parameters()).device
        self.classes, self.size = meta["data"]["classes"], meta["data"]["image_size"]
        self.tau = cfg.tau if cfg.tau is not None else meta["data"].get("tau", 0.5)
        self.version = self.info["version"]

    def localize(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted class index, its probability and the CAM in [0, 1] at the network input size, per image."""
        from jobs.media.images import square, to_tensor_batch
        from models.cam_recipe import predict_cams

        batch = np.stack([square(im, self.size) for im in images])
        probs, cams = predict_cams(self.model, to_tensor_batch(batch).to(self.device))
        score, index = probs.max(1)
        return index.cpu().numpy(), score.cpu().numpy(), cams.cpu().numpy()

    def box(self, cam: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
        """The CAM's box in image pixels ``(x0, y0, x1, y1)``; the whole image when no pixel reaches tau."""
        from models.cam import cam_to_boxes

        boxes = cam_to_boxes(cam, self.tau, mode=self.cfg.box_mode)
        return scale_box(boxes[0], self.size, width, height) if boxes else (0, 0, width, height)

    def mask(self, cam: np.ndarray, width: int, height: int) -> np.ndarray:
        """The localization mask at image size: the CAM resized bilinearly, then thresholded at tau."""
        return cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= self.tau

    def process(self, images: list[np.ndarray]) -> dict[str, list]:
        from jobs.media.masks import mask_to_rle
        from models.cam import cam_to_mask

        out: dict[str, list] = {name: [] for name in self.columns}
        index, score, cams = self.localize(images)
        for image, k, p, cam in zip(images, index, score, cams, strict=True):
            height, width = image.shape[:2]
            box = self.box(cam, width, height)
            x0, y0, x1, y1 = crop_box(box, self.cfg.crop_margin, width, height)
            crop = cv2.resize(image[y0:y1, x0:x1], (self.cfg.crop_size, self.cfg.crop_size))
            out["cam_class"].append(self.classes[int(k)])
            out["cam_score"].append(float(p))
            out["cam_box"].append(list(box))
            out["cam_mask_area"].append(float(cam_to_mask(cam, self.tau).mean()))
            out["cam_mask"].append(mask_to_rle(self.mask(cam, width, height)) if self.cfg.mask else None)
            out["cam_crop"].append(encode_image(crop, "JPEG", quality=90))
            out["cam_model"].append(self.version)
        return out
