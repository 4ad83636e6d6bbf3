"""Test camera process: publishes synthetic street frames (the benchmark's renderer) on one
topic, cycling through the given encodings (frame_id = encoding, stamp = now), until killed or
`--seconds` pass. Raw Image by default; `--compressed jpeg|png` publishes CompressedImage."""

from __future__ import annotations

import argparse
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from vltseg_ros import image_codec


def scene(seed: int, width: int, height: int, domain: str = "clear") -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, train-id labels) of one synthetic frame rendered at width x height."""
    from vltseg_core.data.labels import cityscapes_lut
    from vltseg_core.data.synth_domains import apply_domain
    from vltseg_core.data.synth_objects import render_scene

    s = render_scene(np.random.default_rng([seed]), width, height)
    image = apply_domain(s, domain, np.random.default_rng([seed, 1]))
    return image, cityscapes_lut()[s.label]


def message(rgb: np.ndarray, kind: str, pad: int = 0, bigendian: bool | None = None):
    """kind: an Image encoding, or 'jpeg' / 'png' for a CompressedImage."""
    if kind in ("jpeg", "png"):
        msg = image_codec.encode_compressed(rgb, kind)
    else:
        msg = image_codec.encode_image(rgb, kind, pad=pad, bigendian=bigendian)
    msg.header.frame_id = kind
    return msg


def _sequence(spec: str) -> list[str]:
    """'clear:2,night:1' -> ['clear', 'clear', 'night'] (the domain of each frame)."""
    out: list[str] = []
    for part in spec.split(","):
        dom, count = part.split(":")
        out += [dom] * int(count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--kinds", default="rgb8", help="comma-separated encodings / jpeg / png")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--bigendian", action="store_true")
    parser.add_argument("--reliability", choices=["best_effort", "reliable"], default="best_effort")
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--domains", default="", help="e.g. clear:20,night:20: a sequence of new "
                        "scenes (frame_id = domain) played once, then exit; first kind only")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if args.domains:
        msgs = []
        for i, dom in enumerate(_sequence(args.domains)):
            msgs.append(message(scene(args.seed + i, args.width, args.height, dom)[0], kinds[0]))
            msgs[-1].header.frame_id = dom
    else:
        rgb, _ = scene(args.seed, args.width, args.height)
        msgs = [message(rgb, k, args.pad, args.bigendian or None) for k in kinds]
    rclpy.init()
    node = rclpy.create_node("vltseg_test_camera")
    reliability = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)
    msg_type = CompressedImage if kinds[0] in ("jpeg", "png") else Image
    pub = node.create_publisher(msg_type, args.topic, qos)
    end, i = time.monotonic() + args.seconds, 0
    try:
        while time.monotonic() < end and not (args.domains and i >= len(msgs)):
            msg = msgs[i % len(msgs)]
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            i += 1
            time.sleep(1.0 / args.rate)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
