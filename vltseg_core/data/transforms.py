"""The paper's training augmentation (mmseg pipeline) with boxes kept consistent.

Pipeline (mmseg 1.x semantics, as the VLTSeg reproduction and Rein configure it): Resize /
RandomResize -> RandomCrop (cat_max_ratio 0.75, up to 10 re-draws as mmseg does) ->
RandomFlip -> PhotoMetricDistortion. No normalisation and no padding here: the trainer
normalises the collated batch and sets padded pixels to the normalised mean.

Every transform is ``(image uint8[H, W, 3], target dict of numpy, rng) -> (image, target)``
and draws randomness only from the ``np.random.Generator`` it is given, so a sample depends
on ``(seed, epoch, index)`` alone (see ``vltseg_core.train.sampling.SeededSamples``). Target maps are every
2-D entry (``sem_seg`` uint8 and e.g. an int32 ``instances`` map: types OpenCV resizes);
``boxes`` are xyxy pixel edges and every 1-D entry (``labels``, optional ``instance_ids``...) is
per-box and filtered with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch

from vltseg_core.data.base import torch_target
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
    """mmcv ``RandomResize(scale, ratio_range, keep_ratio)``: the scale times a ratio drawn from
    ``ratio_range`` (each side truncated to int, as mmcv does), or ``scale`` itself when
    ``ratio_range`` is None (mmcv ``Resize``). ``keep_ratio``: the image is fitted inside
    ``(long, short)``; otherwise it becomes exactly ``scale`` = (w, h). Bilinear for the
    image, nearest for maps."""

    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] | None = (0.5, 2.0)
    keep_ratio: bool = True

    def __call__(self, image, target, rng):
        scale = self.scale
        if self.ratio_range is not None:
            ratio = rng.uniform(*self.ratio_range)
            scale = (int(scale[0] * ratio), int(scale[1] * ratio))
        if self.keep_ratio:
            return resize_keep_ratio(image, target, scale)
        return resize_to(image, target, (int(scale[1]), int(scale[0])))


def rescale_size(hw: tuple[int, int], scale: tuple[float, float]) -> tuple[int, int]:
    """mmcv ``rescale_size``: (h, w) fitted inside (long, short) keeping the aspect, i.e.
    factor = min(long/long_edge, short/short_edge), sides rounded half up."""
    h, w = hw
    f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def resize_keep_ratio(image: np.ndarray, target: Target, scale: tuple[float, float]
                      ) -> tuple[np.ndarray, Target]:
    """Resize so the image fits inside ``scale`` = (long, short) (:func:`rescale_size`)."""
    return resize_to(image, target, rescale_size(image.shape[:2], scale))


def resize_to(image: np.ndarray, target: Target, size: tuple[int, int]
              ) -> tuple[np.ndarray, Target]:
    """Resize to ``size`` = (h, w): image bilinear, maps nearest, boxes scaled."""
    h, w = image.shape[:2]
    nh, nw = size
    if (nh, nw) == (h, w):
        return image, target
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
    # class-aware crops (not in mmseg): with probability ``focus_prob`` the window holds a
    # pixel of one of ``focus_classes`` drawn at random, at a random place in the window, and
    # is kept without cat_max_ratio re-draws. Uniform windows see the frame's borders least,
    # where near persons and poles stand
    focus_classes: tuple[int, ...] = ()
    focus_prob: float = 0.0

    def window(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        oy = int(rng.integers(0, max(h - self.size[0], 0) + 1))
        ox = int(rng.integers(0, max(w - self.size[1], 0) + 1))
        return oy, min(oy + self.size[0], h), ox, min(ox + self.size[1], w)

    def focus_window(self, seg: np.ndarray, rng: np.random.Generator
                     ) -> tuple[int, int, int, int] | None:
        """A window around a random pixel of a focus class, or None when none is present."""
        ys, xs = np.nonzero(np.isin(seg, self.focus_classes))
        if not len(ys):
            return None
        i = int(rng.integers(len(ys)))
        (h, w), (ch, cw) = seg.shape, self.size
        oy = int(np.clip(ys[i] - rng.integers(ch), 0, max(h - ch, 0)))
        ox = int(np.clip(xs[i] - rng.integers(cw), 0, max(w - cw, 0)))
        return oy, min(oy + ch, h), ox, min(ox + cw, w)

    def acceptable(self, seg: np.ndarray) -> bool:
        cnt = np.bincount(seg.ravel(), minlength=256)
        cnt = np.delete(cnt, self.ignore_index) if self.ignore_index < len(cnt) else cnt
        cnt = cnt[cnt > 0]
        return len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio

    def __call__(self, image, target, rng):
        h, w = image.shape[:2]
        if (self.focus_prob > 0 and "sem_seg" in target and rng.random() < self.focus_prob
                and (box := self.focus_window(target["sem_seg"], rng)) is not None):
            return crop(image, target, box)
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
    """mmseg ``PhotoMetricDistortion`` step for step: brightness, contrast (first or last,
    random mode), saturation, hue, each applied with probability 1/2 and each ending in
    uint8 (values clipped, then truncated, as mmseg's ``convert``); saturation and hue are
    separate HSV round trips; the hue shift is drawn from [-18, 17] (numpy ``randint``'s
    open end). RGB in, RGB out: OpenCV's RGB<->HSV equals mmcv's BGR<->HSV on BGR data."""

    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __call__(self, image, target, rng):
        img = image
        if rng.integers(2):  # brightness
            img = _convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        mode = rng.integers(2)
        if mode == 1:
            img = self._contrast(img, rng)
        if rng.integers(2):  # saturation
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if rng.integers(2):  # hue
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            shift = int(rng.integers(-self.hue_delta, self.hue_delta))
            hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if mode == 0:
            img = self._contrast(img, rng)
        return img, target

    def _contrast(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return _convert(img, alpha=rng.uniform(*self.contrast_range))
        return img


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``uint8(clip(img * alpha + beta, 0, 255))`` with float32 arithmetic (mmseg)."""
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def to_chw(image: np.ndarray) -> torch.Tensor:
    """``uint8[H, W, 3]`` -> ``uint8[3, H, W]`` (0..255, unnormalised)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class Compose:
    """Apply transforms in order to a dataset's ``sample_arrays`` pair (numpy target, label
    map still uint8) and return the model's torch target (int64 maps) once, at the end."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, target: Target,
                 rng: np.random.Generator | torch.Generator | int | None
                 ) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
        rng = as_rng(rng)
        work = dict(target)
        for t in self.transforms:
            image, work = t(image, work, rng)
        return np.ascontiguousarray(image), torch_target(work)


