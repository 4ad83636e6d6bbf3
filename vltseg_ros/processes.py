"""Stopping the processes the tools start (the node, `ros2 launch`, the demo camera): SIGINT
for a clean shutdown, then SIGKILL to the whole process group, so nothing a launch started
outlives the tool. Children are started with `start_new_session=True` for that reason."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, grace: float = 15.0, *, interrupt: bool = True) -> None:
    """SIGINT (unless already sent: `interrupt=False`), up to `grace` seconds to exit, then
    SIGKILL to the process group; returns when the process is reaped."""
    if interrupt and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
