"""Shapes, masking, the weight formula, and which parameters each loss moves."""

from __future__ import annotations

import pytest
import torch

from models.cam import block_box, crop_resize
from models.checkpoint import build_from_checkpoint, checkpoint_bytes
from models.fusion import FusionConfig, build_fusion, channel_mean_weight, fusion_config_from_dict
from models.fusion_recipe import FusionRecipe, FusionTrainConfig, fusion_losses

C, S, T, K = 32, 4, 5, 3


def small_config(**kw) -> FusionConfig:
    tiny = {"arch": "tiny", "width_mult": 0.25}
    defaults = dict(
        dim=16, heads=2, layers=1, text_hidden=16, max_objects=K, upstream=tiny | {"num_classes": 6},
        key_backbone=tiny | {"num_classes": 2}, key_encoder=tiny | {"num_classes": 1}, key_crop=16, image_size=32,
        map_side=S, dropout=0.0,
    )  # fmt: skip
    return FusionConfig(**(defaults | kw))


def make_batch(b: int = 4, n_objects=(0, 1, 2, 3), text=(True, False, True, False), pixels: bool = False) -> dict:
    g = torch.Generator().manual_seed(0)
    obj_mask = torch.tensor([[j < n for j in range(K)] for n in n_objects])
    batch = {
        "text_tokens": torch.randn(b, T, 384, generator=g),
        "text_token_mask": torch.ones(b, T, dtype=torch.bool),
        "text_sentence": torch.randn(b, 384, generator=g),
        "text_present": torch.tensor(text),
        "obj_kind": torch.tensor([[0, 1, 0]] * b),
        "obj_mask": obj_mask,
        "image": torch.randn(b, 3, 32, 32, generator=g),
        "label": torch.tensor([0, 1, 1, 0])[:b],
    }
    if pixels:
        batch |= {"style_image": torch.randn(b, 3, 32, 32, generator=g), "obj_images": torch.randn(b, K, 3, 32, 32)}
    else:
        batch |= {"style_map": torch.randn(b, C, S, S, generator=g), "obj_maps": torch.randn(b, K, C, S, S)}
    return batch


def upstream_channels(model) -> int:
    return model.upstream.num_features


def test_shapes_and_masks_with_zero_to_n_objects_and_no_text():
    model = build_fusion(small_config()).eval()
    assert upstream_channels(model) == C
    out = model(make_batch())
    m = 3 + K  # text, style, key, then K object slots
    assert out["logits"].shape == (4, 2)
    assert out["weights"].shape == out["mask"].shape == out["kinds"].shape == (4, m)
    assert out["mask"].tolist() == [
        [True, True, True, False, False, False],
        [False, True, True, True, False, False],
        [True, True, True, True, True, False],
        [False, True, True, True, True, True],
    ]
    assert ((out["weights"] > 0) & (out["weights"] < 1)).all()
    assert out["kinds"][0].tolist() == [0, 1, 2, 3, 4, 3]  # text, style, key, face, body, face
    assert out["key_box"].shape == (4, 4) and out["attention"].shape[0] == 4
    assert torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("overrides", [{"weight_formula": "cam"}, {"fuse": "none"}, {"key_select": "threshold"}])
def test_variants_give_weights_in_range_and_train(overrides):
    model = build_fusion(small_config(**overrides))
    batch = make_batch()
    stats = FusionRecipe(model, FusionTrainConfig()).train_step(batch)
    assert torch.isfinite(stats["loss"])
    out = model.eval()(batch)
    assert out["weights"].shape == (4, 3 + K) and ((out["weights"] > 0) & (out["weights"] < 1)).all()


def test_absent_objects_do_not_change_the_output():
    model = build_fusion(small_config()).eval()
    batch = make_batch()
    first = model(batch)["logits"]
    batch["obj_maps"][0] = 100.0  # row 0 has no objects: their slots are masked
    batch["text_tokens"][1] = -100.0  # row 1 has no text
    second = model(batch)["logits"]
    assert torch.allclose(first[:2], second[:2], atol=1e-5)


def test_a_row_without_any_present_modality_still_gives_finite_logits():
    model = build_fusion(small_config(modalities=("text",))).eval()
    out = model(make_batch())
    assert torch.isfinite(out["logits"]).all()
    assert out["mask"].tolist() == [[True], [False], [True], [False]]


def test_channel_mean_weight_on_a_hand_made_map():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 3.0], [0.0, 0.0]])  # channel mean 1
    x[0, 1] = torch.tensor([[2.0, 2.0], [2.0, -2.0]])  # channel mean 1
    # w = (1, 1); weighted map = x; mean over 8 values = (4 + 4) / 8 = 1 = mean(w^2)
    assert channel_mean_weight(x).item() == pytest.approx(1.0)
    x[0, 1] *= 3  # w = (1, 3): mean(w^2) = (1 + 9) / 2
    assert channel_mean_weight(x).item() == pytest.approx(5.0)


def test_text_weight_is_the_mean_of_the_mapped_text_feature():
    model = build_fusion(small_config(modalities=("text",))).eval()
    batch = make_batch()
    t = model.text(batch["text_tokens"], batch["text_token_mask"], batch["text_sentence"])
    expected = torch.sigmoid(model.weight_scale[0] * t.mean(dim=1) + model.weight_bias[0])
    assert torch.allclose(model(batch)["weights"][:, 0], expected, atol=1e-6)


