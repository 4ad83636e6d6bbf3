"""Presets, ``build_model``, checkpoints, optimizer parameter groups and model summaries.

Presets are frozen dataclasses in a plain dict; a paper preset differs from another in a
few fields (as ViTDet's L config overrides its B config). Tiny presets use the same trunk
classes and heads with few blocks and small widths, for CPU tests and demos.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, TextIO

import torch
from torch import nn

from vltseg_core.files import atomic_torch_save

from .criterion import SetCriterion
from .detection import PyramidDetector
from .encoder import (FAMILY_NORMALIZATION, FAMILY_PRETRAINING, NORMALIZATIONS, ViTEncoder,
                      create_trunk, load_weights_file, trunk_spec)
from .matcher import HungarianMatcher
from .pixel_decoder import MSDeformablePixelDecoder
from .pyramid import SimpleFeaturePyramid
from .segmentor import Mask2FormerHead, VLTSeg
from .transformer_decoder import MaskedAttentionDecoder


@dataclass(frozen=True)
class Preset:
    """Everything that defines a model. Any field can be overridden in :func:`build_model`."""

    encoder: str  # open_clip tower name, e.g. "EVA02-L-14", or a baseline's, e.g. "DINOv2-B-14"
    out_indices: tuple[int, ...]
    seg: bool = True
    det: bool = False
    quick_gelu: bool = False  # OpenAI CLIP weights need QuickGELU
    embed_dim: int | None = None  # None: the tower's own width / depth / heads
    depth: int | None = None
    num_heads: int | None = None
    patch_size: int | None = None  # None: the tower's; 8 gives the CPU demo a finer grid
    drop_path_rate: float = 0.1
    # 0: global attention in every block (the paper's); > 0: ViTDet-style windows of that many
    # tokens a side in every block but `global_blocks` (see ViTEncoder)
    window_size: int = 0
    global_blocks: tuple[int, ...] = ()
    freeze_blocks: int = 0
    frozen_encoder: bool = False  # every encoder weight fixed and the trunk in eval mode
    # input normalisation: "pretraining" (the encoder's own: CLIP's for CLIP / EVA-02, 0.5/0.5
    # for ImageNet-21k ViTs, ImageNet's for DINOv2) or a name in encoder.NORMALIZATIONS
    normalization: str = "pretraining"
    grad_checkpointing: bool = False
    pretrained: str | None = None  # open_clip weight file loaded into the encoder
    input_size: tuple[int, int] = (512, 1024)
    pyramid_dim: int = 256
    # Mask2Former pixel decoder / transformer decoder / criterion
    pd_layers: int = 6
    pd_heads: int = 8
    pd_points: int = 4
    pd_ffn: int = 1024
    pd_grad_checkpointing: bool = True  # recompute the deformable layers in backward (memory)
    mask_dim: int = 256
    hidden_dim: int = 256
    num_queries: int = 100
    dec_layers: int = 9
    dec_heads: int = 8
    dec_ffn: int = 2048
    train_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    seg_upsample: str = "logits"  # semantic inference order: "logits" (reference) or "scores"
    # Faster R-CNN (torchvision) on the pyramid
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    box_convs: int = 4
    box_fc: int = 1024
    rpn_pre_nms: tuple[int, int] = (2000, 1000)
    rpn_post_nms: tuple[int, int] = (1000, 1000)  # ViTDet (detectron2 mask_rcnn_fpn): 1000 / 1000
    rpn_batch: int = 256
    roi_batch: int = 512
    detections_per_img: int = 100


_B16 = dict(out_indices=(3, 5, 7, 11), drop_path_rate=0.1)
_L14 = dict(out_indices=(9, 14, 19, 23), drop_path_rate=0.2)
_TINY = dict(embed_dim=64, depth=4, num_heads=2, out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
             input_size=(128, 256), pyramid_dim=32, pd_layers=2, pd_heads=4, pd_ffn=64, mask_dim=32,
             hidden_dim=32, num_queries=16, dec_layers=3, dec_heads=4, dec_ffn=64, train_points=1024,
             anchor_sizes=(8, 16, 32, 64, 128), box_convs=1, box_fc=64, rpn_pre_nms=(200, 100),
             rpn_post_nms=(100, 50), rpn_batch=64, roi_batch=64)

_L16 = dict(_L14)  # 24 blocks: the same output blocks whatever the patch
_clip_b16 = Preset(encoder="ViT-B-16", quick_gelu=True, **_B16)
_clip_l14 = Preset(encoder="ViT-L-14", quick_gelu=True, **_L14)
_eva_b16 = Preset(encoder="EVA02-B-16", **_B16)
_eva_l14 = Preset(encoder="EVA02-L-14", **_L14)
_in21k_b16 = Preset(encoder="ViT-B-16-IN21k", **_B16)
_in21k_l16 = Preset(encoder="ViT-L-16-IN21k", **_L16)
_dinov2_b14 = Preset(encoder="DINOv2-B-14", **_B16)
_dinov2_l14 = Preset(encoder="DINOv2-L-14", **_L14)
_tiny = Preset(encoder="ViT-B-16", **_TINY)
_det, _joint = dict(seg=False, det=True), dict(seg=True, det=True)

PRESETS: dict[str, Preset] = {
    # segmentation (the paper's main setting: EVA02-L/14 + Mask2Former)
    "vltseg_eva02_l14_m2f": _eva_l14,
    "vltseg_eva02_l14_336_m2f": replace(_eva_l14, encoder="EVA02-L-14-336"),
    "vltseg_eva02_b16_m2f": _eva_b16,
    "vltseg_clip_b16_m2f": _clip_b16,
    "vltseg_clip_l14_m2f": _clip_l14,
    "vltseg_clip_l14_336_m2f": replace(_clip_l14, encoder="ViT-L-14-336"),
    # vision-only baselines (same pyramid and heads)
    "vltseg_in21k_b16_m2f": _in21k_b16,
    "vltseg_in21k_l16_m2f": _in21k_l16,
    "vltseg_dinov2_b14_m2f": _dinov2_b14,
    "vltseg_dinov2_l14_m2f": _dinov2_l14,
    # detection and joint (one encoder, both heads)
    "vltseg_eva02_l14_det": replace(_eva_l14, **_det),
    "vltseg_eva02_b16_det": replace(_eva_b16, **_det),
    "vltseg_clip_b16_det": replace(_clip_b16, **_det),
    "vltseg_eva02_l14_joint": replace(_eva_l14, **_joint),
    "vltseg_clip_b16_joint": replace(_clip_b16, **_joint),
    # tiny: same code, CPU-sized
    "vltseg_tiny_m2f": _tiny,
    "vltseg_tiny_eva02_m2f": replace(_tiny, encoder="EVA02-B-16"),
    "vltseg_tiny_eva02_p14_m2f": replace(_tiny, encoder="EVA02-L-14"),
    "vltseg_tiny_in21k_m2f": replace(_tiny, encoder="ViT-B-16-IN21k"),
    "vltseg_tiny_dinov2_m2f": replace(_tiny, encoder="DINOv2-B-14"),
    "vltseg_tiny_det": replace(_tiny, **_det),
    "vltseg_tiny_joint": replace(_tiny, **_joint),
}


def list_presets() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(PRESETS)


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    """Resolve a preset name and apply field overrides (unknown fields raise ValueError)."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    names = {f.name for f in dataclasses.fields(Preset)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown preset fields {unknown}")
    return replace(preset, **overrides)


