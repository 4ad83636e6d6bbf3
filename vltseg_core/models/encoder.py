"""CLIP / EVA-02-CLIP ViT encoders (and the vision-only baselines) that accept any input size.

open_clip's own visual towers only run at their training resolution, so the trunks are
built with timm (``dynamic_img_size=True``: position embeddings, and the rotary embeddings
of EVA-02, are interpolated to the input grid) and loaded from open_clip checkpoints via the
pure key conversion :func:`convert_open_clip_state_dict`.

The paper's vision-only baselines (ImageNet-21k ViT-B/16 and L/16, DINOv2 ViT-B/14 and L/14)
are the same timm trunk classes loaded from timm / original DINOv2 state dicts
(:mod:`.vision_weights`), behind the same :class:`ViTEncoder`.

The encoder returns the patch tokens of selected blocks as 2-D maps (ViT-Adapter / BEiT /
VLTSeg style multi-level outputs, e.g. blocks [3, 5, 7, 11] for B/16), which the simple
feature pyramid (:mod:`.pyramid`) turns into strides 4/8/16/32.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .vision_weights import convert_vision_state_dict, is_dinov2, is_plain_vit

log = logging.getLogger(__name__)

# "clip": OpenAI-CLIP layout (open_clip VisionTransformer); "eva02": timm Eva (open_clip TimmModel);
# "vit": timm ImageNet ViT; "dinov2": DINOv2 (timm / original layout, with layer scales)
Family = Literal["clip", "eva02", "vit", "dinov2"]


@dataclass(frozen=True)
class TrunkSpec:
    """A timm trunk equivalent to one open_clip visual tower."""

    timm_name: str
    family: Family
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    native_size: int


OPEN_CLIP_TRUNKS: dict[str, TrunkSpec] = {
    "ViT-B-16": TrunkSpec("vit_base_patch16_clip_224", "clip", 16, 768, 12, 12, 224),
    "ViT-L-14": TrunkSpec("vit_large_patch14_clip_224", "clip", 14, 1024, 24, 16, 224),
    "ViT-L-14-336": TrunkSpec("vit_large_patch14_clip_336", "clip", 14, 1024, 24, 16, 336),
    "EVA02-B-16": TrunkSpec("eva02_base_patch16_clip_224", "eva02", 16, 768, 12, 12, 224),
    "EVA02-L-14": TrunkSpec("eva02_large_patch14_clip_224", "eva02", 14, 1024, 24, 16, 224),
    "EVA02-L-14-336": TrunkSpec("eva02_large_patch14_clip_336", "eva02", 14, 1024, 24, 16, 336),
}

# The vision-only baselines (timm names; weights: timm's augreg_in21k / DINOv2's lvd142m).
VISION_TRUNKS: dict[str, TrunkSpec] = {
    "ViT-B-16-IN21k": TrunkSpec("vit_base_patch16_224", "vit", 16, 768, 12, 12, 224),
    "ViT-L-16-IN21k": TrunkSpec("vit_large_patch16_224", "vit", 16, 1024, 24, 16, 224),
    "DINOv2-B-14": TrunkSpec("vit_base_patch14_dinov2", "dinov2", 14, 768, 12, 12, 518),
    "DINOv2-L-14": TrunkSpec("vit_large_patch14_dinov2", "dinov2", 14, 1024, 24, 16, 518),
}
TRUNKS: dict[str, TrunkSpec] = {**OPEN_CLIP_TRUNKS, **VISION_TRUNKS}

# Pre-training of each family and the input normalisation it was trained with (0..255 RGB):
# OpenAI CLIP's mean/std (EVA-02-CLIP uses them too), Inception's 0.5/0.5 (timm augreg
# ViTs), ImageNet's (DINOv2; also what the mmseg reproduction configs use for every encoder).
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "clip": ((122.7709383, 116.7460125, 104.09373615), (68.5005327, 66.6321579, 70.32316305)),
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "inception": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
}
FAMILY_NORMALIZATION: dict[str, str] = {"clip": "clip", "eva02": "clip", "vit": "inception",
                                        "dinov2": "imagenet"}
FAMILY_PRETRAINING: dict[str, str] = {"clip": "CLIP", "eva02": "EVA-02-CLIP",
                                      "vit": "ImageNet-21k", "dinov2": "DINOv2"}

# OpenAI-CLIP (open_clip VisionTransformer) key fragments -> timm VisionTransformer.
_CLIP_RENAMES: tuple[tuple[str, str], ...] = (
    ("conv1.", "patch_embed.proj."),
    ("transformer.resblocks.", "blocks."),
    ("ln_pre.", "norm_pre."),
    ("ln_post.", "norm."),
    (".ln_1.", ".norm1."),
    (".ln_2.", ".norm2."),
    (".attn.in_proj_weight", ".attn.qkv.weight"),
    (".attn.in_proj_bias", ".attn.qkv.bias"),
    (".attn.out_proj.", ".attn.proj."),
    (".mlp.c_fc.", ".mlp.fc1."),
    (".mlp.c_proj.", ".mlp.fc2."),
)


@dataclass
class LoadReport:
    """Outcome of loading a checkpoint into a trunk.

    ``ignored`` are checkpoint tensors for parts the encoder does not use (final norm,
    projection head, blocks after the last output index); ``resampled`` lists position
    embeddings interpolated to the trunk's native grid.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)


