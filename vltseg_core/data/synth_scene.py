"""Procedural street scenes: layout (road to a vanishing point, sidewalks, terrain, building
rows, skyline) and stuff classes. Things (vehicles, people, poles, signs, trees) live in
``synth_objects``. Everything is placed in metres and projected, so apparent size falls off
with depth exactly like a real camera, and each frame draws its own camera and colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from vltseg_core.data.labels import cityscapes_classes
from vltseg_core.data.synth_canvas import SKY_DEPTH, Camera, Canvas, front_rect, noise_field, quad


@lru_cache(maxsize=1)
def label_ids() -> dict[str, int]:
    """Cityscapes label id by class name (the generator writes label ids, like gtFine)."""
    return {c.name: c.label_id for c in cityscapes_classes()}


@dataclass
class Scene:
    """A rendered clear-weather frame plus what the weather effects need to know."""

    image: np.ndarray  # float32 [H, W, 3] 0..255
    label: np.ndarray  # uint8 [H, W] Cityscapes label ids
    inst: np.ndarray  # int32 [H, W] label id, or label id * 1000 + k for things
    depth: np.ndarray  # float32 [H, W] metres (sky = SKY_DEPTH)
    # night light sources: (x px, y px, radius px, rgb)
    lights: list[tuple[float, float, float, tuple]] = field(default_factory=list)
    windows: list[np.ndarray] = field(default_factory=list)  # pixel quads, lit at night


@dataclass
class Ctx:
    """Per-frame state shared by the drawing functions."""

    rng: np.random.Generator
    cam: Camera
    cv: Canvas
    tex: dict[str, np.ndarray]
    road_w: float  # half width (m)
    walk_w: float
    grass_w: float
    lights: list = field(default_factory=list)
    windows: list = field(default_factory=list)

    def jitter(self, rgb: tuple[float, float, float], amount: float = 18.0) -> np.ndarray:
        return np.clip(np.asarray(rgb, np.float32) + self.rng.normal(0, amount, 3), 5, 250)

    @property
    def L(self) -> dict[str, int]:  # noqa: N802 - short alias used in every drawing call
        return label_ids()


def make_camera(rng: np.random.Generator, width: int, height: int) -> Camera:
    return Camera(
        width, height,
        focal=float(width * rng.uniform(0.55, 0.9)),
        cx=float(width * rng.uniform(0.38, 0.62)),
        horizon=float(height * rng.uniform(0.36, 0.5)),
        cam_h=float(rng.uniform(1.2, 1.9)),
    )


def make_textures(rng: np.random.Generator, cam: Camera) -> dict[str, np.ndarray]:
    """Full-frame modulation fields: fine grain, blotches, foliage, paving and a lattice."""
    h, w = cam.height, cam.width
    fine = (rng.standard_normal((h, w), dtype=np.float32) * 0.5).clip(-1.5, 1.5)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    z = cam.ground_depth()
    gx = (xx - cam.cx) * z / cam.focal  # ground-plane coordinates of each pixel
    paving = ((z % 0.6 < 0.07) | (np.abs(gx) % 0.6 < 0.07)).astype(np.float32) * -1.5
    lattice = ((xx % 5 < 1.5) | ((xx + yy) % 7 < 1.5)).astype(np.float32) * -1.0 + 0.4
    leaf = noise_field(rng, h, w, 3) + 0.6 * noise_field(rng, h, w, 9)
    return {"fine": fine, "blotch": noise_field(rng, h, w, 24), "leaf": leaf,
            "paving": paving + 0.3 * fine, "lattice": lattice}


def draw_sky(c: Ctx) -> None:
    """Vertical gradient, sometimes overcast, with soft clouds."""
    h = c.cam.height
    overcast = c.rng.random() < 0.3
    top = c.jitter((175, 180, 185) if overcast else (70, 125, 205), 12)
    bottom = c.jitter((205, 208, 210) if overcast else (170, 200, 230), 10)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    c.cv.img[:] = top * (1 - t) + bottom * t
    c.cv.img += (np.clip(c.tex["blotch"], 0, None) * c.rng.uniform(10, 40))[..., None]
    c.cv.lab[:] = c.L["sky"]
    c.cv.inst[:] = c.L["sky"]


def draw_ground(c: Ctx) -> None:
    """Terrain everywhere below the horizon, then sidewalks, road and lane markings."""
    cam, cv, rng, gz = c.cam, c.cv, c.rng, c.cam.ground_depth()
    far = 2000.0
    band = np.array([[-1e4, 0, 0.6], [1e4, 0, 0.6], [1e4, 0, far], [-1e4, 0, far]], np.float32)
    dirt = rng.random() < 0.3
    cv.paint(cv.polys([cam.project(band)]), c.jitter((120, 100, 70) if dirt else (95, 135, 60)),
             c.L["terrain"], depth=gz, tex=c.tex["leaf"], amp=0.18)
    walk = c.jitter((165, 160, 150), 20)
    for s in (-1, 1):
        x0, x1 = s * c.road_w, s * (c.road_w + c.walk_w)
        pts = np.array([[x0, 0, 0.6], [x1, 0, 0.6], [x1, 0, far], [x0, 0, far]], np.float32)
        cv.paint(cv.polys([cam.project(pts)]), walk, c.L["sidewalk"], depth=gz,
                 tex=c.tex["paving"], amp=0.12)
    road = np.array([[-c.road_w, 0, 0.6], [c.road_w, 0, 0.6], [c.road_w, 0, far],
                     [-c.road_w, 0, far]], np.float32)
    asphalt = rng.uniform(75, 125) + rng.normal(0, 4, 3).astype(np.float32)
    cv.paint(cv.polys([cam.project(road)]), asphalt, c.L["road"],
             depth=gz, tex=c.tex["fine"], amp=0.12)
    draw_markings(c, gz)


def draw_markings(c: Ctx, gz: np.ndarray) -> None:
    """Dashed centre line and solid edge lines; Cityscapes counts markings as road."""
    def strip(x: float, half: float, z0: float, z1: float) -> np.ndarray:
        pts = [[x - half, 0, z0], [x + half, 0, z0], [x + half, 0, z1], [x - half, 0, z1]]
        return c.cam.project(np.array(pts, np.float32))

    z0 = float(c.rng.uniform(1.0, 9.0))
    dashes = [strip(0.0, 0.08, z, z + 3.0) for z in np.arange(z0, 150.0, 9.0)]
    dashes += [strip(s * (c.road_w - 0.3), 0.07, 0.6, 300.0) for s in (-1, 1)]
    c.cv.paint(c.cv.polys(dashes), c.jitter((225, 225, 215), 8), c.L["road"], depth=gz,
               tex=c.tex["fine"], amp=0.08)


FACADES = ((190, 170, 140), (150, 80, 60), (130, 130, 135), (215, 210, 200), (200, 185, 120))


def draw_skyline(c: Ctx) -> None:
    """Distant blocks and a tree band at the horizon (depth 100-300 m)."""
    cam, cv, rng = c.cam, c.cv, c.rng
    for _ in range(int(rng.integers(4, 12))):
        z = float(rng.uniform(120, 300))
        x = float(rng.uniform(-0.7, 0.7) * z)
        pts = front_rect(x, float(rng.uniform(10, 40)), 0, float(rng.uniform(8, 60)), z)
        cv.paint(cv.polys([cam.project(pts)]), c.jitter(FACADES[rng.integers(len(FACADES))], 25),
                 c.L["building"], depth=z, tex=c.tex["blotch"], amp=0.1)
    for _ in range(int(rng.integers(3, 10))):
        z = float(rng.uniform(80, 200))
        p = cam.project(np.array([rng.uniform(-0.6, 0.6) * z, rng.uniform(3, 8), z], np.float32))
        cv.paint(cv.circle(p, cam.scale(z) * rng.uniform(4, 10)), c.jitter((60, 100, 45)),
                 c.L["vegetation"], depth=z, tex=c.tex["leaf"], amp=0.3)


def draw_buildings(c: Ctx, side: int) -> None:
    """A row of blocks along one side: side facade, front face toward the camera, windows."""
    cam, cv, rng = c.cam, c.cv, c.rng
    xb = side * (c.road_w + c.walk_w + c.grass_w + rng.uniform(0, 3))
    blocks, z = [], float(rng.uniform(1.0, 12.0))
    while z < 140:
        length = float(rng.uniform(8, 30))
        if rng.random() < 0.8:
            blocks.append((z, z + length, float(rng.uniform(6, 28))))
        z += length + (rng.uniform(2, 10) if rng.random() < 0.3 else 0)
    for z0, z1, hb in reversed(blocks):  # far first
        col = c.jitter(FACADES[rng.integers(len(FACADES))], 22)
        face = cam.project(quad(xb, 0, hb, z0, z1))
        front = cam.project(np.array([[xb, 0, z0], [xb, hb, z0], [xb + side * 30, hb, z0],
                                      [xb + side * 30, 0, z0]], np.float32))
        depth = float(z0 + z1) / 2
        cv.paint(cv.polys([front]), col * 0.85, c.L["building"], depth=z0, tex=c.tex["blotch"],
                 amp=0.12)
        cv.paint(cv.polys([face]), col, c.L["building"], depth=depth, tex=c.tex["blotch"], amp=0.12)
        draw_windows(c, xb, z0, z1, hb, col)


def draw_windows(c: Ctx, xb: float, z0: float, z1: float, hb: float, col: np.ndarray) -> None:
    """Grid of window quads on a facade (still 'building'); kept for night lighting."""
    ys = np.arange(1.0, hb - 1.5, 3.0)
    zs = np.arange(z0 + 1.0, z1 - 1.5, c.rng.uniform(2.2, 3.5))
    if len(ys) == 0 or len(zs) == 0:
        return
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    pts = np.stack([np.full_like(yy, xb), yy, zz], -1).reshape(-1, 1, 3)
    offs = np.array([[0, 0, 0], [0, 1.5, 0], [0, 1.5, 1.2], [0, 0, 1.2]], np.float32)
    wins = list(c.cam.project((pts + offs).astype(np.float32)))
    glass = np.clip(col * 0.35 + c.rng.normal(0, 6, 3) + np.array([10, 15, 25]), 0, 255)
    c.cv.paint(c.cv.polys(wins), glass, c.L["building"], depth=float(z0 + z1) / 2,
               tex=c.tex["fine"], amp=0.1)
    c.windows.extend(wins)


def draw_barrier(c: Ctx, side: int) -> None:
    """A wall or fence segment along the far edge of the grass strip."""
    cam, cv, rng = c.cam, c.cv, c.rng
    x = side * (c.road_w + c.walk_w + c.grass_w * rng.uniform(0.6, 1.0))
    z0 = float(rng.uniform(2, 30))
    z1 = z0 + float(rng.uniform(8, 60))
    is_wall = rng.random() < 0.5
    hgt = float(rng.uniform(0.8, 2.5))
    pts = cam.project(quad(x, 0, hgt, z0, z1))
    if is_wall:
        cv.paint(cv.polys([pts]), c.jitter((155, 150, 140), 20), c.L["wall"], depth=z0,
                 tex=c.tex["blotch"], amp=0.2)
    else:
        cv.paint(cv.polys([pts]), c.jitter((120, 105, 85), 25), c.L["fence"], depth=z0,
                 tex=c.tex["lattice"], amp=0.35)


def new_context(rng: np.random.Generator, width: int, height: int) -> Ctx:
    cam = make_camera(rng, width, height)
    return Ctx(rng, cam, Canvas(height, width), make_textures(rng, cam),
               road_w=float(rng.uniform(3.5, 8.0)), walk_w=float(rng.uniform(1.5, 4.5)),
               grass_w=float(rng.uniform(0.0, 5.0)))


def finish(c: Ctx) -> Scene:
    img = np.clip(c.cv.img, 0, 255)
    return Scene(img, c.cv.lab, c.cv.inst, c.cv.depth, c.lights, c.windows)


__all__ = ["SKY_DEPTH", "Ctx", "Scene", "draw_barrier", "draw_buildings", "draw_ground",
           "draw_sky", "draw_skyline", "finish", "label_ids", "new_context"]