def build_from_preset(cfg: Preset, num_classes: int) -> VLTSeg:
    """Construct (randomly initialised, or encoder from ``cfg.pretrained``) a :class:`VLTSeg`."""
    trunk = create_trunk(cfg.encoder, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                         patch_size=cfg.patch_size, drop_path_rate=cfg.drop_path_rate, quick_gelu=cfg.quick_gelu)
    if cfg.grad_checkpointing:
        trunk.set_grad_checkpointing(True)
    encoder = ViTEncoder(trunk, cfg.out_indices, trunk_spec(cfg.encoder).family, cfg.freeze_blocks,
                         cfg.window_size, cfg.global_blocks)
    if cfg.frozen_encoder:
        encoder.freeze_all()
    if cfg.pretrained:
        encoder.load_open_clip(cfg.pretrained)
    pyramid = SimpleFeaturePyramid(encoder.embed_dim, cfg.pyramid_dim, num_inputs=len(cfg.out_indices),
                                   patch_size=encoder.patch_size)
    seg_head = det_head = None
    if cfg.seg:
        pixel_decoder = MSDeformablePixelDecoder(cfg.pyramid_dim, cfg.hidden_dim, cfg.mask_dim, cfg.pd_layers,
                                                 cfg.pd_heads, cfg.pd_points, cfg.pd_ffn,
                                                 grad_checkpointing=cfg.pd_grad_checkpointing)
        decoder = MaskedAttentionDecoder(num_classes, cfg.hidden_dim, cfg.hidden_dim, cfg.num_queries,
                                         cfg.dec_heads, cfg.dec_ffn, cfg.dec_layers, cfg.mask_dim)
        matcher = HungarianMatcher(cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.train_points)
        criterion = SetCriterion(num_classes, matcher, cfg.class_weight, cfg.mask_weight, cfg.dice_weight,
                                 cfg.no_object_weight, cfg.train_points, cfg.oversample_ratio,
                                 cfg.importance_sample_ratio)
        seg_head = Mask2FormerHead(pixel_decoder, decoder, criterion)
    if cfg.det:
        det_head = PyramidDetector(num_classes, cfg.pyramid_dim, cfg.anchor_sizes, cfg.box_convs, cfg.box_fc,
                                   cfg.rpn_pre_nms, cfg.rpn_post_nms, cfg.rpn_batch, cfg.roi_batch,
                                   detections_per_img=cfg.detections_per_img)
    mean, std = normalization(cfg)
    return VLTSeg(encoder, pyramid, seg_head, det_head, num_classes=num_classes, input_size=cfg.input_size,
                  pixel_mean=mean, pixel_std=std, seg_upsample=cfg.seg_upsample)


