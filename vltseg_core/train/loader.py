"""From a config to batches: dataset, the paper's augmentation, resumable sharded order.

The batch contract with the models package: ``images`` ``uint8[B, 3, H, W]`` RGB (the model
normalises with ``model.preprocess``), ``targets`` a list of DESIGN.md target dicts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vltseg_core.train.config import Config, ConfigError, DataConfig, DatasetSpec
from vltseg_core.train.sampling import ResumableSampler, SeededSamples


def build_dataset(spec: DatasetSpec, **extra: Any) -> Dataset:
    """``vltseg_core.data.build_dataset`` for one config entry."""
    from vltseg_core.data.datasets import build_dataset as _build

    return _build(spec.name, spec.resolved_root(), spec.split, **{**spec.options, **extra})


def train_transform(cfg: DataConfig) -> Any:
    """The paper's pipeline: rescale 0.5-2.0, cat_max_ratio crop, flip, photometric."""
    from vltseg_core.data.transforms import train_transforms

    return train_transforms(
        crop_size=cfg.crop_size, scale=cfg.scale, ratio_range=cfg.ratio_range,
        cat_max_ratio=cfg.cat_max_ratio, flip_prob=0.5 if cfg.flip else 0.0,
        photometric=cfg.photometric,
    )


@dataclass(frozen=True)
class BatchPlan:
    """How the global batch splits: ``batch = world_size x accum_steps x micro``."""

    micro: int
    accum_steps: int
    world_size: int

    @property
    def samples_per_iter(self) -> int:  # per rank
        return self.micro * self.accum_steps


def batch_plan(cfg: Config, world_size: int) -> BatchPlan:
    per = world_size * cfg.train.accum_steps
    if cfg.data.batch_size % per:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is not divisible by world_size "
            f"({world_size}) x train.accum_steps ({cfg.train.accum_steps})"
        )
    return BatchPlan(cfg.data.batch_size // per, cfg.train.accum_steps, world_size)


def _seed_worker(worker_id: int) -> None:
    """Workers get distinct, reproducible global seeds (transforms are seeded per sample)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def train_loader(cfg: Config, rank: int, plan: BatchPlan, start_iter: int,
                 pin_memory: bool = False) -> DataLoader:
    """An endless loader whose first batch is the one iteration ``start_iter`` consumes."""
    dataset = build_dataset(cfg.data.train)
    seeded = SeededSamples(dataset, train_transform(cfg.data), cfg.train.seed)
    sampler = ResumableSampler(
        len(dataset), rank, plan.world_size, cfg.train.seed,
        start=start_iter * plan.samples_per_iter,
    )
    from vltseg_core.data.transforms import collate

    return DataLoader(
        seeded, batch_size=plan.micro, sampler=sampler, collate_fn=collate,
        num_workers=cfg.data.num_workers, worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # keep global RNG untouched
        persistent_workers=cfg.data.num_workers > 0, pin_memory=pin_memory,
    )
