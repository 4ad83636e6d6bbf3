"""Stopping the processes the tools start (the node, `ros2 launch`, the demo camera): SIGINT
for a clean shutdown, then SIGKILL to the whole process group, so nothing a launch started
outlives the tool. Children are started with `start_new_session=True` for that reason, and
with SIGINT at its default action (:func:`sigint_for_children`)."""

from __future__ import annotations

import os
import signal
import subprocess


def sigint_for_children() -> None:
    """Make the processes this one starts stoppable by SIGINT. A shell starts a background job
    (`cmd &`, `nohup cmd &`) with SIGINT ignored, and an ignored signal stays ignored across
    exec: `ros2 launch`, which learns of SIGINT only through Python's own handler, would then
    never see the SIGINT that stops it. Python's handler (main thread only) is reset to the
    default action in every child at exec."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
