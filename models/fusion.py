"""The fusion scorer: one decision per image from several modalities, each weighted by its learned contribution.

Modalities (tokens), as the method names them:

* ``text``: MiniLM word features and the sentence feature, each through FC layers, concatenated, then the text
  feature mapping (FC layers) to one token. Absent (masked) when the image has no text.
* ``style``: the whole image's feature map from the frozen upstream CNN.
* ``face`` / ``body``: one token per detected object crop through the frozen upstream CNN; up to ``max_objects``,
  masked when absent.
* ``key``: the key-information detection module: a trainable CNN gives the global feature ``G``; an auxiliary FC
  head on ``G`` (loss L3, unused at inference) supplies the class weights of a CAM; the class-weighted channels
  are fused per position (mean or max) into the attention map; the map is cut into blocks and the block with the
  highest mean (or every block above a threshold) is mapped back to the image, cropped and encoded by a second
  trainable CNN. The CAM code is :class:`models.cam_net.CamNet`'s; block selection and cropping are in
  :mod:`models.cam`.

Each image-type modality's (frozen or trainable) map goes through a trainable 1x1-conv mapping to ``X`` (``dim``
channels). Its weight follows the reconstructed formula of the method: channel means ``w_c`` as channel weights,
then the mean of the weighted map, ``s = mean_{c,i} w_c x_ic``; for text, the mean of the mapped text feature.
The method leaves the activation open and its labels are 0/1, so ``sigmoid(a * s + b)`` with a learnable scale and
offset per modality kind is the weight (without them ``s >= 0`` could never fall below 0.5). ``weight_formula:
cam`` is the learnable alternative the notes mention: a linear score of the pooled map.

Fusion: a Transformer encoder over the tokens (a learned type embedding per kind, a padding mask for missing
ones) gives ``h_m``; ``z_m = s_m * h_m``; the decoder takes the masked mean of ``z_m`` to the classes.
``fuse: none`` is the method's simpler alternative ``z_m = s_m * x_m``; ``use_weights: false`` drops ``s_m``
(the ablation). Restricting ``modalities`` gives the single-modality ablations.

The upstream CNN (the CAM localizer's backbone) is part of the model so checkpoints are self-contained, frozen
unless ``freeze_upstream`` is false; batches carry either its precomputed maps (``style_map``, ``obj_maps``: the
training cache) or pixels (``style_image``, ``obj_images``) that it encodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.cam import block_box, crop_resize, normalize_cam
from models.cam_net import CamNet, CamNetConfig, cam_net_config_from_dict
from models.layers import config_from_dict

MODALITIES: tuple[str, ...] = ("text", "style", "object", "key")
"""Modalities a model may use; ``object`` contributes one token per detected object."""
TOKEN_KINDS: tuple[str, ...] = ("text", "style", "key", "face", "body")
"""Token types (each has its own type embedding and weight scale); ``face`` and ``body`` are object kinds."""
OBJECT_KINDS: tuple[str, ...] = ("face", "body")
TOKEN_MODALITY: tuple[str, ...] = ("text", "style", "key", "object", "object")
"""The modality of each of :data:`TOKEN_KINDS`."""
WEIGHT_GROUPS: tuple[str, ...] = ("text", "style", "key", "object")
"""Modality codes of per-row weight labels (``weight_group`` in a batch: an index here, -1 for none)."""


def _tiny(num_classes: int) -> dict:
    return {"arch": "tiny", "width_mult": 0.5, "num_classes": num_classes}


@dataclass
class FusionConfig:
    """Settings of a :class:`FusionScorer`.

    Attributes:
        modalities: which of :data:`MODALITIES` to use.
        num_classes: task classes (the decoder's outputs). Class ``positive_class`` drives the key CAM.
        positive_class: the class whose CAM picks the key region (the risky class of a binary task).
        dim: token width.
        text_dim: width of the word and sentence features (MiniLM: 384).
        text_hidden: width of the word and sentence FC layers.
        text_mapping_layers: FC layers of the text feature mapping after the concatenation.
        max_objects: object token slots.
        style_size: side of the whole image fed to the upstream CNN (its training size).
        object_size: side of each object crop fed to the upstream CNN.
        image_size: side of the whole image fed to the key module.
        map_side: upstream maps are average-pooled to this side (what the training cache stores).
        upstream: ``CamNetConfig`` fields of the frozen upstream CNN (the CAM localizer's backbone).
        freeze_upstream: keep the upstream CNN frozen (claim 10); false trains it jointly (needs pixel batches).
        key_backbone: ``CamNetConfig`` fields of the key module's global CNN (its FC layer is the auxiliary head).
        key_encoder: ``CamNetConfig`` fields of the CNN over the key crop (only its conv stack is used).
        key_fusion: channel fusion of the class-weighted key map: ``mean`` or ``max``.
        key_grid: blocks per side of the attention map.
        key_select: ``max`` (the block with the highest mean) or ``threshold``.
        key_threshold: for ``threshold``: blocks whose mean is at least this share of the highest.
        key_margin: block sizes added around the chosen blocks.
        key_crop: side of the resized key crop.
        weight_formula: ``channel_mean`` (the method) or ``cam`` (a learnable linear score).
        use_weights: multiply tokens by their modality weights (false: the no-weights ablation).
        detach_weights: stop the task loss's gradient through the weights.
        fuse: ``transformer`` (``z = s * h``) or ``none`` (``z = s * x``).
        layers: Transformer encoder layers.
        heads: attention heads.
        dropout: dropout in the Transformer and the decoder.
    """

    modalities: tuple[str, ...] = MODALITIES
    num_classes: int = 2
    positive_class: int = 1
    dim: int = 64
    text_dim: int = 384
    text_hidden: int = 128
    text_mapping_layers: int = 1
    max_objects: int = 4
    style_size: int = 64
    object_size: int = 64
    image_size: int = 96
    map_side: int = 4
    upstream: dict = field(default_factory=lambda: _tiny(6))
    freeze_upstream: bool = True
    key_backbone: dict = field(default_factory=lambda: _tiny(2))
    key_encoder: dict = field(default_factory=lambda: _tiny(1))
    key_fusion: str = "mean"
    key_grid: int = 3
    key_select: str = "max"
    key_threshold: float = 0.7
    key_margin: float = 0.25
    key_crop: int = 48
    weight_formula: str = "channel_mean"
    use_weights: bool = True
    detach_weights: bool = False
    fuse: str = "transformer"
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(self.modalities)}")
        choices = {
            "key_fusion": ("mean", "max"),
            "key_select": ("max", "threshold"),
            "weight_formula": ("channel_mean", "cam"),
            "fuse": ("transformer", "none"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if not 0 <= self.positive_class < self.num_classes:
            raise ValueError(f"positive_class {self.positive_class} is not a class of {self.num_classes}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        for name in ("upstream", "key_backbone", "key_encoder"):
            setattr(self, name, asdict(cam_net_config_from_dict(getattr(self, name))))
        if min(self.style_size, self.object_size, self.image_size, self.map_side) < 1:
            raise ValueError("input sizes and map_side must be positive")
        if self.key_backbone["num_classes"] != self.num_classes:
            raise ValueError("key_backbone.num_classes must equal num_classes (its FC layer is the auxiliary head)")


def fusion_config_from_dict(d: Mapping[str, Any]) -> FusionConfig:
    """A :class:`FusionConfig` from a plain dict; unknown keys fail."""
    return config_from_dict(FusionConfig, d, "fusion model")


def channel_mean_weight(x: Tensor) -> Tensor:
    """The method's modality score of maps ``(B, C, h, w)``: ``mean_{c,i} w_c * x_ic`` with ``w_c = mean_i x_ic``."""
    w = x.mean(dim=(2, 3))  # (B, C): channel weights
    return (w[:, :, None, None] * x).mean(dim=(1, 2, 3))  # (B,)


def _mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class MapAdapter(nn.Module):
    """Trainable 1x1-conv mapping of a feature map ``(B, C, h, w)`` to ``(B, dim, h, w)``."""

    def __init__(self, in_ch: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_ch, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TextBranch(nn.Module):
    """Word features ``(B, T, Dt)`` with mask and sentence feature ``(B, Dt)`` -> text feature ``(B, dim)``."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        h = cfg.text_hidden
        self.words = _mlp([cfg.text_dim, h, h])
        self.sentence = _mlp([cfg.text_dim, h, h])
        self.mapping = _mlp([2 * h] + [cfg.dim] * cfg.text_mapping_layers)

    def forward(self, tokens: Tensor, token_mask: Tensor, sentence: Tensor) -> Tensor:
        m = token_mask.float()[..., None]  # (B, T, 1)
        words = (self.words(tokens) * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B, h)
        return self.mapping(torch.cat([words, self.sentence(sentence)], dim=1))  # (B, dim)


class KeyRegion(nn.Module):
    """The key-information detection module: global CNN, auxiliary head, CAM attention, block, crop, crop CNN."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = CamNet(cam_net_config_from_dict(cfg.key_backbone))
        self.encoder = CamNet(cam_net_config_from_dict(cfg.key_encoder))

    @property
    def out_channels(self) -> int:
        return self.encoder.num_features

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """``image`` ``(B, 3, S, S)`` normalized -> aux logits, attention ``(B, h, w)``, box ``(B, 4)``, key map."""
        g = self.backbone.forward_features(image)  # (B, K, h, w): the global feature G
        aux = self.backbone.forward_head(g)  # (B, classes): the auxiliary head (L3)
        cls = torch.full((len(image),), self.cfg.positive_class, dtype=torch.long, device=image.device)
        attention = normalize_cam(self.backbone.cam_from_features(g, cls, self.cfg.key_fusion).detach())
        box = block_box(attention, self.cfg.key_grid, self.cfg.key_select, self.cfg.key_threshold, self.cfg.key_margin)
        crop = crop_resize(image, box, self.cfg.key_crop)  # (B, 3, c, c)
        return {
            "aux_logits": aux,
            "attention": attention,
            "key_box": box,
            "key_map": self.encoder.forward_features(crop),
        }


class FusionScorer(nn.Module):
    """Modality tokens, modality weights, Transformer fusion and the decoder (see the module docstring).

    Args:
        cfg: model settings.
    """

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.upstream = CamNet(cam_net_config_from_dict(cfg.upstream))
        if cfg.freeze_upstream:
            self.upstream.requires_grad_(False)
        up_ch = self.upstream.num_features
        mods = set(cfg.modalities)
        self.text = TextBranch(cfg) if "text" in mods else None
        self.style = MapAdapter(up_ch, cfg.dim) if "style" in mods else None
        self.objects = MapAdapter(up_ch, cfg.dim) if "object" in mods else None
        self.key = KeyRegion(cfg) if "key" in mods else None
        self.key_adapter = MapAdapter(self.key.out_channels, cfg.dim) if self.key is not None else None
        n_kinds = len(TOKEN_KINDS)
        self.type_embed = nn.Embedding(n_kinds, cfg.dim)
        self.weight_scale = nn.Parameter(torch.ones(n_kinds))
        self.weight_bias = nn.Parameter(torch.zeros(n_kinds))
        self.weight_linear = nn.Linear(cfg.dim, n_kinds) if cfg.weight_formula == "cam" else None
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, 2 * cfg.dim, cfg.dropout, batch_first=True, norm_first=True
        )
        self.fusion = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(cfg.dim), _mlp([cfg.dim, cfg.dim, cfg.num_classes], cfg.dropout))

    def train(self, mode: bool = True) -> FusionScorer:
        super().train(mode)
        if self.cfg.freeze_upstream:
            self.upstream.eval()  # frozen: BatchNorm statistics stay as trained
        return self

    def upstream_maps(self, images: Tensor) -> Tensor:
        """Upstream feature maps ``(N, C, h, w)`` of normalized images ``(N, 3, S, S)``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_upstream):
            maps = self.upstream.forward_features(images)  # (N, C, h, w)
            return F.adaptive_avg_pool2d(maps, self.cfg.map_side)  # (N, C, map_side, map_side)

    def _score(self, x: Tensor, kinds: Tensor) -> Tensor:
        """Weight logits ``(B,)`` of mapped maps ``(B, dim, h, w)`` of token kinds ``(B,)``: the method's formula
        with each kind's scale and offset, or the learnable linear score."""
        if self.weight_linear is not None:
            return self.weight_linear(x.mean(dim=(2, 3))).gather(1, kinds[:, None])[:, 0]
        return self.weight_scale[kinds] * channel_mean_weight(x) + self.weight_bias[kinds]

    def tokens(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality tokens ``(B, M, dim)``, weight logits ``(B, M)``, mask ``(B, M)``, kinds ``(B, M)`` and the key
        module's outputs."""
        toks, logits, masks, kinds, out = [], [], [], [], {}

        def add(x: Tensor, logit: Tensor, mask: Tensor, kind: Tensor) -> None:
            toks.append(x)
            logits.append(logit)
            masks.append(mask)
            kinds.append(kind)

        b = self._batch_size(batch)
        device = self.type_embed.weight.device
        full = torch.ones(b, dtype=torch.bool, device=device)
        if self.text is not None:
            t = self.text(batch["text_tokens"].float(), batch["text_token_mask"].bool(), batch["text_sentence"].float())
            if self.weight_linear is not None:
                s = self.weight_linear(t)[:, 0]
            else:  # the method's text weight: the mean of the mapped text feature
                s = self.weight_scale[0] * t.mean(dim=1) + self.weight_bias[0]
            add(t, s, batch["text_present"].bool(), torch.zeros(b, dtype=torch.long, device=device))
        if self.style is not None:
            maps = batch["style_map"] if "style_map" in batch else self.upstream_maps(batch["style_image"])
            x, kind = self.style(maps.float()), torch.full((b,), 1, dtype=torch.long, device=device)
            add(x.mean(dim=(2, 3)), self._score(x, kind), full, kind)
        if self.key is not None:
            out = self.key(batch["image"].float())
            x, kind = self.key_adapter(out["key_map"]), torch.full((b,), 2, dtype=torch.long, device=device)
            add(x.mean(dim=(2, 3)), self._score(x, kind), full, kind)
        if self.objects is not None:
            self._add_objects(batch, add)
        token_kinds = torch.stack(kinds, dim=1)  # (B, M)
        x = torch.stack(toks, dim=1) + self.type_embed(token_kinds)  # (B, M, dim)
        return {
            "x": x,
            "weight_logits": torch.stack(logits, 1),
            "mask": torch.stack(masks, 1),
            "kinds": token_kinds,
            **out,
        }

    def _add_objects(self, batch: Mapping[str, Tensor], add) -> None:
        mask = batch["obj_mask"].bool()  # (B, K)
        b, k = mask.shape
        if "obj_maps" in batch:
            maps = batch["obj_maps"].float().flatten(0, 1)  # (B*K, C, h, w)
        else:
            maps = self.upstream_maps(batch["obj_images"].float().flatten(0, 1))
        x = self.objects(maps)  # (B*K, dim, h, w)
        kinds = batch["obj_kind"].long() + TOKEN_KINDS.index("face")  # (B, K)
        weight_logits = self._score(x, kinds.flatten()).view(b, k)
        pooled = x.mean(dim=(2, 3)).view(b, k, -1)  # (B, K, dim)
        for j in range(k):
            add(pooled[:, j], weight_logits[:, j], mask[:, j], kinds[:, j])

    @staticmethod
    def _batch_size(batch: Mapping[str, Tensor]) -> int:
        for name in ("style_map", "style_image", "image", "text_present", "obj_mask"):
            if name in batch:
                return len(batch[name])
        raise KeyError("batch has none of the modality inputs")

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Logits ``(B, classes)``, weights ``(B, M)`` (sigmoid), their logits, token mask and kinds, and (with the
        key modality) ``aux_logits``, ``attention`` and ``key_box``."""
        t = self.tokens(batch)
        mask = t["mask"]  # (B, M)
        weights = torch.sigmoid(t["weight_logits"])
        attend = mask.clone()
        attend[~mask.any(dim=1), 0] = True  # a row with no modality still needs one key to attend to
        h = self.fusion(t["x"], src_key_padding_mask=~attend) if self.cfg.fuse == "transformer" else t["x"]
        if self.cfg.use_weights:
            w = weights.detach() if self.cfg.detach_weights else weights
            h = w[..., None] * h  # (B, M, dim): z_m = s_m * h_m
        m = mask.float()[..., None]
        pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B, dim)
        out = {k: v for k, v in t.items() if k != "x"}
        return out | {"logits": self.head(pooled), "weights": weights}


def build_fusion(cfg: FusionConfig) -> FusionScorer:
    """Build a :class:`FusionScorer`."""
    return FusionScorer(cfg)


def load_upstream(model: FusionScorer, cam_state: Mapping[str, Tensor]) -> None:
    """Copy a CAM localizer's weights (a ``cam_net`` state dict) into the frozen upstream CNN."""
    model.upstream.load_state_dict(dict(cam_state))


__all__ = [
    "MODALITIES",
    "OBJECT_KINDS",
    "TOKEN_KINDS",
    "CamNetConfig",
    "FusionConfig",
    "FusionScorer",
    "build_fusion",
    "channel_mean_weight",
    "fusion_config_from_dict",
    "load_upstream",
]
