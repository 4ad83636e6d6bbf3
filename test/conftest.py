"""Shared test fixtures. ROS tests run on the real middleware (Fast DDS from the venv)."""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Started as a background job (`bash .ci/run &`), pytest ignores SIGINT, and so would every
    process the tests start: `ros2 launch` could not be stopped by the SIGINT the tests send."""
    from vltseg_ros.processes import sigint_for_children

    sigint_for_children()


def _ros_available() -> str | None:
    try:
        import rclpy  # noqa: F401
        from vltseg_ros.msg import Detection2DArray  # noqa: F401
    except ImportError as exc:
        return f"ROS 2 not importable ({exc}); run scripts/setup.sh"
    return None


_held_domains: list[object] = []  # open lock files: a domain stays ours until this process ends


def free_domain_id(low: int = 1, high: int = 200) -> int:
    """A DDS domain id no other test run on this machine holds: each id has a lock file, kept
    locked for the life of this process, so parallel suites (CI + a developer, two worktrees)
    never share a domain and see each other's nodes."""
    ids = list(range(low, high + 1))
    random.Random(os.getpid()).shuffle(ids)
    for domain in ids:
        handle = open(Path(tempfile.gettempdir()) / f"vltseg-ros-domain-{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_domains.append(handle)
        return domain
    raise RuntimeError(f"no free ROS domain id in {low}..{high}")


@pytest.fixture(scope="session")
def ros_domain() -> dict[str, str]:
    """An isolated DDS domain on localhost only, shared with helper processes via env."""
    reason = _ros_available()
    if reason:
        pytest.skip(reason)
    env = {
        "ROS_DOMAIN_ID": str(free_domain_id()),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }
    os.environ.update(env)
    return env


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Code run in-process (e.g. `vltseg-ros bag eval`, which points FASTDDS_DEFAULT_PROFILES_FILE
    at the large-frame profile) must not change the environment later tests' processes get."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


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
