"""``mediascore eval cam``: classification top-1, MaxBoxAcc (IoU 0.5, 0.7), MaxBoxAccV2 and PxAP of a checkpoint
on the corpus's localization split (by default the test split's photos: cluttered real-photo backgrounds with
distractor objects)."""

from __future__ import annotations

from jobs.train.cam import load_eval_set
from jobs.train.data.cam import labelled_images, read_manifest

EVAL_KEYS = ("top1", "maxboxacc_50", "maxboxacc_70", "maxboxacc_v2", "pxap")


IMAGE_TYPES = ("photo", "sketch", "cartoon")


def run_eval_cam(
    checkpoint: str,
    manifest: str | None = None,
    split: str = "test",
    image_types: tuple[str, ...] = ("photo",),
    cam_class: str = "gt",
    tau_step: float = 0.001,
    by_image_type: bool = False,
) -> dict:
    """Evaluate a checkpoint; ``manifest`` defaults to the one it was trained on. With ``by_image_type`` the same
    figures for each of photo, sketch and cartoon (each with its own best tau) go under ``by_image_type``."""
    from jobs.media.checkpoints import load_model

    model, meta, _ = load_model(checkpoint, "cpu")
    data = meta["data"]
    rows = read_manifest(manifest or data["manifest"])
    result = _scores(model, data, rows, split, image_types, cam_class, tau_step)
    if by_image_type:
        present = set(rows["image_type"].dropna()) if "image_type" in rows else set()
        result["by_image_type"] = {
            kind: _scores(model, data, rows, split, (kind,), cam_class, tau_step)
            for kind in IMAGE_TYPES
            if kind in present
        }
    return result | {"checkpoint": checkpoint, "epoch": meta["epoch"], "split": split,
                     "image_types": list(image_types), "cam_class": cam_class}  # fmt: skip


def _scores(model, data: dict, rows, split: str, image_types: tuple[str, ...], cam_class: str, tau_step: float):
    from models.cam_recipe import evaluate_localization

    chosen = labelled_images(rows, [split], list(image_types))
    if chosen.empty:
        raise FileNotFoundError(f"no labelled images in split {split!r} of types {list(image_types)}")
    images, labels, boxes, masks = load_eval_set(chosen, data["classes"], data["image_size"])
    scores = evaluate_localization(model, images, labels, boxes, masks, cam_class=cam_class, tau_step=tau_step)
    return {**{k: round(float(scores[k]), 3) for k in EVAL_KEYS}, "tau_50": scores["tau_50"],
            "tau_70": scores["tau_70"], "n": scores["n"]}  # fmt: skip
