"""Pairing predictions with ground truth by header stamp and the figures of a replay: mIoU
overall, per segment (condition) and per class, confidence and domain-shift states over time,
latencies. Shared by the offline and live modes so both are scored by the same code.

Each frame keeps its own confusion matrix (K x (K+1) ints), so segments can be decided after
the whole bag is read (condition messages may come after their frames)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np

from vltseg_core.evaluation.metrics import confusion_matrix, metrics_from_matrix
from vltseg_core.runtime.domain_shift import ShiftBand, ShiftMonitor

PENDING_LIMIT = 400  # unpaired stamps kept per side


@dataclass
class FrameRecord:
    stamp_ns: int
    mean_confidence: float | None = None
    shifted: bool | None = None
    model_ms: float | None = None
    e2e_ms: float | None = None
    matrix: np.ndarray | None = None
    segment: str = ""


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values, np.float64)
    return {"n": len(values), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "max": float(a.max())}


class Scorer:
    """Feed `gt`, `prediction` and `domain` in any order; `summary()` at the end."""

    def __init__(self, class_names: tuple[str, ...], band: ShiftBand | None = None,
                 tolerance_ns: int = 0, window: int = 30, has_gt: bool = True) -> None:
        self.names, self.k = tuple(class_names), len(class_names)
        self.monitor = ShiftMonitor(band, window, num_classes=self.k) if band is not None else None
        self.band = band
        self.tolerance_ns, self.has_gt = tolerance_ns, has_gt
        self.frames: list[FrameRecord] = []
        self._gt: dict[int, np.ndarray] = {}
        self._masks: dict[int, tuple[FrameRecord, np.ndarray]] = {}
        self.domains: list[tuple[int, str]] = []
        self.gt_frames = 0
        self._gt_boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._pred_boxes: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]] = {}
        self.unknown_box_classes = 0
        self.size_mismatch = 0
        self.gt_outside_pixels = 0

    # ---- feeding ----

    def gt(self, stamp_ns: int, labels: np.ndarray) -> None:
        self.gt_frames += 1
        match = self._near(self._masks, stamp_ns)
        if match is not None:
            record, mask = self._masks.pop(match)
            self._pair(record, mask, labels)
        else:
            self._keep(self._gt, stamp_ns, labels)

    def prediction(self, stamp_ns: int, mask: np.ndarray | None, confidence: np.ndarray | None,
                   model_ms: float | None = None, e2e_ms: float | None = None) -> FrameRecord:
        record = FrameRecord(stamp_ns, model_ms=model_ms, e2e_ms=e2e_ms)
        if confidence is not None:
            record.mean_confidence = float(confidence.mean())
        if self.monitor is not None and mask is not None and confidence is not None:
            record.shifted = self.monitor.update(confidence, mask).shifted
        self.frames.append(record)
        if mask is not None and self.has_gt:
            match = self._near(self._gt, stamp_ns)
            if match is not None:
                self._pair(record, mask, self._gt.pop(match))
            else:
                self._keep(self._masks, stamp_ns, (record, mask))
        return record

    def gt_boxes(self, stamp_ns: int, boxes: np.ndarray, labels: np.ndarray) -> None:
        self._gt_boxes[stamp_ns] = (boxes, labels)

    def pred_boxes(self, stamp_ns: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                   size: tuple[int, int]) -> None:
        """A frame's detections ((H, W) `size`); scored against box truth of the same stamp."""
        self._pred_boxes[stamp_ns] = (boxes, scores, labels, size)

    def detection(self) -> dict[str, Any] | None:
        """COCO AP/AP50/AP75 (%) over frames with both box truth and detections (None: none)."""
        from vltseg_core.evaluation.coco_eval import coco_ap
        import torch

        stamps = [s for s in self._pred_boxes if self._near(self._gt_boxes, s) is not None]
        if not stamps:
            return None
        gts, dets, sizes = [], [], []
        for s in stamps:
            boxes, labels = self._gt_boxes[self._near(self._gt_boxes, s)]
            pb, ps, pl, size = self._pred_boxes[s]
            gts.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
            dets.append({"boxes": torch.from_numpy(pb), "scores": torch.from_numpy(ps), "labels": torch.from_numpy(pl)})
            sizes.append(size)
        ap = coco_ap(gts, dets, sizes, list(range(self.k)))
        return {"frames": len(stamps), "gt_boxes": int(sum(len(g["labels"]) for g in gts)),
                "detections": int(sum(len(d["labels"]) for d in dets)),
                **{k: None if np.isnan(v) else v for k, v in ap.items()},
                "gt_boxes_of_unknown_classes": self.unknown_box_classes}

    def domain(self, stamp_ns: int, name: str) -> None:
        self.domains.append((stamp_ns, name))

    def _keep(self, pending: dict, stamp: int, value: Any) -> None:
        if len(pending) >= PENDING_LIMIT:
            pending.pop(next(iter(pending)))
        pending[stamp] = value

    def _near(self, pending: dict, stamp: int) -> int | None:
        if stamp in pending:
            return stamp
        if self.tolerance_ns <= 0 or not pending:
            return None
        best = min(pending, key=lambda s: abs(s - stamp))
        return best if abs(best - stamp) <= self.tolerance_ns else None

    def _pair(self, record: FrameRecord, mask: np.ndarray, labels: np.ndarray) -> None:
        if mask.shape != labels.shape:
            self.size_mismatch += 1
            return
        import torch

        outside = (labels != 255) & (labels >= self.k)
        if outside.any():  # ground truth of classes the model does not have: ignored, counted
            self.gt_outside_pixels += int(outside.sum())
            labels = np.where(outside, np.uint8(255), labels)
        record.matrix = confusion_matrix(torch.from_numpy(np.ascontiguousarray(mask)),
                                         torch.from_numpy(np.ascontiguousarray(labels)), self.k).numpy()

    # ---- results ----

    def assign_segments(self, segments_file: list[tuple[str, float, float | None]] | None = None) -> None:
        """Each frame's segment: from a segments file (seconds from the first frame), else the
        newest condition message at or before its stamp, else 'all'."""
        if not self.frames:
            return
        t0 = min(f.stamp_ns for f in self.frames)
        if segments_file:
            for f in self.frames:
                t = (f.stamp_ns - t0) / 1e9
                f.segment = next((name for name, start, end in segments_file
                                  if t >= start and (end is None or t < end)), "other")
            return
        marks = sorted(self.domains)
        stamps = [s for s, _ in marks]
        for f in self.frames:
            i = bisect.bisect_right(stamps, f.stamp_ns) - 1
            f.segment = marks[i][1] if i >= 0 else (marks[0][1] if marks else "all")

    def _metrics(self, frames: list[FrameRecord]) -> dict[str, Any] | None:
        mats = [f.matrix for f in frames if f.matrix is not None]
        if not mats:
            return None
        return metrics_from_matrix(np.sum(mats, axis=0)).as_dict(self.names)

    def segment_rows(self) -> list[dict[str, Any]]:
        order: list[str] = []
        for f in self.frames:
            if f.segment not in order:
                order.append(f.segment)
        t0 = min((f.stamp_ns for f in self.frames), default=0)
        rows = []
        stamps = sorted(f.stamp_ns for f in self.frames)
        for name in order:
            part = [f for f in self.frames if f.segment == name]
            nxt = bisect.bisect_right(stamps, part[-1].stamp_ns)  # a band ends where the next frame starts
            metrics = self._metrics(part)
            conf = [f.mean_confidence for f in part if f.mean_confidence is not None]
            states = [f.shifted for f in part if f.shifted is not None]
            rows.append({"segment": name, "frames": len(part),
                         "frames_scored": sum(f.matrix is not None for f in part),
                         "start_s": (part[0].stamp_ns - t0) / 1e9,
                         "end_s": ((stamps[nxt] if nxt < len(stamps) else part[-1].stamp_ns) - t0) / 1e9,
                         "mIoU": metrics["mIoU"] if metrics else None,
                         "mean_confidence": float(np.mean(conf)) if conf else None,
                         "shift_warnings": sum(states), "shift_checked": len(states),
                         "shifted": bool(states) and sum(states) > len(states) / 2})
        return rows

    def timeline(self) -> list[dict[str, Any]]:
        t0 = min((f.stamp_ns for f in self.frames), default=0)
        out = []
        for f in self.frames:
            frame_miou = metrics_from_matrix(f.matrix).mIoU if f.matrix is not None else None
            out.append({"t_s": (f.stamp_ns - t0) / 1e9, "stamp_ns": f.stamp_ns, "segment": f.segment,
                        "mIoU": None if frame_miou is None or np.isnan(frame_miou) else float(frame_miou),
                        "mean_confidence": f.mean_confidence, "shifted": f.shifted,
                        "model_ms": f.model_ms, "e2e_ms": f.e2e_ms})
        return out

    def summary(self) -> dict[str, Any]:
        overall = self._metrics(self.frames)
        conf = [f.mean_confidence for f in self.frames if f.mean_confidence is not None]
        return {
            "frames": len(self.frames),
            "frames_scored": sum(f.matrix is not None for f in self.frames),
            "gt_frames": self.gt_frames,
            "unpaired_predictions": len(self._masks), "unpaired_gt": len(self._gt),
            "gt_size_mismatch": self.size_mismatch,
            "gt_pixels_outside_model_classes": self.gt_outside_pixels,
            "mIoU": overall["mIoU"] if overall else None,
            "mAcc": overall["mAcc"] if overall else None,
            "aAcc": overall["aAcc"] if overall else None,
            "per_class_IoU": overall["IoU"] if overall else None,
            "mean_confidence": float(np.mean(conf)) if conf else None,
            "domain_shift_band": None if self.band is None else self.band.to_json(),
            "shift_warnings": sum(bool(f.shifted) for f in self.frames),
            "segments": self.segment_rows(),
            "detection": self.detection(),
            "model_latency_ms": percentiles([f.model_ms for f in self.frames if f.model_ms is not None]),
            "e2e_latency_ms": percentiles([f.e2e_ms for f in self.frames if f.e2e_ms is not None]),
        }

    def stamps_scored(self) -> dict[int, np.ndarray]:
        """Per scored frame: its confusion matrix (to compare two runs over the same frames)."""
        return {f.stamp_ns: f.matrix for f in self.frames if f.matrix is not None}