def create_trunk(
    clip_name: str,
    *,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    patch_size: int | None = None,
    drop_path_rate: float = 0.0,
    quick_gelu: bool = False,
) -> nn.Module:
    """Build the timm trunk for an open_clip tower name, accepting any input size.

    ``embed_dim``/``depth``/``num_heads``/``patch_size`` override the architecture (tiny
    presets use the same trunk classes with few blocks; the demo a finer patch grid).
    ``quick_gelu`` selects QuickGELU, which the original OpenAI CLIP weights were trained with
    (open_clip's plain ``ViT-*`` configs use exact GELU; its ``*-quickgelu`` configs and
    ``pretrained='openai'`` use QuickGELU).
    """
    spec = trunk_spec(clip_name)
    kwargs: dict = dict(pretrained=False, dynamic_img_size=True, num_classes=0,
                        drop_path_rate=drop_path_rate)
    for key, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads),
                       ("patch_size", patch_size)):
        if value is not None:
            kwargs[key] = value
    if quick_gelu or clip_name.endswith("-quickgelu"):
        if spec.family != "clip":
            raise ValueError(f"quick_gelu only applies to OpenAI-CLIP towers, not {clip_name}")
        kwargs["act_layer"] = "quick_gelu"
    return timm.create_model(spec.timm_name, **kwargs)


def trunk_spec(clip_name: str) -> TrunkSpec:
    """The :class:`TrunkSpec` of an open_clip name (``-quickgelu`` suffix accepted) or of a
    vision-only baseline (:data:`VISION_TRUNKS`)."""
    name = clip_name.removesuffix("-quickgelu")
    if name not in TRUNKS:
        raise ValueError(f"unknown encoder {clip_name!r}; known: {sorted(TRUNKS)}")
    return TRUNKS[name]


# ----------------------------------------------------------------------------- weights


