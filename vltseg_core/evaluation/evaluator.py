"""Run a model over evaluation datasets: confusion matrices, COCO AP, multi-target reports.

Under ``torchrun`` each rank takes images ``rank, rank + world, ...`` (no padding, so no
image is counted twice) and the integer confusion matrices are summed across ranks, which
makes the result identical to a one-process evaluation. Detections are gathered to every
rank and scored once. Metrics are fractions in [0, 1] (as :mod:`.metrics` returns them);
tables print percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from vltseg_core.env import apply_threads
from vltseg_core.evaluation.inference import InferenceSpec, infer
from vltseg_core.evaluation.overlay import comparison_panel
from vltseg_core.progress import image_progress
from vltseg_core.train.distributed import all_gather_objects, cleanup, get_info, init_distributed

Table = dict[str, dict[str, dict]]  # row (checkpoint) -> target -> metrics


@dataclass
class DatasetEval:
    """Accumulated evaluation of one dataset (already reduced over ranks)."""

    confusion: torch.Tensor  # int64 [K, K + 1]: gt x prediction, last column = void preds
    det_gt: list[dict] = field(default_factory=list)
    det_pred: list[dict] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    num_images: int = 0
    examples: list[tuple[str, np.ndarray]] = field(default_factory=list)  # name, comparison panel


def shard(n: int, max_images: int = 0) -> list[int]:
    """This rank's image indices: a strided share of the first ``max_images`` (0 = all)."""
    rank, world = get_info()
    total = min(n, max_images) if max_images else n
    return list(range(rank, total, world))


def _samples(dataset: Any, indices: list[int], workers: int) -> Any:
    """This rank's samples in order, decoded by ``workers`` processes (0 = here)."""
    if workers == 0:
        return (dataset[i] for i in indices)
    from torch.utils.data import DataLoader, Subset

    return DataLoader(Subset(dataset, indices), batch_size=None, num_workers=workers,
                      collate_fn=_keep)


def _keep(sample: Any) -> Any:
    return sample


@torch.no_grad()
def evaluate_dataset(model: nn.Module, dataset: Any, spec: InferenceSpec, num_classes: int,
                     max_images: int = 0, detection: bool = False, workers: int = 0,
                     desc: str = "eval", examples: int = 0) -> DatasetEval:
    """Confusion matrix (and detections if ``detection``) of ``model`` over ``dataset``; rank 0
    also keeps image | prediction | ground truth panels of its first ``examples`` images."""
    from vltseg_core.evaluation.metrics import ConfusionMatrix

    model.eval()
    cm = ConfusionMatrix(num_classes, device=next(model.parameters()).device)
    gts, preds, sizes, panels = [], [], [], []
    indices = shard(len(dataset), max_images)
    main = get_info()[0] == 0
    progress = image_progress(desc, len(indices)) if main else None
    for done, (image, target, meta) in enumerate(_samples(dataset, indices, workers), 1):
        img = torch.as_tensor(image).permute(2, 0, 1)  # HWC uint8 -> CHW
        label = target["sem_seg"]
        p = infer(model, img, spec, out_size=tuple(label.shape[-2:]))
        if p.scores is not None:
            pred = p.scores.argmax(0)
            cm.update(pred, label.to(cm.mat.device))
            if main and len(panels) < examples:
                panels.append((meta["name"], comparison_panel(
                    np.asarray(image), pred.byte().cpu().numpy(), label.byte().numpy())))
        if detection and p.detections is not None:
            gts.append({"boxes": target["boxes"], "labels": target["labels"]})
            preds.append(p.detections)
            sizes.append(tuple(img.shape[-2:]))
        if progress is not None:
            progress.update(done)
    if progress is not None:
        progress.close()
    cm.reduce()
    n = min(len(dataset), max_images) if max_images else len(dataset)
    result = DatasetEval(cm.mat.cpu(), num_images=n, examples=panels)
    if detection:
        for g, d, s in all_gather_objects((gts, preds, sizes)):
            result.det_gt += g
            result.det_pred += d
            result.sizes += s
    return result


def summarize(ev: DatasetEval, classes: Sequence[int] | None = None) -> dict[str, Any]:
    """mIoU/mAcc/aAcc + per-class IoU/Acc (fractions), the matrix, and AP/AP50/AP75 if any.

    ``classes`` restricts the means (SYNTHIA's 16 classes); AP is in percent, as COCO prints.
    """
    from vltseg_core.data.labels import class_names, thing_train_ids
    from vltseg_core.evaluation.coco_eval import coco_ap
    from vltseg_core.evaluation.metrics import metrics_from_matrix

    out: dict[str, Any] = {"images": ev.num_images}
    if int(ev.confusion.sum()) > 0:
        out.update(metrics_from_matrix(ev.confusion, classes).as_dict(class_names()))
        out["confusion"] = ev.confusion.tolist()
    if ev.det_gt:
        out.update(coco_ap(ev.det_gt, ev.det_pred, ev.sizes, thing_train_ids()))
    return out


