"""``mediascore eval objects``: recall and precision of the ``objects`` detector for faces and persons at IoU 0.5.

Sources:

- ``skimage``: real photos that ship inside scikit-image, with ground truth written down here after drawing each
  box on its image and looking at it: ``astronaut`` (Eileen Collins: one frontal face, one person from the waist
  up) and ``camera`` (the cameraman: one face turned three-quarters away, one person cut by the bottom and left
  edges), and photos without people in them, where every detection is a false positive. ``coins`` is left out:
  its coins carry engraved heads, neither clearly faces nor not.
- ``lfw``: the 200 grey 25 x 25 crops of scikit-image's ``lfw_subset``, the first 100 faces (the ground-truth box
  is the whole crop), the other 100 not. Each crop is scaled up 3x and framed in grey, one image per crop, and
  evaluated for faces only: a face crop holds no whole person.
- ``corpus`` (with ``--manifest``): the still images of a sample corpus. They hold drawn shapes and text, so every
  detection is a false positive, except on photo backgrounds cut from the scikit-image photos with people or heads
  in them (astronaut, camera, coins): those images are left out. Their backgrounds are recovered from the seed in
  the corpus's ``meta.json``; without it every photo-type image is left out. In a risk corpus an image whose
  ``risk_cause`` is ``object`` shows a pasted LFW face: its ``risk_box`` is a face ground-truth box.

Matching is greedy, highest score first: a detection is a true positive when it overlaps a not yet matched
ground-truth box of its label with IoU >= 0.5. Recall is true positives over ground-truth boxes (1.0 when there
are none), precision true positives over detections (1.0 when there are none: nothing claimed, nothing wrong).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from jobs.common import storage
from jobs.common.config import ObjectsConfig
from jobs.media.detect import Detector, box_iou, build_detector, detect

LABELS = ("face", "person")
IOU = 0.5
Box = tuple[int, int, int, int]

# Hand-made ground truth, x0, y0, x1, y1 (x1, y1 exclusive) in the 512 x 512 originals.
PHOTO_TRUTH: dict[str, dict[str, list[Box]]] = {
    "astronaut": {"face": [(173, 68, 273, 168)], "person": [(22, 15, 362, 512)]},
    "camera": {"face": [(180, 100, 252, 198)], "person": [(0, 64, 333, 512)]},
}
NO_PEOPLE = (
    "rocket", "coffee", "chelsea", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "retina",
    "horse", "page", "clock", "moon", "brick", "grass", "gravel", "colorwheel", "text",
)  # fmt: skip
WITH_HEADS = frozenset({"astronaut", "camera", "coins"})  # corpus backgrounds that may show a face or a person
LFW_UPSCALE, LFW_FRAME, LFW_FILL = 3, 40, 128


@dataclass(frozen=True)
class Truth:
    """One image and, for each label evaluated on it, its ground-truth boxes (an empty list: none there)."""

    source: str
    name: str
    image: np.ndarray
    boxes: dict[str, list[Box]]


@dataclass
class Tally:
    images: int = 0
    gt: int = 0
    det: int = 0
    tp: int = 0
    missed: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.tp / self.gt if self.gt else 1.0

    @property
    def precision(self) -> float:
        return self.tp / self.det if self.det else 1.0


def lfw_image(tile: np.ndarray) -> tuple[np.ndarray, Box]:
    """A grey ``(25, 25)`` float LFW crop in [0, 1] -> RGB, scaled up and framed in grey, and the crop's box."""
    side = tile.shape[0] * LFW_UPSCALE
    pixels = np.round(np.clip(tile, 0, 1) * 255).astype(np.uint8)
    image = np.full((side + 2 * LFW_FRAME, side + 2 * LFW_FRAME), LFW_FILL, np.uint8)
    image[LFW_FRAME : LFW_FRAME + side, LFW_FRAME : LFW_FRAME + side] = cv2.resize(
        pixels, (side, side), interpolation=cv2.INTER_CUBIC
    )
    return np.repeat(image[:, :, None], 3, axis=2), (LFW_FRAME, LFW_FRAME, LFW_FRAME + side, LFW_FRAME + side)


def skimage_truths() -> Iterator[Truth]:
    """The scikit-image photos with their ground truth (see the module docstring)."""
    import skimage.data

    from jobs.media.images import photo

    for name, boxes in PHOTO_TRUTH.items():
        yield Truth("skimage", name, photo(name), boxes)
    lfw = skimage.data.lfw_subset()  # (200, 25, 25): 100 faces, then 100 non-faces
    for i, tile in enumerate(lfw):
        image, box = lfw_image(tile)
        face = i < len(lfw) // 2
        yield Truth("lfw", f"lfw_{'face' if face else 'non_face'}_{i:03d}", image, {"face": [box] if face else []})
    for name in NO_PEOPLE:
        yield Truth("skimage", name, photo(name), {label: [] for label in LABELS})


def corpus_truths(manifest_uri: str) -> tuple[Iterator[Truth], int]:
    """The corpus's still images (no faces or persons in any), and how many were left out for their backgrounds."""
    from jobs.common.storage import read_json
    from jobs.train.data.cam import read_manifest

    manifest = read_manifest(manifest_uri)
    meta = read_json(manifest_uri.rsplit("/", 1)[0] + "/meta.json") or {}
    rows = manifest[(manifest.media_type == "image") & manifest.broken.isna()]
    keep = [row for row in rows.itertuples() if _background(meta, row) not in WITH_HEADS]
    return (_corpus_image(row) for row in keep), len(rows) - len(keep)


