"""A COCO-format detection dataset whose categories are mapped onto the Cityscapes train ids.

Reads the JSON directly (images / annotations / categories) so it needs no pycocotools and
prints nothing. Samples follow the same ``(image, target, meta)`` contract as the
segmentation sets; ``sem_seg`` is all-ignore because COCO boxes carry no pixel labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vltseg_core.data.base import ArraySample, Sample, target_arrays, torch_target
from vltseg_core.data.io import DatasetError, check_same_size, read_rgb
from vltseg_core.data.labels import IGNORE_INDEX, name_to_train_id

# COCO/other spellings of the Cityscapes thing classes.
_SYNONYMS = {"pedestrian": "person", "motorbike": "motorcycle", "bike": "bicycle",
             "cyclist": "rider"}


def category_map_by_name(categories: list[dict[str, Any]]) -> dict[int, int]:
    """COCO category id -> train id for categories whose name is a Cityscapes class."""
    n2t = name_to_train_id()
    out = {}
    for cat in categories:
        name = str(cat["name"]).strip().lower()
        name = _SYNONYMS.get(name, name)
        if name in n2t:
            out[int(cat["id"])] = n2t[name]
    return out


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"COCO annotation file does not exist: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"COCO annotation file {path} is not valid JSON: {exc}") from exc
    missing = {"images", "annotations", "categories"} - set(data)
    if missing:
        raise DatasetError(f"COCO annotation file {path} lacks {sorted(missing)}")
    return data


class CocoDetection(Dataset):
    """Boxes from a COCO JSON; crowd boxes and unmapped categories are dropped.

    ``category_map`` (COCO category id -> train id) overrides the by-name mapping.
    """

    name = "coco"

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        category_map: dict[int, int] | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DatasetError(f"COCO image folder does not exist: {self.image_dir}")
        data = _load_json(Path(ann_file))
        self.category_map = category_map or category_map_by_name(data["categories"])
        if not self.category_map:
            names = [c.get("name") for c in data["categories"]]
            raise DatasetError(f"{ann_file}: no category maps to a Cityscapes class ({names})")
        self.images = sorted(data["images"], key=lambda im: int(im["id"]))
        if not self.images:
            raise DatasetError(f"COCO annotation file {ann_file} lists no images")
        self._anns: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in self.images}
        for ann in data["annotations"]:
            if int(ann["image_id"]) in self._anns:
                self._anns[int(ann["image_id"])].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def boxes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``float32[N, 4]`` xyxy and ``int64[N]`` train ids of image ``index``."""
        rows, labels = [], []
        for ann in self._anns[int(self.images[index]["id"])]:
            train = self.category_map.get(int(ann["category_id"]))
            x, y, w, h = (float(v) for v in ann["bbox"])
            if train is None or ann.get("iscrowd", 0) or w <= 0 or h <= 0:
                continue
            rows.append([x, y, x + w, y + h])
            labels.append(train)
        return np.asarray(rows, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)

    def __getitem__(self, index: int) -> Sample:
        image, target, meta = self.sample_arrays(index)
        return image, torch_target(target), meta

    def sample_arrays(self, index: int) -> ArraySample:
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = read_rgb(path)
        if "height" in info and "width" in info:
            check_same_size(image.shape, (int(info["height"]), int(info["width"])), path,
                            Path(f"<annotation of image id {info['id']}>"))
        boxes, labels = self.boxes(index)
        sem = np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        meta = {"file": str(path), "label_file": None, "name": Path(info["file_name"]).stem,
                "dataset": self.name, "orig_size": image.shape[:2], "image_id": int(info["id"])}
        return image, target_arrays(sem, boxes, labels), meta