def load_weights_file(path: str | os.PathLike) -> Any:
    """What a ``.safetensors``, ``.bin`` or ``.pt`` file holds, on the CPU, as loaded.

    Pickled files are read with ``torch.load(weights_only=True)``; an OpenAI TorchScript
    archive (the original ``ViT-B-16.pt``) falls back to ``torch.jit.load`` (its state dict).
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as err:
        if "TorchScript" not in str(err):
            raise
        return torch.jit.load(path, map_location="cpu").state_dict()


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read tensors from ``.safetensors``, ``.bin`` or ``.pt`` (plain, or wrapped in
    ``state_dict``/``model``/``module``; DDP ``module.`` prefixes stripped); see
    :func:`load_weights_file`."""
    return unwrap_state_dict(load_weights_file(path), source=os.fspath(path))


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """Unwrap ``state_dict`` / ``model`` / ``module`` containers and DDP ``module.`` prefixes."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{source}: not a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def detect_family(state_dict: Mapping[str, Tensor]) -> Family:
    """``"clip"`` for the OpenAI-CLIP layout (or timm's with CLIP's pre-norm), ``"eva02"``
    for timm-Eva layouts, ``"dinov2"`` for DINOv2 (layer scales / mask token), ``"vit"``
    for a plain timm ImageNet ViT.

    Raises ValueError when the dict holds no recognisable visual tower.
    """
    keys = set(state_dict)
    if "visual.conv1.weight" in keys or "conv1.weight" in keys:
        return "clip"
    if any(k.endswith(("blocks.0.attn.q_proj.weight", "blocks.0.mlp.fc1_g.weight")) for k in keys):
        return "eva02"
    if is_dinov2(keys):
        return "dinov2"
    if is_plain_vit(keys):
        return "vit"
    if any(k.endswith("blocks.0.attn.qkv.weight") for k in keys):
        return "clip"  # already in timm VisionTransformer layout, with CLIP's pre-norm
    raise ValueError("no CLIP / EVA-02 visual tower (nor an ImageNet ViT / DINOv2 one) found "
                     "in the state dict")


def _strip_prefix(state_dict: Mapping[str, Tensor], prefixes: Sequence[str]) -> dict[str, Tensor]:
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def convert_open_clip_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert an open_clip visual tower (full CLIP ``visual.``-prefixed or visual-only)
    to timm trunk keys. Pure: returns a new dict, inputs are not modified.

    OpenAI-CLIP layout: ``conv1`` -> ``patch_embed.proj``, ``class_embedding [C]`` ->
    ``cls_token [1,1,C]``, ``positional_embedding [N,C]`` -> ``pos_embed [1,N,C]``,
    ``proj [C,D]`` -> ``head.weight [D,C]`` (+ zero ``head.bias``), resblock renames.
    EVA-02 (open_clip ``TimmModel``): strip ``visual.trunk.`` / ``trunk.``; drop rope buffers.
    Text-tower and logit-scale tensors are dropped.
    """
    family = detect_family(state_dict)
    if family == "eva02":
        sd = _strip_prefix(state_dict, ("visual.trunk.", "encoder.trunk.", "trunk."))
        return {k: v for k, v in sd.items() if "rope" not in k}
    sd = _strip_prefix(state_dict, ("visual.", "encoder.trunk."))
    if "conv1.weight" not in sd:
        return sd  # already timm layout
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith(("transformer.", "conv1.", "ln_pre.", "ln_post.")):
            for old, new in _CLIP_RENAMES:
                key = key.replace(old, new)
            out[key] = value
        elif key == "class_embedding":
            out["cls_token"] = value.reshape(1, 1, -1)
        elif key == "positional_embedding":
            out["pos_embed"] = value.unsqueeze(0)
        elif key == "proj":
            out["head.weight"] = value.t().contiguous()
            out["head.bias"] = value.new_zeros(value.shape[1])
    return out


def _is_pruned_part(key: str, kept_blocks: int) -> bool:
    match = re.match(r"blocks\.(\d+)\.", key)
    if match:
        return int(match.group(1)) >= kept_blocks
    return key.startswith(("norm.", "fc_norm.", "head.", "attn_pool."))


