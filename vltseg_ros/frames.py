"""Latest-frame policy: one slot per camera holding its newest decoded frame, and a worker
thread that takes every pending frame at once and hands them to one batched model call.

Subscription callbacks only decode and `put`; a frame replaced before the worker took it is
dropped and counted, so results never lag behind the cameras by more than one model call.

Fresh frames: when the worker becomes free, the pending frame may already be up to one model
call old. If it is older than half its camera's frame period, the next frame is closer in
time than this one is old, so the worker waits for it (at most half a period). A result's age
(output time - capture time) is then at most about half a period plus one call, instead of up
to two calls. Plain Python (no rclpy), so it is tested on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    camera: str
    image: np.ndarray  # HxWx3 uint8 RGB
    header: Any  # std_msgs/Header of the input message, copied to every output
    received: float = field(default_factory=time.monotonic)


class LatestFrames:
    """Per-camera slots; `put` replaces, `take` returns all pending frames (waiting for one)."""

    def __init__(self, cameras: list[str]) -> None:
        self._slots: dict[str, Frame | None] = dict.fromkeys(cameras)
        self._last: dict[str, float] = {}  # arrival time of each camera's newest frame
        self._period: dict[str, float] = {}  # running mean of each camera's frame period (s)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame) -> Frame | None:
        """Store `frame`; returns the older pending frame it replaced (dropped), if any."""
        with self._cond:
            old = self._slots[frame.camera]
            self._slots[frame.camera] = frame
            last = self._last.get(frame.camera)
            if last is not None:
                dt = frame.received - last
                period = self._period.get(frame.camera, dt)
                self._period[frame.camera] = 0.8 * period + 0.2 * dt
            self._last[frame.camera] = frame.received
            self._cond.notify_all()
        return old

    def wait_fresh(self) -> None:
        """Wait for the next frame of every camera whose pending frame is older than half its
        period (at most half a period)."""
        with self._cond:
            now = time.monotonic()
            stale: dict[str, float] = {}
            deadline = now
            for cam, frame in self._slots.items():
                period = self._period.get(cam)
                if frame is not None and period and now - frame.received > period / 2:
                    stale[cam] = frame.received
                    deadline = max(deadline, min(frame.received + 1.25 * period, now + period / 2))
            if stale:
                self._cond.wait_for(lambda: self._closed or all(
                    (f := self._slots[c]) is not None and f.received > t for c, t in stale.items()),
                    deadline - now)

    def take(self, timeout: float | None = None) -> list[Frame]:
        """Every pending frame (camera order), waiting up to `timeout` s; [] when closed/timed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or any(self._slots.values()), timeout)
            frames = [f for f in self._slots.values() if f is not None]
            self._slots = dict.fromkeys(self._slots)
        return frames

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class Worker:
    """Thread: take pending frames -> `process(frames)`, at most once per `min_period` s,
    waiting for fresh frames first when `fresh`.

    Waiting out `min_period` before taking lets newer frames replace older ones, so a rate
    limit costs no latency. An exception in `process` goes to `on_error`; the loop goes on.
    """

    def __init__(self, frames: LatestFrames, process: Callable[[list[Frame]], None],
                 on_error: Callable[[BaseException], None], min_period: float = 0.0,
                 fresh: bool = True) -> None:
        self.frames = frames
        self.process = process
        self.on_error = on_error
        self.min_period = min_period
        self.fresh = fresh
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vltseg-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the current call; True if the thread ended within `timeout`."""
        self._stop.set()
        self.frames.close()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        last = -float("inf")
        while not self._stop.is_set():
            wait = last + self.min_period - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            if self.fresh:
                self.frames.wait_fresh()
            batch = self.frames.take(timeout=0.2)
            if not batch or self._stop.is_set():
                continue
            last = time.monotonic()
            try:
                self.process(batch)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a bad call
                self.on_error(exc)
