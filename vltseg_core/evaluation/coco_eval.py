"""Detection AP/AP50/AP75 with pycocotools' COCOeval (the reference implementation).

Ground truth and detections are gathered per image as DESIGN.md dicts (xyxy pixels) and
converted to an in-memory COCO dataset, so any box source (Cityscapes instance maps,
COCO JSON, the synthetic benchmark) is scored by the same code.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _xywh(boxes: torch.Tensor) -> np.ndarray:
    b = boxes.detach().cpu().double().numpy().reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def coco_ground_truth(gts: Sequence[dict[str, Any]], sizes: Sequence[tuple[int, int]],
                      class_ids: Sequence[int]) -> dict[str, Any]:
    """COCO dataset dict; ``gts[i]`` has ``boxes [N,4]`` xyxy and ``labels [N]``."""
    images, anns = [], []
    for img_id, (gt, (h, w)) in enumerate(zip(gts, sizes), start=1):
        images.append({"id": img_id, "height": int(h), "width": int(w)})
        for box, label in zip(_xywh(gt["boxes"]), gt["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(label),
                         "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
    cats = [{"id": int(c), "name": str(c)} for c in class_ids]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_detections(dets: Sequence[dict[str, Any]]) -> np.ndarray:
    """``float64[M, 7]`` rows ``[image_id, x, y, w, h, score, class]`` as ``loadRes`` takes."""
    rows = []
    for img_id, det in enumerate(dets, start=1):
        if len(det["boxes"]) == 0:
            continue
        xywh = _xywh(det["boxes"])
        n = len(xywh)
        rows.append(np.concatenate([
            np.full((n, 1), img_id), xywh,
            det["scores"].detach().cpu().double().numpy().reshape(n, 1),
            det["labels"].detach().cpu().double().numpy().reshape(n, 1),
        ], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 7))


def coco_ap(gts: Sequence[dict[str, Any]], dets: Sequence[dict[str, Any]],
            sizes: Sequence[tuple[int, int]], class_ids: Sequence[int]) -> dict[str, float]:
    """``{"AP", "AP50", "AP75"}`` in percent (COCO's -1 for 'no ground truth' becomes nan)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rows = coco_detections(dets)
    n_gt = sum(len(g["boxes"]) for g in gts)
    if n_gt == 0:
        return {"AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
    if len(rows) == 0:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = coco_ground_truth(gts, sizes, class_ids)
        gt.createIndex()
        res = gt.loadRes(rows)
        ev = COCOeval(gt, res, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats[:3]]
    return {k: (100 * v if v >= 0 else float("nan")) for k, v in zip(("AP", "AP50", "AP75"), stats)}