def _grads(model, loss) -> dict[str, bool]:
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}


def test_each_loss_moves_the_right_parameters_and_frozen_upstream_gets_none():
    model = build_fusion(small_config()).train()
    batch = make_batch(pixels=True)
    out = model(batch)
    losses = fusion_losses(out, batch["label"], FusionTrainConfig())
    l1, l2, l3 = (_grads(model, losses[k]) for k in ("l1", "l2", "l3"))
    for grads in (l1, l2, l3):
        assert not any(v for n, v in grads.items() if n.startswith("upstream."))
    assert all(p.grad is None for p in model.upstream.parameters())
    # L3 trains only the key module's global CNN and its auxiliary head
    assert any(v for n, v in l3.items() if n.startswith("key.backbone.fc"))
    assert not any(v for n, v in l3.items() if not n.startswith("key.backbone."))
    # L1 trains the modality mappings and weight scales, never the decoder head or the Transformer
    assert l1["weight_scale"] and any(v for n, v in l1.items() if n.startswith("style."))
    assert not any(v for n, v in l1.items() if n.startswith(("head.", "fusion.", "key.backbone.")))
    # L2 trains the decoder, the Transformer and the key crop encoder (not the auxiliary head)
    assert any(v for n, v in l2.items() if n.startswith("head."))
    assert any(v for n, v in l2.items() if n.startswith("fusion."))
    assert any(v for n, v in l2.items() if n.startswith("key.encoder."))
    assert not l2["key.backbone.fc.weight"]


def test_unfrozen_upstream_trains_jointly_from_pixels():
    model = build_fusion(small_config(freeze_upstream=False)).train()
    batch = make_batch(pixels=True)
    losses = fusion_losses(model(batch), batch["label"], FusionTrainConfig())
    grads = _grads(model, losses["loss"])
    assert any(v for n, v in grads.items() if n.startswith("upstream."))


def test_no_weights_ablation_ignores_the_weights():
    model = build_fusion(small_config(use_weights=False)).eval()
    batch = make_batch()
    first = model(batch)["logits"]
    with torch.no_grad():
        model.weight_bias += 5.0
    assert torch.allclose(first, model(batch)["logits"])


def test_training_steps_fit_a_small_batch():
    torch.manual_seed(0)
    model = build_fusion(small_config())
    recipe = FusionRecipe(model, FusionTrainConfig(lr=5e-3, warmup_steps=1))
    batch = make_batch()
    first = recipe.train_step(batch)["loss"].item()
    for _ in range(40):
        last = recipe.train_step(batch)
    assert last["loss"].item() < 0.5 * first
    assert last["acc"].item() == 1.0


def test_checkpoint_round_trip():
    cfg = small_config()
    model = build_fusion(cfg).eval()
    blob = checkpoint_bytes(model, "fusion", cfg, step=3, epoch=2, metrics={"val_auroc": 0.9}, data={})
    again, ckpt = build_from_checkpoint(blob)
    batch = make_batch()
    assert torch.allclose(model(batch)["logits"], again(batch)["logits"])
    assert fusion_config_from_dict(ckpt["config"]) == cfg


def test_config_rejects_unknown_keys_and_modalities():
    with pytest.raises(ValueError, match="unknown fusion model keys"):
        fusion_config_from_dict({"modalites": ["text"]})
    with pytest.raises(ValueError, match="modalities"):
        FusionConfig(modalities=("audio",))


def test_block_box_picks_the_block_with_the_highest_mean_and_maps_it_back():
    attention = torch.zeros(2, 6, 6)
    attention[0, 4:6, 0:2] = 1.0  # bottom-left block of a 3x3 grid
    attention[1, 0:2, 2:6] = 1.0  # two top blocks
    boxes = block_box(attention, grid=3)
    assert boxes[0].tolist() == pytest.approx([0.0, 2 / 3, 1 / 3, 1.0])
    wide = block_box(attention, grid=3, select="threshold", threshold=0.9)
    assert wide[1].tolist() == pytest.approx([1 / 3, 0.0, 1.0, 1 / 3])
    grown = block_box(attention, grid=3, margin=0.5)
    assert grown[0].tolist() == pytest.approx([0.0, 0.5, 0.5, 1.0])


def test_crop_resize_takes_the_box():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 4:, :4] = 1.0  # bottom-left quarter
    crop = crop_resize(image, torch.tensor([[0.0, 0.5, 0.5, 1.0]]), 4)
    assert torch.allclose(crop, torch.ones(1, 1, 4, 4))


def test_weight_labels_of_the_general_case_mark_only_the_cause_modality():
    from models.fusion_recipe import weight_targets

    out = {"mask": torch.ones(3, 5, dtype=torch.bool), "kinds": torch.tensor([[0, 1, 2, 3, 4]] * 3)}
    label = torch.tensor([1, 1, 0])
    simple = weight_targets(out, label, 1, None)
    assert simple.tolist() == [[1.0] * 5, [1.0] * 5, [0.0] * 5]
    general = weight_targets(out, label, 1, torch.tensor([3, -1, 0]))  # object cause; unknown cause; negative
    assert general.tolist() == [[0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]
    cfg = FusionTrainConfig(weight_labels="modality")
    model = build_fusion(small_config()).eval()
    batch = make_batch()
    losses = fusion_losses(model(batch), batch["label"], cfg, weight_group=torch.tensor([-1, 0, 1, -1]))
    assert torch.isfinite(losses["l1"])
