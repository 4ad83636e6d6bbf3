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

from .matcher import HungarianMatcher, Match, point_sample
from .transformer_decoder import DecoderOutput, MaskPredictions


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """Host -> device without waiting for the device's queue (a blocking copy would: CUDA stages
    pageable host memory at once, so the host tensor may go away right after)."""
    return x.to(device, non_blocking=True)


def semantic_to_instances(sem_segs: Sequence[Tensor], num_classes: int, ignore_index: int = 255
                          ) -> tuple[list[Tensor], list[Tensor]]:
    """Per image ``sem_seg [H, W]`` train ids -> ``labels [T]`` and binary ``masks [T, H, W]``,
    one mask per class present (ignore and out-of-range ids are in no mask).

    Which classes are present is read back for all images in one transfer (``torch.unique``
    would sync once per image, and boolean indexing once more).
    """
    if not sem_segs:
        return [], []
    present = []
    for sem in sem_segs:  # K+1 flags per image; slot K collects ignore and out-of-range ids
        ids = torch.where((sem >= 0) & (sem < num_classes), sem, num_classes).flatten()
        present.append(torch.zeros(num_classes + 1, dtype=torch.bool, device=sem.device)
                       .index_fill_(0, ids, True))
    flags = torch.stack(present)[:, :num_classes].cpu().numpy()  # the sync: B x K booleans
    labels = [to_device(torch.as_tensor(row.nonzero()[0], dtype=torch.int64), sem.device)
              for row, sem in zip(flags, sem_segs)]
    return labels, [sem[None] == lab[:, None, None] for sem, lab in zip(sem_segs, labels)]


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


def sigmoid_ce_loss(logits: Tensor, targets: Tensor, num_masks: float | Tensor) -> Tensor:
    """``[N, P]`` logits vs 0/1 targets: mean over points, summed over masks / num_masks."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float | Tensor) -> Tensor:
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
        labels, masks = semantic_to_instances(sem_segs, self.num_classes, self.ignore_index)
        num_masks = self._num_masks(labels, outputs.logits.device)
        layers = [MaskPredictions(outputs.logits, outputs.masks)] + list(outputs.aux)
        matches = self.matcher(layers, labels, masks)  # all layers at once: one host transfer
        losses: dict[str, Tensor] = {}
        for i, (pred, indices) in enumerate(zip(layers, matches)):
            suffix = "" if i == 0 else f"_{i - 1}"
            for name, value in self._layer_losses(pred, indices, labels, masks, num_masks).items():
                losses[name + suffix] = value * self.weights[name]
        return losses

    def _num_masks(self, labels: Sequence[Tensor], device: torch.device) -> Tensor:
        """Target masks per image averaged over ranks, at least 1; stays on the device."""
        total = to_device(torch.tensor(float(sum(len(lab) for lab in labels))), device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            total = total / dist.get_world_size()
        return total.clamp_min(1.0)

    def _layer_losses(self, pred: MaskPredictions, indices: Sequence[Match], labels: Sequence[Tensor],
                      masks: Sequence[Tensor], num_masks: Tensor) -> dict[str, Tensor]:
        device = pred.logits.device
        batch_idx = to_device(torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]), device)
        query_idx = to_device(torch.cat([q for q, _ in indices]), device)
        target_idx = [to_device(t, device) for _, t in indices]
        target_classes = torch.full(pred.logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
        target_classes[batch_idx, query_idx] = torch.cat([lab[t] for lab, t in zip(labels, target_idx)])
        loss_ce = F.cross_entropy(pred.logits.transpose(1, 2).float(), target_classes, self.empty_weight)
        if query_idx.numel() == 0:
            zero = pred.masks.sum() * 0.0
            return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}
        src = pred.masks[batch_idx, query_idx][:, None].float()  # N,1,h,w
        tgt = torch.cat([m[t] for m, t in zip(masks, target_idx)])[:, None].float()
        with torch.no_grad():
            coords = uncertain_point_coords(src, self.num_points, self.oversample_ratio,
                                            self.importance_sample_ratio)
            point_labels = point_sample(tgt, coords)[:, 0]  # N,P
        point_logits = point_sample(src, coords)[:, 0]
        return {"loss_ce": loss_ce, "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
                "loss_dice": dice_loss(point_logits, point_labels, num_masks)}
