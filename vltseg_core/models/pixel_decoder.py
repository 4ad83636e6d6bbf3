"""Mask2Former pixel decoder: multi-scale deformable attention encoder + FPN lateral.

Multi-scale deformable attention follows Deformable DETR (Zhu et al., ICLR 2021); the
pixel decoder layout (6 layers on strides 8/16/32, mask features at stride 4 from an FPN
lateral on stride 4) follows Mask2Former (Cheng et al., CVPR 2022).

Everything is plain PyTorch: sampling uses ``F.grid_sample`` instead of a custom CUDA op,
the loops run over the (static) levels only, and all sizes come from tensor shapes, so the
module traces to ONNX (opset >= 16 for GridSample) with static shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .init import c2_xavier_fill, xavier_linears
from .pyramid import FeaturePyramid


class PixelDecoderOutput(NamedTuple):
    """``mask_features [B, M, H/4, W/4]``; ``multi_scale`` maps ``[B, C, h, w]`` ordered
    low to high resolution (strides 32, 16, 8), as the transformer decoder consumes them."""

    mask_features: Tensor
    multi_scale: list[Tensor]


def sine_position_embedding(h: int, w: int, dim: int, like: Tensor,
                            temperature: float = 10000.0) -> Tensor:
    """Normalised 2-D sine embedding (DETR) of a ``h x w`` grid -> ``[1, dim, h, w]``.

    The first ``dim/2`` channels encode y, the rest x; coordinates are scaled to (0, 2*pi].
    """
    half = dim // 2
    y = (torch.arange(h, device=like.device, dtype=torch.float32) + 1) / (h + 1e-6) * 2 * math.pi
    x = (torch.arange(w, device=like.device, dtype=torch.float32) + 1) / (w + 1e-6) * 2 * math.pi
    idx = torch.arange(half, device=like.device, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / half)
    py, px = y[:, None] / freq, x[:, None] / freq  # h,half / w,half
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((py[:, None, :].expand(h, w, half), px[None, :, :].expand(h, w, half)), dim=2)
    return pos.permute(2, 0, 1).unsqueeze(0).to(like.dtype)  # 1,dim,h,w


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR, Eq. 3), pure PyTorch.

    Each query attends to ``num_points`` sampled locations per head and level, around its
    reference point, with learned offsets and softmax weights. ``recompute_sampling``: in
    training, a level's sampled values (``num_points`` copies of its value map) are not kept
    for backward but sampled again there, one level at a time (what the reference's CUDA op
    does in its backward kernel).
    """

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int,
                 recompute_sampling: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by heads {num_heads}")
        self.num_levels, self.num_heads, self.num_points = num_levels, num_heads, num_points
        self.recompute_sampling = recompute_sampling
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR init: offsets start on a ring of directions, one per head."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: Tensor, reference_points: Tensor, value: Tensor,
                shapes: Sequence[tuple[int, int]]) -> Tensor:
        """
        Args:
            query: ``[B, Lq, C]``.
            reference_points: ``[B or 1, Lq, 2]`` normalised (x, y) in [0, 1].
            value: ``[B, S, C]``, the levels' flattened maps concatenated, ``S = sum(h*w)``.
            shapes: ``(h, w)`` per level (python ints: static).
        Returns:
            ``[B, Lq, C]``.
        """
        b, lq, c = query.shape
        nh, nl, npnt = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(b, -1, nh, c // nh)
        offsets = self.sampling_offsets(query).view(b, lq, nh, nl, npnt, 2)
        weights = self.attention_weights(query).view(b, lq, nh, nl * npnt).softmax(-1)
        norm = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        loc = reference_points[:, :, None, None, None, :] + offsets / norm[:, None, :]
        grids = 2 * loc - 1  # B,Lq,nh,nl,np,2 in grid_sample's [-1, 1]
        weights = weights.view(b, lq, nh, nl, npnt).permute(0, 2, 3, 1, 4).reshape(b * nh, nl, 1, lq, npnt)
        recompute = self.recompute_sampling and self.training and torch.is_grad_enabled()
        out: Tensor | None = None
        for lvl, v_l in enumerate(v.split([h * w for h, w in shapes], dim=1)):
            h, w = shapes[lvl]
            v_l = v_l.permute(0, 2, 3, 1).reshape(b * nh, c // nh, h, w)
            g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(b * nh, lq, npnt, 2)
            if recompute:
                term = checkpoint(_sample_level, v_l, g, weights[:, lvl], use_reentrant=False)
            else:
                term = _sample_level(v_l, g, weights[:, lvl])
            out = term if out is None else out + term
        out = out.view(b, c, lq)  # heads are contiguous channel blocks
        return self.output_proj(out.transpose(1, 2))


def _sample_level(value: Tensor, grid: Tensor, weights: Tensor) -> Tensor:
    """``value [B*nh, C/nh, h, w]`` bilinearly sampled at ``grid [B*nh, Lq, np, 2]`` and summed
    with ``weights [B*nh, 1, Lq, np]`` over the points -> ``[B*nh, C/nh, Lq]``."""
    sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # B*nh, C/nh, Lq, np
    return (sampled * weights).sum(-1)


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention over all levels + FFN."""

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int,
                 ffn_dim: int, dropout: float = 0.0, recompute_sampling: bool = False) -> None:
        super().__init__()
        self.attn = MSDeformAttn(dim, num_levels, num_heads, num_points, recompute_sampling)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        xavier_linears(self.ffn)  # Mask2Former's MSDeformAttnTransformerEncoderOnly._reset_parameters

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor,
                shapes: Sequence[tuple[int, int]]) -> Tensor:
        """``src``/``pos`` ``[B, S, C]``, ``reference_points`` ``[1, S, 2]`` -> ``[B, S, C]``."""
        src = self.norm1(src + self.dropout(self.attn(src + pos, reference_points, src, shapes)))
        return self.norm2(src + self.dropout(self.ffn(src)))


def _reference_points(shapes: Sequence[tuple[int, int]], like: Tensor) -> Tensor:
    """Pixel centres of every level, normalised to [0, 1] -> ``[1, S, 2]`` (x, y)."""
    points = []
    for h, w in shapes:
        ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h
        xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w
        points.append(torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2))
    return torch.cat(points).unsqueeze(0)


def _proj(in_dim: int, out_dim: int, kernel: int = 1, act: bool = False, bias: bool = False) -> nn.Sequential:
    """Conv + GroupNorm(32) (+ ReLU); weights as the reference (see ``__init__``)."""
    layers: list[nn.Module] = [nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, bias=bias),
                               nn.GroupNorm(min(32, out_dim), out_dim)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MSDeformablePixelDecoder(nn.Module):
    """Mask2Former's ``MSDeformAttnPixelDecoder`` over a :class:`FeaturePyramid`.

    Args:
        in_dim: pyramid channels.
        conv_dim: transformer width (256).
        mask_dim: mask feature channels (256).
        num_layers: deformable encoder layers (6).
        num_heads / num_points / ffn_dim: 8 / 4 / 1024 in Mask2Former.
        grad_checkpointing: in training, keep only each deformable layer's input and recompute
            the layer in backward (``torch.utils.checkpoint``), and inside it the sampled values
            one level at a time (see :class:`MSDeformAttn`). The sampled values (``points x
            levels`` copies of the value map per layer) dominate the decoder's activations; this
            cuts its training memory to under a third at the cost of a second forward of the
            layers (bench/bench_msda_memory.py measures both). Results are unchanged.
    """

    def __init__(self, in_dim: int, conv_dim: int = 256, mask_dim: int = 256,
                 num_layers: int = 6, num_heads: int = 8, num_points: int = 4,
                 ffn_dim: int = 1024, dropout: float = 0.0, grad_checkpointing: bool = True) -> None:
        super().__init__()
        self.grad_checkpointing = grad_checkpointing
        self.num_levels = 3
        self.input_proj = nn.ModuleList(_proj(in_dim, conv_dim, bias=True) for _ in range(self.num_levels))
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, conv_dim).normal_())
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, self.num_levels, num_heads, num_points, ffn_dim, dropout,
                                   recompute_sampling=grad_checkpointing)
            for _ in range(num_layers))
        self.lateral = _proj(in_dim, conv_dim)
        self.output_conv = _proj(conv_dim, conv_dim, kernel=3, act=True)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        self.conv_dim, self.mask_dim = conv_dim, mask_dim
        # Mask2Former MSDeformAttnPixelDecoder: input projections xavier-uniform (gain 1, bias 0),
        # the FPN lateral / output convs and the mask-feature conv c2_xavier_fill
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        for conv in (self.lateral[0], self.output_conv[0], self.mask_features):
            c2_xavier_fill(conv)

    def forward(self, pyramid: FeaturePyramid) -> PixelDecoderOutput:
        """Pyramid ``[B, in_dim, H/s, W/s]`` -> mask features + 3 refined scales."""
        maps = [pyramid.s32, pyramid.s16, pyramid.s8]  # low to high resolution
        shapes = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        srcs, poses = [], []
        for lvl, (m, proj) in enumerate(zip(maps, self.input_proj)):
            h, w = shapes[lvl]
            srcs.append(proj(m).flatten(2).transpose(1, 2))  # B,hw,C
            pos = sine_position_embedding(h, w, self.conv_dim, m).flatten(2).transpose(1, 2)
            poses.append(pos + self.level_embed[lvl].view(1, 1, -1))
        src, pos = torch.cat(srcs, 1), torch.cat(poses, 1)
        ref = _reference_points(shapes, src)
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                src = checkpoint(layer, src, pos, ref, shapes, use_reentrant=False)
            else:
                src = layer(src, pos, ref, shapes)
        b = src.shape[0]
        multi_scale = [s.transpose(1, 2).reshape(b, self.conv_dim, h, w)
                       for s, (h, w) in zip(src.split([h * w for h, w in shapes], 1), shapes)]
        lateral = self.lateral(pyramid.s4)
        fused = lateral + F.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear",
                                        align_corners=False)
        mask_features = self.mask_features(self.output_conv(fused))
        return PixelDecoderOutput(mask_features, multi_scale)
