"""Latest-frame slots and the batching worker (vltseg_ros.frames, plain Python)."""

from __future__ import annotations

import threading
import time

import numpy as np

from vltseg_ros.frames import Frame, LatestFrames, Worker


def _frame(camera: str, tag: int) -> Frame:
    return Frame(camera, np.full((2, 2, 3), tag, np.uint8), header=tag)


def test_put_replaces_and_reports_the_dropped_frame() -> None:
    slots = LatestFrames(["a", "b"])
    assert slots.put(_frame("a", 1)) is None
    dropped = slots.put(_frame("a", 2))
    assert dropped is not None and dropped.header == 1
    slots.put(_frame("b", 3))
    assert [f.header for f in slots.take(0)] == [2, 3]  # newest per camera, camera order
    assert slots.take(0) == []


def test_take_waits_for_a_frame_and_returns_on_close() -> None:
    slots = LatestFrames(["a"])
    threading.Timer(0.2, lambda: slots.put(_frame("a", 7))).start()
    start = time.monotonic()
    assert [f.header for f in slots.take(5.0)] == [7]
    assert time.monotonic() - start < 4.0
    threading.Timer(0.2, slots.close).start()
    assert slots.take(5.0) == [] and slots.closed


def test_worker_batches_pending_cameras_and_survives_errors() -> None:
    slots = LatestFrames(["a", "b", "c"])
    calls: list[list[int]] = []
    errors: list[BaseException] = []
    gate = threading.Event()

    def process(frames: list[Frame]) -> None:
        calls.append([f.header for f in frames])
        if len(calls) == 1:
            gate.wait(5.0)  # hold the first call while all three cameras queue up
            raise RuntimeError("boom")

    worker = Worker(slots, process, errors.append)
    worker.start()
    slots.put(_frame("a", 0))
    while not calls:
        time.sleep(0.01)
    for tag, cam in enumerate("abc", start=1):
        slots.put(_frame(cam, tag))
    assert slots.put(_frame("a", 9)).header == 1  # replaced while waiting: dropped
    gate.set()
    deadline = time.monotonic() + 5.0
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop(5.0)
    assert calls == [[0], [9, 2, 3]]  # one call for the whole pending set
    assert [str(e) for e in errors] == ["boom"]


def test_rate_limit_lets_newer_frames_replace_older_ones() -> None:
    slots = LatestFrames(["a"])
    seen: list[int] = []
    worker = Worker(slots, lambda fs: seen.extend(f.header for f in fs), print, min_period=0.5)
    worker.start()
    for tag in range(12):  # 1.2 s of frames at 10 Hz
        slots.put(_frame("a", tag))
        time.sleep(0.1)
    assert worker.stop(5.0)
    assert 2 <= len(seen) <= 4, seen  # about 1.2 s / 0.5 s calls
    assert seen == sorted(seen) and seen[-1] >= 9  # always the newest frame


def _ages(fresh: bool) -> list[float]:
    """Age of each taken frame when a 20 Hz camera meets a 120 ms model."""
    slots = LatestFrames(["a"])
    ages: list[float] = []

    def process(frames: list[Frame]) -> None:
        ages.append(time.monotonic() - frames[0].received)
        time.sleep(0.12)

    worker = Worker(slots, process, print, fresh=fresh)
    worker.start()
    for tag in range(50):  # 2.5 s at 20 Hz
        slots.put(_frame("a", tag))
        time.sleep(0.05)
    worker.stop(5.0)
    return ages[2:]


def test_fresh_frames_wait_for_the_next_frame_instead_of_a_stale_one() -> None:
    stale, fresh = _ages(False), _ages(True)
    assert max(fresh) < 0.045, fresh  # taken within ~half a period of arrival
    assert np.mean(fresh) < np.mean(stale), (fresh, stale)
    assert len(fresh) >= 0.7 * len(stale)  # small cost in throughput
