"""``mediascore eval fusion``: the fusion scorer on the test split against its ablations, trained with the same budget.

The ablations are the same training config with one change each: one modality alone (``text``, ``style``,
``object``, ``key``), and fusion without modality weights (``use_weights: false``, and ``l1: 0`` since the weights
then feed nothing). Each trains into ``<output>/ablations/<name>`` from the same feature cache, resuming when
already trained. Every model is scored with its best checkpoint (lowest validation loss).

``weight_on_cause``: over the risky test images, the share whose largest modality weight falls on the modality that
holds the cause (text -> ``text``, object -> ``object`` (any face or body token), region -> ``key``, style ->
``style``).
"""

from __future__ import annotations

import numpy as np

from jobs.common import storage
from jobs.common.storage import read_json
from jobs.train.fusion import CAUSE_MODALITY, TrainFusionSettings, frame_batch, load_cache, predict, run_train_fusion
from jobs.train.metrics import binary_metrics

ABLATIONS = ("text", "style", "object", "key", "no_weights")


def top_modality(weights: np.ndarray, mask: np.ndarray, kinds: np.ndarray) -> list[str | None]:
    """Per row, the modality of the largest weight among present tokens (``None`` when none is present)."""
    from models.fusion import TOKEN_MODALITY

    out: list[str | None] = []
    for w, m, k in zip(weights, mask.astype(bool), kinds, strict=True):
        out.append(TOKEN_MODALITY[int(k[m][np.argmax(w[m])])] if m.any() else None)
    return out


def weight_on_cause(causes: np.ndarray, labels: np.ndarray, tops: list[str | None]) -> tuple[float, dict]:
    """Share of risky rows whose top modality holds their cause, overall and per cause."""
    hits: dict[str, list[bool]] = {}
    for cause, label, top in zip(causes, labels, tops, strict=True):
        if label and cause in CAUSE_MODALITY:
            hits.setdefault(cause, []).append(top == CAUSE_MODALITY[cause])
    every = [h for values in hits.values() for h in values]
    overall = float(np.mean(every)) if every else float("nan")
    return overall, {cause: round(float(np.mean(v)), 4) for cause, v in sorted(hits.items())}


def ablation_settings(settings: TrainFusionSettings, name: str) -> TrainFusionSettings:
    """The config of ablation ``name``: same data, budget and seed; one change."""
    data = settings.model_dump(mode="json")
    if name == "no_weights":
        data["model"]["use_weights"], data["train"]["l1"] = False, 0.0
    else:
        data["model"]["modalities"] = [name]
    data["output"] = storage.join(settings.output, f"ablations/{name}")
    return TrainFusionSettings.model_validate(data)


def _score_best(settings: TrainFusionSettings, test: dict) -> dict:
    import torch

    from jobs.media.checkpoints import load_model
    from models.fusion_recipe import FusionRecipe

    best = read_json(storage.join(settings.output, "best.json"))
    if not best:
        raise FileNotFoundError(f"no best.json under {settings.output}: train first")
    model, ckpt, _ = load_model(best["checkpoint"], "cpu")
    recipe = FusionRecipe(model, settings.train, model.cfg.positive_class)
    out = predict(recipe, test, torch.device("cpu"))
    return out | {"epoch": ckpt["epoch"], "checkpoint": best["checkpoint"]}


def run_eval_fusion(settings: TrainFusionSettings, ablations: tuple[str, ...] = ABLATIONS, echo=print) -> dict:
    """Train what is missing, score the test split, return the figures (the last-line JSON)."""
    run_train_fusion(settings, echo=echo)
    for name in ablations:
        echo(f"[eval fusion] ablation {name}")
        run_train_fusion(ablation_settings(settings, name), echo=echo)
    summary = read_json(storage.join(settings.data.cache, "_done.json"))
    frame = load_cache(settings.data.cache, settings.data.test_splits)
    test = frame_batch(frame, summary["specs"])
    labels, causes = test["label"], frame.cause.to_numpy()
    fused = _score_best(settings, test)
    result = binary_metrics(labels, fused["prob"])
    tops = top_modality(fused["weights"], fused["mask"], fused["kinds"])
    result["weight_on_cause"], result["weight_on_cause_by_cause"] = weight_on_cause(causes, labels, tops)
    result["auroc_by_modality"] = {}
    for name in ablations:
        scored = _score_best(ablation_settings(settings, name), test)
        value = round(binary_metrics(labels, scored["prob"])["auroc"], 4)
        if name == "no_weights":
            result["auroc_no_weights"] = value
        else:
            result["auroc_by_modality"][name] = value
    if result["auroc_by_modality"]:
        result["margin_over_best_modality"] = result["auroc"] - max(result["auroc_by_modality"].values())
    result |= {"test_images": len(labels), "test_risky": int(labels.sum()), "epoch": fused["epoch"]}
    return {k: _json_number(v) for k, v in result.items()}


def _json_number(value):
    """Floats rounded to 4 places; NaN (a split without both classes) becomes null, which JSON can hold."""
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 4)
    return value
