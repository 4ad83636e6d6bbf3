"""Export-time rewrites of ops that do not export (or export badly), applied only while tracing.

1. Bilinear sampling by row gathers: a drop-in for `F.grid_sample` that exports without
GridSample. Why: TensorRT's GridSample layer has had wrong-result bugs (non-contiguous inputs, some padding
modes, FP16 on some versions), and older ONNX consumers lack the op entirely. Multi-scale
deformable attention (Deformable DETR / Mask2Former pixel decoder) samples with
`F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)`; the same
result is four row gathers plus a weighted sum, which every runtime supports (ONNX `Gather` on a
`[N*H*W, C]` table, no per-channel index tensor). Used only while exporting (`gather_grid_sample`),
so training and eager inference keep the fused kernel.

2. torchvision `batched_nms` without its `boxes.numel() == 0` early return, which torch.export
cannot guard on when the box count is data-dependent (after a score threshold); ONNX
NonMaxSuppression handles empty inputs itself.

Both are swapped in by `export_rewrites()` for the duration of an export and verified by the
parity check, which runs the original ops in eager PyTorch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import boxes as box_ops

_ORIGINAL_GRID_SAMPLE: Callable[..., torch.Tensor] = F.grid_sample
_ORIGINAL_BATCHED_NMS: Callable[..., torch.Tensor] = box_ops.batched_nms


def _unnormalize(coord: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Map [-1, 1] grid coordinates to pixel coordinates, exactly as ATen's grid_sampler does."""
    if align_corners:
        return (coord + 1) * 0.5 * (size - 1)
    return ((coord + 1) * size - 1) * 0.5


def bilinear_grid_sample(
    image: torch.Tensor, grid: torch.Tensor, align_corners: bool = False
) -> torch.Tensor:
    """`F.grid_sample(image, grid, "bilinear", "zeros", align_corners)` with gathers only.

    image: NxCxHxW, grid: NxHgxWgx2 (x, y in [-1, 1]) -> NxCxHgxWg. Out-of-image corners
    contribute zero (padding_mode="zeros").
    """
    n, c, h, w = image.shape
    hg, wg = grid.shape[1], grid.shape[2]
    x = _unnormalize(grid[..., 0], w, align_corners).reshape(n, hg * wg)  # N x L
    y = _unnormalize(grid[..., 1], h, align_corners).reshape(n, hg * wg)
    x0, y0 = torch.floor(x), torch.floor(y)
    table = image.permute(0, 2, 3, 1).reshape(n * h * w, c)  # (N*H*W) x C rows
    base = (torch.arange(n, device=image.device) * (h * w)).unsqueeze(1)  # N x 1
    out = image.new_zeros(n, hg * wg, c)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            valid = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            weight = weight * valid.to(weight.dtype)
            index = yi.clamp(0, h - 1).long() * w + xi.clamp(0, w - 1).long() + base
            rows = table[index.reshape(-1)].reshape(n, hg * wg, c)
            out = out + rows * weight.unsqueeze(-1)
    return out.permute(0, 2, 1).reshape(n, c, hg, wg)


def _grid_sample_for_export(
    input: torch.Tensor,  # noqa: A002 - same signature as F.grid_sample
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool | None = None,
) -> torch.Tensor:
    if input.dim() == 4 and mode == "bilinear" and padding_mode == "zeros":
        return bilinear_grid_sample(input, grid, bool(align_corners))
    return _ORIGINAL_GRID_SAMPLE(input, grid, mode, padding_mode, align_corners)


def batched_nms_for_export(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """torchvision's coordinate-trick batched NMS, valid for zero boxes without branching.

    boxes Nx4 xyxy, scores N, idxs N (class) -> kept indices, by decreasing score.
    """
    max_coordinate = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)


@contextlib.contextmanager
def export_rewrites(grid_sample: bool = True) -> Iterator[None]:
    """Swap in the export-friendly ops above for the block (an export trace), then restore.

    Patches module attributes, so callers that look them up at call time (`F.grid_sample`,
    `torchvision.ops.batched_nms`, torchvision's detection heads via `box_ops.batched_nms`)
    are affected; names bound at import time are not, hence the graph check for GridSample in
    the exporter.
    """
    if grid_sample:
        F.grid_sample = _grid_sample_for_export
    box_ops.batched_nms = batched_nms_for_export
    torchvision.ops.batched_nms = batched_nms_for_export
    try:
        yield
    finally:
        F.grid_sample = _ORIGINAL_GRID_SAMPLE
        box_ops.batched_nms = _ORIGINAL_BATCHED_NMS
        torchvision.ops.batched_nms = _ORIGINAL_BATCHED_NMS
