"""The synthetic domain-shift benchmark: writes clear scenes in the Cityscapes layout and
fog/night/rain/snow scenes in the ACDC layout, so the real loaders read it unchanged.

Layout under ``out``::

    leftImg8bit/{train,val}/{city}/{city}_{seq:06d}_000019_leftImg8bit.png      (clear)
    gtFine/{train,val}/{city}/{...}_gtFine_{labelIds,labelTrainIds,instanceIds}.png
    rgb_anon/{cond}/val/{seq}/{seq}_frame_{k:06d}_rgb_anon.png                  (targets)
    gt/{cond}/val/{seq}/{...}_gt_{labelIds,labelTrainIds,instanceIds}.png
    annotations/instances_{train,val}.json   COCO boxes of the clear splits (file_name
                                             relative to ``out``)
    synth.json                               generation parameters and counts

Every frame draws from ``np.random.default_rng([seed, domain, split, index])``, so output is
byte-identical for a given seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vltseg_core.data.base import boxes_from_instance_map
from vltseg_core.data.labels import cityscapes_classes, cityscapes_lut, thing_train_ids
from vltseg_core.data.synth_domains import DOMAINS, apply_domain
from vltseg_core.data.synth_objects import render_scene

VERSION = 4  # 2: things drawn larger, nearer and more often (issue 13); 3: more persons, larger
# signs and lights; 4: 8 persons per sidewalk instead of 5 (person pixels ~1.3-1.8x)
FRAMES_PER_SEQ = 50


@dataclass(frozen=True)
class Frame:
    """One file set to render: where it goes and which random stream draws it."""

    domain: str
    split: str
    index: int
    image: str  # path relative to the output root
    gt_prefix: str  # relative label path without the "{labelIds,...}.png" tail
    seed: tuple[int, ...]


def plan_frames(n: int, n_target: int, seed: int, domains: Sequence[str],
                fractions: tuple[float, float]) -> list[Frame]:
    """File names and random streams of every frame (clear: train/val; targets: val)."""
    frames = []
    n_train = int(round(n * fractions[0] / sum(fractions)))
    for d_idx, dom in enumerate(DOMAINS):
        if dom not in domains:
            continue
        splits = [("val", n_target)]
        if dom == "clear":
            splits = [("train", n_train), ("val", n - n_train)]
        for s_idx, (split, count) in enumerate(splits):
            for i in range(count):
                frames.append(_frame(dom, split, i, (seed, d_idx, s_idx, i)))
    return frames


def _frame(dom: str, split: str, i: int, seed: tuple[int, ...]) -> Frame:
    if dom == "clear":
        city = f"syn{split[:2]}{i // FRAMES_PER_SEQ:02d}"
        core = f"{city}_{i:06d}_000019"
        img = f"leftImg8bit/{split}/{city}/{core}_leftImg8bit.png"
        return Frame(dom, split, i, img, f"gtFine/{split}/{city}/{core}_gtFine_", seed)
    seq = f"syn{dom}{i // FRAMES_PER_SEQ:02d}"
    core = f"{seq}_frame_{i:06d}"
    img = f"rgb_anon/{dom}/{split}/{seq}/{core}_rgb_anon.png"
    return Frame(dom, split, i, img, f"gt/{dom}/{split}/{seq}/{core}_gt_", seed)


def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"could not write {path}")


def render_frame(frame: Frame, out: Path, size: tuple[int, int]) -> dict:
    """Render, write the image and its three label maps; return the COCO record of boxes."""
    cv2.setNumThreads(1)
    scene = render_scene(np.random.default_rng(list(frame.seed)), size[0], size[1])
    image = apply_domain(scene, frame.domain, np.random.default_rng([*frame.seed, 1]))
    lut = cityscapes_lut()
    _write_png(out / frame.image, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    _write_png(out / f"{frame.gt_prefix}labelIds.png", scene.label)
    _write_png(out / f"{frame.gt_prefix}labelTrainIds.png", lut[scene.label])
    _write_png(out / f"{frame.gt_prefix}instanceIds.png", scene.inst.astype(np.uint16))
    boxes, labels = boxes_from_instance_map(scene.inst, lut, thing_train_ids())
    return {"image": frame.image, "boxes": boxes.tolist(), "labels": labels.tolist()}


def sequence_frame(domain: str, index: int, size: tuple[int, int] = (1024, 512),
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame `index` of a drive through `domain` ((W, H) `size`): (RGB uint8 [H, W, 3], train
    ids uint8 [H, W], 255 = ignore). Deterministic in (domain, index, seed); the live demo's
    camera and `vltseg-ros bag make` stream these."""
    image, labels, _, _ = sequence_sample(domain, index, size, seed)
    return image, labels


