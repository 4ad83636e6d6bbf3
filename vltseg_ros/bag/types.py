"""The bag's type system: rosbags' ROS 2 type store (message definitions for the bag
metadata, what `ros2 bag play` and Foxglove need) plus this package's messages; the bytes
themselves are rclpy's CDR, so what a bag holds is exactly what goes over DDS."""

from __future__ import annotations

import importlib
import struct
from functools import cache
from pathlib import Path
from typing import Any

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
HEADER = "std_msgs/msg/Header"
STRING = "std_msgs/msg/String"
CLOCK = "rosgraph_msgs/msg/Clock"
IMAGE_TYPES = (IMAGE, COMPRESSED)
DETECTIONS = ("vltseg_ros/msg/Detection2DArray", "vision_msgs/msg/Detection2DArray")


def _msg_dir() -> Path | None:
    """msg/ of this checkout, else share/vltseg_ros/msg of the install."""
    candidates = [Path(__file__).resolve().parents[2] / "msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("vltseg_ros")) / "msg")
    except Exception:  # noqa: BLE001 - not in an ament index
        pass
    return next((p for p in candidates if p.is_dir() and any(p.glob("*.msg"))), None)


@cache
def typestore() -> Any:
    """The ROS 2 store with vltseg_ros/msg/* (and vision_msgs/msg/* from the mirror when the
    store lacks it: the node publishes vision_msgs where that is installed)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(getattr(Stores, "ROS2_JAZZY", Stores.LATEST))
    folder = _msg_dir()
    if folder is None:
        return store
    types: dict[str, Any] = {}
    for package in ("vltseg_ros", "vision_msgs"):
        for path in sorted(folder.glob("*.msg")):
            name = f"{package}/msg/{path.stem}"
            if name not in store.fielddefs:
                types.update(get_types_from_msg(path.read_text(), name))
    store.register(types)
    return store


def type_name(msg: Any) -> str:
    """'pkg/msg/Name' of an rclpy message instance."""
    cls = type(msg)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def message_class(name: str) -> type:
    """The rclpy class of 'pkg/msg/Name' (ImportError when the package is not built here)."""
    package, _, cls = name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), cls)


def serialize(msg: Any) -> bytes:
    from rclpy.serialization import serialize_message

    return serialize_message(msg)


class MessageError(ValueError):
    """A stored message that does not deserialize as its topic's type: a corrupt bag record."""


def deserialize(raw: bytes, name: str) -> Any:
    from rclpy.serialization import deserialize_message

    cls = message_class(name)
    try:
        return deserialize_message(bytes(raw), cls)
    except Exception as exc:  # noqa: BLE001 - rclpy raises RMWError with no useful text
        raise MessageError(f"a {len(raw)}-byte record does not deserialize as {name} "
                           f"({type(exc).__name__})") from None


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def cdr_stamp_ns(raw: bytes | memoryview) -> int:
    """The header stamp of a serialized message whose first field is std_msgs/Header (Image,
    CompressedImage, ...) without deserializing its pixels: CDR encapsulation (4 bytes), then
    int32 sec and uint32 nanosec in the encoded byte order."""
    head = bytes(raw[:12])
    order = "<" if head[1] == 1 else ">"
    sec, nanosec = struct.unpack(order + "iI", head[4:12])
    return sec * 1_000_000_000 + nanosec


def header_at(ns: int, frame_id: str = "") -> Any:
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame_id)
