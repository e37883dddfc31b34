"""A tiny CAM network with one suppress-fuse-select block learns to classify and to localize synthetic shapes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.cam import box_iou, cam_to_boxes, normalize_cam, upsample_cam
from models.cam_net import CamNetConfig, build_cam_net

SIZE = 64


def make_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int, int]]]:
    """Noise images with one bright square (class 0) or disc (class 1) at a random place, and its box."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.25, (n, 3, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    boxes = []
    for i in range(n):
        side = int(rng.integers(18, 27))
        x0, y0 = (int(v) for v in rng.integers(0, SIZE - side + 1, 2))
        if labels[i] == 0:
            shape = (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < y0 + side)
        else:
            c, r = side / 2 - 0.5, side / 2
            shape = (xx - x0 - c) ** 2 + (yy - y0 - c) ** 2 <= r**2
        images[i][:, shape] += 1.0
        ys, xs = np.nonzero(shape)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return torch.from_numpy(images), torch.from_numpy(labels), boxes


def test_tiny_net_with_block_learns_to_classify_and_localize():
    torch.manual_seed(0)
    images, labels, boxes = make_shapes(256, seed=0)
    net = build_cam_net(CamNetConfig(arch="tiny", num_classes=2, insert_after=("conv3_2",), width_mult=0.5))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(60):
        idx = torch.randint(0, len(images), (32,), generator=gen)
        loss = F.cross_entropy(net(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    net.eval()
    with torch.no_grad():
        logits, cams = net.cam(images, labels)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    cams01 = upsample_cam(normalize_cam(cams), (SIZE, SIZE)).numpy()
    ious = []
    for cam, box in zip(cams01, boxes, strict=True):
        pred = cam_to_boxes(cam, 0.5)
        ious.append(box_iou(pred[0], box) if pred else 0.0)
    print(f"acc={accuracy:.3f} iou>0.3={np.mean(np.array(ious) > 0.3):.3f} mean_iou={np.mean(ious):.3f}")
    assert accuracy > 0.9
    assert np.mean(np.array(ious) > 0.3) > 0.6
