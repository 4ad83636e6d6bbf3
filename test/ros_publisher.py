"""Helper process for the DDS round-trip test: publishes one Detection2DArray and one Image
per period until killed or until `--seconds` pass."""

from __future__ import annotations

import argparse
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vltseg_ros.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose


def make_detections(stamp_sec: int) -> Detection2DArray:
    msg = Detection2DArray()
    msg.header.frame_id = "camera"
    msg.header.stamp.sec = stamp_sec
    for i in range(3):
        det = Detection2D()
        det.header = msg.header
        det.id = f"obj{i}"
        det.bbox.center.position.x = 10.0 * i + 0.5
        det.bbox.center.position.y = 20.0 * i + 0.25
        det.bbox.size_x, det.bbox.size_y = 4.0 + i, 8.0 + i
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = str(11 + i)
        hyp.hypothesis.score = 0.5 + 0.1 * i
        det.results.append(hyp)
        msg.detections.append(det)
    return msg


def make_image(width: int, height: int) -> Image:
    pixels = (np.arange(height * width * 3, dtype=np.uint32) % 251).astype(np.uint8)
    img = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    img.header.frame_id = "camera"
    img.data = pixels.tobytes()
    return img


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("vltseg_test_publisher")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    det_pub = node.create_publisher(Detection2DArray, "test/detections", qos)
    img_pub = node.create_publisher(Image, "test/image", qos)
    end = time.monotonic() + args.seconds
    tick = 0
    while time.monotonic() < end:
        det_pub.publish(make_detections(tick))
        img_pub.publish(make_image(args.width, args.height))
        tick += 1
        time.sleep(0.1)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
