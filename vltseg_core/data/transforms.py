"""The paper's training augmentation (mmseg pipeline) with boxes kept consistent.

Pipeline (VLTSeg, following Mask2Former/mmseg): RandomResize (ratio 0.5-2.0 of a base scale,
keep ratio) -> RandomCrop (cat_max_ratio 0.75, up to 10 re-draws as mmseg does) -> RandomFlip
-> PhotoMetricDistortion -> pad to the crop size. No normalisation: the model does it.

Every transform is ``(image uint8[H, W, 3], target dict of numpy, rng) -> (image, target)``
and draws randomness only from the ``np.random.Generator`` it is given, so a sample depends
on ``(seed, epoch, index)`` alone (see ``vltseg_core.train.sampling.SeededSamples``). Target maps are every
2-D entry (``sem_seg`` and e.g. an ``instances`` map); ``boxes`` are xyxy pixel edges and
every 1-D entry (``labels``, optional ``instance_ids``...) is per-box and filtered with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from vltseg_core.data.labels import IGNORE_INDEX

Target = dict[str, np.ndarray]


class Transform(Protocol):
    def __call__(self, image: np.ndarray, target: Target, rng: np.random.Generator
                 ) -> tuple[np.ndarray, Target]: ...


def as_rng(gen: np.random.Generator | torch.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a numpy/torch generator or a seed (torch draws one seed)."""
    if isinstance(gen, np.random.Generator):
        return gen
    if isinstance(gen, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    return np.random.default_rng(gen)


def _maps(target: Target) -> list[str]:
    return [k for k, v in target.items() if k != "boxes" and k != "labels" and v.ndim == 2]


def _pad_value(key: str) -> int:
    return IGNORE_INDEX if key == "sem_seg" else 0


def _filter_boxes(target: Target, keep: np.ndarray) -> Target:
    for k, v in target.items():
        if k == "boxes" or v.ndim == 1:
            target[k] = v[keep]
    return target


@dataclass(frozen=True)
class RandomResize:
    """mmseg ``RandomResize(scale, ratio_range, keep_ratio=True)``: the image is fitted
    inside ``(long, short) * ratio``; bilinear for the image, nearest for maps."""

    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)

    def __call__(self, image, target, rng):
        ratio = rng.uniform(*self.ratio_range)
        return resize_keep_ratio(image, target, (self.scale[0] * ratio, self.scale[1] * ratio))


def resize_keep_ratio(image: np.ndarray, target: Target, scale: tuple[float, float]
                      ) -> tuple[np.ndarray, Target]:
    """mmcv ``rescale_size``: factor = min(long/long_edge, short/short_edge), rounded size."""
    h, w = image.shape[:2]
    f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    nw, nh = int(w * f + 0.5), int(h * f + 0.5)
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    target = dict(target)
    for k in _maps(target):
        target[k] = cv2.resize(target[k], (nw, nh), interpolation=cv2.INTER_NEAREST)
    target["boxes"] = target["boxes"] * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    return image, target


@dataclass(frozen=True)
class RandomCrop:
    """mmseg ``RandomCrop``: re-draw the window up to 10 times while one class covers
    ``>= cat_max_ratio`` of the non-ignored pixels (or fewer than 2 classes are present);
    the last draw is kept either way. Boxes are shifted, clipped and dropped when empty."""

    size: tuple[int, int] = (512, 512)  # (h, w)
    cat_max_ratio: float = 0.75
    ignore_index: int = IGNORE_INDEX

    def window(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        oy = int(rng.integers(0, max(h - self.size[0], 0) + 1))
        ox = int(rng.integers(0, max(w - self.size[1], 0) + 1))
        return oy, min(oy + self.size[0], h), ox, min(ox + self.size[1], w)

    def acceptable(self, seg: np.ndarray) -> bool:
        cnt = np.bincount(seg.ravel(), minlength=256)
        cnt = np.delete(cnt, self.ignore_index) if self.ignore_index < len(cnt) else cnt
        cnt = cnt[cnt > 0]
        return len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio

    def __call__(self, image, target, rng):
        h, w = image.shape[:2]
        y0, y1, x0, x1 = self.window(h, w, rng)
        if self.cat_max_ratio < 1.0 and "sem_seg" in target:
            for _ in range(10):
                if self.acceptable(target["sem_seg"][y0:y1, x0:x1]):
                    break
                y0, y1, x0, x1 = self.window(h, w, rng)
        return crop(image, target, (y0, y1, x0, x1))


def crop(image: np.ndarray, target: Target, box: tuple[int, int, int, int]
         ) -> tuple[np.ndarray, Target]:
    y0, y1, x0, x1 = box
    target = dict(target)
    for k in _maps(target):
        target[k] = target[k][y0:y1, x0:x1]
    b = target["boxes"] - np.array([x0, y0, x0, y0], np.float32)
    b = np.clip(b, 0, np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], np.float32))
    target["boxes"] = b
    return image[y0:y1, x0:x1], _filter_boxes(target, (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))


