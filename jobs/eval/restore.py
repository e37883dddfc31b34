"""``mediascore eval restore``: the restoration generators against the degraded input and classical baselines.

Every held-out photo is degraded ``copies`` times with fixed seeds (the training degradations unless the config
says otherwise); each degraded image is restored whole (tiled) by every configured generator and by the classical
baselines of :mod:`jobs.media.classical`, whose best candidate per image is chosen by PSNR against the clean photo (an
oracle choice, generous to the baselines). ``ssim_classical`` is the SSIM of that same PSNR-chosen image.
``psnr_classical_fixed`` is the fairer, non-oracle figure: the one classical pipeline (``classical_fixed``) with the
best mean PSNR over all images, applied to every image.

A generator whose training output holds no ``generator.pt`` yet is trained first with its own config. The held-out
photos must not be among a generator's training photos (checked). Besides the JSON line, the output gets
``cases.json`` (every image's numbers and degradation steps) and ``crops.png``: one row per case, columns clean,
degraded, best classical and each generator, on the crop with the most detail.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from jobs.common import storage
from jobs.common.config import StrictModel, load_yaml
from jobs.media.degrade import DegradeConfig, degrade, downsample_scale
from jobs.media.images import encode_image
from jobs.train.data.restore import HELD_OUT, load_photo


class EvalRestoreSettings(StrictModel):
    """``mediascore eval restore`` config. ``models`` maps a name to its ``train restore`` config; the names
    ``l1`` and ``gan`` give the ``psnr_l1`` / ``psnr_gan`` keys, any other name ``psnr_<name>``."""

    output: str
    photos: list[str] = list(HELD_OUT)
    copies: int = Field(3, ge=1, description="degraded copies of each photo, each with its own fixed seed")
    seed: int = 2024
    degrade: DegradeConfig = DegradeConfig()
    models: dict[str, str] = {}
    tile: int = Field(256, ge=0)
    overlap: int = Field(32, ge=0)
    crop: int = Field(128, ge=32, description="side of the crops in crops.png")
    grid_rows: int = Field(8, ge=1)


def load_eval_restore_settings(path: str | Path) -> EvalRestoreSettings:
    return load_yaml(EvalRestoreSettings, path)


def _restorers(settings: EvalRestoreSettings) -> dict:
    from jobs.media.restorer import Restorer
    from jobs.train.restore import load_restore_settings, paths, run_train_restore

    out = {}
    for name, config in settings.models.items():
        train = load_restore_settings(config)
        leak = sorted(set(settings.photos) & set(train.sources.photos))
        if leak:
            raise ValueError(f"model {name} ({config}) trains on evaluation photos {leak}")
        uri = paths(train.output)["generator"]
        if not storage.exists(uri):
            print(f"[eval restore] training {name}: mediascore train restore --config {config}", flush=True)
            run_train_restore(train)
        out[name] = Restorer(uri, tile=settings.tile, overlap=settings.overlap)
    return out


def cases(settings: EvalRestoreSettings):
    """(photo, copy, clean, degraded, steps) for every evaluation image, the same for the same config."""
    for p, name in enumerate(settings.photos):
        clean = load_photo(name)
        for k in range(settings.copies):
            degraded, steps = degrade(clean, settings.degrade, [settings.seed, p, k])
            yield name, k, clean, degraded, steps


def detail_crop(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` crop (on a half-crop grid) with the highest grey-level variance."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = grey.shape
    best, corner = -1.0, (0, 0)
    for y in range(0, max(1, h - size + 1), size // 2):
        for x in range(0, max(1, w - size + 1), size // 2):
            v = float(grey[y : y + size, x : x + size].var())
            if v > best:
                best, corner = v, (y, x)
    return corner


def _labelled(images: list[np.ndarray], labels: list[str]) -> np.ndarray:
    tiles = []
    for image, label in zip(images, labels, strict=True):
        tile = np.pad(image, ((18, 2), (2, 2), (0, 0)), constant_values=255)
        cv2.putText(tile, label[:18], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def _summary(records: list[dict], names: list[str]) -> dict:
    result: dict = {"images": len(records)}
    for metric in ("psnr", "ssim"):
        for name in ["input", "classical", *names]:
            result[f"{metric}_{name}"] = round(float(np.mean([r[metric][name] for r in records])), 4)
    for name in names:
        result[f"{name}_minus_classical_db"] = round(result[f"psnr_{name}"] - result["psnr_classical"], 4)
        result[f"{name}_minus_input_db"] = round(result[f"psnr_{name}"] - result["psnr_input"], 4)
    common = set.intersection(*(set(r["classical"]) for r in records))
    fixed = {name: float(np.mean([r["classical"][name] for r in records])) for name in common}
    best_fixed = max(fixed, key=fixed.get)
    result["psnr_classical_fixed"], result["classical_fixed"] = round(fixed[best_fixed], 4), best_fixed
    counts: dict[str, int] = {}
    for r in records:
        counts[r["classical_choice"]] = counts.get(r["classical_choice"], 0) + 1
    result["classical_choices"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return result


def run_eval_restore(settings: EvalRestoreSettings) -> dict:
    """Restore every case with every method; write ``cases.json`` and ``crops.png``; return the summary."""
    from jobs.media.classical import classical_candidates, psnr, ssim

    restorers = _restorers(settings)
    names = list(restorers)
    records, rows, started = [], [], time.monotonic()
    for photo, copy, clean, degraded, steps in cases(settings):
        candidates = classical_candidates(degraded, downsample_scale(steps))
        by_name = {name: round(psnr(image, clean), 4) for name, image in candidates.items()}
        choice = max(by_name, key=by_name.get)
        outputs = {"input": degraded, "classical": candidates[choice]} | {n: r(degraded) for n, r in restorers.items()}
        record = {"photo": photo, "copy": copy, "steps": steps, "classical_choice": choice, "classical": by_name}
        record["psnr"] = {k: round(psnr(v, clean), 4) for k, v in outputs.items()}
        record["ssim"] = {k: round(ssim(v, clean), 4) for k, v in outputs.items()}
        records.append(record)
        if len(rows) < settings.grid_rows:
            y, x = detail_crop(clean, settings.crop)
            crops = [im[y : y + settings.crop, x : x + settings.crop] for im in [clean, *outputs.values()]]
            labels = ["clean"] + [f"{k} {record['psnr'][k]:.1f}dB" for k in outputs]
            rows.append(_labelled(crops, labels))
        gains = ", ".join(f"{k} {v:.2f}" for k, v in record["psnr"].items())
        print(f"[eval restore] {photo}#{copy} ({time.monotonic() - started:.0f} s): PSNR {gains}", flush=True)
    storage.write_bytes(storage.join(settings.output, "cases.json"), json.dumps(records, indent=1).encode())
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])
    storage.write_bytes(storage.join(settings.output, "crops.png"), encode_image(sheet))
    print(f"[eval restore] crops: {storage.join(settings.output, 'crops.png')}")
    return _summary(records, names)
