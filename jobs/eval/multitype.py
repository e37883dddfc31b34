"""``mediascore eval multitype``: seed 002's recipe against plain training, per image type, over seeds.

Four variants trained with the same budget from one base config (``configs/eval_multitype.yaml``), at the patent's
mix of about 5 photos : 1 sketch : 1 cartoon (``--type-ratio``):

- ``photo_only``: photos only;
- ``mixed``: every type at the mix, plain shuffled batches;
- ``stratified``: the same with type-stratified batches (every batch holds every type);
- ``adversarial``: stratified batches and the adversarial image-type head.

Each trained checkpoint is scored on the test split of every type (top-1, percent; ``worst_type`` is the lowest),
on how well a linear probe reads the image type from F's pooled features (trained on the training split, all types
at full count, so chance is ``100 / n_types``), on the mean cosine distance of F's features between renders of
the same scene across types and between different scenes (the patent's stated aim: the first falls), and on the
corpus videos: per-frame accuracy, and accuracy and share of the frames agreed over N = 5 and 10 consecutive
frames (``jobs/score/temporal.py``). Figures are means over seeds; ``worst_type_std`` is the spread of
``worst_type`` across them. The last line is one JSON object keyed by variant.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd

from jobs.common import storage
from jobs.common.config import VideoSampling
from jobs.media.images import load_resized, square, to_tensor_batch
from jobs.score.temporal import runs_of
from jobs.train.cam import TrainCamSettings, load_train_settings, run_train_cam
from jobs.train.data.cam import labelled_images, read_manifest

VARIANTS = ("photo_only", "mixed", "stratified", "adversarial")
TYPES = ("photo", "sketch", "cartoon")


def variant_settings(base: TrainCamSettings, variant: str, seed: int, root: str, ratio: dict) -> TrainCamSettings:
    """The base config turned into one variant at one seed, written under ``root/variant/seed<k>``."""
    data = base.data.model_dump() | {"image_types": list(TYPES), "type_ratio": ratio}
    stratified = dataclasses.asdict(base.train.batches) | {"stratify_by": "image_type"}
    adversarial = dataclasses.asdict(base.train.adversarial_type) | {"enabled": True, "image_types": list(TYPES)}
    train = dataclasses.asdict(base.train) | {"batches": {"stratify_by": None}, "adversarial_type": {"enabled": False}}
    if variant == "photo_only":
        data |= {"image_types": ["photo"], "type_ratio": None}
    elif variant == "stratified":
        train["batches"] = stratified
    elif variant == "adversarial":
        train |= {"batches": stratified, "adversarial_type": adversarial}
    elif variant != "mixed":
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    fields = base.model_dump(mode="json") | {"data": data, "seed": seed, "resume": True}
    fields |= {"train": train, "output": storage.join(root, variant, f"seed{seed}")}
    return TrainCamSettings.model_validate(fields)


def _features(model, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Class predictions and F's pooled features of uint8 ``(N, S, S, 3)`` images."""
    import torch

    model.eval()
    preds, feats = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits, f = model(to_tensor_batch(images[i : i + batch]), with_features=True)
            preds.append(logits.argmax(1).numpy())
            feats.append(f.numpy())
    k = getattr(model, "num_features", 0)
    return (np.concatenate(preds) if preds else np.zeros(0, int)), (
        np.concatenate(feats) if feats else np.zeros((0, k))
    )


def type_probe(train_x: np.ndarray, train_t: np.ndarray, test_x: np.ndarray, test_t: np.ndarray) -> float:
    """Accuracy (percent) of a logistic-regression probe of image type on standardized features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_t)
    return float((probe.predict(test_x) == test_t).mean() * 100)


def cosine_distances(feats: np.ndarray, scenes: np.ndarray, types: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean cosine distance between renders of one scene in different types, and between different scenes."""
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    dist = 1 - unit @ unit.T
    same_scene = scenes[:, None] == scenes[None, :]
    across = same_scene & (types[:, None] != types[None, :])
    rng = np.random.default_rng(seed)
    others = np.argwhere(~same_scene)
    others = others[rng.choice(len(others), size=min(len(others), 20_000), replace=False)] if len(others) else others
    return {
        "cosine_same_scene": float(dist[across].mean()) if across.any() else float("nan"),
        "cosine_diff_scene": float(dist[others[:, 0], others[:, 1]].mean()) if len(others) else float("nan"),
    }


def video_frames(manifest: pd.DataFrame, size: int, fps: float) -> list[tuple[str, np.ndarray]]:
    """``(label, frames (F, S, S, 3))`` of every readable, labelled corpus video, sampled at ``fps``."""
    from jobs.media.decode import DecodeError, VideoFrame, sample_video

    videos = manifest[(manifest.media_type == "video") & manifest.label.notna() & manifest.broken.isna()]
    sampling = VideoSampling(policy="fps", fps=fps, max_frames=400)
    out = []
    for row in videos.itertuples():
        try:
            source = io.BytesIO(storage.read_bytes(row.uri))
            frames = [square(f.pixels, size) for f in sample_video(source, sampling) if isinstance(f, VideoFrame)]
        except DecodeError:
            continue
        if frames:
            out.append((row.label, np.stack(frames)))
    return out


