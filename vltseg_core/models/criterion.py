"""Mask2Former set criterion: Hungarian matching, class cross-entropy (no-object weight
0.1), mask BCE + dice on importance-sampled points (PointRend-style: oversample 3x, keep
75 % most uncertain + 25 % random, 12544 points), weights 2 / 5 / 5, repeated on every
auxiliary layer output (Cheng et al., CVPR 2022; point loss from Kirillov et al.,
PointRend, CVPR 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .matcher import HungarianMatcher, point_sample
from .transformer_decoder import DecoderOutput, MaskPredictions


def semantic_to_instances(sem_seg: Tensor, num_classes: int, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """``sem_seg [H, W]`` train ids -> (``labels [T]``, binary ``masks [T, H, W]``), one mask
    per class present (ignore and out-of-range ids are in no mask)."""
    classes = torch.unique(sem_seg)
    classes = classes[(classes != ignore_index) & (classes >= 0) & (classes < num_classes)]
    masks = sem_seg[None] == classes[:, None, None]
    return classes.long(), masks


def uncertain_point_coords(logits: Tensor, num_points: int, oversample_ratio: float,
                           importance_sample_ratio: float) -> Tensor:
    """``logits [N, 1, H, W]`` -> ``[N, P, 2]`` coords in [0, 1]: the ``importance`` share of
    points where ``|logit|`` is smallest among ``oversample * P`` random candidates, the rest
    uniformly random."""
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(n, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits, candidates).abs()[:, 0]  # N,num_sampled
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, idx[..., None].expand(-1, -1, 2))
    rand = torch.rand(n, num_points - num_uncertain, 2, device=logits.device)
    return torch.cat([chosen, rand], dim=1)


def sigmoid_ce_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """``[N, P]`` logits vs 0/1 targets: mean over points, summed over masks / num_masks."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """``[N, P]``: 1 - soft dice per mask, summed / num_masks."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    return (1 - (numerator + 1) / (probs.sum(-1) + targets.sum(-1) + 1)).sum() / num_masks


class SetCriterion(nn.Module):
    """Mask2Former losses for semantic segmentation targets.

    Returns weighted terms ``loss_ce``, ``loss_mask``, ``loss_dice`` and ``loss_<term>_<i>``
    for auxiliary layer ``i``.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, class_weight: float = 2.0,
                 mask_weight: float = 5.0, dice_weight: float = 5.0, no_object_weight: float = 0.1,
                 num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes, self.matcher, self.ignore_index = num_classes, matcher, ignore_index
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.num_points, self.oversample_ratio = num_points, oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def forward(self, outputs: DecoderOutput, sem_segs: Sequence[Tensor]) -> dict[str, Tensor]:
        """``outputs`` from the decoder (masks at stride 4 of the padded input);
        ``sem_segs`` per image ``[H, W]`` at the padded input size (255 = ignore)."""
        targets = [semantic_to_instances(s, self.num_classes, self.ignore_index) for s in sem_segs]
        labels = [t[0] for t in targets]
        masks = [t[1] for t in targets]
        num_masks = self._num_masks(labels, outputs.logits.device)
        losses: dict[str, Tensor] = {}
        layers = [MaskPredictions(outputs.logits, outputs.masks)] + list(outputs.aux)
        for i, pred in enumerate(layers):
            suffix = "" if i == 0 else f"_{i - 1}"
            for name, value in self._layer_losses(pred, labels, masks, num_masks).items():
                losses[name + suffix] = value * self.weights[name]
        return losses

    def _num_masks(self, labels: Sequence[Tensor], device: torch.device) -> float:
        total = torch.tensor(float(sum(len(lab) for lab in labels)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            total = total / dist.get_world_size()
        return max(total.item(), 1.0)

    def _layer_losses(self, pred: MaskPredictions, labels: Sequence[Tensor], masks: Sequence[Tensor],
                      num_masks: float) -> dict[str, Tensor]:
        indices = self.matcher(pred.logits, pred.masks, labels, masks)
        device = pred.logits.device
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([q for q, _ in indices]).to(device)
        target_classes = torch.full(pred.logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
        target_classes[batch_idx, query_idx] = torch.cat(
            [lab[t.to(lab.device)] for lab, (_, t) in zip(labels, indices)]).to(device)
        loss_ce = F.cross_entropy(pred.logits.transpose(1, 2).float(), target_classes, self.empty_weight)
        if query_idx.numel() == 0:
            zero = pred.masks.sum() * 0.0
            return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}
        src = pred.masks[batch_idx, query_idx][:, None].float()  # N,1,h,w
        tgt = torch.cat([m[t.to(m.device)] for m, (_, t) in zip(masks, indices)])[:, None].float()
        with torch.no_grad():
            coords = uncertain_point_coords(src, self.num_points, self.oversample_ratio,
                                            self.importance_sample_ratio)
            point_labels = point_sample(tgt.to(device), coords)[:, 0]  # N,P
        point_logits = point_sample(src, coords)[:, 0]
        return {"loss_ce": loss_ce, "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
                "loss_dice": dice_loss(point_logits, point_labels, num_masks)}
