"""``mediascore eval scorefusion``: seed 003 on the test split, over seeds.

For every seed the training job runs (resumable) under ``<output>/seed_<s>``: the per-modality networks over the
folds, the weights fitted on the out-of-fold scores. Then the test split is scored once per modality, and the
figures are computed on the same test scores:

* ``auroc_by_modality``: each modality alone;
* ``auroc_equal_weights``: every weight ``1/M``;
* ``auroc_fitted``: the weights fitted on the out-of-fold scores (what the checkpoint ships);
* ``auroc_fitted_on_test``: the embodiment's literal choice, the grid's best weights picked on the test split
  itself. That is leakage: reported apart, as an optimistic bound, never shipped;
* ``accuracy``, ``sensitivity``, ``specificity`` of the fitted weights at ``threshold``;
* ``weights``: the fitted weights, mean over seeds (``weights_by_seed`` each seed's).

Every figure is a mean over seeds with its standard deviation under ``<key>_std``; the last line is one JSON
object with these keys.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from jobs.common import storage
from jobs.train.scorefusion import (
    TrainScoreFusionSettings,
    auroc,
    read_samples,
    run_train_scorefusion,
)


def score_test_split(settings: TrainScoreFusionSettings, checkpoint: str, batch: int = 32) -> pd.DataFrame:
    """``sample_id``, ``label`` and a score column per modality for the test split (NaN where missing or
    unreadable), scored by the checkpoint's scorer in batches of samples."""
    from jobs.media.scorefusion import ScoreFusionScorer
    from jobs.score.samples import read_sample_files

    scorer = ScoreFusionScorer(checkpoint)
    manifest = read_samples(settings.data.manifest)
    rows = manifest[manifest.split == settings.data.test_split]
    groups = rows.groupby("sample_id")
    ids = sorted(groups.groups)
    scores: list[dict[str, float]] = []
    for start in range(0, len(ids), batch):
        samples = []
        for sample in ids[start : start + batch]:
            group = groups.get_group(sample)
            files, reasons = read_sample_files(group.modality, group.uri, scorer.names)
            for name, why in reasons.items():
                print(f"[eval scorefusion] {sample} {name} left out: {why}")
            samples.append(files)
        scores += [r.sf_scores for r in scorer.score_samples(samples)]
    label = groups.label.first().astype(str)
    table = pd.DataFrame({"sample_id": ids, "label": [int(label[i] == settings.data.positive) for i in ids]})
    for name in settings.names:
        table[name] = [s.get(name, np.nan) for s in scores]
    return table


def seed_figures(settings: TrainScoreFusionSettings, record: dict, table: pd.DataFrame) -> dict:
    """The figures of one seed from its test scores and fitted weights."""
    from models.scorefusion import decision_threshold, fit_weights_grid, fused_score

    names, fusion = settings.names, settings.fusion
    complete = table.dropna(subset=names)
    s, y = complete[names].to_numpy(float), complete.label.to_numpy()
    m = len(names)
    fitted = np.asarray(record["weights"])
    on_test, _ = fit_weights_grid(s, y, auroc, fusion.step)
    fused = fused_score(s, fitted, fusion.mode)
    predicted = fused >= decision_threshold(fusion.threshold, m, fusion.mode)
    positives, negatives = y == 1, y == 0
    return {
        "auroc_by_modality": {n: auroc(table.label[table[n].notna()], table[n].dropna()) for n in names},
        "auroc_equal_weights": auroc(y, fused_score(s, np.full(m, 1 / m))),
        "auroc_fitted": auroc(y, fused),
        "auroc_fitted_on_test": auroc(y, fused_score(s, on_test)),
        "accuracy": float((predicted == positives).mean()),
        "sensitivity": float(predicted[positives].mean()) if positives.any() else float("nan"),
        "specificity": float((~predicted[negatives]).mean()) if negatives.any() else float("nan"),
        "weights": dict(zip(names, fitted.tolist(), strict=True)),
        "weights_on_test": dict(zip(names, on_test.tolist(), strict=True)),
        "test_samples": len(complete),
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return round(float(np.mean(values)), 4), round(float(np.std(values)), 4)


def summarize(per_seed: list[dict], names: list[str], threshold: float) -> dict:
    """Means and standard deviations over seeds, under the keys of the module docstring."""
    out: dict = {"seeds": [p["seed"] for p in per_seed], "threshold": threshold}
    by_modality, by_modality_std = {}, {}
    for n in names:
        by_modality[n], by_modality_std[n] = _mean_std([p["auroc_by_modality"][n] for p in per_seed])
    out["auroc_by_modality"], out["auroc_by_modality_std"] = by_modality, by_modality_std
    for key in ("auroc_equal_weights", "auroc_fitted", "auroc_fitted_on_test", "accuracy", "sensitivity",
                "specificity"):  # fmt: skip
        out[key], out[f"{key}_std"] = _mean_std([p[key] for p in per_seed])
    out["weights"] = {n: round(float(np.mean([p["weights"][n] for p in per_seed])), 4) for n in names}
    out["weights_by_seed"] = [p["weights"] for p in per_seed]
    best = max(by_modality, key=by_modality.get)
    gains = [p["auroc_fitted"] - p["auroc_by_modality"][best] for p in per_seed]
    out["best_modality"] = best
    out["gain_over_best_modality"], out["gain_over_best_modality_std"] = _mean_std(gains)
    out["gain_over_equal_weights"], _ = _mean_std([p["auroc_fitted"] - p["auroc_equal_weights"] for p in per_seed])
    out["test_samples"] = per_seed[0]["test_samples"] if per_seed else 0
    return out


def run_eval_scorefusion(settings: TrainScoreFusionSettings, output: str, seeds: list[int]) -> dict:
    """Train (or resume) every seed's run, score the test split, and return the summary."""
    per_seed = []
    for seed in seeds:
        run = settings.model_copy(update={"seed": seed, "output": storage.join(output, f"seed_{seed}")})
        record = run_train_scorefusion(run)
        table = score_test_split(run, storage.join(run.output, "scorefusion.pt"))
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        storage.write_bytes(storage.join(run.output, "test_scores.parquet"), buf.getvalue())
        figures = seed_figures(run, record, table) | {"seed": seed}
        print(f"[eval scorefusion] seed {seed}: fitted {figures['auroc_fitted']:.4f}, equal "
              f"{figures['auroc_equal_weights']:.4f}, by modality {figures['auroc_by_modality']}")  # fmt: skip
        per_seed.append(figures)
    return summarize(per_seed, settings.names, settings.fusion.threshold)