def video_scores(model, videos: list[tuple[str, np.ndarray]], classes: list[str]) -> dict[str, float]:
    """Per-frame accuracy, and for N = 5 and 10 the accuracy of the agreed frames and their share (percent)."""
    correct, agreed = [], {5: [], 10: []}
    for label, frames in videos:
        preds, _ = _features(model, frames)
        hit = preds == classes.index(label)
        correct.append(hit)
        for n in agreed:
            _, ok = runs_of([int(p) for p in preds], n)
            agreed[n].append((hit, np.asarray(ok)))
    if not correct:
        return {}
    out = {"frame_accuracy": float(np.concatenate(correct).mean() * 100)}
    for n, pairs in agreed.items():
        hits = np.concatenate([h[ok] for h, ok in pairs])
        share = np.concatenate([ok for _, ok in pairs]).mean() * 100
        out[f"agreed_accuracy_{n}"] = float(hits.mean() * 100) if len(hits) else float("nan")
        out[f"agreed_share_{n}"] = float(share)
    return out


def score_checkpoint(checkpoint: str, manifest: pd.DataFrame, videos) -> dict:
    """Every figure of one trained variant (see the module docstring)."""
    from jobs.media.checkpoints import load_model

    model, meta, _ = load_model(checkpoint, "cpu")
    classes, size = meta["data"]["classes"], meta["data"]["image_size"]

    def encode(split: str):
        rows = labelled_images(manifest, [split], list(TYPES))
        images = np.stack([load_resized(u, size) for u in rows.uri])
        preds, feats = _features(model, images)
        return rows, preds, feats

    test, test_pred, test_feats = encode("test")
    train, _, train_feats = encode("train")
    hit = test_pred == np.array([classes.index(label) for label in test.label])
    by_type = {t: float(hit[(test.image_type == t).to_numpy()].mean() * 100) for t in TYPES}
    result = {"by_type": by_type, "worst_type": min(by_type.values())}
    result["type_probe"] = type_probe(train_feats, train.image_type.to_numpy(), test_feats, test.image_type.to_numpy())
    result |= cosine_distances(test_feats, test.scene_id.to_numpy(), test.image_type.to_numpy())
    result["video"] = video_scores(model, videos, classes)
    return result


def _mean(runs: list[dict]) -> dict:
    """Means over seeds of every number (nested dicts too)."""
    out: dict = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = _mean([r[key] for r in runs])
        else:
            out[key] = round(float(np.nanmean([r[key] for r in runs])), 2)
    return out


def run_eval_multitype(
    config: str, seeds: list[int], root: str, variants: tuple[str, ...] = VARIANTS, ratio: dict | None = None,
    manifest_uri: str | None = None, video_fps: float = 5.0, echo=print,
) -> dict:  # fmt: skip
    """Train every variant at every seed (resuming finished runs), score them, and average over seeds."""
    base = load_train_settings(config, {"data": {"manifest": manifest_uri}} if manifest_uri else None)
    ratio = ratio or {"photo": 5, "sketch": 1, "cartoon": 1}
    manifest = read_manifest(base.data.manifest)
    videos = video_frames(manifest, base.data.image_size, video_fps)
    per_variant: dict[str, list[dict]] = {}
    for variant in variants:
        for seed in seeds:
            settings = variant_settings(base, variant, seed, root, ratio)
            run_train_cam(settings)
            latest = storage.read_json(storage.join(settings.output, "latest.json"))
            scores = score_checkpoint(latest["checkpoint"], manifest, videos)
            by_type = {k: round(v, 1) for k, v in scores["by_type"].items()}
            echo(f"[multitype] {variant} seed {seed}: by type {by_type}, probe {scores['type_probe']:.1f}")
            per_variant.setdefault(variant, []).append(scores)
    result: dict = {}
    for variant, runs in per_variant.items():
        result[variant] = _mean(runs) | {"worst_type_std": round(float(np.std([r["worst_type"] for r in runs])), 2)}
    result["seeds"] = seeds
    result["type_ratio"] = ratio
    result["type_probe_chance"] = round(100 / len(TYPES), 2)
    result["videos"] = len(videos)
    return result | {"goals": goals(result)}


def goals(result: dict) -> dict:
    """The issue's three goals, each with the numbers it compares (absent variants leave theirs out)."""
    out: dict = {}
    if {"adversarial", "mixed"} <= set(result):
        adv, mixed = result["adversarial"], result["mixed"]
        gain = adv["worst_type"] - mixed["worst_type"]
        out["worst_type_gain"] = round(gain, 2)
        out["worst_type_gain_met"] = bool(gain >= 3 and gain > max(adv["worst_type_std"], mixed["worst_type_std"]))
    if "adversarial" in result:
        adv = result["adversarial"]
        out["type_probe_over_chance"] = round(adv["type_probe"] - result["type_probe_chance"], 2)
        out["type_probe_met"] = bool(abs(out["type_probe_over_chance"]) <= 10)
        video = adv.get("video", {})
        if video:
            out["agreed_gain_5"] = round(video["agreed_accuracy_5"] - video["frame_accuracy"], 2)
            out["agreed_gain_5_met"] = bool(out["agreed_gain_5"] >= 5)
    return out
