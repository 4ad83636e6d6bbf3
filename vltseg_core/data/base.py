"""The common segmentation dataset: a sorted list of file records plus one label mapping.

Concrete datasets only find their files (official layouts) and say how raw labels map to the
19 train ids; reading, size checks, instance boxes and the sample format live here once.

A sample is ``(image, target, meta)``:
  * ``image``  ``uint8[H, W, 3]`` RGB numpy array (the model normalises; transforms use cv2),
  * ``target`` ``{"sem_seg": int64[H, W] (255 = ignore), "boxes": float32[N, 4] xyxy,
    "labels": int64[N]}`` torch tensors (DESIGN.md contract),
  * ``meta``   ``{"file", "label_file", "name", "dataset", "orig_size"}``.
``sample_arrays(index)`` gives the same with a numpy target whose ``sem_seg`` stays uint8 as
decoded: training augments that and widens only the final crop to int64 (``torch_target``).
Boxes span pixel edges: an instance covering columns ``x0..x1`` gives ``[x0, y0, x1 + 1, y1 + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from vltseg_core.data.io import DatasetError, check_same_size, read_index_png, read_rgb
from vltseg_core.data.labels import IGNORE_INDEX, apply_lut, cityscapes_lut, thing_train_ids

Sample = tuple[np.ndarray, dict[str, torch.Tensor], dict[str, Any]]
ArraySample = tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]
SizePolicy = Literal["error", "resize_label", "crop"]


@dataclass(frozen=True)
class Record:
    """One image and its annotation files. ``name`` is the stem predictions are matched by."""

    image: Path
    label: Path | None
    name: str
    lut: str = "train"  # key into SegDataset.luts: how raw label values become train ids
    instance: Path | None = None
    extra: tuple[tuple[str, str], ...] = ()  # dataset-specific meta, e.g. (("condition", "fog"),)


def boxes_from_instance_map(
    inst: np.ndarray, lut: np.ndarray, keep: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``float32[N, 4]`` xyxy and train ids ``int64[N]`` from a Cityscapes-coded map.

    Values >= 1000 are instances with label id ``value // 1000``; smaller values are stuff
    or crowd regions (e.g. 'cargroup') and give no box. One O(H*W) pass via find_objects.
    """
    sel = inst >= 1000
    ids = np.unique(inst[sel])
    train = lut[np.minimum(ids // 1000, len(lut) - 1)].astype(np.int64)
    ok = np.isin(train, np.asarray(keep, np.int64))
    if not ok.any():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    compact = np.zeros(inst.shape, np.int32)
    compact[sel] = np.searchsorted(ids, inst[sel]) + 1
    slices = ndimage.find_objects(compact, max_label=len(ids))
    boxes = np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], np.float32
    ).reshape(-1, 4)
    return boxes[ok], train[ok]