def sequence_sample(domain: str, index: int, size: tuple[int, int] = (1024, 512), seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`sequence_frame` plus its instance boxes: (image, train ids, boxes float32 [N, 4] xyxy,
    box train ids int64 [N]) of the thing classes, as the benchmark's instance maps give them."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; one of {', '.join(DOMAINS)}")
    stream = [seed, 100 + DOMAINS.index(domain), index]
    scene = render_scene(np.random.default_rng(stream), size[0], size[1])
    image = apply_domain(scene, domain, np.random.default_rng([*stream, 1]))
    lut = cityscapes_lut()
    boxes, labels = boxes_from_instance_map(scene.inst, lut, thing_train_ids())
    return image, lut[scene.label], boxes, labels


def _render_star(args: tuple[Frame, Path, tuple[int, int]]) -> dict:
    return render_frame(*args)


def _run(frames: list[Frame], out: Path, size: tuple[int, int], workers: int,
         progress: bool) -> list[dict]:
    tasks = [(f, out, size) for f in frames]
    if workers <= 1:
        it = map(_render_star, tasks)
        return list(_track(it, len(tasks), progress))
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        return list(_track(pool.imap(_render_star, tasks, chunksize=8), len(tasks), progress))


def _track(it, total: int, enabled: bool):
    if not enabled:
        return it
    from rich.progress import track

    return track(it, total=total, description="synth")


def write_coco(out: Path, frames: list[Frame], records: list[dict], size: tuple[int, int]) -> None:
    """COCO JSON of the clear splits; categories are the thing classes by Cityscapes label id."""
    cats = [{"id": c.label_id, "name": c.name} for c in cityscapes_classes() if c.is_thing]
    to_label = {c.train_id: c.label_id for c in cityscapes_classes()}
    for split in ("train", "val"):
        images, anns = [], []
        for f, rec in zip(frames, records):
            if f.domain != "clear" or f.split != split:
                continue
            images.append({"id": len(images) + 1, "file_name": rec["image"],
                           "width": size[0], "height": size[1]})
            for (x0, y0, x1, y1), t in zip(rec["boxes"], rec["labels"]):
                anns.append({"id": len(anns) + 1, "image_id": len(images),
                             "category_id": to_label[t], "bbox": [x0, y0, x1 - x0, y1 - y0],
                             "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        if images:
            path = out / "annotations" / f"instances_{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def generate(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: tuple[int, int] = (512, 256),
    domains: Sequence[str] = DOMAINS,
    split_fractions: tuple[float, float] = (0.8, 0.2),
    n_target: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Write the benchmark to ``out``; returns the summary also saved as ``synth.json``.

    ``n`` clear frames are split train/val by ``split_fractions``; each target domain gets
    ``n_target`` val frames (default ``max(1, n // 5)``). ``size`` is (width, height).
    """
    unknown = set(domains) - set(DOMAINS)
    if unknown or n < 1:
        raise ValueError(f"need n >= 1 and domains among {DOMAINS}; got n={n}, {sorted(unknown)}")
    out = Path(out)
    n_target = max(1, n // 5) if n_target is None else n_target
    frames = plan_frames(n, n_target, seed, domains, split_fractions)
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    t0 = time.perf_counter()
    records = _run(frames, out, tuple(size), workers, progress)
    write_coco(out, frames, records, tuple(size))
    counts: dict[str, int] = {}
    for f in frames:
        counts[f"{f.domain}/{f.split}"] = counts.get(f"{f.domain}/{f.split}", 0) + 1
    summary = {"version": VERSION, "seed": seed, "size": list(size), "n": n, "n_target": n_target,
               "domains": [d for d in DOMAINS if d in domains], "counts": counts}
    (out / "synth.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return {**summary, "seconds": time.perf_counter() - t0, "frames": len(frames)}


def synth_main(out: Path, n: int = 500, seed: int = 0, width: int = 512, height: int = 256) -> dict:
    """CLI body of ``vltseg data synth``: generate and print where/what was written."""
    summary = generate(out, n, seed, size=(width, height))
    print(f"wrote {summary['frames']} frames ({summary['counts']}) to {out} "
          f"in {summary['seconds']:.1f}s")
    return summary
