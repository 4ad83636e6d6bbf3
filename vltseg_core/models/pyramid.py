"""ViTDet simple feature pyramid (Li et al., "Exploring Plain Vision Transformer Backbones
for Object Detection", ECCV 2022).

From single-scale ViT maps (stride = patch size) build strides 4/8/16/32 with
deconv x2 / deconv / identity / max-pool, each followed by 1x1 and 3x3 convs with
LayerNorm. With four encoder outputs (e.g. blocks [3, 5, 7, 11]) level ``i`` is built from
output ``i`` (the BEiT / ViT-Adapter multi-level variant VLTSeg uses); with one output all
levels share it (plain ViTDet).

For patch-14 encoders the scaled maps (strides 3.5/7/14/28) are resized bilinearly to the
exact 4/8/16/32 grids of the (padded) input, so heads and detectors see standard strides.
A patch-8 encoder (the CPU demo's finer grid) starts one octave lower: deconv / identity /
max-pool / max-pool x4.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

STRIDES: tuple[int, int, int, int] = (4, 8, 16, 32)


class FeaturePyramid(NamedTuple):
    """Four maps ``[B, C, H/s, W/s]`` for strides s = 4, 8, 16, 32."""

    s4: Tensor
    s8: Tensor
    s16: Tensor
    s32: Tensor


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of ``[B, C, H, W]``, eps 1e-6 as detectron2's ``LayerNorm``
    (the "LN" of ViTDet's pyramid and box head; ConvNeXt's channels-first LayerNorm)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)  # B,H,W,C
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _conv_norm(in_dim: int, out_dim: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, bias=False), LayerNorm2d(out_dim))


def _scale_op(stride: int, dim: int, patch: int = 16) -> tuple[nn.Module, int]:
    """Module taking a stride-``patch`` map to ``stride`` (patch 14 counts as 16, resized
    later), and its output channels."""
    scale = stride / (8 if patch <= 8 else 16)
    if scale == 0.25:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)), dim // 4
    if scale == 0.5:
        return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), dim // 2
    if scale == 1:
        return nn.Identity(), dim
    return nn.MaxPool2d(int(scale), stride=int(scale)), dim


class SimpleFeaturePyramid(nn.Module):
    """ViT maps -> :class:`FeaturePyramid` with ``out_dim`` channels.

    Args:
        in_dim: encoder width C.
        out_dim: pyramid channels (256 in ViTDet / Mask2Former).
        num_inputs: 1 (shared map) or 4 (one encoder output per level).
        patch_size: the encoder's patch (its maps' stride): 8, 14 or 16.
    """

    def __init__(self, in_dim: int, out_dim: int = 256, num_inputs: int = 4, patch_size: int = 16) -> None:
        super().__init__()
        if num_inputs not in (1, 4):
            raise ValueError(f"num_inputs must be 1 or 4, got {num_inputs}")
        if patch_size not in (8, 14, 16):
            raise ValueError(f"patch_size must be 8, 14 or 16, got {patch_size}")
        self.num_inputs = num_inputs
        self.out_dim = out_dim
        self.scale_ops = nn.ModuleList()
        self.out_convs = nn.ModuleList()
        for stride in STRIDES:
            op, dim = _scale_op(stride, in_dim, patch_size)
            self.scale_ops.append(op)
            self.out_convs.append(nn.Sequential(_conv_norm(dim, out_dim, 1),
                                                _conv_norm(out_dim, out_dim, 3)))

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> FeaturePyramid:
        """``features``: ``num_inputs`` maps ``[B, C, h, w]``; ``image_size``: the (padded)
        encoder input ``(H, W)``, a multiple of 32. Returns maps ``[B, out_dim, H/s, W/s]``."""
        if len(features) != self.num_inputs:
            raise ValueError(f"expected {self.num_inputs} feature maps, got {len(features)}")
        levels = []
        for i, (stride, op, convs) in enumerate(zip(STRIDES, self.scale_ops, self.out_convs)):
            x = op(features[i if self.num_inputs == 4 else 0])
            size = (image_size[0] // stride, image_size[1] // stride)
            if tuple(x.shape[-2:]) != size:  # patch 14 (or sizes not divisible by 32)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            levels.append(convs(x))
        return FeaturePyramid(*levels)
