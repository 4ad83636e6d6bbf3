"""Score a folder of predicted label PNGs against a dataset split, like the official
Cityscapes benchmark does, so results of any model can be compared.

Matching follows cityscapesscripts' ``getPrediction``: the ground truth
``{city}_{seq}_{frame}_gtFine_labelIds.png`` is matched by a prediction named
``{city}_{seq}_{frame}*.png`` anywhere under the folder (here the name must continue with
``_`` or ``.``, so ``00001`` does not also match ``000010.png`` in GTA5-style names). For
other datasets the key is the sample's ``name`` (the image stem without its type suffix).
A ground truth without exactly one prediction is an error.

Predictions may hold train ids (0-18, 255 = none) or official label ids (0-33); ``auto``
decides from the values found (any id 19-33 can only be a label id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vltseg_core.data.base import SegDataset
from vltseg_core.data.datasets import build_dataset
from vltseg_core.data.io import DatasetError, read_index_png
from vltseg_core.data.labels import NUM_CLASSES, cityscapes_lut, class_names, palette
from vltseg_core.evaluation.metrics import ConfusionMatrix
from vltseg_core.evaluation.report import pct, write_report
from vltseg_core.progress import image_progress

PredFormat = Literal["auto", "trainIds", "labelIds"]


@dataclass(frozen=True)
class ScoreResult:
    metrics: dict  # SegMetrics.as_dict(): fractions, None where undefined
    matrix: np.ndarray  # int64[K, K + 1] ground truth x prediction (+ void column)
    n_images: int
    pred_format: str


def index_predictions(pred_dir: Path) -> dict[str, list[Path]]:
    """Every PNG under ``pred_dir`` keyed by its stem and by each ``_``-separated prefix."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DatasetError(f"prediction folder does not exist: {pred_dir}")
    index: dict[str, list[Path]] = {}
    for p in sorted(pred_dir.rglob("*.png")):
        parts = p.stem.split("_")
        for i in range(1, len(parts) + 1):
            index.setdefault("_".join(parts[:i]), []).append(p)
    if not index:
        raise DatasetError(f"no PNG predictions under {pred_dir}")
    return index


def match_predictions(index: dict[str, list[Path]], names: Sequence[str]) -> list[Path]:
    out = []
    for name in names:
        hits = index.get(name, [])
        if len(hits) != 1:
            what = "no prediction" if not hits else f"{len(hits)} predictions ({hits[:3]})"
            raise DatasetError(f"found {what} for ground truth '{name}' (expected {name}*.png)")
        out.append(hits[0])
    return out


def detect_format(paths: Sequence[Path], max_files: int = 64) -> str:
    """'labelIds' if any sampled prediction holds an id in 19..33, else 'trainIds'."""
    pick = np.unique(np.linspace(0, len(paths) - 1, min(max_files, len(paths))).astype(int))
    seen = np.zeros(1 << 16, bool)
    for i in pick:
        seen[np.unique(read_index_png(paths[i]))] = True
    values = np.nonzero(seen)[0]
    if ((values > 33) & (values != 255)).any():
        raise DatasetError(f"predictions hold values {values[values > 33].tolist()[:8]} that are "
                           "neither train ids (0-18, 255) nor label ids (0-33)")
    return "labelIds" if ((values >= NUM_CLASSES) & (values <= 33)).any() else "trainIds"


def read_prediction(path: Path, fmt: str) -> np.ndarray:
    pred = read_index_png(path)
    return cityscapes_lut()[np.clip(pred, 0, 255)] if fmt == "labelIds" else pred


def score_folder(pred_dir: str | Path, dataset: str, root: str | Path, split: str,
                 pred_format: PredFormat = "auto", progress: bool = False,
                 classes: Sequence[int] | None = None, **dataset_kw) -> ScoreResult:
    """Confusion matrix and metrics of the predictions in ``pred_dir`` on a dataset split."""
    ds = build_dataset(dataset, root, split, **dataset_kw)
    if not isinstance(ds, SegDataset):
        raise DatasetError(f"dataset '{dataset}' has no semantic labels to score against")
    ds.with_boxes = False
    preds = match_predictions(index_predictions(Path(pred_dir)), [r.name for r in ds.records])
    fmt = detect_format(preds) if pred_format == "auto" else pred_format
    if fmt not in ("trainIds", "labelIds"):
        raise ValueError(f"pred_format must be auto, trainIds or labelIds, got {pred_format}")
    cm = ConfusionMatrix(NUM_CLASSES)
    bar = image_progress("scoring", len(ds)) if progress else None
    for i in range(len(ds)):
        gt = ds.load_target(i)["sem_seg"]
        pred = read_prediction(preds[i], fmt)
        if tuple(pred.shape) != tuple(gt.shape):
            raise DatasetError(f"size mismatch: prediction {preds[i]} is {pred.shape[::-1]} but "
                               f"ground truth {ds.records[i].label} is {tuple(gt.shape)[::-1]}")
        cm.update(torch.from_numpy(pred.astype(np.int64)), gt)
        if bar is not None:
            bar.update(i + 1)
    if bar is not None:
        bar.close()
    return ScoreResult(cm.compute(classes).as_dict(class_names()), cm.mat.numpy(), len(ds), fmt)


def score_main(pred_dir: Path, dataset: str, root: Path, split: str, out: Path,
               pred_format: PredFormat = "auto") -> dict:
    """CLI body of ``vltseg score``: score, write metrics.{json,md} and plots to ``out``."""
    res = score_folder(pred_dir, dataset, root, split, pred_format, progress=True)
    title = f"{dataset} {split}: {Path(pred_dir).name}"
    extra = {"dataset": dataset, "root": str(root), "split": split, "pred_dir": str(pred_dir),
             "n_images": res.n_images, "pred_format": res.pred_format}
    write_report(out, res.metrics, res.matrix, class_names(), title, extra,
                 colors=palette()[:NUM_CLASSES])
    m = res.metrics
    print(f"{title}: {res.n_images} images ({res.pred_format}) mIoU {pct(m['mIoU'], 2)} "
          f"mAcc {pct(m['mAcc'], 2)} aAcc {pct(m['aAcc'], 2)} -> {out}")
    return m
