"""``mediascore eval cam``: classification top-1, MaxBoxAcc (IoU 0.5, 0.7), MaxBoxAccV2 and PxAP of a checkpoint
on the corpus's localization split (by default the test split's photos: cluttered real-photo backgrounds with
distractor objects)."""

from __future__ import annotations

from jobs.train.cam import load_eval_set
from jobs.train.data.cam import labelled_images, read_manifest

EVAL_KEYS = ("top1", "maxboxacc_50", "maxboxacc_70", "maxboxacc_v2", "pxap")


def run_eval_cam(
    checkpoint: str,
    manifest: str | None = None,
    split: str = "test",
    image_types: tuple[str, ...] = ("photo",),
    cam_class: str = "gt",
    tau_step: float = 0.001,
) -> dict:
    """Evaluate a checkpoint; ``manifest`` defaults to the one it was trained on."""
    from jobs.media.checkpoints import load_model
    from models.cam_recipe import evaluate_localization

    model, meta, _ = load_model(checkpoint, "cpu")
    data = meta["data"]
    rows = labelled_images(read_manifest(manifest or data["manifest"]), [split], list(image_types))
    if rows.empty:
        raise FileNotFoundError(f"no labelled images in split {split!r} of types {list(image_types)}")
    images, labels, boxes, masks = load_eval_set(rows, data["classes"], data["image_size"])
    scores = evaluate_localization(model, images, labels, boxes, masks, cam_class=cam_class, tau_step=tau_step)
    return {**{k: round(float(scores[k]), 3) for k in EVAL_KEYS}, "tau_50": scores["tau_50"],
            "tau_70": scores["tau_70"], "n": scores["n"], "checkpoint": checkpoint, "epoch": meta["epoch"],
            "split": split, "image_types": list(image_types), "cam_class": cam_class}  # fmt: skip
