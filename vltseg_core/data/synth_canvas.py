"""Drawing primitives for the synthetic benchmark: a pinhole ground-plane camera and a canvas
that paints colour, label id, instance id and depth with the *same* mask.

Because every shape is rasterised once into a boolean mask and that mask is written to all
four layers, labels are pixel-exact by construction: each pixel holds whatever was drawn last.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Mask = tuple[int, int, np.ndarray]  # (y0, x0, bool[h, w]) local mask placed at (y0, x0)
SKY_DEPTH = 1000.0


@dataclass(frozen=True)
class Camera:
    """Level pinhole camera ``cam_h`` metres above flat ground; world X right, Y up, Z forward."""

    width: int
    height: int
    focal: float  # pixels
    cx: float  # vanishing point column
    horizon: float  # vanishing point row
    cam_h: float

    def project(self, pts: np.ndarray) -> np.ndarray:
        """``[..., 3]`` world points (Z >= 0.5 m) -> ``int32[..., 2]`` pixel (x, y)."""
        z = np.maximum(pts[..., 2], 0.5)
        x = self.cx + pts[..., 0] * self.focal / z
        y = self.horizon + (self.cam_h - pts[..., 1]) * self.focal / z
        return np.clip(np.stack([x, y], -1), -1e5, 1e5).round().astype(np.int32)

    def scale(self, z: float) -> float:
        """Pixels per metre at depth ``z``."""
        return self.focal / max(z, 0.5)

    def ground_depth(self) -> np.ndarray:
        """``float32[H, 1]`` depth of the ground seen at each row (sky depth above the horizon)."""
        dy = np.arange(self.height, dtype=np.float32)[:, None] + 0.5 - self.horizon
        with np.errstate(divide="ignore"):
            z = np.where(dy > 0, self.cam_h * self.focal / np.maximum(dy, 1e-3), SKY_DEPTH)
        return np.minimum(z, SKY_DEPTH).astype(np.float32)


def quad(x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """World rectangle in the vertical plane X = x spanning heights y0..y1 and depths z0..z1."""
    return np.array([[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]], np.float32)


def front_rect(xc: float, w: float, y0: float, y1: float, z: float) -> np.ndarray:
    """World rectangle facing the camera at depth ``z``, centred on column ``xc``."""
    return np.array(
        [[xc - w / 2, y0, z], [xc + w / 2, y0, z], [xc + w / 2, y1, z], [xc - w / 2, y1, z]],
        np.float32,
    )


class Canvas:
    """Four aligned layers: RGB (float32), label id (uint8), instance id (int32), depth."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.img = np.zeros((height, width, 3), np.float32)
        self.lab = np.zeros((height, width), np.uint8)
        self.inst = np.zeros((height, width), np.int32)
        self.depth = np.full((height, width), SKY_DEPTH, np.float32)
        self._next: dict[int, int] = {}

    def new_instance(self, label_id: int) -> int:
        """Cityscapes coding: ``label_id * 1000 + k`` with k counting from 0 per class."""
        k = self._next.get(label_id, 0)
        self._next[label_id] = k + 1
        return label_id * 1000 + k

    # -- masks ---------------------------------------------------------------------------
    def _box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int] | None:
        bx0, by0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        bx1, by1 = min(int(np.ceil(x1)) + 1, self.w), min(int(np.ceil(y1)) + 1, self.h)
        return None if bx0 >= bx1 or by0 >= by1 else (bx0, by0, bx1, by1)

    def _draw(self, box: tuple[float, float, float, float], fn) -> Mask | None:
        b = self._box(*box)
        if b is None:
            return None
        m = np.zeros((b[3] - b[1], b[2] - b[0]), np.uint8)
        fn(m, np.array([b[0], b[1]], np.int32))
        return (b[1], b[0], m.view(np.bool_)) if m.any() else None

    def polys(self, polys: list[np.ndarray]) -> Mask | None:
        """Union of filled polygons given as ``int32[N, 2]`` pixel points."""
        if not polys:
            return None
        allp = np.concatenate(polys)
        box = (*allp.min(0), *allp.max(0))
        return self._draw(box, lambda m, o: [cv2.fillPoly(m, [p - o], 1) for p in polys])

    def circle(self, c: tuple[float, float], r: float, thick: int = -1) -> Mask | None:
        r, pad = max(int(round(r)), 1), max(thick, 0) + 2
        cx, cy = int(round(c[0])), int(round(c[1]))
        box = (cx - r - pad, cy - r - pad, cx + r + pad, cy + r + pad)
        return self._draw(box, lambda m, o: cv2.circle(m, (cx - o[0], cy - o[1]), r, 1, thick))

    def line(self, p0: np.ndarray, p1: np.ndarray, thick: int) -> Mask | None:
        t = max(int(thick), 1)
        box = (min(p0[0], p1[0]) - t, min(p0[1], p1[1]) - t,
               max(p0[0], p1[0]) + t, max(p0[1], p1[1]) + t)
        return self._draw(box, lambda m, o: cv2.line(m, tuple(p0 - o), tuple(p1 - o), 1, t))

    # -- painting ------------------------------------------------------------------------
    def paint(
        self,
        m: Mask | None,
        rgb: np.ndarray,
        label: int,
        inst: int | None = None,
        depth: float | np.ndarray = 0.0,
        tex: np.ndarray | None = None,
        amp: float = 0.0,
    ) -> None:
        """Write colour (optionally modulated by a full-frame texture), label, instance, depth.

        ``depth`` is a scalar or a full-frame array broadcastable to ``[H, W]``.
        """
        if m is None:
            return
        y0, x0, mask = m
        sl = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))
        col = np.asarray(rgb, np.float32)
        if tex is not None and amp:  # colour over the box, written where the mask is set
            col = col * (1.0 + amp * tex[sl][..., None])
        np.copyto(self.img[sl], col, where=mask[..., None])
        np.copyto(self.lab[sl], label, where=mask, casting="unsafe")
        np.copyto(self.inst[sl], label if inst is None else inst, where=mask, casting="unsafe")
        if isinstance(depth, np.ndarray):
            depth = np.broadcast_to(depth, (self.h, self.w))[sl]
        np.copyto(self.depth[sl], depth, where=mask, casting="unsafe")


def noise_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise ``float32[h, w]`` with unit-ish std and features of ~``cell`` pixels."""
    gh, gw = max(h // cell, 1) + 2, max(w // cell, 1) + 2
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(small, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)
    return big[cell : cell + h, cell : cell + w] * 0.8