def load_trunk_weights(
    trunk: nn.Module,
    state_dict: Mapping[str, Tensor],
    expected_family: Family,
    *,
    strict: bool = True,
    source: str = "checkpoint",
) -> LoadReport:
    """Load an open_clip, timm-ViT or DINOv2 (or already converted) state dict into ``trunk``.

    Raises a one-line ValueError when the file holds another architecture (family, width,
    depth or patch size), or when keys are missing and ``strict``.
    """
    family = detect_family(state_dict)
    if family != expected_family:
        raise ValueError(f"{source}: holds a {_FAMILY_NAMES[family]} tower, but the encoder is "
                         f"{_FAMILY_NAMES[expected_family]} (wrong architecture)")
    if family in ("vit", "dinov2"):
        sd = convert_vision_state_dict(state_dict)
    else:
        sd = convert_open_clip_state_dict(state_dict)
    own = trunk.state_dict()
    report = LoadReport()
    kept_blocks = len(trunk.blocks)
    to_load: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key not in own:
            (report.ignored if _is_pruned_part(key, kept_blocks) else report.unexpected).append(key)
            continue
        if key == "pos_embed" and value.shape != own[key].shape and value.shape[-1] == own[key].shape[-1]:
            value = _resample_pos_embed(value, own[key], trunk)
            report.resampled.append(key)
        if value.shape != own[key].shape:
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)} but the encoder "
                             f"expects {tuple(own[key].shape)} (wrong architecture or size)")
        to_load[key] = value
    report.missing = sorted(set(own) - set(to_load))
    if report.missing and strict:
        raise ValueError(f"{source}: {len(report.missing)} encoder tensors missing, e.g. "
                         f"{report.missing[:3]} (wrong architecture?)")
    trunk.load_state_dict(to_load, strict=False)
    return report


_FAMILY_NAMES = {"clip": "OpenAI-CLIP ViT (ViT-*)", "eva02": "EVA-02-CLIP (EVA02-*)",
                 "vit": "ImageNet ViT (ViT-*-IN21k)", "dinov2": "DINOv2 ViT (DINOv2-*)"}


def _resample_pos_embed(value: Tensor, target: Tensor, trunk: nn.Module) -> Tensor:
    """A checkpoint's position grid resized to the trunk's: plain bicubic, no antialias, as
    mmpretrain / mmseg ``resize_pos_embed`` (VLTSeg's code base) and :meth:`ViTEncoder._pos_embed`
    (timm's default would antialias, a different kernel when upsampling)."""
    prefix = 0 if getattr(trunk, "no_embed_class", False) else trunk.num_prefix_tokens
    old = int(round((value.shape[1] - prefix) ** 0.5))
    new = trunk.patch_embed.grid_size
    return resample_abs_pos_embed(value, new_size=list(new), old_size=[old, old],
                                  num_prefix_tokens=prefix, antialias=False)


# ----------------------------------------------------------------------------- encoder


