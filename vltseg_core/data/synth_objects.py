"""Things and street furniture for the synthetic scenes, placed in metres and drawn far to near.

Every function draws one object at world position (x, z) onto ``c.cv`` and registers night
light sources in ``c.lights`` as ``(px, py, radius_px, rgb)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vltseg_core.data.synth_canvas import front_rect, quad
from vltseg_core.data.synth_scene import Ctx, Scene

PAINTS = ((200, 200, 205), (30, 30, 35), (150, 20, 25), (25, 50, 130), (120, 125, 130),
          (230, 230, 225), (60, 90, 60), (170, 140, 60))
SKIN = ((230, 190, 160), (190, 140, 100), (120, 80, 55), (250, 215, 185))
CLOTH = ((40, 40, 60), (150, 30, 30), (30, 80, 150), (200, 200, 190), (70, 70, 70),
         (160, 120, 60), (30, 110, 60), (220, 170, 40))


def _pick(c: Ctx, table: tuple) -> np.ndarray:
    return c.jitter(table[int(c.rng.integers(len(table)))], 14)


def _rect(c: Ctx, xc: float, w: float, y0: float, y1: float, z: float):
    return c.cv.polys([c.cam.project(front_rect(xc, w, y0, y1, z))])


def _thick(c: Ctx, metres: float, z: float) -> int:
    return max(int(round(metres * c.cam.scale(z))), 1)


def _light(c: Ctx, x: float, y: float, z: float, radius_m: float, rgb: tuple) -> None:
    p = c.cam.project(np.array([x, y, z], np.float32))
    c.lights.append((float(p[0]), float(p[1]), radius_m * c.cam.scale(z), rgb))


def vehicle_rear(c: Ctx, x: float, z: float, kind: str) -> None:
    """Car, truck or bus seen from behind (same direction) or front (oncoming, x < 0)."""
    lab = c.L[kind]
    inst = c.cv.new_instance(lab)
    w, h = {"car": (1.8, 1.5), "truck": (2.45, 3.4), "bus": (2.5, 3.1), "train": (2.65, 3.6)}[kind]
    w, h = w * c.rng.uniform(0.93, 1.07), h * c.rng.uniform(0.92, 1.08)
    body = {"bus": c.jitter((210, 170, 40), 40), "train": c.jitter((230, 230, 230), 10)}.get(
        kind, _pick(c, PAINTS))
    paint = c.cv.paint
    for dx in (-w / 2 + 0.25, w / 2 - 0.25):  # tyres
        paint(_rect(c, x + dx, 0.3, 0, 0.5, z), c.jitter((25, 25, 25), 4), lab, inst, z)
    if kind == "car":
        paint(_rect(c, x, w, 0.25, 0.95 * h * 0.62, z), body, lab, inst, z, c.tex["fine"], 0.06)
        cab = np.array([[x - w * 0.47, 0.6 * h, z], [x + w * 0.47, 0.6 * h, z],
                        [x + w * 0.36, h, z], [x - w * 0.36, h, z]], np.float32)
        paint(c.cv.polys([c.cam.project(cab)]), body * 0.95, lab, inst, z)
        paint(_rect(c, x, w * 0.66, 0.66 * h, 0.95 * h, z), c.jitter((45, 55, 65), 8), lab, inst, z)
    else:
        paint(_rect(c, x, w, 0.35, h, z), body, lab, inst, z, c.tex["blotch"], 0.08)
        if kind == "train":  # tram: coloured band and a pantograph above the roof
            paint(_rect(c, x, w, 0.4 * h, 0.5 * h, z), c.jitter((200, 30, 30), 20), lab, inst, z)
            a = c.cam.project(np.array([x - 0.5, h, z], np.float32))
            b = c.cam.project(np.array([x, h + 0.7, z], np.float32))
            paint(c.cv.line(a, b, _thick(c, 0.05, z)), c.jitter((40, 40, 40), 4), lab, inst, z)
        top = 0.55 if kind in ("bus", "train") else 0.8
        paint(_rect(c, x, w * 0.85, top * h, 0.93 * h, z), c.jitter((40, 50, 60), 8), lab, inst, z)
    oncoming = x < 0
    lamp = (255, 250, 220) if oncoming else (230, 20, 20)
    for dx in (-w / 2 + 0.2, w / 2 - 0.2):
        paint(_rect(c, x + dx, 0.22, 0.55, 0.7, z), np.array(lamp, np.float32) * 0.9, lab, inst, z)
        _light(c, x + dx, 0.62, z, 0.35 if oncoming else 0.2, lamp)
    paint(_rect(c, x, 0.5, 0.3, 0.42, z), c.jitter((225, 225, 210), 5), lab, inst, z)  # plate


def vehicle_side(c: Ctx, x: float, z: float, kind: str) -> None:
    """Parked vehicle in profile along the kerb: body in the plane X = x, two wheels."""
    lab = c.L[kind]
    inst = c.cv.new_instance(lab)
    length, h = {"car": (4.3, 1.45), "truck": (8.0, 3.4), "bus": (11.5, 3.1)}[kind]
    z1 = z + length * c.rng.uniform(0.92, 1.08)
    body = _pick(c, PAINTS) if kind != "bus" else c.jitter((200, 40, 40), 40)
    cam, cv = c.cam, c.cv
    width = {"car": 1.8, "truck": 2.45, "bus": 2.5}[kind]
    xo = x + np.sign(x) * width  # outer side (towards the kerb); the inner side faces us
    back = np.array([[x, 0.25, z], [x, h * 0.97, z], [xo, h * 0.97, z], [xo, 0.25, z]], np.float32)
    cv.paint(cv.polys([cam.project(back)]), body * 0.8, lab, inst, z)
    if kind == "car":
        cabin = np.array([[x, 0.8, z + 0.9], [x, h, z + 1.5], [x, h, z1 - 1.6],
                          [x, 0.8, z1 - 0.8]], np.float32)
        cv.paint(cv.polys([cam.project(cabin)]), c.jitter((50, 60, 70), 8), lab, inst, z)
        cv.paint(cv.polys([cam.project(quad(x, 0.25, 0.85, z, z1))]), body, lab, inst, z,
                 c.tex["fine"], 0.06)
    else:
        cv.paint(cv.polys([cam.project(quad(x, 0.3, h, z, z1))]), body, lab, inst, z,
                 c.tex["blotch"], 0.08)
        cv.paint(cv.polys([cam.project(quad(x, 0.55 * h, 0.85 * h, z + 0.5, z1 - 0.5))]),
                 c.jitter((40, 50, 60), 8), lab, inst, z)
    for zw in (z + 0.9, z1 - 0.9):
        p = cam.project(np.array([x, 0.33, zw], np.float32))
        cv.paint(cv.circle(p, 0.33 * cam.scale(zw)), c.jitter((25, 25, 25), 4), lab, inst, zw)


def person(c: Ctx, x: float, z: float, lab_name: str = "person", seated: bool = False,
           base: float = 0.0) -> None:
    """Pedestrian (or rider's body when ``seated``) facing the camera in the plane Z = z."""
    lab = c.L[lab_name]
    inst = c.cv.new_instance(lab)
    hp = float(c.rng.uniform(1.5, 1.95))
    hip = base + (0.45 * hp if not seated else 0.35 * hp)
    top = hip + 0.5 * hp
    skin, shirt, pants = _pick(c, SKIN), _pick(c, CLOTH), _pick(c, CLOTH)
    stride = float(c.rng.uniform(-0.2, 0.2))
    leg_t = _thick(c, 0.14, z)
    for s in (-1, 1):  # legs, arms
        hipp = c.cam.project(np.array([x + s * 0.1, hip, z], np.float32))
        foot = c.cam.project(np.array([x + s * (0.12 + stride * s), base + 0.3 * seated, z],
                                      np.float32))
        c.cv.paint(c.cv.line(hipp, foot, leg_t), pants, lab, inst, z)
        sh = c.cam.project(np.array([x + s * 0.2, top - 0.08, z], np.float32))
        hand = c.cam.project(np.array([x + s * 0.27, hip + 0.05, z], np.float32))
        c.cv.paint(c.cv.line(sh, hand, _thick(c, 0.09, z)), shirt * 0.9, lab, inst, z)
    c.cv.paint(_rect(c, x, 0.4, hip - 0.05, top, z), shirt, lab, inst, z, c.tex["fine"], 0.1)
    head = c.cam.project(np.array([x, top + 0.13, z], np.float32))
    c.cv.paint(c.cv.circle(head, 0.12 * c.cam.scale(z)), skin, lab, inst, z)
    hair = c.cam.project(np.array([x, top + 0.2, z], np.float32))
    c.cv.paint(c.cv.circle(hair, 0.08 * c.cam.scale(z)), _pick(c, CLOTH) * 0.4, lab, inst, z)


def two_wheeler(c: Ctx, x: float, z: float, kind: str, ridden: bool) -> None:
    """Bicycle or motorcycle in profile (crossing the road), optionally with a rider on it."""
    lab = c.L[kind]
    inst = c.cv.new_instance(lab)
    r = 0.34 if kind == "bicycle" else 0.32
    dx = 0.55 if kind == "bicycle" else 0.7
    col = _pick(c, PAINTS) * 0.8
    pts = {k: c.cam.project(np.array(v, np.float32)) for k, v in {
        "rw": [x - dx, r, z], "fw": [x + dx, r, z], "seat": [x - 0.2, 0.9, z],
        "bar": [x + 0.4, 1.0, z], "crank": [x, r, z]}.items()}
    ring = _thick(c, 0.08 if kind == "bicycle" else 0.12, z)
    for w in ("rw", "fw"):
        c.cv.paint(c.cv.circle(pts[w], r * c.cam.scale(z), ring), c.jitter((30, 30, 30), 5),
                   lab, inst, z)
    t = _thick(c, 0.07 if kind == "bicycle" else 0.1, z)
    for a, b in (("rw", "seat"), ("seat", "crank"), ("crank", "rw"), ("seat", "bar"),
                 ("bar", "fw"), ("crank", "bar")):
        c.cv.paint(c.cv.line(pts[a], pts[b], t), col, lab, inst, z)
    if kind == "motorcycle":
        c.cv.paint(_rect(c, x, 0.9, 0.45, 0.85, z), col, lab, inst, z, c.tex["fine"], 0.1)
        _light(c, x + dx + 0.05, 0.8, z, 0.2, (255, 245, 210))
    if ridden:
        person(c, x - 0.1, z - 0.01, "rider", seated=True, base=0.55)


def pole(c: Ctx, x: float, z: float, kind: str) -> None:
    """Plain pole, street lamp, traffic light or traffic sign at the kerb."""
    hgt = float(c.rng.uniform(3.0, 4.0) if kind in ("sign", "light") else c.rng.uniform(5, 8))
    metal = c.jitter((95, 95, 100), 15)
    c.cv.paint(_rect(c, x, float(c.rng.uniform(0.2, 0.32)), 0, hgt, z), metal, c.L["pole"],
               depth=z)
    if kind == "lamp":
        arm = -np.sign(x) * 1.2
        a, b = (c.cam.project(np.array(p, np.float32)) for p in ([x, hgt, z], [x + arm, hgt, z]))
        c.cv.paint(c.cv.line(a, b, _thick(c, 0.08, z)), metal, c.L["pole"], depth=z)
        c.cv.paint(_rect(c, x + arm, 0.5, hgt - 0.15, hgt, z), c.jitter((210, 210, 190), 8),
                   c.L["pole"], depth=z)
        _light(c, x + arm, hgt - 0.2, z, 0.9, (255, 210, 140))
    elif kind == "light":
        lab, y0 = c.L["traffic light"], hgt - 0.1
        c.cv.paint(_rect(c, x, 0.7, y0, y0 + 1.2, z), c.jitter((35, 35, 30), 6), lab, depth=z)
        on = int(c.rng.integers(3))
        for i, rgb in enumerate(((230, 40, 30), (240, 170, 30), (40, 220, 90))):
            p = c.cam.project(np.array([x, y0 + 0.98 - 0.38 * i, z], np.float32))
            col = np.array(rgb, np.float32) * (1.0 if i == on else 0.25)
            c.cv.paint(c.cv.circle(p, 0.14 * c.cam.scale(z)), col, lab, depth=z)
            if i == on:
                _light(c, x, y0 + 0.98 - 0.38 * i, z, 0.35, rgb)
    elif kind == "sign":
        sign(c, x, hgt, z)


def sign(c: Ctx, x: float, y: float, z: float) -> None:
    """Round, triangular, square or diamond plate with a contrasting rim/symbol."""
    lab, s = c.L["traffic sign"], c.cam.scale(z)
    shape = int(c.rng.integers(4))
    outer, inner = [((200, 30, 30), (235, 235, 235)), ((30, 70, 170), (230, 230, 230)),
                    ((240, 200, 30), (30, 30, 30)), ((235, 235, 235), (200, 30, 30))][shape]
    centre = c.cam.project(np.array([x, y + 0.55, z], np.float32))
    if shape == 0 or shape == 1:
        c.cv.paint(c.cv.circle(centre, 0.8 * s), c.jitter(outer, 10), lab, depth=z)
        c.cv.paint(c.cv.circle(centre, 0.55 * s), c.jitter(inner, 10), lab, depth=z)
        return
    r = 0.85
    pts = (np.array([[0, r], [r, 0], [0, -r], [-r, 0]]) if shape == 2 else
           np.array([[-r, -r * 0.8], [r, -r * 0.8], [0, r]]))
    world = np.concatenate([pts[:, :1] + x, pts[:, 1:] + y + 0.55, np.full((len(pts), 1), z)], 1)
    c.cv.paint(c.cv.polys([c.cam.project(world.astype(np.float32))]), c.jitter(outer, 10), lab,
               depth=z)
    c.cv.paint(c.cv.circle(centre, 0.15 * s), c.jitter(inner, 10), lab, depth=z)


def tree(c: Ctx, x: float, z: float) -> None:
    """Trunk plus a canopy of overlapping discs (all 'vegetation', as Cityscapes labels trees)."""
    lab, ht = c.L["vegetation"], float(c.rng.uniform(2.0, 4.0))
    c.cv.paint(_rect(c, x, 0.3, 0, ht, z), c.jitter((90, 70, 50), 10), lab, depth=z,
               tex=c.tex["fine"], amp=0.2)
    green = c.jitter((60, 110, 40), 20)
    for _ in range(int(c.rng.integers(3, 7))):
        p = c.cam.project(np.array([x + c.rng.normal(0, 1.0), ht + c.rng.uniform(0.5, 2.5), z],
                                   np.float32))
        c.cv.paint(c.cv.circle(p, c.rng.uniform(1.0, 2.2) * c.cam.scale(z)), green, lab,
                   depth=z, tex=c.tex["leaf"], amp=0.35)


Item = tuple[float, Callable[[], None]]


def _spaced(c: Ctx, start: float, stop: float, lo: float, hi: float) -> np.ndarray:
    """Depths from ``start`` to ``stop`` with random gaps in ``[lo, hi]`` metres."""
    gaps = c.rng.uniform(lo, hi, int((stop - start) / lo) + 1)
    z = start + np.cumsum(gaps)
    return z[z < stop]


def populate(c: Ctx) -> list[Item]:
    """All objects of a frame as (depth, draw) pairs; the caller draws far to near."""
    rng, items = c.rng, []
    kerb, walk = c.road_w, c.walk_w

    def add(z: float, fn: Callable[..., None], *args) -> None:
        items.append((float(z), lambda: fn(c, *args)))

    for s in (-1, 1):
        for z in _spaced(c, 2.0, 90.0, 8.0, 30.0):
            if rng.random() < 0.7:
                add(z, tree, s * (kerb + walk * rng.uniform(0.6, 0.95) + c.grass_w * 0.5), z)
        for z in _spaced(c, 3.0, 60.0, 6.0, 20.0):
            kind = ("plain", "lamp", "light", "sign", "light", "sign")[int(rng.integers(6))]
            add(z, pole, s * (kerb + 0.35), z, kind)
        for z in rng.uniform(3.0, 20.0, int(rng.poisson(8.0))):  # v4: 8 (v3: 5) per sidewalk
            add(z, person, s * (kerb + walk * rng.uniform(0.2, 0.8)), z)
        if rng.random() < 0.7:
            for z in _spaced(c, 3.0, 45.0, 6.0, 12.0)[: int(rng.integers(1, 5))]:
                kind = "car" if rng.random() < 0.8 else ("truck" if rng.random() < 0.5 else "bus")
                add(z, vehicle_side, s * (kerb - 2.1), z, kind)
        if rng.random() < 0.5:
            z = rng.uniform(4.0, 25.0)
            add(z, two_wheeler, s * (kerb + walk * 0.5), z, "bicycle", False)
    for _ in range(int(rng.integers(1, 6))):
        z, lane = rng.uniform(5.0, 50.0), (rng.random() < 0.5) * 2 - 1
        kind = ("car",) * 8 + ("truck", "truck", "bus", "bus", "train")
        kind = kind[int(rng.integers(len(kind)))]
        add(z, vehicle_rear, lane * kerb * rng.uniform(0.35, 0.6), z, kind)
    for _ in range(int(rng.poisson(1.5))):
        z = rng.uniform(4.0, 20.0)
        kind = "bicycle" if rng.random() < 0.6 else "motorcycle"
        add(z, two_wheeler, rng.uniform(-0.8, 0.8) * kerb, z, kind, True)
    for z in rng.uniform(4.0, 25.0, int(rng.poisson(1.2))):
        add(z, person, rng.uniform(-0.8, 0.8) * kerb, z)
    return items


def render_scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    """One clear-weather frame: sky, skyline, ground, buildings, barriers, then objects."""
    from vltseg_core.data.synth_scene import (draw_barrier, draw_buildings, draw_ground,
                                              draw_sky, draw_skyline, finish, new_context)

    c = new_context(rng, width, height)
    draw_sky(c)
    draw_skyline(c)
    draw_ground(c)
    for side in (-1, 1):
        if rng.random() < 0.85:
            draw_buildings(c, side)
        if rng.random() < 0.5:
            draw_barrier(c, side)
    for _, draw in sorted(populate(c), key=lambda it: -it[0]):
        draw()
    return finish(c)
