"""Rolling per-camera figures (rates, latencies, drops, bad frames, confidence, domain shift)
and their `diagnostic_msgs/DiagnosticArray` form, published on /diagnostics.

The worker thread and subscription callbacks record; the diagnostics timer reads. One lock per
camera keeps the two consistent. Keys are stable: tools (`vltseg-ros bag eval --live`, the
demo, tests) read them by name.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from vltseg_core.runtime.domain_shift import ShiftBand, ShiftState

RATE_WINDOW_S = 5.0  # fps over the last seconds
LATENCY_SAMPLES = 300  # percentiles over the last calls


def _rate(times: deque[float], now: float) -> float:
    while times and times[0] < now - RATE_WINDOW_S:
        times.popleft()
    return len(times) / RATE_WINDOW_S


def percentile(values: deque[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


@dataclass
class CameraStats:
    """Counters and windows of one camera."""

    name: str
    topic: str
    reliability: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    bad_frames: int = 0
    bad_reason: str = ""
    bad_since_report: int = 0
    last_frame: float | None = None  # monotonic time of the last good input
    received_times: deque[float] = field(default_factory=deque)
    published_times: deque[float] = field(default_factory=deque)
    model_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    e2e_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    mean_confidence: float = float("nan")
    shift: ShiftState | None = None
    no_frame_warning: str = ""
    drawn: str = ""  # outputs built for the last frame: those with a subscriber

    def received(self) -> None:
        with self.lock:
            now = time.monotonic()
            self.frames_in += 1
            self.last_frame = now
            self.received_times.append(now)

    def bad(self, reason: str) -> None:
        with self.lock:
            self.bad_frames += 1
            self.bad_since_report += 1
            self.bad_reason = reason

    def drop(self, count: int = 1) -> None:
        with self.lock:
            self.dropped += count

    def published(self, model_ms: float, e2e_ms: float, mean_confidence: float | None,
                  shift: ShiftState | None, drawn: Collection[str] = ()) -> None:
        with self.lock:
            self.drawn = " ".join(drawn)
            self.frames_out += 1
            self.published_times.append(time.monotonic())
            self.model_ms.append(model_ms)
            self.e2e_ms.append(e2e_ms)
            if mean_confidence is not None:
                self.mean_confidence = mean_confidence
            self.shift = shift

    def status(self, node_name: str, band: ShiftBand | None) -> DiagnosticStatus:
        with self.lock:
            now = time.monotonic()
            values = {
                "topic": self.topic,
                "reliability": self.reliability,
                "fps_in": f"{_rate(self.received_times, now):.2f}",
                "fps_out": f"{_rate(self.published_times, now):.2f}",
                "frames_in": str(self.frames_in),
                "frames_out": str(self.frames_out),
                "dropped_latest_frame": str(self.dropped),
                "bad_frames": str(self.bad_frames),
                "last_bad_frame": self.bad_reason,
                "model_latency_ms_p50": f"{percentile(self.model_ms, 50):.1f}",
                "model_latency_ms_p95": f"{percentile(self.model_ms, 95):.1f}",
                "e2e_latency_ms_p50": f"{percentile(self.e2e_ms, 50):.1f}",
                "e2e_latency_ms_p95": f"{percentile(self.e2e_ms, 95):.1f}",
                "mean_confidence": f"{self.mean_confidence:.4f}",
                "domain_shift": self._shift_text(band),
                "domain_shift_state": self._shift_state(),
                "no_frame_warning": self.no_frame_warning,
                "outputs_drawn": self.drawn,
            }
            level, message = self._verdict(band)
            self.bad_since_report = 0
        return DiagnosticStatus(
            level=level, name=f"{node_name}: {self.name}", message=message, hardware_id=self.name,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )

    def _shift_text(self, band: ShiftBand | None) -> str:
        if self.shift is None:
            return "off" if band is None else "no frames yet"
        return self.shift.describe(band)

    def _shift_state(self) -> str:
        if self.shift is None:
            return "off"
        return {None: "warming up", True: "shifted", False: "in band"}[self.shift.shifted]

    def _verdict(self, band: ShiftBand | None) -> tuple[bytes, str]:
        if self.shift is not None and self.shift.shifted:
            return DiagnosticStatus.WARN, f"domain shift: {self.shift.describe(band)}"
        if self.no_frame_warning:
            return DiagnosticStatus.WARN, self.no_frame_warning
        if self.bad_since_report:
            return DiagnosticStatus.WARN, f"{self.bad_since_report} bad frame(s): {self.bad_reason}"
        if self.frames_out == 0:
            return DiagnosticStatus.OK, "waiting for frames"
        return DiagnosticStatus.OK, "ok"


@dataclass
class ModelStats:
    """Node-wide figures: model calls and their batch sizes, errors."""

    description: dict[str, str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0
    frames: int = 0
    errors: int = 0
    last_error: str = ""
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def called(self, batch: int, backend_calls: int) -> None:
        with self.lock:
            self.calls += backend_calls
            self.frames += batch
            self.batch_sizes[batch] = self.batch_sizes.get(batch, 0) + 1

    def failed(self, reason: str) -> None:
        with self.lock:
            self.errors += 1
            self.last_error = reason

    def status(self, node_name: str) -> DiagnosticStatus:
        with self.lock:
            values = {
                **self.description,
                "backend_calls": str(self.calls),
                "frames": str(self.frames),
                "pending_sets": " ".join(f"{k}x{v}" for k, v in sorted(self.batch_sizes.items())),
                "errors": str(self.errors),
                "last_error": self.last_error,
            }
            level = DiagnosticStatus.WARN if self.last_error else DiagnosticStatus.OK
            message = f"model error: {self.last_error}" if self.last_error else "ok"
        return DiagnosticStatus(level=level, name=f"{node_name}: model", message=message,
                                hardware_id="model",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])


def diagnostic_array(stamp: object, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = stamp
    return msg


def values_of(status: DiagnosticStatus) -> dict[str, str]:
    """KeyValue list -> dict (for readers of the diagnostics)."""
    return {kv.key: kv.value for kv in status.values}
