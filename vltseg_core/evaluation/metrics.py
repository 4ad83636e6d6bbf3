"""Semantic segmentation metrics from one confusion matrix accumulated over a dataset.

The matrix is ``int64[K, K + 1]``: rows are ground-truth classes, columns predicted classes,
and the extra last column counts predictions outside ``0..K-1`` (e.g. 255 or an id the
benchmark ignores). Such "void" predictions are misses for the ground-truth class but false
positives for no class — exactly how cityscapesscripts treats predictions of ignored ids.
Pixels whose ground truth is ``ignore_index`` are skipped.

IoU_c = TP / (TP + FP + FN) and Acc_c = TP / (TP + FN) are NaN when their denominator is 0
(class absent from both ground truth and prediction); means skip NaNs, as mmseg and
cityscapesscripts both do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` in place over all ranks when torch.distributed is initialised (no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """``int64[K, K + 1]`` counts for one batch; ``pred``/``target`` are integer tensors of
    equal shape (any layout, e.g. ``[B, H, W]``)."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).to(target.device).long()
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bad.any():
        raise ValueError(f"target has values {target[bad].unique()[:8].tolist()} outside "
                         f"0..{num_classes - 1} and != ignore {ignore_index}")
    k1 = num_classes + 1
    pred = torch.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    idx = target[valid] * k1 + pred[valid]
    return torch.bincount(idx, minlength=num_classes * k1).reshape(num_classes, k1)


@dataclass(frozen=True)
class SegMetrics:
    """Per-class IoU/accuracy (float64[K], NaN where undefined) and their summaries."""

    iou: np.ndarray
    acc: np.ndarray
    aAcc: float  # noqa: N815 - the name used in papers and mmseg logs
    mIoU: float  # noqa: N815
    mAcc: float  # noqa: N815

    def as_dict(self, class_names: Sequence[str]) -> dict:
        """JSON-ready: fractions in [0, 1]; NaN becomes None."""
        def f(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {"mIoU": f(self.mIoU), "mAcc": f(self.mAcc), "aAcc": f(self.aAcc),
                "IoU": {n: f(v) for n, v in zip(class_names, self.iou)},
                "Acc": {n: f(v) for n, v in zip(class_names, self.acc)}}


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def metrics_from_matrix(mat: np.ndarray | torch.Tensor,
                        classes: Sequence[int] | None = None) -> SegMetrics:
    """IoU, Acc, aAcc, mIoU, mAcc from ``[K, K + 1]`` (or ``[K, K]``) counts.

    ``classes`` restricts the means (e.g. SYNTHIA's 16 classes); per-class values and aAcc
    always use the whole matrix.
    """
    m = torch.as_tensor(mat).double().cpu().numpy()
    k = m.shape[0]
    tp = np.diag(m[:, :k])
    gt = m.sum(1)
    pred = m[:, :k].sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(gt + pred - tp > 0, tp / (gt + pred - tp), np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    a_acc = float(tp.sum() / gt.sum()) if gt.sum() > 0 else float("nan")
    sel = list(range(k)) if classes is None else list(classes)
    return SegMetrics(iou, acc, a_acc, _nanmean(iou[sel]), _nanmean(acc[sel]))


class ConfusionMatrix:
    """Accumulates :func:`confusion_matrix` over batches; ``reduce()`` sums across ranks."""

    def __init__(self, num_classes: int, ignore_index: int = 255,
                 device: torch.device | str | None = None) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.mat = torch.zeros((num_classes, num_classes + 1), dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of label maps (``pred`` = argmax ids, same shape as ``target``)."""
        batch = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.mat += batch.to(self.mat.device)

    def reduce(self, fn: Callable[[torch.Tensor], torch.Tensor] = all_reduce_sum) -> None:
        """Combine the per-rank matrices (default: all_reduce SUM when distributed)."""
        self.mat = fn(self.mat)

    def compute(self, classes: Sequence[int] | None = None) -> SegMetrics:
        return metrics_from_matrix(self.mat, classes)

    @property
    def matrix(self) -> np.ndarray:
        """``int64[K, K]`` ground truth x prediction, without the void column."""
        return self.mat[:, : self.num_classes].cpu().numpy()
