"""Colourised label maps and overlays (``vltseg predict``, evaluation examples, Tensorboard
sample images)."""

from __future__ import annotations

import numpy as np

IGNORE = 255


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """``uint8[H, W]`` train ids -> ``uint8[H, W, 3]`` RGB (255 = ignore -> black)."""
    from vltseg_core.data.labels import palette as cityscapes_palette

    import cv2

    pal = cityscapes_palette() if palette is None else np.asarray(palette, np.uint8)
    if pal.shape != (256, 3):  # a lookup table for every uint8 id; ids without a colour: black
        pal = np.concatenate([pal[:256], np.zeros((max(0, 256 - len(pal)), 3), np.uint8)])
    label = np.ascontiguousarray(label, np.uint8)
    # OpenCV's table lookup: 2.5x faster than np.take at 2048x1024 and it releases the GIL,
    # so the ROS node's executor thread keeps receiving frames while the worker colours
    return cv2.LUT(cv2.merge([label, label, label]), pal.reshape(1, 256, 3))


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5,
            palette: np.ndarray | None = None) -> np.ndarray:
    """Blend the colourised ``label`` over ``uint8[H, W, 3]`` ``image``; ignore stays image.

    OpenCV's saturating blend: ~15 ms at 2048x1024 (the ROS node draws one per frame)."""
    import cv2

    image = np.ascontiguousarray(image)
    colour = colorize(label, palette)
    out = cv2.addWeighted(image, 1.0 - alpha, colour, alpha, 0.0)
    ignore = np.asarray(label) == IGNORE
    if ignore.any():
        np.copyto(out, image, where=ignore[..., None])
    return out


def side_by_side(*panels: np.ndarray) -> np.ndarray:
    """Panels of equal height concatenated left to right with a 4-pixel white gap."""
    h = panels[0].shape[0]
    gap = np.full((h, 4, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, p in enumerate(panels):
        parts += ([gap] if i else []) + [p]
    return np.concatenate(parts, axis=1)


def comparison_panel(image: np.ndarray, pred: np.ndarray | None, gt: np.ndarray | None
                     ) -> np.ndarray:
    """image | prediction over the image | ground-truth colours (ignore black), left to right;
    a missing prediction or ground truth leaves its panel out."""
    panels = [image]
    if pred is not None:
        panels.append(overlay(image, pred))
    if gt is not None:
        panels.append(colorize(gt))
    return side_by_side(*panels)
