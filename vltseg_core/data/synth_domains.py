"""Adverse-condition renderings of a clear synthetic scene, modelled on what ACDC shows.

Each effect changes appearance only (labels are those of the scene, as in ACDC where a road
under snow is still road): fog attenuates with depth towards a grey airlight; night darkens,
tints blue, lights windows/lamps/vehicle lights with glow and adds sensor noise; rain darkens,
blurs, desaturates and overlays streaks; snow whitens the ground classes, desaturates and adds
flakes. All randomness comes from the frame's generator, so output is deterministic.
"""

from __future__ import annotations

import cv2
import numpy as np

from vltseg_core.data.synth_canvas import noise_field
from vltseg_core.data.synth_scene import Scene, label_ids

DOMAINS = ("clear", "fog", "night", "rain", "snow")


def _gray(img: np.ndarray) -> np.ndarray:
    return (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


def _desaturate(img: np.ndarray, amount: float) -> np.ndarray:
    return img * (1 - amount) + _gray(img) * amount


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0.3 else img


def clear(s: Scene, rng: np.random.Generator) -> np.ndarray:
    """Source domain: small exposure and white-balance jitter only."""
    gain = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    return s.image * gain


def fog(s: Scene, rng: np.random.Generator) -> np.ndarray:
    """Koschmieder model: transmission exp(-beta * depth) towards a grey airlight."""
    beta = rng.uniform(0.015, 0.05)
    t = np.exp(-beta * np.minimum(s.depth, 400.0))[..., None]
    air = rng.uniform(170, 220) + rng.normal(0, 4, 3).astype(np.float32)
    img = s.image * t + air * (1 - t)
    mean = img.mean((0, 1), keepdims=True)
    img = mean + (img - mean) * rng.uniform(0.7, 0.9)
    return _blur(img, rng.uniform(0.5, 1.2))


def night(s: Scene, rng: np.random.Generator) -> np.ndarray:
    """Dark, blue-tinted base; lit windows; glowing lamps and vehicle lights; sensor noise."""
    h, w = s.label.shape
    img = 255.0 * (s.image / 255.0) ** 1.6 * rng.uniform(0.1, 0.22)
    img *= np.array([0.75, 0.85, 1.15], np.float32)
    sky = s.label == label_ids()["sky"]
    grad = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img[sky] = (np.array([8, 12, 30], np.float32) + grad * np.array([30, 22, 18]))[
        np.nonzero(sky)[0], 0]
    lit = np.zeros((h, w), np.uint8)
    for quad in s.windows:
        if rng.random() < 0.3:
            cv2.fillPoly(lit, [quad], 1)
    lit_px = (lit > 0) & (s.label == label_ids()["building"])
    img[lit_px] = np.array([210, 170, 90], np.float32) * rng.uniform(0.5, 1.0)
    img += _glow(s, h, w, rng)
    img = _blur(img, 0.7) + rng.normal(0, rng.uniform(3, 8), (h, w, 1)).astype(np.float32)
    return img + rng.normal(0, 2, (h, w, 3)).astype(np.float32)


def _glow(s: Scene, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Additive halo of every light source, rendered at quarter resolution and blurred."""
    f = 4
    layer = np.zeros((h // f + 1, w // f + 1, 3), np.float32)
    for x, y, r, rgb in s.lights:
        if -2 * r < x < w + 2 * r and -2 * r < y < h + 2 * r:
            radius = max(int(round(r * 1.5 / f)), 1)
            cv2.circle(layer, (int(x / f), int(y / f)), radius, tuple(float(v) for v in rgb), -1)
    halo = cv2.GaussianBlur(layer, (0, 0), rng.uniform(1.5, 3.0)) * rng.uniform(1.2, 2.0)
    core = cv2.GaussianBlur(layer, (0, 0), 0.8) * 0.8
    return cv2.resize(halo + core, (w, h), interpolation=cv2.INTER_LINEAR)


def rain(s: Scene, rng: np.random.Generator) -> np.ndarray:
    """Overcast darkening, blur, wet sheen on the road and slanted streaks."""
    h, w = s.label.shape
    img = _desaturate(s.image * rng.uniform(0.6, 0.85), rng.uniform(0.3, 0.5))
    img *= np.array([0.95, 0.98, 1.05], np.float32)
    road = s.label == label_ids()["road"]
    sheen = np.clip(noise_field(rng, h, w, 8), 0, None) * rng.uniform(8, 25)
    img[road] += sheen[road][:, None]
    img = _blur(img, rng.uniform(0.6, 1.3))
    streaks = np.zeros((h, w), np.float32)
    angle = np.deg2rad(rng.uniform(-20, 20))
    for _ in range(int(rng.integers(300, 900)) * h * w // (512 * 256)):
        x0, y0, ln = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(6, 22)
        p1 = (int(x0 + ln * np.sin(angle)), int(y0 + ln * np.cos(angle)))
        cv2.line(streaks, (int(x0), int(y0)), p1, float(rng.uniform(0.3, 0.9)), 1)
    a = (_blur(streaks, 0.6) * rng.uniform(0.35, 0.6))[..., None]
    return img * (1 - a) + 215.0 * a


def snow(s: Scene, rng: np.random.Generator) -> np.ndarray:
    """Patchy snow cover on ground/vegetation/structures, white sky, flakes."""
    h, w = s.label.shape
    ids = label_ids()
    cover = np.zeros((h, w), np.float32)
    for name, bias in (("terrain", 0.9), ("sidewalk", 0.7), ("vegetation", 0.35),
                       ("road", 0.3), ("wall", 0.25), ("fence", 0.2), ("building", 0.1)):
        cover[s.label == ids[name]] = bias
    amount = np.clip(cover * 1.4 - 0.4 + 0.5 * noise_field(rng, h, w, 12), 0, 1)[..., None]
    white = np.array([232, 236, 244], np.float32) + rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    img = _desaturate(s.image, rng.uniform(0.3, 0.6)) * (1 - amount) + white * amount
    img[s.label == ids["sky"]] = rng.uniform(195, 225) + np.array([0, 3, 8], np.float32)
    img = img * rng.uniform(1.0, 1.12)
    flakes = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(300, 1200)) * h * w // (512 * 256)):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.circle(flakes, c, int(rng.choice([0, 1, 1, 2])), float(rng.uniform(0.5, 1.0)), -1)
    a = (_blur(flakes, 0.7) * 0.9)[..., None]
    return img * (1 - a) + 250.0 * a


EFFECTS = {"clear": clear, "fog": fog, "night": night, "rain": rain, "snow": snow}


def apply_domain(scene: Scene, domain: str, rng: np.random.Generator) -> np.ndarray:
    """``uint8[H, W, 3]`` RGB rendering of ``scene`` under ``domain``."""
    if domain not in EFFECTS:
        raise ValueError(f"unknown domain '{domain}'; known: {DOMAINS}")
    img = EFFECTS[domain](scene, rng)
    return np.clip(img, 0, 255).round().astype(np.uint8)