def train_transforms(
    crop_size: tuple[int, int] = (512, 512),
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] | None = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5,
    photometric: bool = True,
    keep_ratio: bool = True,
    focus_classes: Sequence[int] = (),
    focus_prob: float = 0.0,
) -> Compose:
    """mmseg's pipeline ``RandomResize -> RandomCrop -> RandomFlip -> PhotoMetricDistortion``;
    crop is (h, w), ``scale`` as in :class:`RandomResize`. Nothing is padded here: crops
    smaller than ``crop_size`` are padded by :func:`collate`, after which the trainer fills
    the padding with the normalised mean (mmseg pads after normalisation, with 0).

    Paper configs (VLTSeg reproduction / Rein): GTA5 and SYNTHIA ``Resize((1280, 720))``
    (exact size) then 512x512 crops; Cityscapes ``Resize((2048, 1024))`` then 1024x1024 crops.
    """
    steps: list[Transform] = [RandomResize(scale, ratio_range, keep_ratio),
                              RandomCrop(crop_size, cat_max_ratio, focus_classes=tuple(focus_classes),
                                         focus_prob=focus_prob), RandomFlip(flip_prob)]
    if photometric:
        steps.append(PhotoMetricDistortion())
    return Compose(steps)


def collate(batch: Sequence[tuple[np.ndarray, dict, dict]], pad_to: tuple[int, int] = (0, 0)
            ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict]]:
    """Stack to ``uint8[B, 3, H, W]`` padding bottom/right to the largest sample and at least
    ``pad_to`` (h, w) (image 0, sem_seg ignore, other maps 0); targets and metas stay
    per-image lists, each meta with ``img_shape`` = the unpadded (h, w), so the trainer can
    set the padding to the normalised mean (:func:`vltseg_core.train.loader.normalise_batch`)."""
    hmax = max([b[0].shape[0] for b in batch] + [pad_to[0]])
    wmax = max([b[0].shape[1] for b in batch] + [pad_to[1]])
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
