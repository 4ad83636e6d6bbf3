"""Open what users have (a rosbag2 directory, a bare `.mcap`, a bare `.db3`), find the camera,
ground-truth and condition topics by type when not named, and stream messages in time order.

Every failure is a `BagError` with one line naming the bag and, for a bag that breaks while
being read, the topic and bag time of the last good message and how many were read."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vltseg_ros.bag import types

GT_NAME = re.compile(r"(ground_?truth|/gt(/|$)|label|semantic)", re.IGNORECASE)
DOMAIN_NAME = re.compile(r"(domain|condition|segment)$", re.IGNORECASE)
OUTPUT_PREFIX = "/vltseg/"


class BagError(Exception):
    """A bag that cannot be (fully) read; `read` is how many messages came before the break."""

    def __init__(self, message: str, read: int = 0) -> None:
        super().__init__(message)
        self.read = read


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class Topics:
    image: str
    image_type: str
    gt: str | None = None
    domain: str | None = None
    domain_type: str | None = None

    def all(self) -> list[str]:
        return [t for t in (self.image, self.gt, self.domain) if t]


class Bag:
    """An open bag (context manager)."""

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"no such bag: {self.path}")
        try:
            self.reader = Reader(self.path)
            self.reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises many kinds; each is one line
            raise BagError(f"{self.path}: cannot open as a ROS 2 bag: {one_line(exc)}") from None
        self.types = {c.topic: c.msgtype for c in self.reader.connections}

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001 - closing a broken bag must not hide the first error
            pass

    @property
    def counts(self) -> dict[str, int]:
        return {c.topic: c.msgcount for c in self.reader.connections}

    def find_topics(self, image: str | None = None, gt: str | None = None,
                    domain: str | None = None) -> Topics:
        """Named topics are checked; unnamed ones are found by type and name."""
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(self.types.items())) or "none"
        for name in (image, gt, domain):
            if name and name not in self.types:
                raise BagError(f"{self.path}: no topic {name}; the bag has {listing}")
        images = [t for t, m in self.types.items() if m in types.IMAGE_TYPES and not t.startswith(OUTPUT_PREFIX)]
        gt = gt or next((t for t in images if GT_NAME.search(t) and self.types[t] == types.IMAGE), None)
        if image is None:
            cameras = [t for t in images if t != gt]
            if not cameras:
                raise BagError(f"{self.path}: no sensor_msgs Image/CompressedImage camera topic; the bag has {listing}")
            if len(cameras) > 1:
                raise BagError(f"{self.path}: several camera topics ({', '.join(cameras)}); choose one with --image-topic")
            image = cameras[0]
        if self.types[image] not in types.IMAGE_TYPES:
            raise BagError(f"{self.path}: {image} is {self.types[image]}, not an Image or CompressedImage")
        domain = domain or next((t for t, m in self.types.items()
                                 if m in (types.HEADER, types.STRING) and DOMAIN_NAME.search(t)), None)
        return Topics(image, self.types[image], gt, domain, self.types.get(domain) if domain else None)

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, bytes]]:
        """(topic, bag time ns, raw CDR) in time order; a break raises `BagError` naming it."""
        conns = [c for c in self.reader.connections if c.topic in topics]
        read, last = 0, "the start"
        try:
            for conn, t_ns, raw in self.reader.messages(connections=conns):
                yield conn.topic, t_ns, raw
                read += 1
                last = f"{conn.topic} at t={t_ns / 1e9:.3f}"
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated/corrupt storage: name where it broke
            raise BagError(f"{self.path}: the bag breaks after {read} messages (last good: {last}): "
                           f"{one_line(exc)}", read) from None


def mono8(msg: Any) -> np.ndarray:
    """A mono8 Image's pixels (rows of `step` bytes) as HxW uint8."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise BagError(f"ground truth must be mono8 train ids, got {msg.encoding}")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width]


def domain_name(msg: Any) -> str:
    """A condition message's name: Header.frame_id or String.data."""
    return str(getattr(msg, "frame_id", None) or getattr(msg, "data", ""))


def read_segments_file(path: Path) -> list[tuple[str, float, float | None]]:
    """Lines `name start_s [end_s]`, seconds from the first frame; `#` starts a comment."""
    out = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise BagError(f"cannot read segments file {path}: {one_line(exc)}") from None
    for number, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        try:
            out.append((parts[0], float(parts[1]), float(parts[2]) if len(parts) > 2 else None))
        except (IndexError, ValueError):
            raise BagError(f"{path}:{number}: expected 'name start_s [end_s]', got {line.strip()!r}") from None
    return out
