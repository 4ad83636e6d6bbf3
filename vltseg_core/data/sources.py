"""The paper's other source/target datasets in their official layouts.

GTA5           ``images/{n:05d}.png``, ``labels/{n:05d}.png`` (palette PNG, Cityscapes label ids),
               optional ``split.mat`` (trainIds/valIds/testIds).
SYNTHIA-RAND-CITYSCAPES  ``RGB/{n:07d}.png``, ``GT/LABELS/{n:07d}.png`` (16-bit, 3 channels:
               class id in the first (R) channel, instance id in the second (G)).
BDD100K        ``images/10k/{split}/*.jpg`` + ``labels/sem_seg/masks/{split}/*.png`` (official),
               or the older ``seg/images/{split}/*.jpg`` + ``seg/labels/{split}/*_train_id.png``.
Mapillary      ``{training,validation}/images/*.jpg`` + ``{...}/v1.2/labels/*.png`` (palette PNG,
               66 classes; the v1.1 ``{...}/labels/*.png`` layout is accepted too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vltseg_core.data.base import Record, SegDataset, SizePolicy, pair_by_stem
from vltseg_core.data.io import (
    DatasetError,
    glob_files,
    read_png_unchanged,
    require_dir,
    require_split_dir,
)
from vltseg_core.data.labels import (
    VISTAS_V12_NAMES,
    bdd100k_lut,
    cityscapes_lut,
    mapillary_lut,
    synthia_lut,
    vistas_names_from_config,
)


def _index(folder: Path, pattern: str, what: str, strip: str = "") -> dict[str, Path]:
    files = glob_files(folder, pattern, what)
    return {p.stem.removesuffix(strip): p for p in files}


def _records(pairs: list[tuple[Path, Path]]) -> list[Record]:
    return [Record(img, lab, img.stem) for img, lab in pairs]


class GTA5(SegDataset):
    """GTA5 (Richter et al.). ``split='all'`` (the DG protocol) or train/val/test via split.mat.

    A few GTA5 pairs differ in size. ``size_mismatch='resize_label'`` (default) resizes the
    label with nearest neighbour onto the image, so every rendered pixel keeps a label;
    ``'crop'`` crops/pads the label at the top-left instead; ``'error'`` refuses.
    """

    name = "gta5"

    def __init__(
        self, root: str | Path, split: str = "all", size_mismatch: SizePolicy = "resize_label"
    ) -> None:
        root = require_dir(Path(root), "GTA5 root")
        images = glob_files(require_dir(root / "images", "GTA5 images"), "*.png", "GTA5 images")
        labels = _index(require_dir(root / "labels", "GTA5 labels"), "*.png", "GTA5 labels")
        images = self._select(root, split, images)
        pairs = pair_by_stem(images, labels, f"GTA5 {split}")
        super().__init__(_records(pairs), {"train": cityscapes_lut()}, False, size_mismatch)

    @staticmethod
    def _select(root: Path, split: str, images: list[Path]) -> list[Path]:
        if split == "all":
            return images
        if split not in ("train", "val", "test"):
            raise DatasetError(f"GTA5 split must be all/train/val/test, got '{split}'")
        mat = root / "split.mat"
        if not mat.is_file():
            raise DatasetError(f"GTA5 split '{split}' needs {mat}; use split='all' without it")
        from scipy.io import loadmat

        keep = {int(i) for i in np.asarray(loadmat(str(mat))[f"{split}Ids"]).ravel()}
        chosen = [p for p in images if p.stem.isdigit() and int(p.stem) in keep]
        if not chosen:
            raise DatasetError(f"GTA5 split '{split}' in {mat} matches none of the images")
        return chosen


class Synthia(SegDataset):
    """SYNTHIA-RAND-CITYSCAPES; it has no official split, so 'train' and 'all' are everything."""

    name = "synthia"

    def __init__(self, root: str | Path, split: str = "all", boxes: bool = True) -> None:
        if split not in ("all", "train"):
            raise DatasetError(f"SYNTHIA has no '{split}' split (use 'all' or 'train')")
        root = require_dir(Path(root), "SYNTHIA root")
        images = glob_files(require_dir(root / "RGB", "SYNTHIA RGB"), "*.png", "SYNTHIA images")
        lab_dir = require_dir(root / "GT" / "LABELS", "SYNTHIA GT/LABELS")
        pairs = pair_by_stem(images, _index(lab_dir, "*.png", "SYNTHIA labels"), "SYNTHIA")
        records = [Record(i, lb, i.stem, instance=lb) for i, lb in pairs]
        super().__init__(records, {"train": synthia_lut()}, boxes=boxes)
        self._inst_lut = synthia_lut()
        self._last: tuple[Path | None, np.ndarray | None] = (None, None)

    def _channels(self, path: Path) -> np.ndarray:
        """``[H, W, C]`` in R, G, B order; one-entry cache as label and instances share a file."""
        if self._last[0] != path:
            raw = read_png_unchanged(path)
            # Single-channel copies (already converted) carry class ids only. OpenCV gives
            # BGR(A); SYNTHIA stores the class in R and the instance in G.
            self._last = (path, raw[..., None] if raw.ndim == 2 else raw[..., 2::-1])
        return self._last[1]

    def read_label(self, rec: Record) -> np.ndarray:
        return self._channels(rec.label)[..., 0]

    def read_instances(self, rec: Record) -> np.ndarray | None:
        ch = self._channels(rec.instance)
        if ch.shape[-1] < 2:
            return None
        cls, inst = ch[..., 0].astype(np.int32), ch[..., 1].astype(np.int32)
        # Re-code as Cityscapes does (class * 1000 + instance) so one box routine serves all.
        return np.where(inst > 0, cls * 1000 + np.minimum(inst, 999), cls)


class BDD100K(SegDataset):
    """BDD100K 10k semantic segmentation (labels are already Cityscapes train ids)."""

    name = "bdd100k"

    def __init__(self, root: str | Path, split: str = "val") -> None:
        root = require_dir(Path(root), "BDD100K root")
        if (root / "images" / "10k").is_dir():
            img_dir, lab_dir, strip = root / "images/10k", root / "labels/sem_seg/masks", ""
        elif (root / "seg").is_dir():
            img_dir, lab_dir, strip = root / "seg/images", root / "seg/labels", "_train_id"
        else:
            raise DatasetError(
                f"BDD100K root {root} has neither images/10k (official) nor seg/ (older layout)"
            )
        img_dir, lab_dir = require_split_dir(img_dir, split, "BDD100K images"), lab_dir / split
        images = glob_files(img_dir, "*.jpg", "BDD100K images")
        if not lab_dir.is_dir():
            raise DatasetError(f"BDD100K split '{split}' has no labels: missing {lab_dir}")
        labels = _index(lab_dir, "*.png", "BDD100K label masks", strip)
        pairs = pair_by_stem(images, labels, f"BDD100K {split}")
        super().__init__(_records(pairs), {"train": bdd100k_lut()}, boxes=False)


class Mapillary(SegDataset):
    """Mapillary Vistas v1.2 mapped to the 19 Cityscapes classes (see labels.VISTAS_TO_CITYSCAPES).

    If ``{root}/config_v1.2.json`` exists, label indices are read from it by name.
    """

    name = "mapillary"
    SPLITS = {"train": "training", "val": "validation", "training": "training",
              "validation": "validation"}

    def __init__(self, root: str | Path, split: str = "val") -> None:
        root = require_dir(Path(root), "Mapillary root")
        if split not in self.SPLITS:
            raise DatasetError(f"Mapillary split must be train/val, got '{split}'")
        base = require_dir(root / self.SPLITS[split], f"Mapillary {split}")
        images = glob_files(require_dir(base / "images", "Mapillary images"), "*.jpg",
                            "Mapillary images")
        lab_dir = next((d for d in (base / "v1.2" / "labels", base / "labels") if d.is_dir()), None)
        if lab_dir is None:
            raise DatasetError(f"Mapillary {split} has no labels: missing {base}/v1.2/labels")
        labels = _index(lab_dir, "*.png", "Mapillary labels")
        pairs = pair_by_stem(images, labels, f"Mapillary {split}")
        config = root / "config_v1.2.json"
        names = vistas_names_from_config(config) if config.is_file() else VISTAS_V12_NAMES
        lut = mapillary_lut(names)
        super().__init__(_records(pairs), {"train": lut}, boxes=False)
