"""Hungarian matching of predicted masks to ground-truth masks (Mask2Former).

The cost of assigning query q to target t is
``w_class * (-p_q(class_t)) + w_mask * BCE(q, t) + w_dice * dice(q, t)``, with mask costs
evaluated on ``num_points`` points sampled uniformly at random (shared by all pairs of one
image), and the assignment minimising the total cost is found with
``scipy.optimize.linear_sum_assignment`` on the host. Every decoder layer of a step is matched
at once, so the cost matrices of all layers and images travel to the host in one transfer
(one GPU sync per step instead of one per layer and image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn


def point_sample(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly sample ``maps [N, C, H, W]`` at ``coords [N, P, 2]`` ((x, y) in [0, 1])
    -> ``[N, C, P]`` (PointRend's ``point_sample``)."""
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # N,P,1,2
    return F.grid_sample(maps, grid, mode="bilinear", align_corners=False).squeeze(3)


def pairwise_sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of every prediction vs every target.

    ``logits [Q, P]``, ``targets [T, P]`` (0/1) -> ``[Q, T]``.
    """
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]  # Q,T


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss (1 - soft dice, +1 smoothing) of every pair -> ``[Q, T]``."""
    probs = logits.sigmoid()
    inter = 2 * probs @ targets.T
    return 1 - (inter + 1) / (probs.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


Match = tuple[Tensor, Tensor]  # (query indices, target indices), int64 on the host


def assign(cost: np.ndarray) -> Match:
    """Minimum-cost assignment of a host ``cost [Q, T]`` -> (query indices, target indices),
    int64, ``min(Q, T)`` pairs sorted by query index."""
    rows, cols = linear_sum_assignment(np.asarray(cost, dtype=np.float64))
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


class HungarianMatcher(nn.Module):
    """Bipartite matching of queries to target masks (Mask2Former weights 2 / 5 / 5)."""

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 12544) -> None:
        super().__init__()
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, masks: Tensor, labels: Tensor, target_masks: Tensor) -> Tensor:
        """One image: ``logits [Q, K+1]``, ``masks [Q, h, w]``, ``labels [T]``,
        ``target_masks [T, H, W]`` -> cost ``[Q, T]``."""
        prob = logits.float().softmax(-1)
        cost_class = -prob[:, labels]  # Q,T
        coords = torch.rand(1, self.num_points, 2, device=masks.device)
        with torch.autocast(device_type=masks.device.type, enabled=False):
            pred = point_sample(masks[None].float(), coords)[0]  # Q,P
            tgt = point_sample(target_masks[None].float(), coords)[0]  # T,P
            cost_mask = pairwise_sigmoid_ce(pred, tgt)
            cost_dice = pairwise_dice(pred, tgt)
        return self.cost_class * cost_class + self.cost_mask * cost_mask + self.cost_dice * cost_dice

    @torch.no_grad()
    def forward(self, layers: Sequence[tuple[Tensor, Tensor]], labels: Sequence[Tensor],
                target_masks: Sequence[Tensor]) -> list[list[Match]]:
        """Per layer ``(logits [B, Q, K+1], masks [B, Q, h, w])``, per image ``labels [T_i]``
        and ``target_masks [T_i, H, W]`` -> per layer, per image (query idx, target idx)."""
        costs = [self.cost_matrix(logits[i], masks[i], labels[i], target_masks[i])
                 for logits, masks in layers for i in range(len(labels)) if labels[i].numel()]
        flat = torch.cat([c.flatten() for c in costs]).cpu().numpy() if costs else None  # the sync
        empty = (torch.zeros(0, dtype=torch.int64),) * 2
        out, start = [], 0
        for logits, _ in layers:
            out.append([])
            for lab in labels:
                size = logits.shape[1] * lab.numel()
                if size == 0:
                    out[-1].append(empty)
                    continue
                out[-1].append(assign(flat[start:start + size].reshape(-1, lab.numel())))
                start += size
        return out
