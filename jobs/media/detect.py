"""Face and person detection for the ``objects`` stage. Ray-free.

A :class:`Detector` maps one RGB ``uint8`` image ``(H, W, 3)`` to :class:`Detections` in that image's pixels.
:func:`detect` wraps any detector with what all of them share: an image whose longer side exceeds ``max_side`` is
scaled down for detection and the boxes are mapped back to the original pixels; then the score threshold, the
minimum size, non-maximum suppression per label and the cap on the count (highest scores first) apply.

``detector: opencv`` (:class:`OpenCVDetector`) runs offline on what ships inside OpenCV:

- faces: the frontal-face Haar cascade ``haarcascade_frontalface_default`` proposes and scores faces. Of the
  shipped frontal cascades it is the one whose last-stage sum ``w`` (``detectMultiScale3`` with
  ``outputRejectLevels``) tells faces from look-alikes: on the 100 LFW faces in scikit-image it runs from 1 to 11
  (median 7), on the false hits in the sample corpus mostly 1 to 3, while ``alt2``'s sits at 55 to 58 whatever it
  fires on. The score is ``sigmoid(w - 3)``: a median LFW face scores 0.98, ``w = 2.15`` scores the default
  threshold of 0.3. The cascade also fires on texture (fur, gravel, tissue, print), so by default
  (``face_confirm``) a face is kept only where the ``alt2`` cascade, boosted on other features, finds one too
  (IoU >= 0.5): on the demo corpus that cuts false faces from 23 to 2 in 282 images and drops no LFW face.
- persons: OpenCV's HOG descriptor with its default people SVM (Dalal and Triggs), made for upright, mostly whole
  persons at least 64 x 128 pixels; it misses portraits and people bent or cut by the frame. Windows on the
  person side of the SVM's boundary (margin ``m > 0``) are kept and scored ``sigmoid((m - 1) / 0.5)``, so the
  default threshold of 0.3 asks for ``m >= 0.58``. No pedestrian photo ships offline to calibrate this against;
  on the demo corpus that threshold leaves 58 false persons in 282 images. The detection window holds the person
  with 16 pixels of margin on each side of 64 x 128 (Dalal and Triggs); boxes are shrunk by that margin.

``detector: torchscript`` or ``onnx`` (:class:`ModelDetector`) loads a detector from object storage. Its contract:

- input: one float32 tensor ``(1, 3, H, W)``, RGB in [0, 1], ``H x W`` the image after the ``max_side`` scaling;
- outputs: ``boxes (N, 4)`` float ``x0, y0, x1, y1`` in input pixels, ``scores (N,)`` in [0, 1] and
  ``labels (N,)`` integers indexing ``ObjectsConfig.labels``; a leading batch axis of 1 is accepted. A TorchScript
  module returns a tuple ``(boxes, scores, labels)`` or a dict with those keys; an ONNX model names its outputs
  ``boxes``, ``scores`` and ``labels``, else its first three outputs are taken in that order.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from jobs.common import storage
from jobs.common.config import ObjectsConfig
from jobs.media.images import fit_within
from models.cam import box_iou_matrix

OPENCV_LABELS = ("face", "person")
FACE_CASCADE = "haarcascade_frontalface_default.xml"
CONFIRM_CASCADE = "haarcascade_frontalface_alt2.xml"
CONFIRM_IOU = 0.5
HAAR_CENTER, HAAR_WIDTH = 3.0, 1.0  # squashing of the cascade's last-stage sum
HOG_CENTER, HOG_WIDTH = 1.0, 0.5  # squashing of the people SVM's margin
HOG_WINDOW = (64, 128)
HOG_MARGIN = (16 / 64, 16 / 128)  # of the window's width and height, on each side
MODEL_OUTPUTS = ("boxes", "scores", "labels")


@dataclass(frozen=True)
class Detections:
    """Detections in one image: ``boxes (N, 4)`` float32 ``x0, y0, x1, y1`` (x1, y1 exclusive), ``scores (N,)``
    float32 in [0, 1], ``labels (N,)`` int64 indices into the detector's ``labels``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def make(cls, boxes, scores, labels) -> Detections:
        return cls(
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(scores, np.float32).reshape(-1),
            np.asarray(labels, np.int64).reshape(-1),
        )

    @classmethod
    def empty(cls) -> Detections:
        return cls.make(np.zeros((0, 4)), [], [])

    def take(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (indices or a boolean mask), in that order."""
        return Detections(self.boxes[index], self.scores[index], self.labels[index])

    def __len__(self) -> int:
        return len(self.scores)


class Detector(Protocol):
    """Maps an image to raw detections (before threshold, size filter, NMS and cap)."""

    labels: list[str]
    version: str

    def detect(self, image: np.ndarray, min_size: int = 1) -> Detections:
        """Detections in RGB ``uint8`` ``image (H, W, 3)``, in its pixels; boxes with a side under ``min_size``
        pixels may be left out early (a hint that saves time, not a filter)."""
        ...


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a (N, 4)`` with every box in ``b (M, 4)`` -> ``(N, M)``."""
    return box_iou_matrix(a, b)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression (OpenCV's ``NMSBoxes``): indices of the kept boxes, highest score first. A box
    is dropped when its IoU with a kept, higher-scoring box exceeds ``iou_threshold``; equal scores keep the earlier
    box."""
    boxes, scores = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64)
    if not len(boxes):
        return np.zeros(0, np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    ranks = scores - scores.min() + 1.0  # OpenCV keeps only scores above a threshold >= 0; NMS needs only the order
    return np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), ranks.tolist(), 0.0, float(iou_threshold)), np.int64).ravel()


def postprocess(dets: Detections, cfg: ObjectsConfig) -> Detections:
    """Score threshold, minimum size (the shorter side, in pixels), NMS within each label, then at most
    ``max_objects`` detections, highest scores first."""
    sides = np.minimum(dets.boxes[:, 2] - dets.boxes[:, 0], dets.boxes[:, 3] - dets.boxes[:, 1])
    dets = dets.take((dets.scores >= cfg.score_threshold) & (sides >= cfg.min_size))
    kept = [np.zeros(0, np.int64)]
    for label in np.unique(dets.labels):
        members = np.flatnonzero(dets.labels == label)
        kept.append(members[nms(dets.boxes[members], dets.scores[members], cfg.nms_iou)])
    index = np.concatenate(kept)
    index = index[np.argsort(-dets.scores[index], kind="stable")][: cfg.max_objects]
    return dets.take(index)


def detect(detector: Detector, image: np.ndarray, cfg: ObjectsConfig) -> Detections:
    """The detections of ``detector`` in RGB ``uint8`` ``image (H, W, 3)``, in its original pixels, filtered as
    :func:`postprocess` says."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    small, scale = fit_within(image, cfg.max_side)
    dets = detector.detect(small, min_size=max(1, math.floor(cfg.min_size * scale)))
    boxes = dets.boxes / np.float32(scale)
    boxes = np.clip(boxes, 0, np.array([w, h, w, h], np.float32))
    return postprocess(Detections(boxes, dets.scores, dets.labels), cfg)


def _cascade(name: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load its shipped cascade {name}")
    return cascade


def _xywh_to_xyxy(rects) -> np.ndarray:
    xywh = np.asarray(rects, np.float32).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


class OpenCVDetector:
    """Faces with OpenCV's frontal-face Haar cascades, persons with its HOG people detector (see the module
    docstring for the choices and the score mapping). ``cfg.labels`` picks which of ``face`` and ``person`` run."""

    def __init__(self, cfg: ObjectsConfig):
        unknown = set(cfg.labels) - set(OPENCV_LABELS)
        if unknown:
            raise ValueError(f"detector opencv finds only {list(OPENCV_LABELS)}; stages.objects.labels has {unknown}")
        self.cfg = cfg
        self.labels = list(cfg.labels)
        parts = []
        if "face" in self.labels:
            self.face = _cascade(FACE_CASCADE)
            self.confirm = _cascade(CONFIRM_CASCADE) if cfg.face_confirm else None
            parts.append("face=" + FACE_CASCADE.removesuffix(".xml") + ("+alt2" if cfg.face_confirm else ""))
        if "person" in self.labels:
            self.hog = cv2.HOGDescriptor()
            self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
            parts.append("person=hog-default-people")
        self.version = f"opencv-{cv2.__version__}:" + ",".join(parts)

    def detect(self, image: np.ndarray, min_size: int = 1) -> Detections:
        found = []
        if "face" in self.labels:
            boxes, scores = self.faces(image, min_size)
            found.append(Detections.make(boxes, scores, np.full(len(scores), self.labels.index("face"))))
        if "person" in self.labels:
            boxes, scores = self.persons(image)
            found.append(Detections.make(boxes, scores, np.full(len(scores), self.labels.index("person"))))
        if not found:
            return Detections.empty()
        return Detections.make(*(np.concatenate([getattr(d, k) for d in found]) for k in MODEL_OUTPUTS))

    def faces(self, image: np.ndarray, min_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes ``(N, 4)`` and scores ``(N,)`` in ``image``."""
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, weights = self._haar(self.face, grey, min_size)
        if self.confirm is not None and len(boxes):
            others, _ = self._haar(self.confirm, grey, min_size)
            agreed = box_iou(boxes, others).max(axis=1, initial=0) >= CONFIRM_IOU
            boxes, weights = boxes[agreed], weights[agreed]
        return boxes, sigmoid((weights - HAAR_CENTER) / HAAR_WIDTH).astype(np.float32)

    def _haar(self, cascade: cv2.CascadeClassifier, grey: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
        window = cascade.getOriginalWindowSize()
        if grey.shape[1] < window[0] or grey.shape[0] < window[1]:
            return np.zeros((0, 4), np.float32), np.zeros(0)
        rects, _, weights = cascade.detectMultiScale3(
            grey,
            scaleFactor=self.cfg.haar_scale_factor,
            minNeighbors=self.cfg.haar_min_neighbors,
            minSize=(min_size, min_size),
            outputRejectLevels=True,
        )
        return _xywh_to_xyxy(rects), np.asarray(weights, np.float64).reshape(-1)

    def persons(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes ``(N, 4)`` and scores ``(N,)`` in ``image``."""
        if image.shape[1] < HOG_WINDOW[0] or image.shape[0] < HOG_WINDOW[1]:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        stride = (self.cfg.hog_stride, self.cfg.hog_stride)
        rects, margins = self.hog.detectMultiScale(
            np.ascontiguousarray(image), hitThreshold=0.0, winStride=stride, padding=(8, 8), scale=self.cfg.hog_scale
        )
        boxes = _xywh_to_xyxy(rects)
        inset = (boxes[:, 2:] - boxes[:, :2]) * np.array(HOG_MARGIN, np.float32)  # (N, 2)
        boxes = np.concatenate([boxes[:, :2] + inset, boxes[:, 2:] - inset], axis=1)
        margins = np.asarray(margins, np.float64).reshape(-1)
        return boxes, sigmoid((margins - HOG_CENTER) / HOG_WIDTH).astype(np.float32)


Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _torchscript_runner(data: bytes) -> Runner:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = torch.jit.load(io.BytesIO(data), map_location=device).eval()

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(device))
        if isinstance(out, dict):
            out = tuple(out[k] for k in MODEL_OUTPUTS)
        if not isinstance(out, (tuple, list)) or len(out) < 3:
            raise ValueError("a TorchScript detector returns (boxes, scores, labels) or a dict with those keys")
        return tuple(t.detach().cpu().numpy() for t in out[:3])

    return run


def _onnx_runner(data: bytes) -> Runner:
    import onnxruntime as ort

    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    providers = [p for p in wanted if p in ort.get_available_providers()]
    session = ort.InferenceSession(data, providers=providers)
    names = [o.name for o in session.get_outputs()]
    if len(names) < 3:
        raise ValueError(f"an ONNX detector has outputs boxes, scores, labels; this one has {names}")
    outputs = list(MODEL_OUTPUTS) if set(MODEL_OUTPUTS) <= set(names) else names[:3]
    feed = session.get_inputs()[0].name

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, labels = session.run(outputs, {feed: x})
        return boxes, scores, labels

    return run


def _unbatch(x: np.ndarray, ndim: int) -> np.ndarray:
    x = np.asarray(x)
    return x[0] if x.ndim == ndim + 1 and x.shape[0] == 1 else x


class ModelDetector:
    """A TorchScript or ONNX detector read from ``cfg.model`` (any URI :mod:`jobs.common.storage` reads), under the
    contract in the module docstring. Runs on CUDA when the runtime has it, else on the CPU."""

    def __init__(self, cfg: ObjectsConfig):
        if not cfg.model:
            raise ValueError(f"stages.objects.model is required for detector {cfg.detector}: the URI of the model")
        data = storage.read_bytes(cfg.model)
        self.labels = list(cfg.labels)
        self.version = f"{cfg.detector}:{cfg.model}#sha1={hashlib.sha1(data).hexdigest()[:12]}"
        self._run = _torchscript_runner(data) if cfg.detector == "torchscript" else _onnx_runner(data)

    def detect(self, image: np.ndarray, min_size: int = 1) -> Detections:
        x = np.ascontiguousarray((image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])  # (1, 3, H, W)
        boxes, scores, labels = self._run(x)
        boxes, scores, labels = _unbatch(boxes, 2), _unbatch(scores, 1), _unbatch(labels, 1)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (len(boxes),) or labels.shape != scores.shape:
            raise ValueError(
                f"detector outputs must be boxes (N, 4), scores (N,), labels (N,); got {boxes.shape}, "
                f"{scores.shape}, {labels.shape}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.labels)):
            bad = sorted({int(v) for v in labels if not 0 <= v < len(self.labels)})
            raise ValueError(f"detector labels {bad} are outside stages.objects.labels {self.labels}")
        return Detections.make(boxes, scores, labels)


def build_detector(cfg: ObjectsConfig) -> Detector:
    """The detector ``cfg.detector`` names."""
    return OpenCVDetector(cfg) if cfg.detector == "opencv" else ModelDetector(cfg)