def evaluate_targets(model: nn.Module, cfg: Any, out_dir: Path | None = None,
                     quick: bool = False, row: str | None = None) -> dict[str, dict]:
    """Evaluate every ``cfg.eval.targets`` entry; rank 0 writes reports and ``eval.overlays``
    prediction panels per target under ``out_dir``."""
    from vltseg_core.train.loader import build_dataset

    spec = InferenceSpec.from_config(cfg.eval)
    detection = cfg.task in ("det", "joint")
    cap = cfg.eval.max_images if quick else 0
    row = row or cfg.name
    examples = 0 if quick or out_dir is None else cfg.eval.overlays
    results: dict[str, dict] = {}
    for target in cfg.eval.targets:
        dataset = build_dataset(target, boxes=detection)
        tspec = target_spec(spec, target)
        ev = evaluate_dataset(model, dataset, tspec, cfg.model.num_classes, cap, detection,
                              cfg.eval.num_workers, desc=f"eval {target.title}", examples=examples)
        results[target.title] = summarize(ev, cfg.eval.classes)
        if ev.examples:
            write_overlays(_target_dir(out_dir, row, target.title) / "overlays", ev.examples)
    if out_dir is not None and get_info()[0] == 0:
        write_reports({row: results}, out_dir, averaged_targets(cfg))
    return results


def target_spec(spec: InferenceSpec, target: Any) -> InferenceSpec:
    """The inference settings for one target: its own ``scale`` / ``short_side`` if set."""
    if getattr(target, "scale", None) is not None:
        return replace(spec, scale=tuple(target.scale), short_side=None)
    if target.short_side:
        return replace(spec, short_side=target.short_side, scale=None)
    return spec


def averaged_targets(cfg: Any) -> list[str]:
    """Target labels the tables' Avg. runs over (pooled columns like ACDC 'all' excluded)."""
    return [t.title for t in cfg.eval.targets if getattr(t, "in_average", True)]


def write_overlays(folder: Path, panels: Sequence[tuple[str, np.ndarray]]) -> list[Path]:
    """``{k:02d}_{name}.png`` per panel (RGB arrays); earlier panels of the folder are removed,
    so a re-run with fewer images leaves none of the old ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    paths = []
    for k, (name, panel) in enumerate(panels):
        paths.append(folder / f"{k:02d}_{_slug(name)}.png")
        if not cv2.imwrite(str(paths[-1]), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {paths[-1]}")
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _target_dir(out_dir: Path, row: str, target: str) -> Path:
    return Path(out_dir) / _slug(row) / _slug(target)


def table_markdown(table: Table, average_over: Sequence[str] | None = None) -> str:
    """Paper-style tables (rows = checkpoints, columns = targets + average over
    ``average_over``, default all): mIoU, then AP50."""
    from vltseg_core.evaluation.report import multi_target_table

    parts = []
    for key, title in (("mIoU", "mIoU (%)"), ("AP50", "AP50 (%)")):
        rows = {r: {t: m.get(key) for t, m in res.items()} for r, res in table.items()}
        if any(v is not None for row in rows.values() for v in row.values()):
            if key == "AP50":  # AP is already in percent; the table helper expects fractions
                rows = {r: {t: None if v is None else v / 100 for t, v in row.items()}
                        for r, row in rows.items()}
            parts.append(f"### {title}\n\n{multi_target_table(rows, average_over=average_over)}")
    return "\n".join(parts)


def write_reports(table: Table, out_dir: Path, average_over: Sequence[str] | None = None
                  ) -> dict[str, Path]:
    """Per row/target ``metrics.{json,md}``, ``per_class_iou.png``, ``confusion_matrix.png``,
    then :func:`write_table`."""
    from vltseg_core.data.labels import class_names, palette
    from vltseg_core.evaluation.report import write_report

    names = list(class_names())
    for row, results in table.items():
        for target, res in results.items():
            if "confusion" in res:
                metrics = {k: v for k, v in res.items() if k != "confusion"}
                write_report(_target_dir(out_dir, row, target), metrics, res["confusion"], names,
                             f"{row} on {target}", {"images": res["images"]},
                             colors=palette()[: len(names)])
    return write_table(table, out_dir, average_over)


def write_table(table: Table, out_dir: Path, average_over: Sequence[str] | None = None
                ) -> dict[str, Path]:
    """``metrics.json`` (all numbers and matrices) and ``table.md`` over every row (the
    average over ``average_over``, default all targets)."""
    from vltseg_core.evaluation.report import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "table.md"
    md.write_text(table_markdown(table, average_over))
    return {"metrics": write_json(out_dir / "metrics.json", table), "table": md}


def checkpoint_row(path: Path) -> str:
    """Table row name of a checkpoint: ``run_dir/stem`` (``demo/model_final``)."""
    path = Path(path)
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def load_for_eval(path: Path, device: torch.device) -> nn.Module:
    """A model in eval mode from a checkpoint (model-only or a training ``last.pt``)."""
    from vltseg_core.models import load_checkpoint

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    model, _meta = load_checkpoint(path)
    return model.to(device).eval()


def run_eval(cfg: Any, checkpoints: Sequence[Path], out_dir: Path | None = None) -> Table:
    """``vltseg eval``: every checkpoint on every target; one multi-target report (rank 0)."""
    info = init_distributed(cfg.train.device)
    apply_threads(cfg.train.threads)
    out_dir = Path(out_dir) if out_dir else cfg.out_dir / "eval"
    table: Table = {}
    try:
        for path in checkpoints:
            model = load_for_eval(path, info.device)
            row = checkpoint_row(path)
            table[row] = evaluate_targets(model, cfg, out_dir, row=row)  # its reports, overlays
        if info.is_main:
            paths = write_table(table, out_dir, averaged_targets(cfg))
            print(table_markdown(table, averaged_targets(cfg)))
            print(f"reports and prediction overlays: {out_dir} (table: {paths['table']})")
    finally:
        cleanup()
    return table
