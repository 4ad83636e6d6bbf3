"""Writers for tiny datasets in each official on-disk layout (test helpers, not a test file).

Labels are written exactly as the real datasets store them: 8-bit grey maps (Cityscapes,
ACDC, BDD100K), palette PNGs (GTA5, Mapillary, whose palette colours differ from the
indices), 16-bit 3-channel PNGs (SYNTHIA) and 16-bit instance maps (Cityscapes).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

H, W = 24, 32


def write_rgb(path: Path, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Random RGB image (PNG is lossless, so a reader must return exactly this)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return img


def write_gray(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def write_palette(path: Path, arr: np.ndarray) -> None:
    """Indexed PNG whose palette maps index i to a colour unrelated to i (like GTA5/Vistas)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    pal = np.random.default_rng(1).integers(0, 256, 768).astype(np.uint8)
    im.putpalette(pal.tolist())
    im.save(path)


def cityscapes_label_ids(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """Label-id map using evaluated and ignored ids (0 unlabeled, 9 parking, 29 caravan...)."""
    ids = np.array([0, 4, 7, 8, 9, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 29, 33])
    return np.random.default_rng(seed).choice(ids, (h, w)).astype(np.uint8)


def instance_map(label_ids: np.ndarray) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """Instance map with two persons, one car, a 'cargroup' crowd and a caravan instance.

    Returns the uint16 map and the expected ``(train_id, [x0, y0, x1, y1])`` boxes.
    """
    inst = label_ids.astype(np.uint16).copy()
    inst[2:6, 3:5] = 24000  # person 0
    inst[10:20, 20:23] = 24001  # person 1
    inst[15:22, 5:14] = 26000  # car 0
    inst[0:2, 25:30] = 26  # crowd region: label id only, no instance
    inst[20:23, 25:31] = 29000  # caravan: ignored class, no box
    expected = [(11, [3, 2, 5, 6]), (11, [20, 10, 23, 20]), (13, [5, 15, 14, 22])]
    return inst, expected


def make_cityscapes(root: Path, split: str = "val", n: int = 3, train_ids: bool = True) -> list:
    from vltseg_core.data.labels import cityscapes_lut

    out = []
    for i in range(n):
        city = "aachen" if i % 2 == 0 else "bochum"
        core = f"{city}_{i:06d}_000019"
        write_rgb(root / "leftImg8bit" / split / city / f"{core}_leftImg8bit.png", seed=i)
        gt = root / "gtFine" / split / city
        ids = cityscapes_label_ids(i)
        inst, expected = instance_map(ids)
        write_gray(gt / f"{core}_gtFine_labelIds.png", ids)
        if train_ids:
            write_gray(gt / f"{core}_gtFine_labelTrainIds.png", cityscapes_lut()[ids])
        write_gray(gt / f"{core}_gtFine_instanceIds.png", inst)
        out.append((core, ids, expected))
    return out


def make_acdc(root: Path, conds=("fog", "night"), split: str = "val", n: int = 2,
              train_ids: bool = True) -> None:
    from vltseg_core.data.labels import cityscapes_lut

    for c_i, cond in enumerate(conds):
        for i in range(n):
            seq = f"GOPR{c_i:02d}{i % 2:02d}"
            core = f"{seq}_frame_{i:06d}"
            write_rgb(root / "rgb_anon" / cond / split / seq / f"{core}_rgb_anon.png", seed=i)
            ids = cityscapes_label_ids(10 * c_i + i)
            gt = root / "gt" / cond / split / seq
            name = f"{core}_gt_labelTrainIds.png" if train_ids else f"{core}_gt_labelIds.png"
            write_gray(gt / name, cityscapes_lut()[ids] if train_ids else ids)


def make_gta5(root: Path, n: int = 3, mismatch: int | None = 1) -> list[np.ndarray]:
    """GTA5 pairs; image ``mismatch`` is 2 px taller/wider than its label."""
    labels = []
    for i in range(1, n + 1):
        hh, ww = (H + 2, W + 4) if i == mismatch else (H, W)
        write_rgb(root / "images" / f"{i:05d}.png", hh, ww, seed=i)
        ids = cityscapes_label_ids(i)
        write_palette(root / "labels" / f"{i:05d}.png", ids)
        labels.append(ids)
    return labels


def make_synthia(root: Path, n: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """16-bit 3-channel labels: class in R, instance id in G (OpenCV writes BGR order)."""
    out = []
    for i in range(n):
        name = f"{i:07d}.png"
        write_rgb(root / "RGB" / name, seed=i)
        rng = np.random.default_rng(i)
        cls = rng.integers(0, 23, (H, W)).astype(np.uint16)
        cls[0, 0] = 300  # out-of-table value must become ignore, not wrap around
        inst = np.zeros((H, W), np.uint16)
        cls[4:9, 2:6], inst[4:9, 2:6] = 10, 1  # pedestrian instance 1
        cls[12:20, 10:18], inst[12:20, 10:18] = 8, 2  # car instance 2
        bgr = np.stack([np.zeros_like(cls), inst, cls], -1)
        write_gray(root / "GT" / "LABELS" / name, bgr)
        out.append((cls, inst))
    return out


def make_bdd(root: Path, official: bool = True, split: str = "val", n: int = 2) -> list:
    out = []
    for i in range(n):
        stem = f"7d2f7975-e0c1c5a{i}"
        if official:
            img = root / "images" / "10k" / split / f"{stem}.jpg"
            lab = root / "labels" / "sem_seg" / "masks" / split / f"{stem}.png"
        else:
            img = root / "seg" / "images" / split / f"{stem}.jpg"
            lab = root / "seg" / "labels" / split / f"{stem}_train_id.png"
        write_rgb(img, seed=i)
        tid = np.random.default_rng(i).choice([0, 1, 2, 10, 13, 18, 255], (H, W)).astype(np.uint8)
        write_gray(lab, tid)
        out.append(tid)
    return out


def make_mapillary(root: Path, split: str = "validation", v12: bool = True, n: int = 2) -> list:
    out = []
    for i in range(n):
        stem = f"-{i}abcDEF_xyz"
        write_rgb(root / split / "images" / f"{stem}.jpg", seed=i)
        idx = np.random.default_rng(i).integers(0, 66, (H, W)).astype(np.uint8)
        lab_dir = root / split / ("v1.2/labels" if v12 else "labels")
        write_palette(lab_dir / f"{stem}.png", idx)
        out.append(idx)
    return out


def make_coco(root: Path, split: str = "val2017") -> dict:
    write_rgb(root / split / "a.jpg", seed=0)
    write_rgb(root / split / "b.jpg", seed=1)
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H},
                   {"id": 2, "file_name": "b.jpg", "width": W, "height": H}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [4, 4, 6, 6], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            {"id": 4, "image_id": 1, "category_id": 44, "bbox": [0, 0, 5, 5], "iscrowd": 0},
            {"id": 5, "image_id": 2, "category_id": 4, "bbox": [3, 3, 2, 8], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                       {"id": 4, "name": "motorcycle"}, {"id": 44, "name": "bottle"}],
    }
    ann = root / "annotations" / f"instances_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    return data