def _background(meta: dict, row) -> str | None:
    """The scikit-image photo behind a corpus image (``None``: drawn background); ``astronaut`` (to be left out)
    when the corpus's seed is unknown."""
    if row.image_type != "photo":
        return None
    if "seed" not in meta:
        return "astronaut"
    from jobs.corpus.scene import sample_scene

    scene = sample_scene(meta["seed"], int(row.scene_id), bool(meta.get("chinese_text")), bool(meta.get("risk")))
    return scene.background.source


def _corpus_image(row) -> Truth:
    from jobs.media.decode import decode_image

    pixels, _ = decode_image(storage.read_bytes(row.uri))
    boxes: dict[str, list[Box]] = {label: [] for label in LABELS}
    if getattr(row, "risk_cause", None) == "object":  # a pasted face (risk corpus)
        boxes["face"].append(tuple(int(v) for v in row.risk_box))
    return Truth("corpus", row.key, pixels, boxes)


def match(boxes: np.ndarray, scores: np.ndarray, truth: list[Box]) -> int:
    """True positives among ``boxes``: greedy, highest score first, one ground-truth box each, IoU >= 0.5."""
    if not len(boxes) or not truth:
        return 0
    iou = box_iou(boxes, np.asarray(truth, np.float64))  # (N, G)
    free = np.ones(len(truth), bool)
    tp = 0
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where(free, iou[i], -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= IOU:
            free[best] = False
            tp += 1
    return tp


def evaluate(detector: Detector, cfg: ObjectsConfig, truths: Iterator[Truth]) -> dict[tuple[str, str], Tally]:
    """Counts per (source, label) over ``truths``."""
    tallies: dict[tuple[str, str], Tally] = {}
    for truth in truths:
        dets = detect(detector, truth.image, cfg)
        names = [detector.labels[int(k)] for k in dets.labels]
        for label, gt in truth.boxes.items():
            mine = np.array([name == label for name in names], bool)
            tally = tallies.setdefault((truth.source, label), Tally())
            tp = match(dets.boxes[mine], dets.scores[mine], gt)
            tally.images += 1
            tally.gt, tally.det, tally.tp = tally.gt + len(gt), tally.det + int(mine.sum()), tally.tp + tp
            if tp < len(gt):
                tally.missed.append(truth.name)
    return tallies


def run_eval_objects(manifest: str | None = None, cfg: ObjectsConfig | None = None) -> dict:
    """Evaluate the detector ``cfg`` describes (default: the OpenCV one) on the scikit-image photos and, with
    ``manifest``, on a corpus. Returns the four headline figures, the per-source rows and the counts."""
    cfg = cfg or ObjectsConfig()
    detector = build_detector(cfg)
    tallies = evaluate(detector, cfg, skimage_truths())
    left_out = 0
    if manifest:
        corpus, left_out = corpus_truths(manifest)
        tallies.update(evaluate(detector, cfg, corpus))
    result: dict = {}
    for label in LABELS:
        total = Tally()
        for (_, name), tally in tallies.items():
            if name == label:
                total.gt, total.det, total.tp = total.gt + tally.gt, total.det + tally.det, total.tp + tally.tp
        result.update({f"{label}_recall": round(total.recall, 4), f"{label}_precision": round(total.precision, 4)})
        result.update({f"{label}_gt": total.gt, f"{label}_detections": total.det, f"{label}_true_positives": total.tp})
    result["rows"] = [
        {"source": source, "label": label, "images": t.images, "gt": t.gt, "detections": t.det, "tp": t.tp,
         "recall": round(t.recall, 4), "precision": round(t.precision, 4), "missed": t.missed}
        for (source, label), t in sorted(tallies.items())
    ]  # fmt: skip
    result["astronaut_face_found"] = "astronaut" not in tallies[("skimage", "face")].missed
    result["corpus_images_left_out"] = left_out
    result["detector"] = detector.version
    result["manifest"] = manifest
    return result


def format_table(result: dict) -> str:
    """The per-source rows and the totals as a fixed-width table."""
    lines = [f"{'source':<9} {'label':<7} {'images':>6} {'gt':>5} {'det':>5} {'tp':>5} {'recall':>7} {'precision':>9}"]
    for row in result["rows"]:
        lines.append(
            f"{row['source']:<9} {row['label']:<7} {row['images']:>6} {row['gt']:>5} {row['detections']:>5} "
            f"{row['tp']:>5} {row['recall']:>7.3f} {row['precision']:>9.3f}"
        )
    for label in LABELS:
        lines.append(
            f"{'all':<9} {label:<7} {'':>6} {result[f'{label}_gt']:>5} {result[f'{label}_detections']:>5} "
            f"{result[f'{label}_true_positives']:>5} {result[f'{label}_recall']:>7.3f} "
            f"{result[f'{label}_precision']:>9.3f}"
        )
    for row in result["rows"]:
        if row["missed"]:
            more = f" and {len(row['missed']) - 8} more" if len(row["missed"]) > 8 else ""
            lines.append(f"missed    {row['source']}/{row['label']}: {', '.join(row['missed'][:8])}{more}")
    lines.append(f"detector  {result['detector']}")
    if result["manifest"]:
        lines.append(f"corpus    {result['manifest']} ({result['corpus_images_left_out']} images left out)")
    return "\n".join(lines)
