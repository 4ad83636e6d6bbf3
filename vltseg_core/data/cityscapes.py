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


def _check_missing(missing: list[Path], total: int, what: str, expect: str) -> None:
    if missing:
        raise DatasetError(
            f"{what}: {len(missing)} of {total} images have no label ({expect}), "
            f"e.g. none for {missing[0]}"
        )


class Cityscapes(SegDataset):
    """Cityscapes fine annotations; ``split`` in train/val/test (test labels are dummies)."""

    name = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train", boxes: bool = True) -> None:
        root = require_dir(Path(root), "Cityscapes root")
        img_dir = require_split_dir(root / "leftImg8bit", split, "Cityscapes leftImg8bit")
        gt_split = root / "gtFine" / split
        if not gt_split.is_dir():
            raise DatasetError(f"Cityscapes split '{split}' has no labels: missing {gt_split}")
        images = glob_files(img_dir, "*/*_leftImg8bit.png", "Cityscapes images")
        records, missing = [], []
        for img in images:
            core = img.name[: -len("_leftImg8bit.png")]
            rec = _label_record(img, core, gt_split / img.parent.name, "gtFine")
            (missing.append(img) if rec is None else records.append(rec))
        _check_missing(missing, len(images), f"Cityscapes {split}", "*_gtFine_label*Ids.png")
        luts = {"train": train_id_lut(), "label": cityscapes_lut()}
        super().__init__(records, luts, boxes=boxes)


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
            records += self._condition_records(root, cond, split)
        self.conditions = tuple(conditions)
        luts = {"train": train_id_lut(), "label": cityscapes_lut()}
        super().__init__(records, luts, boxes=boxes)

    @staticmethod
    def _condition_records(root: Path, cond: str, split: str) -> list[Record]:
        img_dir = require_split_dir(root / "rgb_anon" / cond, split, f"ACDC rgb_anon/{cond}")
        gt_split = root / "gt" / cond / split
        if not gt_split.is_dir():
            raise DatasetError(f"ACDC {cond}/{split} has no labels: missing {gt_split}")
        images = glob_files(img_dir, "*/*_rgb_anon.png", f"ACDC {cond} images")
        records, missing = [], []
        for img in images:
            core = img.name[: -len("_rgb_anon.png")]
            extra = (("condition", cond),)
            rec = _label_record(img, core, gt_split / img.parent.name, "gt", extra)
            (missing.append(img) if rec is None else records.append(rec))
        _check_missing(missing, len(images), f"ACDC {cond}/{split}", "*_gt_label*Ids.png")
        return records