def normalization(cfg: Preset) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` on the 0..255 scale for ``cfg.normalization`` (see :class:`Preset`)."""
    name = cfg.normalization
    if name == "pretraining":
        name = FAMILY_NORMALIZATION[trunk_spec(cfg.encoder).family]
    if name not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {name!r}; known: pretraining, {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]


def encoder_label(preset: str, **overrides: Any) -> tuple[str, str]:
    """``(pre-training, architecture)`` of a preset for tables, e.g. ``("DINOv2", "ViT-B/14")``;
    presets with their own width (tiny ones) read ``"ViT-tiny/16"``."""
    cfg = get_preset(preset, **{k: v for k, v in overrides.items() if k != "pretrained"})
    spec = trunk_spec(cfg.encoder)
    size = {768: "B", 1024: "L"}.get(spec.embed_dim, "?")
    if cfg.embed_dim is not None and cfg.embed_dim != spec.embed_dim:
        size = "tiny"
    return FAMILY_PRETRAINING[spec.family], f"ViT-{size}/{cfg.patch_size or spec.patch_size}"


def build_model(preset: str | Preset, num_classes: int, checkpoint: str | os.PathLike | None = None,
                **overrides: Any) -> VLTSeg:
    """Build a model from a preset name (see :func:`list_presets`) with field overrides.

    ``checkpoint`` is either a VLTSeg checkpoint from :func:`save_checkpoint` (whole model,
    strict) or an open_clip weight file (``.pt``/``.bin``/``.safetensors``: encoder only).
    The preset name and overrides are kept on the model for :func:`save_checkpoint`.
    """
    cfg = get_preset(preset, **overrides)
    model = build_from_preset(cfg, num_classes)
    model.preset = preset if isinstance(preset, str) else "custom"
    model.overrides = dict(overrides) if isinstance(preset, str) else dataclasses.asdict(cfg)
    if checkpoint is not None:
        _load_any_checkpoint(model, checkpoint)
    return model


def _load_any_checkpoint(model: VLTSeg, path: str | os.PathLike) -> None:
    """Whole-model VLTSeg checkpoint (strict) or open_clip weights (encoder only)."""
    source = os.fspath(path)
    payload = load_weights_file(source)  # read once, whichever kind it is
    if isinstance(payload, dict) and {"preset", "model"} <= payload.keys():
        model.load_state_dict(payload["model"])
    else:
        model.encoder.load_open_clip(payload, source=source)


def checkpoint_payload(model: VLTSeg, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"preset", "num_classes", "overrides", "model", "meta"}``: preset and overrides as
    :func:`build_model` recorded them on the model (``pretrained`` dropped: the weights are in
    the file), weights copied to the CPU. The one checkpoint format; training's ``last.pt``
    adds a ``train_state`` entry to it."""
    return {"preset": getattr(model, "preset", "custom"), "num_classes": model.num_classes,
            "overrides": {k: v for k, v in getattr(model, "overrides", {}).items() if k != "pretrained"},
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "meta": dict(meta or {})}


def save_checkpoint(model: VLTSeg, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
    """Write :func:`checkpoint_payload` atomically (:func:`vltseg_core.files.atomic_torch_save`)."""
    atomic_torch_save(checkpoint_payload(model, meta), path)


def load_checkpoint(path: str | os.PathLike, model: VLTSeg | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[VLTSeg, dict[str, Any]]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; build the model from its
    preset/overrides unless ``model`` is given. Returns ``(model, meta)``."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or not {"preset", "num_classes", "model"} <= payload.keys():
        raise ValueError(f"{os.fspath(path)}: not a VLTSeg checkpoint")
    if model is None:
        overrides = dict(payload.get("overrides", {}), pretrained=None)
        if payload["preset"] == "custom":
            cfg = Preset(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
            model = build_model(cfg, payload["num_classes"])
        else:
            model = build_model(payload["preset"], payload["num_classes"], **overrides)
    model.load_state_dict(payload["model"])
    return model, payload.get("meta", {})


# ----------------------------------------------------------------------------- optimizer

_NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "query_feat", "query_embed", "level_embed")


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float = 0.1,
                 layer_decay: float | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups. Encoder parameters get ``lr * backbone_lr_mult`` (paper 0.1),
    times ``layer_decay ** (depth + 1 - layer_id)`` if given (BEiT layer-wise decay). Norms,
    biases, position / class / query / level embeddings get no weight decay. Frozen
    parameters are left out. Each group carries ``lr_scale`` (its lr relative to ``lr``)."""
    depth = model.encoder.num_blocks if hasattr(model, "encoder") else 0
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0
        if name.startswith("encoder."):
            scale = backbone_lr_mult
            if layer_decay is not None:
                scale *= layer_decay ** (depth + 1 - ViTEncoder.layer_id(name.removeprefix("encoder.")))
        no_decay = param.ndim <= 1 or any(k in name for k in _NO_DECAY_NAMES)
        wd = 0.0 if no_decay else weight_decay
        group = groups.setdefault((scale, wd), {"params": [], "lr": lr * scale, "weight_decay": wd,
                                                "lr_scale": scale})
        group["params"].append(param)
    return list(groups.values())


# ----------------------------------------------------------------------------- summaries


def count_flops(model: nn.Module, size: tuple[int, int], batch: int = 1) -> int:
    """FLOPs (2 per multiply-add, ``torch.utils.flop_counter``) of one eval forward.

    Runs on the meta device when the model lives there (no compute, no memory)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, *size, device=device)
    was_training = model.training
    flags = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    try:  # FlopCounterMode's module tracker trips over views of trainable leaves in no_grad
        for p in flags:
            p.requires_grad_(False)
        # the math SDPA backend: FlopCounterMode has no formula for the fused CPU kernel
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return int(counter.get_total_flops())


def model_summary(preset: str, size: tuple[int, int] | None = None, num_classes: int = 19,
                  **overrides: Any) -> dict[str, Any]:
    """Parameters (total / encoder / trainable) and GFLOPs of a preset at ``size`` (H, W;
    default the preset's ``input_size``). Segmentation presets are counted on the meta
    device; detection needs real tensors (data-dependent NMS) and runs on CPU."""
    cfg = get_preset(preset, **overrides)
    size = tuple(size or cfg.input_size)
    device = "cpu" if cfg.det else "meta"
    with torch.device(device):
        model = build_from_preset(replace(cfg, pretrained=None), num_classes)
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "size": size, "params_m": params / 1e6,
            "encoder_params_m": sum(p.numel() for p in model.encoder.parameters()) / 1e6,
            "trainable_params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
            "gflops": count_flops(model, size) / 1e9}


def print_model_table(presets: Iterable[str] | None = None, size: tuple[int, int] | None = None,
                      num_classes: int = 19, file: TextIO | None = None) -> list[dict[str, Any]]:
    """Print a Markdown table of params and GFLOPs per preset (FLOPs = 2 x MACs)."""
    file = file or sys.stdout
    rows = [model_summary(p, size, num_classes) for p in (presets or list_presets())]
    print("| preset | input HxW | params (M) | encoder (M) | GFLOPs |", file=file)
    print("|---|---|---:|---:|---:|", file=file)
    for r in rows:
        print(f"| {r['preset']} | {r['size'][0]}x{r['size'][1]} | {r['params_m']:.1f} | "
              f"{r['encoder_params_m']:.1f} | {r['gflops']:.1f} |", file=file)
    return rows


__all__ = ["PRESETS", "Preset", "build_model", "build_from_preset", "encoder_label", "get_preset", "list_presets",
           "checkpoint_payload", "load_checkpoint", "save_checkpoint", "param_groups", "count_flops",
           "model_summary", "print_model_table"]
