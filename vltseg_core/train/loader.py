"""From a config to batches: dataset, the paper's augmentation, resumable sharded order.

The batch contract with the models package: ``images`` ``uint8[B, 3, H, W]`` RGB (the model
normalises with ``model.preprocess``), ``targets`` a list of DESIGN.md target dicts.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vltseg_core.train.config import Config, ConfigError, DataConfig, DatasetSpec
from vltseg_core.train.sampling import ResumableSampler, SeededSamples


def build_dataset(spec: DatasetSpec, boxes: bool = True, **extra: Any) -> Dataset:
    """``vltseg_core.data.build_dataset`` for one config entry. ``boxes=False`` tells datasets
    that can decode instance maps not to (segmentation-only runs need no boxes)."""
    from vltseg_core.data.datasets import DATASETS
    from vltseg_core.data.datasets import build_dataset as _build

    ctor = DATASETS.get(spec.name.lower())
    if not boxes and ctor is not None and "boxes" in inspect.signature(ctor).parameters:
        extra = {"boxes": False, **extra}
    return _build(spec.name, spec.resolved_root(), spec.split, **{**spec.options, **extra})


def needs_boxes(task: str) -> bool:
    """Whether a task's targets need instance boxes (detection and joint training)."""
    return task in ("det", "joint")


def train_transform(cfg: DataConfig) -> Any:
    """mmseg's pipeline as configured: (random) resize, cat_max_ratio crop, flip, photometric."""
    from vltseg_core.data.transforms import train_transforms

    return train_transforms(
        crop_size=cfg.crop_size, scale=cfg.scale, ratio_range=cfg.ratio_range,
        cat_max_ratio=cfg.cat_max_ratio, flip_prob=0.5 if cfg.flip else 0.0,
        photometric=cfg.photometric, keep_ratio=cfg.keep_ratio,
        focus_classes=cfg.focus_classes, focus_prob=cfg.focus_prob,
    )


def normalise_batch(model: Any, images: torch.Tensor, metas: Sequence[dict]) -> torch.Tensor:
    """``model.preprocess(images)`` with every image's padding (outside its ``img_shape``)
    set to 0, i.e. to the normalised mean, as mmseg's data preprocessor pads after
    normalising. ``images`` ``uint8[B, 3, H, W]`` and ``metas`` from :func:`collate` (no
    metas: nothing is padded)."""
    x = model.preprocess(images)
    for i, meta in enumerate(metas):
        h, w = meta.get("img_shape", x.shape[-2:])
        if h < x.shape[-2]:
            x[i, :, h:] = 0
        if w < x.shape[-1]:
            x[i, :, :, w:] = 0
    return x


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
    dataset = build_dataset(cfg.data.train, boxes=needs_boxes(cfg.task))
    seeded = SeededSamples(dataset, train_transform(cfg.data), cfg.train.seed)
    sampler = ResumableSampler(
        len(dataset), rank, plan.world_size, cfg.train.seed,
        start=start_iter * plan.samples_per_iter,
    )
    from vltseg_core.data.transforms import collate

    return DataLoader(
        seeded, batch_size=plan.micro, sampler=sampler,
        collate_fn=functools.partial(collate, pad_to=tuple(cfg.data.crop_size)),
        num_workers=cfg.data.num_workers, worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # keep global RNG untouched
        persistent_workers=cfg.data.num_workers > 0, pin_memory=pin_memory,
    )
