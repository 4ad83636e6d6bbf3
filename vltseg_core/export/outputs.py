"""The seg and det outputs of an exported graph, from the model's eval output: class ids with
their confidence, and detections padded to a fixed count. The export wrapper (`onnx.py`) traces
them into the graph and the torch backend (`runtime/backends.py`) calls them eagerly, so every
backend returns the same tensors. torch is imported inside the functions: the runtime imports
this module without needing torch for ONNX Runtime or TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def confidence_and_ids(scores: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """BxKxHxW class scores -> (BxHxW uint8 class id, BxHxW float32 max class probability).

    mode: "probs" scores are already probabilities; "logits" softmax over K; "normalize" the
    scores are non-negative but unnormalised (Mask2Former's semantic inference sums query mask
    probabilities weighted by class probabilities), so divide by their sum over K.
    """
    import torch

    scores = scores.float()
    if mode == "logits":
        probs = scores.softmax(dim=1)
    elif mode == "normalize":
        probs = scores.clamp_min(0) / scores.clamp_min(0).sum(dim=1, keepdim=True).clamp_min(1e-6)
    else:
        probs = scores
    confidence, ids = probs.max(dim=1)
    # via float: TensorRT converts to/from UINT8 only from FLOAT/HALF (class ids <= 255 are exact)
    return ids.to(torch.float32).to(torch.uint8), confidence


def pad_detections(
    detections: Sequence[dict[str, Tensor]], max_detections: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Variable-length per-image detections -> fixed [B,N,...] tensors, best first, zero-padded.

    Padding before `topk` keeps every shape static after this point (the NMS output length is
    data-dependent); padded rows have score 0, box 0, label 0.
    """
    import torch

    n = max_detections
    boxes, scores, labels = [], [], []
    for det in detections:
        s = torch.cat([det["scores"].float(), det["scores"].new_zeros(n, dtype=torch.float32)])
        top_scores, top = torch.topk(s, n)
        b = torch.cat([det["boxes"].float(), det["boxes"].new_zeros(n, 4, dtype=torch.float32)])
        lab = torch.cat([det["labels"].long(), det["labels"].new_zeros(n, dtype=torch.int64)])
        boxes.append(b[top])
        scores.append(top_scores)
        labels.append(lab[top])
    scores_t = torch.stack(scores)
    return torch.stack(boxes), scores_t, torch.stack(labels), (scores_t > 0).sum(dim=1)
