#!/usr/bin/env python3
"""Rendering speed of the synthetic benchmark (was a wall-clock test; timings belong here):
frames per minute for render + weather effect + PNG encoding of the image and three label maps,
the work `vltseg data synth` does per frame. Budget: 500 frames/min on 2 cores.

    python bench/bench_synth.py --frames 40 --width 512 --height 256
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from vltseg_core.data.synth_domains import DOMAINS, apply_domain
from vltseg_core.data.synth_objects import render_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(args.frames):
        scene = render_scene(np.random.default_rng([0, i]), args.width, args.height)
        cv2.imencode(".png", apply_domain(scene, DOMAINS[i % len(DOMAINS)], rng))
        for label in (scene.label, scene.label, scene.inst.astype(np.uint16)):
            cv2.imencode(".png", label)
    per_frame = (time.perf_counter() - start) / args.frames
    print(f"{per_frame * 1e3:.0f} ms per frame on one core = {60 / per_frame:.0f} frames/min per core "
          f"(budget 0.24 s/frame/core: 500 frames/min on 2 cores)")


if __name__ == "__main__":
    main()
