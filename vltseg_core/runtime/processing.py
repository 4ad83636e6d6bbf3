"""Pre- and post-processing shared by every backend, so torch, ONNX Runtime and TensorRT see the
same network input bytes and their outputs are mapped back the same way.

Exported graphs have a fixed input size; any image is letterboxed into it (aspect ratio kept,
bilinear resize, padded with the pixel mean so padding normalises to zero, as in training-time
padding) and outputs are cropped to the valid region and resized back: class ids by nearest
neighbour, confidences bilinearly, boxes by the inverse scale/offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed in the network input: scale, then offset (top, left)."""

    in_size: tuple[int, int]  # (H, W) of the original image
    net_size: tuple[int, int]  # (H, W) of the network input
    scale: float
    top: int
    left: int

    @property
    def valid(self) -> tuple[int, int]:
        """(H, W) of the resized image inside the network input."""
        h, w = self.in_size
        return max(1, round(h * self.scale)), max(1, round(w * self.scale))


def fit(in_size: tuple[int, int], net_size: tuple[int, int]) -> Letterbox:
    """Largest scale that fits in_size into net_size, centred."""
    h, w = in_size
    nh, nw = net_size
    scale = min(nh / h, nw / w)
    vh, vw = max(1, round(h * scale)), max(1, round(w * scale))
    return Letterbox(in_size, net_size, scale, (nh - vh) // 2, (nw - vw) // 2)


def to_rgb(image: np.ndarray, bgr: bool) -> np.ndarray:
    """Validate HxWx3 uint8 and return RGB (a view flip, no copy, when bgr)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    return image[..., ::-1] if bgr else image


def letterbox(
    image: np.ndarray, net_size: tuple[int, int], pad_value: Sequence[int]
) -> tuple[np.ndarray, Letterbox]:
    """HxWx3 uint8 RGB -> 3xHnxWn uint8 network input and its placement."""
    box = fit(image.shape[:2], net_size)
    vh, vw = box.valid
    resized = image if (vh, vw) == image.shape[:2] else cv2.resize(
        np.ascontiguousarray(image), (vw, vh), interpolation=cv2.INTER_LINEAR
    )
    canvas = np.empty((*net_size, 3), dtype=np.uint8)
    canvas[...] = np.asarray(pad_value, dtype=np.uint8)
    canvas[box.top : box.top + vh, box.left : box.left + vw] = resized
    return canvas.transpose(2, 0, 1), box


def make_batch(
    images: Sequence[np.ndarray], net_size: tuple[int, int], pad_value: Sequence[int], bgr: bool
) -> tuple[np.ndarray, list[Letterbox]]:
    """List of HxWx3 uint8 images -> Bx3xHnxWn uint8 and one Letterbox per image."""
    planes, boxes = zip(*(letterbox(to_rgb(im, bgr), net_size, pad_value) for im in images))
    return np.ascontiguousarray(np.stack(planes)), list(boxes)


def _crop(array: np.ndarray, box: Letterbox) -> np.ndarray:
    vh, vw = box.valid
    return array[box.top : box.top + vh, box.left : box.left + vw]


def restore_mask(class_ids: np.ndarray, box: Letterbox) -> np.ndarray:
    """HnxWn uint8 ids at network size -> HxW uint8 at the original size (nearest)."""
    h, w = box.in_size
    crop = np.ascontiguousarray(_crop(class_ids, box))
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_NEAREST)


def restore_confidence(confidence: np.ndarray, box: Letterbox) -> np.ndarray:
    """HnxWn float32 -> HxW float32 in [0, 1] at the original size (bilinear).

    Clipped at network size (a backend's rounding may leave [0, 1] by an ulp); bilinear
    weights are convex, so the resized map stays in [0, 1] without a pass over HxW."""
    h, w = box.in_size
    crop = np.clip(_crop(confidence, box).astype(np.float32), 0.0, 1.0)
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def restore_boxes(boxes: np.ndarray, box: Letterbox) -> np.ndarray:
    """Nx4 xyxy in network pixels -> Nx4 xyxy float32 in original pixels, clipped to the image."""
    h, w = box.in_size
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - box.left) / box.scale
    out[:, [1, 3]] = (out[:, [1, 3]] - box.top) / box.scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out
