"""Real DDS round trip: a publisher in another process, a subscriber here (Fast DDS)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

HERE = Path(__file__).parent


def _spin_until(node, context, done, timeout: float) -> None:
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.1)
    executor.remove_node(node)


def test_detections_and_image_cross_processes(ros_context, ros_domain) -> None:
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vltseg_ros.msg import Detection2DArray

    width, height = 640, 480
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "ros_publisher.py"), "--width", str(width), "--height", str(height)],
        env={**os.environ, **ros_domain},
    )
    got: dict[str, object] = {}
    node = Node("vltseg_test_subscriber", context=ros_context)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Detection2DArray, "test/detections", lambda m: got.setdefault("det", m), qos)
    node.create_subscription(Image, "test/image", lambda m: got.setdefault("img", m), qos)
    try:
        _spin_until(node, ros_context, lambda: len(got) == 2, timeout=30.0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        node.destroy_node()
    assert "det" in got and "img" in got, f"received only {sorted(got)}"

    det = got["det"]
    assert det.header.frame_id == "camera"
    assert [d.id for d in det.detections] == ["obj0", "obj1", "obj2"]
    second = det.detections[1]
    assert (second.bbox.center.position.x, second.bbox.center.position.y) == (10.5, 20.25)
    assert (second.bbox.size_x, second.bbox.size_y) == (5.0, 9.0)
    assert second.results[0].hypothesis.class_id == "12"
    assert second.results[0].hypothesis.score == pytest.approx(0.6)

    img = got["img"]
    assert (img.width, img.height, img.encoding, img.step) == (width, height, "rgb8", width * 3)
    expected = (np.arange(height * width * 3, dtype=np.uint32) % 251).astype(np.uint8)
    np.testing.assert_array_equal(np.frombuffer(bytes(img.data), dtype=np.uint8), expected)