@dataclass(frozen=True)
class RandomFlip:
    prob: float = 0.5

    def __call__(self, image, target, rng):
        if rng.random() >= self.prob:
            return image, target
        w = image.shape[1]
        target = dict(target)
        for k in _maps(target):
            target[k] = target[k][:, ::-1]
        b = target["boxes"].copy()
        b[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
        target["boxes"] = b
        return image[:, ::-1], target


@dataclass(frozen=True)
class PhotoMetricDistortion:
    """mmseg ``PhotoMetricDistortion``: each step applied with probability 1/2; contrast
    before or after the HSV steps (random mode). Works on RGB uint8 (HSV via OpenCV)."""

    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __call__(self, image, target, rng):
        img = image.astype(np.float32)
        if rng.integers(2):
            img = img + rng.uniform(-self.brightness_delta, self.brightness_delta)
        img = np.clip(img, 0, 255)
        mode = rng.integers(2)
        if mode == 1 and rng.integers(2):
            img = np.clip(img * rng.uniform(*self.contrast_range), 0, 255)
        do_sat, do_hue = rng.integers(2), rng.integers(2)
        sat = rng.uniform(*self.saturation_range) if do_sat else 1.0
        hue = int(rng.integers(-self.hue_delta, self.hue_delta + 1)) if do_hue else 0
        if do_sat or do_hue:
            hsv = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
            hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 255)
            hsv[..., 0] = (hsv[..., 0] + hue) % 180
            img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        if mode == 0 and rng.integers(2):
            img = np.clip(img * rng.uniform(*self.contrast_range), 0, 255)
        return img.astype(np.uint8), target


@dataclass(frozen=True)
class PadTo:
    """Pad bottom/right to at least ``size`` (h, w): image 0, sem_seg ignore, other maps 0."""

    size: tuple[int, int]

    def __call__(self, image, target, rng=None):
        h, w = image.shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph == 0 and pw == 0:
            return image, target
        target = dict(target)
        for k in _maps(target):
            target[k] = np.pad(target[k], ((0, ph), (0, pw)), constant_values=_pad_value(k))
        return np.pad(image, ((0, ph), (0, pw), (0, 0))), target


def target_to_numpy(target: dict[str, Any]) -> Target:
    """Torch/numpy target -> numpy working copy (maps as uint8/int32 for OpenCV)."""
    out: Target = {}
    for k, v in target.items():
        a = v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        if k not in ("boxes", "labels") and a.ndim == 2:
            a = a.astype(np.uint8 if k == "sem_seg" else np.int32)
        out[k] = a
    out["boxes"] = out.get("boxes", np.zeros((0, 4))).astype(np.float32).reshape(-1, 4)
    out["labels"] = out.get("labels", np.zeros((0,))).astype(np.int64).reshape(-1)
    return out


def target_to_torch(target: Target) -> dict[str, torch.Tensor]:
    """Numpy working target -> the model contract (int64 maps, float32 boxes, int64 labels)."""
    out = {}
    for k, v in target.items():
        v = np.ascontiguousarray(v)
        out[k] = torch.from_numpy(v.astype(np.float32) if k == "boxes" else v.astype(np.int64))
    return out


def to_chw(image: np.ndarray) -> torch.Tensor:
    """``uint8[H, W, 3]`` -> ``uint8[3, H, W]`` (0..255, unnormalised)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class Compose:
    """Apply transforms in order; takes/returns the dataset's (image, torch target) pair."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, target: dict[str, Any],
                 rng: np.random.Generator | torch.Generator | int | None
                 ) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
        rng = as_rng(rng)
        work = target_to_numpy(target)
        for t in self.transforms:
            image, work = t(image, work, rng)
        return np.ascontiguousarray(image), target_to_torch(work)


def train_transforms(
    crop_size: tuple[int, int] = (512, 512),
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5,
    photometric: bool = True,
) -> Compose:
    """The paper's pipeline; ``scale`` is mmseg's (long, short) base scale, crop is (h, w).

    Paper presets: synthetic sources 512x512 crops of (2048, 512)-scaled images; Cityscapes
    1024x1024 crops of (2048, 1024).
    """
    steps: list[Transform] = [RandomResize(scale, ratio_range),
                              RandomCrop(crop_size, cat_max_ratio), RandomFlip(flip_prob)]
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps.append(PadTo(crop_size))
    return Compose(steps)


def collate(batch: Sequence[tuple[np.ndarray, dict, dict]]
            ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict]]:
    """Stack to ``uint8[B, 3, H, W]`` padding bottom/right to the largest sample
    (image 0, sem_seg ignore); targets and metas stay per-image lists."""
    hmax = max(b[0].shape[0] for b in batch)
    wmax = max(b[0].shape[1] for b in batch)
    images = torch.zeros((len(batch), 3, hmax, wmax), dtype=torch.uint8)
    targets, metas = [], []
    for i, (img, tgt, meta) in enumerate(batch):
        h, w = img.shape[:2]
        images[i, :, :h, :w] = to_chw(np.asarray(img))
        tgt = dict(tgt)
        for k, v in tgt.items():
            if k not in ("boxes", "labels") and v.ndim == 2 and v.shape != (hmax, wmax):
                pad = torch.full((hmax, wmax), _pad_value(k), dtype=v.dtype)
                pad[:h, :w] = torch.as_tensor(v)
                tgt[k] = pad
        targets.append(tgt)
        metas.append({**meta, "img_shape": (h, w)})
    return images, targets, metas
