"""The CAM recipe's fine-tuning controls: frozen layers do not move (weights or BatchNorm statistics), the rest
do, and the pretrained backbone gets its own learning rate."""

from __future__ import annotations

import torch

from models.cam_net import CamNetConfig, build_cam_net
from models.cam_recipe import CamRecipe, CamTrainConfig


def _step(net, cfg: CamTrainConfig) -> CamRecipe:
    recipe = CamRecipe(net, cfg, steps_per_epoch=1)
    torch.manual_seed(0)
    recipe.train_step(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]))
    return recipe


def test_frozen_layers_keep_their_weights_and_statistics_and_the_rest_learn():
    net = build_cam_net(CamNetConfig(arch="efficientnet_lite0", num_classes=4, insert_after=("head",)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _step(net, CamTrainConfig(freeze=("stem", "stage1", "stage2"), lr=0.1, warmup_epochs=0))
    after = net.state_dict()
    for key in before:
        moved = not torch.equal(before[key], after[key])
        layer = key.split(".")[1] if key.startswith("features.") else "fc"
        frozen = layer == "stem" or layer.startswith(("stage1_", "stage2_"))
        if frozen or key.endswith("num_batches_tracked"):
            assert not moved or (key.endswith("num_batches_tracked") and not frozen), key
        elif key.endswith(("weight", "running_mean")) and "sfs_" not in key:
            assert moved, key


def test_the_backbone_has_its_own_learning_rate_and_features_freezes_everything_but_the_head():
    net = build_cam_net(CamNetConfig(arch="tiny", num_classes=3, width_mult=0.25, insert_after=("conv4_2",)))
    recipe = CamRecipe(net, CamTrainConfig(lr=0.1, backbone_lr_mult=0.1), steps_per_epoch=10)
    assert sorted({g["initial_lr"] for g in recipe.optimizer.param_groups}) == [0.1 * 0.1, 0.1]
    fc_and_block = {id(p) for n, p in net.named_parameters() if n.startswith("fc.") or "sfs_" in n}
    for group in recipe.optimizer.param_groups:
        assert all((id(p) in fc_and_block) == (group["initial_lr"] == 0.1) for p in group["params"])
    head_only = CamRecipe(build_cam_net(CamNetConfig(arch="tiny", num_classes=3, width_mult=0.25)),
                          CamTrainConfig(freeze=("features",)), steps_per_epoch=1)  # fmt: skip
    trained = [p for g in head_only.optimizer.param_groups for p in g["params"]]
    assert len(trained) == 2  # the classifier's weight and bias
