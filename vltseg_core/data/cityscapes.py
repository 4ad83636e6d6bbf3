"""Cityscapes and ACDC in their official layouts (the synthetic benchmark writes the same ones).

Cityscapes::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png   (preferred, if made)
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png        (mapped otherwise)
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png     (boxes)

ACDC::

    rgb_anon/{condition}/{split}/{seq}/{seq}_frame_{n}_rgb_anon.png
    gt/{condition}/{split}/{seq}/{seq}_frame_{n}_gt_labelTrainIds.png  (or _gt_labelIds.png)

ACDC ships instances only as panoptic JSON; a ``_gt_instanceIds.png`` next to the labels (as
the synthetic benchmark writes) is used for boxes when present.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vltseg_core.data.base import Record, SegDataset
from vltseg_core.data.io import DatasetError, glob_files, require_dir, require_split_dir
from vltseg_core.data.labels import train_id_lut, cityscapes_lut


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _label_record(img: Path, core: str, gt_dir: Path, gt_tag: str, extra=()) -> Record | None:
    """Record for one image whose labels sit in ``gt_dir`` as ``{core}_{gt_tag}_*.png``."""
    train = gt_dir / f"{core}_{gt_tag}_labelTrainIds.png"
    ids = gt_dir / f"{core}_{gt_tag}_labelIds.png"
    label = _first_existing(train, ids)
    if label is None:
        return None
    inst = _first_existing(gt_dir / f"{core}_{gt_tag}_instanceIds.png")
    lut = "train" if label == train else "label"
    return Record(img, label, core, lut, inst, tuple(extra))


def _split_records(img_dir: Path, gt_split: Path, image_suffix: str, gt_tag: str, what: str,
                  extra: tuple[tuple[str, str], ...] = ()) -> list[Record]:
    """Records of ``img_dir/<seq>/{core}{image_suffix}`` with labels beside the same ``<seq>``
    under ``gt_split``; ``what`` names the split in errors (a missing label is one error)."""
    if not gt_split.is_dir():
        raise DatasetError(f"{what} has no labels: missing {gt_split}")
    images = glob_files(img_dir, f"*/*{image_suffix}", f"{what} images")
    records, missing = [], []
    for img in images:
        core = img.name[: -len(image_suffix)]
        rec = _label_record(img, core, gt_split / img.parent.name, gt_tag, extra)
        (missing.append(img) if rec is None else records.append(rec))
    if missing:
        raise DatasetError(
            f"{what}: {len(missing)} of {len(images)} images have no label "
            f"(*_{gt_tag}_label*Ids.png), e.g. none for {missing[0]}"
        )
    return records


def _luts() -> dict[str, np.ndarray]:
    """``*_labelTrainIds.png`` hold train ids, ``*_labelIds.png`` label ids."""
    return {"train": train_id_lut(), "label": cityscapes_lut()}


class Cityscapes(SegDataset):
    """Cityscapes fine annotations; ``split`` in train/val/test (test labels are dummies)."""

    name = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train", boxes: bool = True) -> None:
        root = require_dir(Path(root), "Cityscapes root")
        img_dir = require_split_dir(root / "leftImg8bit", split, "Cityscapes leftImg8bit")
        records = _split_records(img_dir, root / "gtFine" / split, "_leftImg8bit.png", "gtFine",
                                f"Cityscapes split '{split}'")
        super().__init__(records, _luts(), boxes=boxes)


class ACDC(SegDataset):
    """ACDC adverse conditions; ``conditions`` selects any of fog/night/rain/snow."""

    name = "acdc"
    CONDITIONS = ("fog", "night", "rain", "snow")

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        conditions: Sequence[str] = CONDITIONS,
        boxes: bool = True,
    ) -> None:
        root = require_dir(Path(root), "ACDC root")
        if isinstance(conditions, str):
            conditions = (conditions,)
        unknown = set(conditions) - set(self.CONDITIONS)
        if unknown or not conditions:
            raise DatasetError(f"ACDC conditions must be among {self.CONDITIONS}, got {conditions}")
        records: list[Record] = []
        for cond in conditions:
            img_dir = require_split_dir(root / "rgb_anon" / cond, split, f"ACDC rgb_anon/{cond}")
            records += _split_records(img_dir, root / "gt" / cond / split, "_rgb_anon.png", "gt",
                                     f"ACDC {cond}/{split}", (("condition", cond),))
        self.conditions = tuple(conditions)
        super().__init__(records, _luts(), boxes=boxes)