class ViTEncoder(nn.Module):
    """A CLIP / EVA-02 trunk returning the patch tokens of ``out_indices`` as 2-D maps.

    Args:
        trunk: timm ``VisionTransformer`` or ``Eva`` built with ``dynamic_img_size=True``
            (see :func:`create_trunk`). Blocks after the last output index, the final norm
            and the head are pruned.
        out_indices: strictly increasing block indices whose outputs are returned.
        family: ``"clip"``, ``"eva02"``, ``"vit"`` or ``"dinov2"`` (which weights fit).
        freeze_blocks: freeze patch embedding + the first ``k`` blocks.
        window_size: 0 (the paper's): every block attends over the whole grid. ``w > 0``:
            ViTDet-style window attention, each block except ``global_blocks`` over
            non-overlapping ``w x w`` token windows (a grid side longer than ``w`` zero-padded
            to a multiple of it; the class token attends to itself there). Attention per block
            costs ``N w^2`` instead of ``N^2`` for ``N`` tokens: for fine patch grids on CPU.
        global_blocks: blocks that keep global attention when ``window_size > 0``.
    """

    def __init__(self, trunk: nn.Module, out_indices: Sequence[int], family: Family,
                 freeze_blocks: int = 0, window_size: int = 0,
                 global_blocks: Sequence[int] = ()) -> None:
        super().__init__()
        out_indices = tuple(int(i) for i in out_indices)
        if list(out_indices) != sorted(set(out_indices)) or out_indices[-1] >= len(trunk.blocks):
            raise ValueError(f"out_indices {out_indices} must increase and be < depth {len(trunk.blocks)}")
        if window_size < 0 or any(not 0 <= i < len(trunk.blocks) for i in global_blocks):
            raise ValueError(f"window_size {window_size} must be >= 0 and global_blocks "
                             f"{tuple(global_blocks)} within depth {len(trunk.blocks)}")
        if window_size and getattr(trunk, "rope", None) is not None:
            raise ValueError("window attention is not implemented for rotary-embedding trunks (EVA-02)")
        if not getattr(trunk, "dynamic_img_size", False):
            raise ValueError("build the trunk with dynamic_img_size=True (see create_trunk)")
        if getattr(trunk, "no_embed_class", False) or getattr(trunk, "reg_token", None) is not None \
                or getattr(trunk, "cls_token", None) is None:
            raise ValueError("expected a CLIP-style trunk: class token, position embedding incl. it")
        trunk.prune_intermediate_layers(list(out_indices), prune_norm=True, prune_head=True)
        self.trunk = trunk
        self.out_indices = out_indices
        self.family = family
        self.patch_size: int = int(trunk.patch_embed.patch_size[0])
        self.embed_dim: int = int(trunk.embed_dim)
        self.window_size = int(window_size)
        self.global_blocks = frozenset(int(i) for i in global_blocks)
        self.freeze_blocks = 0
        self.freeze(freeze_blocks)
        self.load_report: LoadReport | None = None  # set by load_open_clip

    @property
    def num_blocks(self) -> int:
        return len(self.trunk.blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x [B,3,H,W]`` normalised -> ``len(out_indices)`` maps ``[B,C,H/p,W/p]``.

        Sizes not divisible by the patch ``p`` are resized (bilinear) to the nearest
        multiple, so the grid is ``round(H/p) x round(W/p)`` and still covers the image.
        """
        h, w = int(x.shape[-2]), int(x.shape[-1])  # static sizes (also under ONNX tracing)
        p = self.patch_size
        if h % p or w % p:
            size = (max(1, round(h / p)) * p, max(1, round(w / p)) * p)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        t = self.trunk
        tokens = t.patch_embed(x)  # B,gh,gw,C (timm dynamic_img_size emits NHWC)
        b = tokens.shape[0]  # no int(): an exported graph keeps a dynamic batch
        gh, gw, c = (int(s) for s in tokens.shape[1:])
        tokens = torch.cat([t.cls_token.expand(b, -1, -1), tokens.reshape(b, gh * gw, c)], dim=1)
        tokens = t.norm_pre(t.pos_drop(tokens + self._pos_embed(gh, gw)))
        rope = t.rope.get_embed(shape=(gh, gw)) if getattr(t, "rope", None) is not None else None
        kwargs = {} if rope is None else {"rope": rope}
        outs = []
        for i, block in enumerate(t.blocks):
            if self.window_size and i not in self.global_blocks:
                tokens = self._windowed(block, tokens, gh, gw)
            else:
                tokens = self._run(block, tokens, **kwargs)
            if i in self.out_indices:  # drop the class token, tokens -> 2-D map
                outs.append(tokens[:, 1:].reshape(b, gh, gw, c).permute(0, 3, 1, 2))
        return outs

    def _windowed(self, block: nn.Module, tokens: Tensor, gh: int, gw: int) -> Tensor:
        """One block over windows of the ``[B, 1+gh*gw, C]`` tokens (norms and MLP are per
        token, so windowing the whole block windows its attention only). A window never
        exceeds the grid: a grid smaller than it is one window, not padded."""
        wh, ww, c = min(self.window_size, gh), min(self.window_size, gw), int(tokens.shape[-1])
        hp, wp = -(-gh // wh) * wh, -(-gw // ww) * ww
        grid = F.pad(tokens[:, 1:].reshape(-1, gh, gw, c), (0, 0, 0, wp - gw, 0, hp - gh))
        windows = grid.reshape(-1, hp // wh, wh, wp // ww, ww, c).transpose(2, 3).reshape(-1, wh * ww, c)
        windows = self._run(block, windows).reshape(-1, hp // wh, wp // ww, wh, ww, c).transpose(2, 3)
        grid = windows.reshape(-1, hp, wp, c)[:, :gh, :gw].reshape(-1, gh * gw, c)
        return torch.cat([self._run(block, tokens[:, :1]), grid], dim=1)

    def _run(self, block: nn.Module, tokens: Tensor, **kwargs: Any) -> Tensor:
        """The block, recomputed in backward when the trunk asks for gradient checkpointing."""
        if self.trunk.grad_checkpointing and self.training:
            return checkpoint(block, tokens, use_reentrant=False, **kwargs)
        return block(tokens, **kwargs)

    def _pos_embed(self, gh: int, gw: int) -> Tensor:
        """Absolute position embedding for a ``gh x gw`` grid ``[1, 1+gh*gw, C]``: the
        pretrained grid resized with plain bicubic, no antialias, as the references do (ViTDet
        ``get_abs_pos``, mmpretrain / mmseg ``resize_pos_embed``); it also exports to ONNX opset
        17 and TensorRT."""
        pos = self.trunk.pos_embed
        g0h, g0w = (int(s) for s in self.trunk.patch_embed.grid_size)
        if (gh, gw) == (g0h, g0w):
            return pos
        grid = pos[:, 1:].reshape(1, g0h, g0w, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(gh, gw), mode="bicubic", align_corners=False)
        grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat([pos[:, :1], grid], dim=1)

    def freeze(self, k: int) -> None:
        """Freeze patch/position embeddings and blocks ``0..k-1`` (paper's freezing ablation)."""
        if not 0 <= k <= self.num_blocks:
            raise ValueError(f"freeze_blocks={k} outside 0..{self.num_blocks}")
        self.freeze_blocks = k
        for name, param in self.trunk.named_parameters():
            param.requires_grad = k == 0 or self.layer_id(name) > k

    def freeze_all(self) -> None:
        """A frozen feature extractor (the freezing ablation's 'frozen encoder'): every trunk
        parameter fixed, like ``freeze(num_blocks)``, and the trunk kept in eval mode, so no
        stochastic depth runs in it while the heads train."""
        self.freeze(self.num_blocks)
        self.frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> "ViTEncoder":
        super().train(mode)
        if getattr(self, "frozen", False):
            self.trunk.eval()
        return self

    @staticmethod
    def layer_id(name: str) -> int:
        """Depth of a trunk parameter: 0 for embeddings, ``i+1`` for ``blocks.i``."""
        match = re.match(r"(?:trunk\.)?blocks\.(\d+)\.", name)
        return int(match.group(1)) + 1 if match else 0

    def load_open_clip(self, path_or_state: str | os.PathLike | Mapping[str, Tensor],
                       strict: bool = True, source: str | None = None) -> LoadReport:
        """Load open_clip weights (file path or state dict) into the trunk; see
        :func:`load_trunk_weights`. Logs missing / unexpected / ignored keys."""
        if isinstance(path_or_state, Mapping):
            source = source or "state dict"
            state = unwrap_state_dict(path_or_state, source=source)
        else:
            state, source = read_state_dict(path_or_state), os.fspath(path_or_state)
        report = load_trunk_weights(self.trunk, state, self.family, strict=strict, source=source)
        self.load_report = report
        log.info("encoder weights from %s: %d missing, %d unexpected, %d ignored, resampled %s",
                 source, len(report.missing), len(report.unexpected), len(report.ignored),
                 report.resampled)
        return report
