"""A tiny CAM network with one suppress-fuse-select block learns to classify and to localize synthetic shapes.

The square is bright in the red channel and the disc in the blue one. With two classes that differ only in shape
(both bright in every channel) the softmax head keeps ``W_fc[disc] ~ -W_fc[square]``, the disc is recognised by
the absence of corners, and its CAM often does not land on it (on some seeds it peaked outside the disc on most
images). Colour gives each class evidence of its own, which is what a CAM can localize.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.cam import box_iou, normalize_cam, upsample_cam
from models.cam_net import CamNetConfig, build_cam_net
from models.wsol_metrics import max_box_acc

SIZE = 64


def make_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int, int]]]:
    """Noise images ``(n, 3, 64, 64)`` with one red square (class 0) or blue disc (class 1), labels and boxes."""
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
        images[i, 0 if labels[i] == 0 else 2][shape] += 1.0
        ys, xs = np.nonzero(shape)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return torch.from_numpy(images), torch.from_numpy(labels), boxes


def centered_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A box of the same size in the middle of the image: the chance baseline."""
    w, h = box[2] - box[0], box[3] - box[1]
    return ((SIZE - w) // 2, (SIZE - h) // 2, (SIZE - w) // 2 + w, (SIZE - h) // 2 + h)


@pytest.fixture
def one_thread():
    """One intra-op thread: small convolutions gain little from two, and spin badly when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_net_with_block_learns_to_classify_and_localize(one_thread):
    torch.manual_seed(0)
    images, labels, boxes = make_shapes(256, seed=0)
    net = build_cam_net(CamNetConfig(arch="tiny", num_classes=2, insert_after=("conv3_2",), width_mult=0.5))
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
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
        logits, cams = net.cam(images, labels)  # the CAM of the right class
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    cams01 = list(upsample_cam(normalize_cam(cams), (SIZE, SIZE)).numpy())
    located, tau = max_box_acc(cams01, [[b] for b in boxes], iou_thresholds=(0.3,), tau_step=0.01)[0.3]
    chance = 100 * np.mean([box_iou(centered_box(b), b) > 0.3 for b in boxes])
    print(f"train accuracy {accuracy:.3f}, IoU > 0.3 on {located:.0f}% at tau {tau:.2f}, centered box {chance:.0f}%")
    assert accuracy > 0.9
    assert located > 70
    assert located > 2 * chance
