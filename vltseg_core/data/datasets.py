"""One entry point for every dataset: ``build_dataset(name, root, split, **kw)``.

The registry is a plain dict of constructors (no decorators editing globals), so the CLI and
configs name datasets by string while code can still import the classes directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from vltseg_core.data.base import Record, Sample, SegDataset, boxes_from_instance_map
from vltseg_core.data.cityscapes import ACDC, Cityscapes
from vltseg_core.data.coco import CocoDetection
from vltseg_core.data.io import DatasetError
from vltseg_core.data.sources import BDD100K, GTA5, Mapillary, Synthia


def _coco(root: str | Path, split: str, ann_file: str | Path | None = None,
          image_dir: str | Path | None = None, **kw: Any) -> CocoDetection:
    """COCO layout: ``{root}/{split}/`` images and ``{root}/annotations/instances_{split}.json``."""
    root = Path(root)
    image_dir = Path(image_dir) if image_dir else root / split
    ann_file = Path(ann_file) if ann_file else root / "annotations" / f"instances_{split}.json"
    return CocoDetection(image_dir, ann_file, **kw)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "cityscapes": Cityscapes,
    "acdc": ACDC,
    "gta5": GTA5,
    "synthia": Synthia,
    "bdd100k": BDD100K,
    "mapillary": Mapillary,
    "coco": _coco,
}


def build_dataset(name: str, root: str | Path, split: str, **kw: Any) -> Dataset:
    """Construct dataset ``name`` (a key of :data:`DATASETS`) from ``root`` for ``split``."""
    try:
        ctor = DATASETS[name.lower()]
    except KeyError:
        raise DatasetError(f"unknown dataset '{name}'; known: {sorted(DATASETS)}") from None
    return ctor(root, split=split, **kw)


__all__ = [
    "ACDC", "BDD100K", "DATASETS", "GTA5", "CocoDetection", "Cityscapes", "DatasetError",
    "Mapillary", "Record", "Sample", "SegDataset", "Synthia", "boxes_from_instance_map",
    "build_dataset",
]
