"""Export-time rewrites of ops that do not export (or export badly), applied only while tracing.

1. Bilinear sampling by row gathers: a drop-in for `F.grid_sample` that exports without
GridSample. Why: TensorRT's GridSample layer has had wrong-result bugs (non-contiguous inputs,
some padding modes, FP16 on some versions), and older ONNX consumers lack the op entirely. Multi-scale
deformable attention (Deformable DETR / Mask2Former pixel decoder) samples with
`F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)`; the same
result is four row gathers plus a weighted sum, which every runtime supports (ONNX `Gather` on a
`[N*H*W, C]` table, no per-channel index tensor). Used only while exporting (`gather_grid_sample`),
so training and eager inference keep the fused kernel.

2. Multi-scale deformable attention (the pixel decoder's `MSDeformAttn`) as one gather-based
routine per module: value rows are gathered straight from the projected, zero-bordered
`[B, nh, S', C/nh]` table, bilinear and attention weights are folded together and every level
is reduced in one weighted sum, so the graph has no per-level `[B*nh, C, h, w]` transposes and no
stack of sampled levels (what dominated ONNX Runtime's time in the pixel decoder besides the GEMMs).

3. torchvision `batched_nms` without its `boxes.numel() == 0` early return, which torch.export
cannot guard on when the box count is data-dependent (after a score threshold); ONNX
NonMaxSuppression handles empty inputs itself.

4. The encoder's self-attention as ONNX Runtime's fused MultiHeadAttention (attention.py), for
graphs exported with target "onnxruntime".

All are swapped in by `export_rewrites()` for the duration of an export and verified by the
parity check, which runs the original ops in eager PyTorch.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import boxes as box_ops

from vltseg_core.export.attention import fused_attention_forwards

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


GATHER_CHUNK_BYTES = 32 << 20  # sampled rows per gather (about one L3); smaller: no faster, slower export


def _padded_value_table(value: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """[B, nh, S, ch] level-concatenated maps -> [B*nh*R, ch] rows of the same maps, each with a
    one-pixel zero border, so every bilinear corner of a point within a pixel of the map has a
    row (zeros outside): R = sum((h+2)*(w+2))."""
    b, nh, _, ch = value.shape
    maps, start = [], 0
    for h, w in shapes:
        level = value[:, :, start:start + h * w].reshape(b, nh, h, w, ch)
        maps.append(F.pad(level, (0, 0, 1, 1, 1, 1)).reshape(b, nh, (h + 2) * (w + 2), ch))
        start += h * w
    return torch.cat(maps, 2).reshape(-1, ch)


def msdeform_attn_forward_for_export(
    self: torch.nn.Module,
    query: torch.Tensor,
    reference_points: torch.Tensor,
    value: torch.Tensor,
    shapes: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """`MSDeformAttn.forward` (vltseg_core/models/pixel_decoder.py) by gathers, same result.

    query [B,Lq,C], reference_points [B|1,Lq,2] (x, y in [0, 1]), value [B,S,C] -> [B,Lq,C].
    Each (query, head) reads T = levels x points x 4 bilinear corners rows of its head's value
    table and sums them with (bilinear x attention) weights in one small MatMul. Shaped for
    ONNX Runtime CPU, which decides the cost (measured at B/16, 1024x512, 6 layers):
    - x and y offsets come from two linears (the weight rows split at trace time), so no
      elementwise op has an innermost axis of 2, and per-level constants are expanded to
      [1,1,heads,levels,points]: ORT's broadcasting is slow over short inner spans (a [3,1,2]
      operand: 8 ms per op; [1,1,1,3,1]: 2 ms; [1,1,8,3,4]: <1 ms);
    - one zero-bordered table makes the corner indices i, i+1, i+pitch, i+pitch+1 of a single
      clamped top-left index, with out-of-map corners reading zeros; points entirely off the map
      get weight 0;
    - queries are gathered in chunks of ~GATHER_CHUNK_BYTES of rows per image, which stay in
      cache for the MatMul (gather + MatMul 0.19 s instead of 0.30 s unchunked); the chunk does
      not depend on the batch size, so a graph with a dynamic batch keeps it dynamic.
    Slower alternatives tried: a 2x2-neighbourhood table (one gather per point; 4x the table no
    longer fits in cache), corner-major tap order (the four corners of a point are neighbouring
    rows, best gathered one after another).
    """
    b, lq, c = query.shape
    nh, nl, npnt = self.num_heads, self.num_levels, self.num_points
    ch, dev, dt = c // nh, query.device, query.dtype
    table = _padded_value_table(self.value_proj(value).view(b, -1, nh, ch).transpose(1, 2), shapes)
    rows_per_head = sum((h + 2) * (w + 2) for h, w in shapes)

    weight_xy = self.sampling_offsets.weight.view(-1, 2, c)
    bias_xy = self.sampling_offsets.bias.view(-1, 2)
    ox = F.linear(query, weight_xy[:, 0], bias_xy[:, 0]).view(b, lq, nh, nl, npnt)
    oy = F.linear(query, weight_xy[:, 1], bias_xy[:, 1]).view(b, lq, nh, nl, npnt)
    attn = self.attention_weights(query).view(b, lq, nh, nl * npnt).softmax(-1).view(b, lq, nh, nl, npnt)

    def per_level(values: Sequence[int], dtype: torch.dtype = dt) -> torch.Tensor:
        """[1, 1, heads, levels, points]: broadcast over queries only (long inner spans)."""
        return torch.tensor(values, device=dev, dtype=dtype).view(1, 1, 1, nl, 1).expand(1, 1, nh, nl, npnt)

    width, height = per_level([w for _, w in shapes]), per_level([h for h, _ in shapes])
    first, start = [], 0
    for h, w in shapes:
        first.append(start + w + 3)  # row of map pixel (0, 0) inside its border
        start += (h + 2) * (w + 2)
    heads = (torch.arange(b * nh, device=dev, dtype=torch.int32) * rows_per_head).view(b, 1, nh, 1, 1)
    ref = reference_points.view(-1, lq, 1, 1, 1, 2)
    x = ox + (ref[..., 0] * width - 0.5)  # pixel coordinates, as grid_sample(align_corners=False)
    y = oy + (ref[..., 1] * height - 0.5)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    cx = torch.minimum(x0.clamp_min(-1), width - 1)  # top-left corner, within the border
    cy = torch.minimum(y0.clamp_min(-1), height - 1)
    a = attn * ((cx == x0) & (cy == y0)).to(dt)  # a point off the map (and its border) adds 0
    # integer maths from here: an fp16 variant of the graph would round float indices
    pitch_i = per_level([w + 2 for _, w in shapes], torch.int32)
    i00 = cy.to(torch.int32) * pitch_i + cx.to(torch.int32) + (per_level(first, torch.int32) + heads)
    i10 = i00 + pitch_i
    index = torch.stack([i00, i00 + 1, i10, i10 + 1], -1).view(b, lq, nh, nl * npnt * 4)
    ay1 = a * fy
    ay0 = a - ay1
    w01, w11 = ay0 * fx, ay1 * fx
    weight = torch.stack([ay0 - w01, w01, ay1 - w11, w11], -1).view(b, lq, nh, 1, nl * npnt * 4)

    taps = nl * npnt * 4  # corners of a point side by side: neighbouring rows, gathered in turn
    chunk = max(1, GATHER_CHUNK_BYTES // (nh * taps * ch * table.element_size()))
    outs = []
    for s in range(0, lq, chunk):
        e = min(lq, s + chunk)
        rows = table.index_select(0, index[:, s:e].reshape(-1)).view(b, e - s, nh, taps, ch)
        outs.append(weight[:, s:e] @ rows)  # B,chunk,nh,1,ch
    out = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    return self.output_proj(out.reshape(b, lq, c))


def _deformable_attention_modules(model: torch.nn.Module | None) -> list[torch.nn.Module]:
    if model is None:
        return []
    from vltseg_core.models.pixel_decoder import MSDeformAttn

    return [m for m in model.modules() if isinstance(m, MSDeformAttn)]


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
def export_rewrites(grid_sample: bool = True, model: torch.nn.Module | None = None,
                    fused_attention: bool = False) -> Iterator[None]:
    """Swap in the export-friendly ops above for the block (an export trace), then restore.

    fused_attention: the encoder's attention modules call `vltseg::attention` (attention.py),
    exported as ONNX Runtime's MultiHeadAttention; needs `model`.

    With grid_sample, the `MSDeformAttn` instances inside `model` get the gather forward (an
    instance attribute, removed afterwards). Patches module attributes, so callers that look
    them up at call time (`F.grid_sample`,
    `torchvision.ops.batched_nms`, torchvision's detection heads via `box_ops.batched_nms`)
    are affected; names bound at import time are not, hence the graph check for GridSample in
    the exporter.
    """
    attention = _deformable_attention_modules(model) if grid_sample else []
    for module in attention:
        module.forward = types.MethodType(msdeform_attn_forward_for_export, module)
    if grid_sample:
        F.grid_sample = _grid_sample_for_export
    box_ops.batched_nms = batched_nms_for_export
    torchvision.ops.batched_nms = batched_nms_for_export
    try:
        with fused_attention_forwards(model) if fused_attention and model is not None \
                else contextlib.nullcontext():
            yield
    finally:
        for module in attention:
            del module.forward
        F.grid_sample = _ORIGINAL_GRID_SAMPLE
        box_ops.batched_nms = _ORIGINAL_BATCHED_NMS
        torchvision.ops.batched_nms = _ORIGINAL_BATCHED_NMS
