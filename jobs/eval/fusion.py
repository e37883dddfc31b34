"""``mediascore eval fusion``: the fusion scorer on the test split against its ablations, trained with the same budget.

The ablations are the same training config with one change each: one modality alone (``text``, ``style``,
``object``, ``key``), and fusion without modality weights (``use_weights: false``, and ``l1: 0`` since the weights
then feed nothing). Each trains into ``<output>/ablations/<name>`` from the same feature cache, resuming when
already trained. Every model is scored with its best checkpoint (lowest validation loss).

``weight_on_cause``: over the risky test images, the share whose largest modality weight falls on the modality that
holds the cause (text -> ``text``, object -> ``object`` (any face or body token), region -> ``key``, style ->
``style``); ``weight_margin``: their mean margin of the cause modality's weight over the largest other one.
``--seeds N`` trains the model and every ablation N times (seeds ``seed .. seed + N - 1``) and reports
means with their standard deviations.
"""

from __future__ import annotations

import json

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


def weight_margin(weights: np.ndarray, mask: np.ndarray, kinds: np.ndarray, causes, labels) -> float:
    """Mean over risky rows with a known cause of the cause modality's largest weight minus the largest weight of
    any other present modality (an absent modality counts 0: a missed cause is a margin of minus the rest)."""
    from models.fusion import TOKEN_MODALITY

    margins = []
    for w, m, k, cause, label in zip(weights, mask.astype(bool), kinds, causes, labels, strict=True):
        if not label or cause not in CAUSE_MODALITY:
            continue
        by_modality: dict[str, float] = {}
        for wj, kj in zip(w[m], k[m], strict=True):
            name = TOKEN_MODALITY[int(kj)]
            by_modality[name] = max(by_modality.get(name, 0.0), float(wj))
        own = by_modality.pop(CAUSE_MODALITY[cause], 0.0)
        margins.append(own - max(by_modality.values(), default=0.0))
    return float(np.mean(margins)) if margins else float("nan")


def ablation_settings(settings: TrainFusionSettings, name: str) -> TrainFusionSettings:
    """The config of ablation ``name``: same data, budget and seed; one change."""
    data = settings.model_dump(mode="json")
    if name == "no_weights":
        data["model"]["use_weights"], data["train"]["l1"] = False, 0.0
    else:
        data["model"]["modalities"] = [name]
    data["output"] = storage.join(settings.output, f"ablations/{name}")
    return TrainFusionSettings.model_validate(data)


def seed_settings(settings: TrainFusionSettings, index: int, seeds: int) -> TrainFusionSettings:
    """Run ``index`` of ``seeds``: one seed keeps the config as written; several train seeds ``seed, seed + 1, ...``
    each into ``<output>/seed<k>`` (its ablations under it), from the same feature cache."""
    if seeds == 1:
        return settings
    seed = settings.seed + index
    return settings.model_copy(update={"seed": seed, "output": storage.join(settings.output, f"seed{seed}")})


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
    threshold = ckpt["data"].get("threshold", 0.5)
    return out | {"epoch": ckpt["epoch"], "checkpoint": best["checkpoint"], "threshold": threshold}


def _by_image_type(labels: np.ndarray, probs: np.ndarray, types: np.ndarray) -> dict[str, float]:
    return {t: binary_metrics(labels[types == t], probs[types == t])["auroc"] for t in sorted(set(types))}


def evaluate_seed(settings: TrainFusionSettings, ablations: tuple[str, ...] = ABLATIONS, echo=print) -> dict:
    """One seed: train what is missing, score the test split, its figures. AUROC is threshold-free; accuracy, F1,
    precision and recall are at the checkpoint's operating point (``threshold``)."""
    run_train_fusion(settings, echo=echo)
    for name in ablations:
        echo(f"[eval fusion] seed {settings.seed}: ablation {name}")
        run_train_fusion(ablation_settings(settings, name), echo=echo)
    summary = read_json(storage.join(settings.data.cache, "_done.json"))
    frame = load_cache(settings.data.cache, settings.data.test_splits)
    test = frame_batch(frame, summary["specs"])
    labels, causes = test["label"], frame.cause.to_numpy()
    fused = _score_best(settings, test)
    result = binary_metrics(labels, fused["prob"], fused["threshold"]) | {"threshold": fused["threshold"]}
    result["auroc_by_image_type"] = _by_image_type(labels, fused["prob"], frame.image_type.to_numpy())
    tops = top_modality(fused["weights"], fused["mask"], fused["kinds"])
    result["weight_on_cause"], result["weight_on_cause_by_cause"] = weight_on_cause(causes, labels, tops)
    result["weight_margin"] = weight_margin(fused["weights"], fused["mask"], fused["kinds"], causes, labels)
    result["auroc_by_modality"] = {}
    for name in ablations:
        scored = _score_best(ablation_settings(settings, name), test)
        value = binary_metrics(labels, scored["prob"])["auroc"]
        if name == "no_weights":
            result["auroc_no_weights"] = value
        else:
            result["auroc_by_modality"][name] = value
    if result["auroc_by_modality"]:
        result["margin_over_best_modality"] = result["auroc"] - max(result["auroc_by_modality"].values())
    result |= {"test_images": len(labels), "test_risky": int(labels.sum()), "epoch": fused["epoch"]}
    return {k: _json_number(v) for k, v in result.items()}


def run_eval_fusion(
    settings: TrainFusionSettings, ablations: tuple[str, ...] = ABLATIONS, seeds: int = 1, echo=print
) -> dict:
    """Every seed's figures (:func:`evaluate_seed`), then their means under the same keys, the sample standard
    deviations under ``<key>_std`` (null for one seed) and the seeds under ``seeds``: the last-line JSON."""
    results = []
    for index in range(seeds):
        run = seed_settings(settings, index, seeds)
        results.append(evaluate_seed(run, ablations, echo))
        echo(f"[eval fusion] seed {run.seed}: {json.dumps(results[-1])}")
    return aggregate(results) | {"seeds": [settings.seed + i for i in range(seeds)]}


def aggregate(results: list[dict]) -> dict:
    """Means over runs of every number (and of every number in a nested dict), with ``<key>_std`` beside each."""
    out: dict = {}
    for key, first in results[0].items():
        values = [r.get(key) for r in results]
        if isinstance(first, dict):
            stats = {k: _mean_std([v.get(k) for v in values]) for k in first}
            out[key], out[f"{key}_std"] = ({k: m[i] for k, m in stats.items()} for i in (0, 1))
        elif (isinstance(first, int | float) and not isinstance(first, bool)) or first is None:
            out[key], out[f"{key}_std"] = _mean_std(values)
        else:
            out[key] = first
    return out


def _mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the non-null values (null when there are none; std null for one)."""
    found = [float(v) for v in values if v is not None]
    if not found:
        return None, None
    std = round(float(np.std(found, ddof=1)), 4) if len(found) > 1 else None
    return round(float(np.mean(found)), 4), std


def _json_number(value):
    """Floats rounded to 4 places (also inside a dict); NaN (a split without both classes) becomes null."""
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 4)
    return value
