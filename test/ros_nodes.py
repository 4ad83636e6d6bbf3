"""Helpers for the perception-node tests: the node and test cameras as separate processes
(real rclpy + Fast DDS), a listener node in the test process, and a trained demo model.

Processes start in their own session and are always stopped (SIGINT, then SIGKILL of the
whole group), so no test leaves an orphan behind.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from train_helpers import REPO, env as base_env

BIN = Path(sys.executable).parent
PROFILE = REPO / "config" / "fastdds_large_frames.xml"
HERE = Path(__file__).parent


class Processes:
    """Started processes, stopped at exit: SIGINT, wait, then SIGKILL to the process group."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, cmd: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        handle = open(log, "w")  # noqa: SIM115 - closed with the process in stop()
        proc = subprocess.Popen([str(c) for c in cmd], env={**self.env, **(extra_env or {})},
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_handle = handle  # type: ignore[attr-defined]
        self.procs.append((proc, log))
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10.0) -> float:
        """Signal `proc`, wait; returns the seconds it took (SIGKILL after `timeout`)."""
        start = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        try:  # children of the process, if any were left
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.log_handle.close()  # type: ignore[attr-defined]
        return time.monotonic() - start

    def stop_all(self) -> None:
        for proc, _ in reversed(self.procs):
            self.stop(proc)

    def log(self, proc: subprocess.Popen) -> str:
        path = next(log for p, log in self.procs if p is proc)
        return path.read_text(errors="replace")


def node_command(model: Path, *, camera_topic: str | None = "cam/image_raw", compressed: bool = False,
                 params_file: Path | None = None, params: dict[str, str] | None = None) -> list[str]:
    """`vltseg-ros run` with one CPU thread (results equal a 1-thread Predictor here)."""
    cmd = [str(BIN / "vltseg-ros"), "run", "--model", str(model)]
    if camera_topic:
        cmd += ["--camera-topic", camera_topic] + (["--compressed"] if compressed else [])
    if params_file:
        cmd += ["--params-file", str(params_file)]
    cmd += ["--ros-args", "-p", "num_threads:=1", "-p", "diagnostics_period:=0.5"]
    for key, value in (params or {}).items():
        cmd += ["-p", f"{key}:={value}"]
    return cmd


def camera_command(topic: str, kinds: str = "rgb8", **opts: object) -> list[str]:
    cmd = [sys.executable, str(HERE / "ros_camera.py"), "--topic", topic, "--kinds", kinds]
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        cmd += [flag] if value is True else [flag, str(value)]
    return cmd


class Listener:
    """A node in the test process collecting messages per name, spun in a thread."""

    def __init__(self, context: Any, name: str = "vltseg_test_listener") -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.node = Node(name, context=context)
        self.messages: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def subscribe(self, name: str, msg_type: type, topic: str, qos: Any) -> None:
        def keep(msg: Any) -> None:
            with self._lock:
                self.messages.setdefault(name, []).append(msg)

        self.node.create_subscription(msg_type, topic, keep, qos)

    def got(self, name: str) -> list[Any]:
        with self._lock:
            return list(self.messages.get(name, []))

    def wait_for(self, done: Callable[[], bool], timeout: float, what: str | Callable[[], str] = "") -> None:
        """Poll `done`; on timeout fail with `what` (a callable is evaluated then, e.g. a log)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if done():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")

    def status(self, suffix: str) -> dict[str, str] | None:
        """Values of the newest DiagnosticStatus whose name ends with `suffix` (e.g. ': camera')."""
        from vltseg_ros.diagnostics import values_of

        for array in reversed(self.got("diagnostics")):
            for status in array.status:
                if status.name.endswith(suffix):
                    return {"level": int.from_bytes(status.level, "little") if isinstance(status.level, bytes)
                            else int(status.level), "message": status.message,
                            **values_of(status)}
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._executor.shutdown(timeout_sec=1)
        self.node.destroy_node()


def best_effort(depth: int = 5) -> Any:
    """A default-config subscriber's sensor-data QoS (best effort)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)


def listen_diagnostics(listener: Listener) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    listener.subscribe("diagnostics", DiagnosticArray, "/diagnostics", 50)


@contextmanager
def ros_session(ros_context: Any, ros_domain: dict[str, str], tmp_path: Path) -> Iterator[tuple[Processes, Listener]]:
    """Processes on the test's DDS domain and a listener with /diagnostics; all stopped after."""
    env = {k: v for k, v in base_env().items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}  # tests opt in
    procs = Processes({**env, **ros_domain})
    listener = Listener(ros_context)
    listen_diagnostics(listener)
    try:
        yield procs, listener
    finally:
        procs.stop_all()
        listener.close()


@functools.cache
def trained_model(workdir: Path) -> tuple[Path, Path]:
    """(checkpoint, calibrated ONNX) of the demo config trained briefly on a small synthetic
    benchmark (the demo test's schedule), so masks depend on the image; made once per run."""
    from train_helpers import synth_root_at, tiny_overrides, vltseg

    out, onnx = workdir / "train", workdir / "demo.onnx"
    checkpoint = out / "model_final.pt"
    if checkpoint.is_file() and onnx.is_file():
        return checkpoint, onnx
    root = synth_root_at(workdir / "synth", 60)
    vltseg("train", "--config", str(REPO / "configs" / "demo.yaml"),
           *tiny_overrides(out, 300, **{"data.crop_size": "[128,128]", "data.batch_size": 4}),
           synth=root)
    vltseg("export", "--checkpoint", str(checkpoint), "--out", str(onnx),
           "--calibrate", str(root / "leftImg8bit" / "val"))
    return checkpoint, onnx
