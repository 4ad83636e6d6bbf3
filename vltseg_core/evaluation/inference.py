"""Test-time inference: whole image or sliding window (paper: 1024 crops, stride 768), flip.

Scores come back at the label resolution so predictions and ground truth always align,
whatever size the network ran at. Windows follow mmseg's ``slide_inference``: a grid of
``ceil((H - crop) / stride) + 1`` rows whose last window is shifted inside the image, logits
summed and divided by the per-pixel window count. Padding to the model's stride happens in one
place, the model (``VLTSeg.forward``), which crops its scores and clips its boxes to the real
image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class InferenceSpec:
    mode: Literal["whole", "slide"] = "whole"
    crop_size: tuple[int, int] = (1024, 1024)  # (H, W)
    stride: tuple[int, int] = (768, 768)
    resize: tuple[int, int] | None = None  # (H, W) the network sees; None = native
    flip: bool = False
    short_side: int | None = None  # alternatively: keep aspect, scale the short side to this
    scale: tuple[int, int] | None = None  # or keep aspect, fit in (long, short) (mmseg Resize)

    @classmethod
    def from_config(cls, cfg: Any) -> "InferenceSpec":
        return cls(cfg.mode, tuple(cfg.crop_size), tuple(cfg.stride),
                   None if cfg.resize is None else tuple(cfg.resize), cfg.flip,
                   scale=None if getattr(cfg, "scale", None) is None else tuple(cfg.scale))


def _run(model: nn.Module, x: Tensor) -> tuple[Tensor | None, Any]:
    """Forward normalised ``x [B,3,H,W]``: (float32 scores ``[B,K,H,W]``, per-image dets)."""
    out = model(x)
    scores = None if out.sem_seg is None else out.sem_seg.float()
    return scores, out.detections


def slide_scores(model: nn.Module, x: Tensor, crop: tuple[int, int],
                 stride: tuple[int, int]) -> Tensor:
    """``[B,K,H,W]`` class scores of normalised ``x [B,3,H,W]`` by overlapping windows."""
    (hc, wc), (hs, ws) = crop, stride
    b, _, h, w = x.shape
    rows = max(h - hc + hs - 1, 0) // hs + 1
    cols = max(w - wc + ws - 1, 0) // ws + 1
    total: Tensor | None = None
    count = x.new_zeros((1, 1, h, w))
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * hs, max(h - hc, 0)), min(c * ws, max(w - wc, 0))
            y2, x2 = min(y1 + hc, h), min(x1 + wc, w)
            scores = _run(model, x[..., y1:y2, x1:x2])[0]
            if total is None:
                total = x.new_zeros((b, scores.shape[1], h, w))
            total[..., y1:y2, x1:x2] += scores
            count[..., y1:y2, x1:x2] += 1
    assert total is not None
    return total / count


@dataclass
class Prediction:
    scores: Tensor | None  # [K, H, W] at label size
    detections: dict[str, Tensor] | None  # boxes in original image pixels


def _scores(model: nn.Module, x: Tensor, spec: InferenceSpec) -> tuple[Tensor | None, Any]:
    if spec.mode == "slide":
        return slide_scores(model, x, spec.crop_size, spec.stride), None
    return _run(model, x)


def network_size(hw: tuple[int, int], spec: InferenceSpec) -> tuple[int, int]:
    """The (H, W) an image of size ``hw`` is run at."""
    if spec.resize is not None:
        return (int(spec.resize[0]), int(spec.resize[1]))
    if spec.scale is not None:
        from vltseg_core.data.transforms import rescale_size

        return rescale_size((int(hw[0]), int(hw[1])), spec.scale)
    if spec.short_side is not None:
        f = spec.short_side / min(hw)
        return (int(hw[0] * f + 0.5), int(hw[1] * f + 0.5))
    return (int(hw[0]), int(hw[1]))


@torch.no_grad()
def infer(model: nn.Module, image: Tensor, spec: InferenceSpec,
          out_size: tuple[int, int] | None = None) -> Prediction:
    """Predict one ``uint8 [3,H,W]`` image; scores resized to ``out_size`` (default ``H, W``)."""
    device = next(model.parameters()).device
    h, w = image.shape[-2:]
    out_size = out_size or (h, w)
    x = image[None].to(device).float()
    size = network_size((h, w), spec)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = model.preprocess(x)
    scores, dets = _scores(model, x, spec)
    if spec.flip and scores is not None:
        flipped, _ = _scores(model, x.flip(-1), spec)
        scores = (scores + flipped.flip(-1)) / 2
    if scores is not None:
        scores = F.interpolate(scores, size=out_size, mode="bilinear", align_corners=False)[0]
    det = _rescale_boxes(dets[0], x.shape[-2:], (h, w)) if dets else None
    return Prediction(scores, det)


def _rescale_boxes(det: dict[str, Tensor], net_hw: tuple[int, int],
                   image_hw: tuple[int, int]) -> dict[str, Tensor]:
    sy, sx = image_hw[0] / net_hw[0], image_hw[1] / net_hw[1]
    boxes = det["boxes"].float() * torch.tensor([sx, sy, sx, sy], device=det["boxes"].device)
    return {"boxes": boxes.cpu(), "scores": det["scores"].float().cpu(),
            "labels": det["labels"].cpu()}
