"""Data order and augmentation randomness that survive a restart exactly.

Two things make a killed-and-resumed run repeat the uninterrupted one sample for sample:

* :class:`ResumableSampler` is an endless stream of per-epoch ``DistributedSampler``
  permutations that can start at any number of already-consumed samples. The trainer knows
  that number exactly (iterations x micro-batches x batch), whereas a sampler's own counter
  runs ahead by whatever the DataLoader prefetched.
* :class:`SeededSamples` draws each sample's augmentation from a numpy generator seeded by
  ``(seed, epoch, index)``, so it depends neither on worker count, nor on prefetching, nor on
  the global RNG state the model's own randomness (point sampling, drop-path) advances.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
from torch.utils.data import Dataset, DistributedSampler, Sampler

Key = tuple[int, int]  # (epoch, dataset index)


class ResumableSampler(Sampler[Key]):
    """Yields ``(epoch, index)`` forever: rank ``rank``'s share of each epoch's permutation."""

    def __init__(
        self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
        shuffle: bool = True, start: int = 0,
    ) -> None:
        self.size, self.rank, self.world_size = size, rank, world_size
        self.seed, self.shuffle, self.start = seed, shuffle, start

    def epoch_indices(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(
            range(self.size), num_replicas=self.world_size, rank=self.rank,
            shuffle=self.shuffle, seed=self.seed, drop_last=False,
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    @property
    def per_epoch(self) -> int:
        return -(-self.size // self.world_size)  # DistributedSampler pads to equal shares

    def __iter__(self) -> Iterator[Key]:
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield epoch, index
            epoch, offset = epoch + 1, 0


class ArrayDataset(Protocol):
    """A dataset that also gives samples with a numpy target (``SegDataset``, ``CocoDetection``)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Any: ...
    def sample_arrays(self, index: int) -> Any: ...


class SeededSamples(Dataset):
    """``dataset.sample_arrays(index)`` through ``transform(image, target, rng)`` seeded by
    (seed, epoch, index); ``dataset[index]`` as it is without a transform.

    Unlike a dataset with a ``set_epoch`` attribute, the epoch travels with each key, so
    worker processes and prefetching across an epoch boundary cannot mix up seeds. The
    transform gets the numpy target, so the label map is widened to int64 once, after the crop.
    """

    def __init__(
        self, dataset: ArrayDataset, transform: Callable[..., Any] | None, seed: int
    ) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Any:
        epoch, index = key
        if self.transform is None:
            return self.dataset[index]
        image, target, meta = self.dataset.sample_arrays(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        image, target = self.transform(image, target, rng)
        return image, target, meta
