"""CAM ablation: plain CAM vs one and two suppress-fuse-select blocks, same data, budget and seeds.

Trains each variant with the project's training recipe on the sample corpus (generated here, in a local folder)
and evaluates MaxBoxAcc on the test split's photos, as ``mediascore eval cam`` does. The patent's table (VGG16 on
its data) for comparison: plain 61.11 / 12.06, +1 block 62.2 / 12.39, +2 blocks 64.62 / 19.24 at IoU 0.5 / 0.7.
The last line is one JSON object: ``{"plain": {...}, "block1": {...}, "block2": {...}, "seeds": [...]}``.

    python bench/cam_ablation.py [--scale 5] [--epochs 12] [--seeds 0,1,2]
    python bench/cam_ablation.py --arch efficientnet_lite0     # the ImageNet Lite0, fine-tuned (its own defaults)

With ``--arch efficientnet_lite0`` the defaults become the CPU recipe of ``configs/train_cam_lite0.yaml``
(224 px, 6 epochs, SGD at 0.05, batch 32, crops of at least 0.85 of the side) on the scale-3 corpus, the test
and validation splits of every image type as the localization test set (270 images; 45 test photos are 2.2
points each), blocks after ``stage6`` and ``head`` initialized as a pass-through, and a reference row
``head_only``: the ImageNet network with only its classifier trained (no block, no fine-tuning of the backbone),
so the gain of fine-tuning shows.

Diagnosis options: ``--block-act relu`` (a ReLU after each block), ``--no-detach-max`` (gradient through the
channel maxima that place the thresholds), ``--cr``/``--t`` (threshold placement), ``--block1``/``--block2``
(where the blocks go), ``--variants`` (which of plain, block1, block2 to run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from jobs.media.images import load_resized, to_tensor_batch
from jobs.train.cam import load_eval_set
from jobs.train.data.cam import labelled_images, read_manifest
from models.cam_net import CamNetConfig, build_cam_net
from models.cam_recipe import CamRecipe, CamTrainConfig, evaluate_localization
from models.sfs import SFSConfig

KEYS = ("top1", "maxboxacc_50", "maxboxacc_70", "maxboxacc_v2", "pxap")


LITE0 = {"scale": 3.0, "epochs": 6, "size": 224, "lr": 0.05, "batch": 32, "crop_scale_min": 0.85,
         "block1": "head", "block2": "stage6,head", "variants": "head_only,plain,block1,block2",
         "test_splits": "test,val", "test_types": "photo,sketch,cartoon", "init": "passthrough"}  # fmt: skip


def train_one(images: np.ndarray, labels: np.ndarray, insert_after, seed: int, cfg: CamTrainConfig, net: dict):
    """Train one variant in this process (the same recipe the Ray Train job runs)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_cam_net(CamNetConfig(num_classes=int(labels.max()) + 1, insert_after=insert_after, **net))
    steps = int(np.ceil(len(images) / cfg.batch_size))
    recipe = CamRecipe(model, cfg, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.epochs):
        order = rng.permutation(len(images))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            x = recipe.augment(to_tensor_batch(images[idx]), generator=gen)
            recipe.train_step(x, torch.from_numpy(labels[idx]).long())
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["tiny", "efficientnet_lite0"], default="tiny")
    parser.add_argument("--scale", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=CamTrainConfig.batch_size)
    parser.add_argument("--crop-scale-min", type=float, default=CamTrainConfig.crop_scale_min)
    parser.add_argument("--test-splits", default="test")
    parser.add_argument("--test-types", default="photo", help="image types of the localization test set")
    parser.add_argument("--init", choices=["default", "passthrough"], default="default", help="of the blocks")
    parser.add_argument("--cr", type=float, default=0.8)
    parser.add_argument("--t", type=float, default=0.4)
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=CamTrainConfig.lr)
    parser.add_argument("--block-act", choices=["none", "relu"], default="none")
    parser.add_argument("--no-detach-max", action="store_true")
    parser.add_argument("--block1", default="conv3_2", help="conv layers of the one-block variant, comma-separated")
    parser.add_argument("--block2", default="conv3_2,conv4_2", help="conv layers of the two-block variant")
    parser.add_argument("--variants", default="plain,block1,block2", help="of plain, block1, block2, head_only")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--corpus", help="local folder of a corpus to reuse (written there if missing)")
    argv = parser.parse_args()
    if argv.arch == "efficientnet_lite0":  # its own defaults, unless given on the command line
        parser.set_defaults(**LITE0)
    args = parser.parse_args()
    all_variants = {"plain": (), "block1": tuple(args.block1.split(",")), "block2": tuple(args.block2.split(",")),
                    "head_only": ()}  # fmt: skip
    variants = {k: all_variants[k] for k in args.variants.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()

    from jobs.corpus import make_corpus

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.corpus or scratch
        if not Path(folder, "manifest.parquet").exists():
            make_corpus(folder, seed=0, scale=args.scale)
        manifest = read_manifest(f"{folder}/manifest.parquet")
        classes = sorted(manifest.label.dropna().unique().tolist())
        train = labelled_images(manifest, ["train"], ["photo", "sketch", "cartoon"])
        images = np.stack([load_resized(u, args.size) for u in train.uri])
        labels = np.array([classes.index(label) for label in train.label])
        test = labelled_images(manifest, args.test_splits.split(","), args.test_types.split(","))
        evaluation = load_eval_set(test, classes, args.size)
    print(f"[ablation] {len(train)} training images, {len(test)} test images, seeds {seeds}")
    cfg = CamTrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch, crop_scale_min=args.crop_scale_min)
    sfs = SFSConfig(cr=args.cr, t=args.t, detach_max=not args.no_detach_max, init=args.init)
    net = {"arch": args.arch, "width_mult": args.width_mult, "sfs": sfs, "block_act": args.block_act}
    results: dict = {}
    for name, insert_after in variants.items():
        runs = []
        for seed in seeds:
            started = time.monotonic()
            variant_cfg = dataclasses.replace(cfg, freeze=("features",)) if name == "head_only" else cfg
            model = train_one(images, labels, insert_after, seed, variant_cfg, net)
            scores = evaluate_localization(model, *evaluation)
            runs.append(scores)
            print(f"[ablation] {name} seed {seed}: " + ", ".join(f"{k}={scores[k]:.2f}" for k in KEYS)
                  + f" ({time.monotonic() - started:.0f} s)")  # fmt: skip
        results[name] = {k: round(float(np.mean([r[k] for r in runs])), 2) for k in KEYS}
        for key in ("maxboxacc_50", "maxboxacc_70", "top1"):
            results[name][f"{key}_std"] = round(float(np.std([r[key] for r in runs])), 2)
    print(f"{'variant':<8} {'IoU 0.5':>8} {'IoU 0.7':>8} {'V2':>6} {'PxAP':>6} {'top1':>6}")
    for name, r in results.items():
        print(f"{name:<8} {r['maxboxacc_50']:>8.2f} {r['maxboxacc_70']:>8.2f} {r['maxboxacc_v2']:>6.2f} "
              f"{r['pxap']:>6.2f} {r['top1']:>6.2f}")  # fmt: skip
    results["seeds"] = seeds
    results["settings"] = {
        "scale": args.scale, "epochs": args.epochs, "size": args.size, "cr": args.cr, "t": args.t, "lr": args.lr,
        "arch": args.arch, "width_mult": args.width_mult, "train_images": len(train), "test_images": len(test),
        "test_splits": args.test_splits, "test_types": args.test_types, "batch": args.batch, "init": args.init,
        "block_act": args.block_act, "detach_max": not args.no_detach_max, "seconds": round(time.monotonic() - t0),
        "insert_after": {k: list(v) for k, v in variants.items()},
    }  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
