"""Live evaluation of a running perception node: subscribe to a camera's frames, ground truth
and domain labels and to the node's outputs and diagnostics; pair them by header stamp; keep
per-domain figures (input and output fps, end-to-end latency, mIoU, mean confidence, domain-
shift warnings) and one sample (input | overlay | ground truth) per domain.

Used by `vltseg-ros demo`; runs in its own process, so latencies include the DDS hops.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from vltseg_core.evaluation.metrics import ConfusionMatrix
from vltseg_ros.bag.types import stamp_ns
from vltseg_ros.diagnostics import values_of
from vltseg_ros.image_codec import decode, plane

PENDING_LIMIT = 200  # unpaired stamps kept (older ones are forgotten)


@dataclass
class DomainStats:
    """Figures of one domain segment of the drive."""

    name: str
    num_classes: int
    first: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    frames_out: int = 0
    latency_ms: list[float] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    shift_states: list[str] = field(default_factory=list)
    sample: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matrix = ConfusionMatrix(self.num_classes)

    def row(self) -> dict[str, Any]:
        seconds = max(self.last - self.first, 1e-6)
        metrics = self.matrix.compute() if self.frames_out else None
        warned = sum(s == "shifted" for s in self.shift_states)
        return {
            "domain": self.name, "frames_in": self.frames_in, "frames_out": self.frames_out,
            "fps_in": self.frames_in / seconds, "fps_out": self.frames_out / seconds,
            "latency_ms_p50": _pct(self.latency_ms, 50), "latency_ms_p95": _pct(self.latency_ms, 95),
            "mIoU": metrics.mIoU if metrics else None,
            "mean_confidence": float(np.mean(self.confidence)) if self.confidence else None,
            "shift_warnings": f"{warned}/{len(self.shift_states)}" if self.shift_states else "-",
            "shifted": bool(self.shift_states) and warned > len(self.shift_states) / 2,
        }


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class LiveEvaluator:
    """Collects and pairs messages (rclpy callbacks) into per-domain statistics."""

    def __init__(self, node: Node, num_classes: int, camera: str = "camera",
                 outputs: str = "/vltseg/camera") -> None:
        self.node, self.num_classes = node, num_classes
        self.lock = threading.Lock()
        self.domains: dict[str, DomainStats] = {}
        self.current: str | None = None
        self._pending: dict[int, dict[str, Any]] = {}
        sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        sub = node.create_subscription
        sub(Header, f"{camera}/domain", self._on_domain, 50)
        sub(Image, f"{camera}/ground_truth", lambda m: self._keep(m, "gt"), sensor)
        sub(Image, f"{camera}/image_raw", lambda m: self._keep(m, "input"), sensor)
        self._masks = sub(Image, f"{outputs}/segmentation", lambda m: self._keep(m, "mask", time.time_ns()), sensor)
        sub(Image, f"{outputs}/segmentation_color", lambda m: self._keep(m, "overlay"), sensor)
        sub(Image, f"{outputs}/confidence", lambda m: self._keep(m, "confidence"), sensor)
        sub(DiagnosticArray, "/diagnostics", self._on_diagnostics, 20)

    def outputs_matched(self) -> bool:
        """Whether the node's masks reach this subscriber yet (DDS endpoints matched): a mask
        published before that is lost, so the demo starts the camera only after it."""
        return self._masks.get_publisher_count() > 0

    def _on_domain(self, msg: Header) -> None:
        with self.lock:
            name = msg.frame_id
            if name not in self.domains:
                self.domains[name] = DomainStats(name, self.num_classes)
            stats = self.domains[name]
            stats.frames_in += 1
            stats.last = time.monotonic()
            self.current = name
            entry = self._entry(stamp_ns(msg))
            entry["domain"] = name
            self._account(stamp_ns(msg), entry)

    def _entry(self, stamp: int) -> dict[str, Any]:
        if stamp not in self._pending and len(self._pending) >= PENDING_LIMIT:
            self._pending.pop(next(iter(self._pending)))
        return self._pending.setdefault(stamp, {})

    def _keep(self, msg: Image, kind: str, received_ns: int | None = None) -> None:
        with self.lock:
            stamp = stamp_ns(msg.header)
            entry = self._entry(stamp)
            entry[kind] = msg
            if received_ns is not None:
                entry["received_ns"] = received_ns
            self._account(stamp, entry)

    def _account(self, stamp: int, entry: dict[str, Any]) -> None:
        """Score a frame once it has its domain, ground truth and mask; its confidence and a
        sample once those arrive too (the node publishes them after the mask)."""
        if "domain" not in entry:
            return
        stats = self.domains[entry["domain"]]
        if not entry.get("scored") and {"gt", "mask"} <= entry.keys():
            mask, gt = plane(entry["mask"]), plane(entry["gt"])
            if mask.shape == gt.shape:
                import torch

                stats.matrix.update(torch.from_numpy(mask.copy()), torch.from_numpy(gt.copy()))
            stats.frames_out += 1
            stats.last = time.monotonic()
            stats.latency_ms.append((entry["received_ns"] - stamp) / 1e6)
            entry["scored"] = True
        if not entry.get("confidence_done") and "confidence" in entry:
            stats.confidence.append(float(plane(entry["confidence"], np.float32).mean()))
            entry["confidence_done"] = True
        if not stats.sample and entry.get("scored") and {"input", "overlay"} <= entry.keys():
            stats.sample = {"input": decode(entry["input"]), "overlay": decode(entry["overlay"]),
                            "gt": plane(entry["gt"]).copy()}

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            if self.current is None:
                return
            for status in msg.status:
                if status.name.endswith(": camera"):
                    values = values_of(status)
                    self.domains[self.current].shift_states.append(values.get("domain_shift_state", "off"))

    def rows(self) -> list[dict[str, Any]]:
        with self.lock:
            return [stats.row() for stats in self.domains.values()]

    def samples(self) -> dict[str, dict[str, np.ndarray]]:
        with self.lock:
            return {name: stats.sample for name, stats in self.domains.items() if stats.sample}


def format_row(row: dict[str, Any]) -> str:
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    miou = "-" if row["mIoU"] is None else f"{100 * row['mIoU']:.1f}"
    return (f"| {row['domain']} | {row['fps_in']:.1f} | {row['fps_out']:.1f} | {f(row['latency_ms_p50'], '.0f')} | "
            f"{f(row['latency_ms_p95'], '.0f')} | {miou} | {f(row['mean_confidence'], '.3f')} | {row['shift_warnings']} |")


TABLE_HEAD = ("| domain | fps in | fps out | latency p50 ms | latency p95 ms | mIoU % | mean conf. | "
              "shift warnings |\n|---|---:|---:|---:|---:|---:|---:|---:|")
