"""AdamW with the paper's parameter groups, and the poly schedules (mmcv-1.x style with linear
warm-up, or mmengine's ``PolyLR`` with a constant start as the paper configs use).

Parameter groups come from the models package (``param_groups``: backbone lr x0.1, optional
layer-wise decay, no weight decay on norms/biases/embeddings), which knows the module layout.
The schedule is a picklable callable so ``LambdaLR.state_dict`` round-trips it on resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from vltseg_core.train.config import TrainConfig


@dataclass
class PolyWarmup:
    """lr factor at step ``t``: mmseg's PolyLR (``eta_min`` as a fraction) after linear warm-up.

    ``factor(t) = (1 - r) (1 - t / T)^p + r`` with ``r = min_lr / lr``; during the first
    ``warmup`` steps it is additionally scaled from ``warmup_ratio`` up to 1 (mmseg 'linear').
    """

    total: int
    warmup: int = 0
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        progress = min(step, self.total) / self.total
        factor = (1 - self.min_ratio) * (1 - progress) ** self.power + self.min_ratio
        if step < self.warmup:
            factor *= 1 - (1 - step / self.warmup) * (1 - self.warmup_ratio)
        return factor


@dataclass
class MMEnginePoly:
    """lr factor at step ``t`` of mmengine's ``PolyLR(eta_min, power, begin, end)`` used as
    the only scheduler: 1 before ``begin`` (the scheduler is inactive there), then
    ``(1 - r) (1 - s / T)^p + r`` with ``s = t - begin`` and ``T = end - begin - 1``, so the
    last step (``end - 1``) runs at ``eta_min`` (mmengine's chained form, in closed form)."""

    end: int
    begin: int = 0
    power: float = 1.0
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        span = self.end - self.begin - 1
        s = min(max(step - self.begin, 0), span)
        return (1 - self.min_ratio) * (1 - s / span) ** self.power + self.min_ratio


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> LambdaLR:
    """``train.poly_begin`` set: :class:`MMEnginePoly`; else :class:`PolyWarmup`."""
    if cfg.poly_begin is not None:
        return LambdaLR(optimizer, MMEnginePoly(cfg.iters, cfg.poly_begin, cfg.poly_power,
                                                cfg.min_lr / cfg.lr))
    fn = PolyWarmup(cfg.iters, cfg.warmup_iters, cfg.warmup_ratio, cfg.poly_power,
                    cfg.min_lr / cfg.lr)
    return LambdaLR(optimizer, fn)


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Groups from ``vltseg_core.models.param_groups`` with the config's lr/wd/multipliers."""
    from vltseg_core.models import param_groups

    return param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        backbone_lr_mult=cfg.backbone_lr_mult, layer_decay=cfg.layer_decay)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (frozen blocks are left out by ``param_groups``)."""
    groups = parameter_groups(model, cfg)
    fused = all(p.is_cuda for g in groups for p in g["params"]) and len(groups) > 0
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             betas=(0.9, 0.999), fused=fused or None)
