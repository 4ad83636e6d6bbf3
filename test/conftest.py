"""Shared test fixtures. ROS tests run on the real middleware (Fast DDS from the venv)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest


def _ros_available() -> str | None:
    try:
        import rclpy  # noqa: F401
        from vltseg_ros.msg import Detection2DArray  # noqa: F401
    except ImportError as exc:
        return f"ROS 2 not importable ({exc}); run scripts/setup.sh"
    return None


@pytest.fixture(scope="session")
def ros_domain() -> dict[str, str]:
    """An isolated DDS domain on localhost only, shared with helper processes via env."""
    reason = _ros_available()
    if reason:
        pytest.skip(reason)
    env = {
        "ROS_DOMAIN_ID": str(random.Random(os.getpid()).randint(1, 100)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }
    os.environ.update(env)
    return env


@pytest.fixture()
def ros_context(ros_domain: dict[str, str]) -> Iterator[object]:
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; with 2 threads on a busy 2-core machine the
    first iterations are >10x slower (thread-pool contention)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
