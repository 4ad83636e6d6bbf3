"""A camera node streaming the embedded synthetic domain-shift drive (clear -> fog -> rain ->
snow -> night by default) with pixel-exact ground truth, for the live demo and tests.

    python -m vltseg_ros.synthetic_camera --ros-args -p rate:=5.0 -p width:=1024

Publishes, all with the same header (stamp = publish time, frame_id = `frame_id`):
  camera/image_raw     sensor_msgs/Image (`encoding`), best effort (sensor data)
  camera/ground_truth  sensor_msgs/Image mono8 train ids, 255 = ignore
  camera/domain        std_msgs/Header whose frame_id is the domain name (reliable)
`unique_frames` scenes per domain are rendered first and cycled for `seconds_per_domain`; the
node exits after the last domain unless `loop` is set. Give its process the large-frame Fast DDS
profile (the demo does) so best-effort frames of 1024x512 and up reach other processes.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from vltseg_ros.image_codec import encode_image, to_image_msg

PARAMS = {
    "domains": ["clear", "fog", "rain", "snow", "night"],
    "unique_frames": 8,
    "seconds_per_domain": 12.0,
    "rate": 5.0,
    "width": 1024,
    "height": 512,
    "encoding": "rgb8",
    "frame_id": "camera",
    "seed": 0,
    "loop": False,
    "wait_for_subscribers": 0.0,  # s to wait after rendering until every output has a subscriber
}


class SyntheticCamera(Node):
    def __init__(self) -> None:
        super().__init__("synthetic_camera")
        for name, default in PARAMS.items():
            self.declare_parameter(name, default)
        self.p = {name: self.get_parameter(name).value for name in PARAMS}
        sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.image_pub = self.create_publisher(Image, "camera/image_raw", sensor)
        self.gt_pub = self.create_publisher(Image, "camera/ground_truth", sensor)
        self.domain_pub = self.create_publisher(Header, "camera/domain", 10)

    def render(self) -> dict[str, list[tuple[Any, np.ndarray]]]:
        """Per domain: (image message, train ids) of `unique_frames` scenes."""
        from vltseg_core.data.synth import sequence_frame

        size = (int(self.p["width"]), int(self.p["height"]))
        frames: dict[str, list[tuple[Any, np.ndarray]]] = {}
        for domain in self.p["domains"]:
            self.get_logger().info(f"rendering {self.p['unique_frames']} {domain} frames at {size[0]}x{size[1]}")
            frames[domain] = [(encode_image(rgb, self.p["encoding"]), gt) for rgb, gt in
                              (sequence_frame(domain, i, size, int(self.p["seed"]))
                               for i in range(int(self.p["unique_frames"])))]
        return frames

    def wait_for_subscribers(self, stop: threading.Event) -> None:
        """Up to `wait_for_subscribers` s until each publisher has a matched subscription: a
        best-effort or volatile message sent before that is lost to the subscriber (the demo's
        scorer would miss the first frames of the first domain)."""
        seconds = float(self.p["wait_for_subscribers"])
        end = time.monotonic() + seconds
        missing = self.unmatched()
        while missing and time.monotonic() < end and not stop.is_set():
            stop.wait(0.05)
            missing = self.unmatched()
        if missing and seconds > 0:
            self.get_logger().warning(f"no subscriber on {', '.join(missing)} after {seconds:.0f} s; streaming anyway")

    def unmatched(self) -> list[str]:
        return [p.topic_name for p in (self.image_pub, self.gt_pub, self.domain_pub) if p.get_subscription_count() == 0]

    def stream(self, frames: dict[str, list[tuple[Any, np.ndarray]]], stop: threading.Event) -> None:
        period = 1.0 / float(self.p["rate"])
        while not stop.is_set():
            for domain, items in frames.items():
                self.get_logger().info(f"streaming {domain} for {self.p['seconds_per_domain']:.0f} s")
                end, i, next_at = time.monotonic() + float(self.p["seconds_per_domain"]), 0, time.monotonic()
                while time.monotonic() < end and not stop.is_set():
                    self.publish(domain, *items[i % len(items)])
                    i += 1
                    next_at += period
                    stop.wait(max(0.0, next_at - time.monotonic()))
                self.get_logger().info(f"streamed {i} {domain} frames")
            if not self.p["loop"]:
                return

    def publish(self, domain: str, image: Any, gt: np.ndarray) -> None:
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=str(self.p["frame_id"]))
        self.domain_pub.publish(Header(stamp=header.stamp, frame_id=domain))
        image.header = header
        self.gt_pub.publish(to_image_msg(gt, "mono8", header))
        self.image_pub.publish(image)


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = SyntheticCamera()
    try:
        frames = node.render()
        node.wait_for_subscribers(stop)
        node.stream(frames, stop)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