def target_arrays(
    sem_seg: np.ndarray, boxes: np.ndarray | None = None, labels: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """A target in numpy: ``sem_seg`` uint8 [H, W] train ids, ``boxes`` float32 [N, 4],
    ``labels`` int64 [N] (no copies where the inputs already have these types)."""
    boxes = np.zeros((0, 4), np.float32) if boxes is None else boxes
    labels = np.zeros((0,), np.int64) if labels is None else labels
    return {
        "sem_seg": np.ascontiguousarray(sem_seg, np.uint8),
        "boxes": np.ascontiguousarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.ascontiguousarray(labels, np.int64).reshape(-1),
    }


def torch_target(target: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Numpy target -> the model contract: int64 maps (the one widening of a label map on its
    way to the model), float32 boxes, int64 per-box entries."""
    out = {}
    for k, v in target.items():
        v = np.ascontiguousarray(v)
        out[k] = torch.from_numpy(v.astype(np.float32) if k == "boxes" else v.astype(np.int64))
    return out


def _fit_to_image(
    arr: np.ndarray, shape: tuple[int, int], policy: SizePolicy, pad: int
) -> np.ndarray:
    """Resize (nearest) or top-left crop/pad (pad = ignore) a label map onto ``shape``."""
    h, w = shape
    if policy == "resize_label":
        return cv2.resize(arr, (w, h), interpolation=cv2.INTER_NEAREST)
    out = np.full((h, w), pad, arr.dtype)
    hh, ww = min(h, arr.shape[0]), min(w, arr.shape[1])
    out[:hh, :ww] = arr[:hh, :ww]
    return out


class SegDataset(Dataset):
    """Map-style dataset over :class:`Record` s; subclasses fill ``records`` and ``luts``."""

    name = "base"

    def __init__(
        self,
        records: list[Record],
        luts: dict[str, np.ndarray],
        boxes: bool = True,
        size_mismatch: SizePolicy = "error",
    ) -> None:
        if not records:
            raise DatasetError(f"{self.name}: no samples found")
        self.records = records
        self.luts = luts
        self.with_boxes = boxes
        self.size_mismatch = size_mismatch
        self._things = thing_train_ids()
        self._inst_lut = cityscapes_lut()

    def __len__(self) -> int:
        return len(self.records)

    def read_label(self, rec: Record) -> np.ndarray:
        """Raw label as stored; override for formats that need more than a 1-channel PNG."""
        assert rec.label is not None
        return read_index_png(rec.label)

    def read_instances(self, rec: Record) -> np.ndarray | None:
        """Cityscapes-coded instance map (label id * 1000 + k), or None when there is none."""
        return read_index_png(rec.instance) if rec.instance is not None else None

    def load_target_arrays(self, index: int, image_shape: tuple[int, int] | None = None
                           ) -> dict[str, np.ndarray]:
        """Numpy target of sample ``index`` without decoding the image."""
        rec = self.records[index]
        if rec.label is None:
            raise DatasetError(f"{self.name}: sample {rec.image} has no label file")
        raw = self.read_label(rec)
        inst = self.read_instances(rec) if self.with_boxes else None
        if image_shape is not None and raw.shape[:2] != tuple(image_shape):
            if self.size_mismatch == "error":
                check_same_size(image_shape, raw.shape, rec.image, rec.label)
            raw = _fit_to_image(raw, image_shape, self.size_mismatch, IGNORE_INDEX)
            inst = None if inst is None else _fit_to_image(inst, image_shape, self.size_mismatch, 0)
        sem = apply_lut(raw, self.luts[rec.lut])
        if inst is None:
            return target_arrays(sem)
        if inst.shape != sem.shape:
            raise DatasetError(f"instance map {rec.instance} is {inst.shape}, label {sem.shape}")
        boxes, labels = boxes_from_instance_map(inst, self._inst_lut, self._things)
        return target_arrays(sem, boxes, labels)

    def load_target(self, index: int, image_shape: tuple[int, int] | None = None) -> dict:
        """Torch target of sample ``index`` without decoding the image (used by scoring)."""
        return torch_target(self.load_target_arrays(index, image_shape))

    def meta(self, index: int, image_shape: tuple[int, int]) -> dict[str, Any]:
        rec = self.records[index]
        return {
            "file": str(rec.image),
            "label_file": None if rec.label is None else str(rec.label),
            "name": rec.name,
            "dataset": self.name,
            "orig_size": tuple(image_shape),
            **dict(rec.extra),
        }

    def sample_arrays(self, index: int) -> ArraySample:
        image = read_rgb(self.records[index].image)
        shape = image.shape[:2]
        return image, self.load_target_arrays(index, shape), self.meta(index, shape)

    def __getitem__(self, index: int) -> Sample:
        image, target, meta = self.sample_arrays(index)
        return image, torch_target(target), meta


def pair_by_stem(
    images: list[Path], label_for: dict[str, Path], what: str
) -> list[tuple[Path, Path]]:
    """Pair images with labels keyed by stem; any missing label is one clear error."""
    pairs, missing = [], []
    for img in images:
        lab = label_for.get(img.stem)
        (missing.append(img) if lab is None else pairs.append((img, lab)))
    if missing:
        raise DatasetError(
            f"{what}: {len(missing)} of {len(images)} images have no label, e.g. {missing[0]}"
        )
    return pairs
