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

from vltseg_ros import image_codec
from vltseg_ros.bag import types

GT_NAME = re.compile(r"(ground_?truth|/gt(/|$)|label|semantic)", re.IGNORECASE)
DOMAIN_NAME = re.compile(r"(domain|condition|segment)$", re.IGNORECASE)
OUTPUT_PREFIX = "/vltseg/"


class BagError(Exception):
    """A bag that cannot be (fully) read; `read` is how many messages came before the break."""

    def __init__(self, message: str, read: int = 0) -> None:
        super().__init__(message)
        self.read = read


def broken_at(stream: Iterator[tuple[str, int, bytes]], exc: BaseException) -> BagError:
    """The error for the record `stream` (a suspended `Bag.messages`) last gave, which read but
    did not deserialize (garbage inside a chunk): thrown back into the reader, which names
    where the bag broke as it does for storage errors."""
    try:
        stream.throw(exc)
    except BagError as err:
        return err
    return BagError(one_line(exc))


def one_line(exc: BaseException) -> str:
    if type(exc).__name__ in ("EndOfFile", "EOFError"):
        return "unexpected end of file (truncated)"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class Topics:
    image: str
    image_type: str
    gt: str | None = None
    domain: str | None = None
    domain_type: str | None = None
    gt_boxes: str | None = None
    gt_boxes_type: str | None = None

    def all(self) -> list[str]:
        return [t for t in (self.image, self.gt, self.domain, self.gt_boxes) if t]


class Bag:
    """An open bag (context manager)."""

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"no such bag: {self.path}")
        self.damage: str | None = None  # why the index could not be used (read sequentially)
        self.reader: Any = None
        try:
            self.reader = Reader(self.path)
            self.reader.open()
            self.types = {c.topic: c.msgtype for c in self.reader.connections}
        except Exception as exc:  # noqa: BLE001 - rosbags raises many kinds; each is one line
            self.reader = None
            self.damage = f"cannot open as a ROS 2 bag: {one_line(exc)}"
            self._fallback = _sequential(self.path, self.damage)
            self.types = self._fallback.types

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            (self.reader or self._fallback).close()
        except Exception:  # noqa: BLE001 - closing a broken bag must not hide the first error
            pass

    @property
    def counts(self) -> dict[str, int]:
        if self.reader is None:
            return dict(self._fallback.counts)
        return {c.topic: c.msgcount for c in self.reader.connections}

    def find_topics(self, image: str | None = None, gt: str | None = None,
                    domain: str | None = None, gt_boxes: str | None = None) -> Topics:
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
        boxes = gt_boxes or next((t for t, m in self.types.items() if m in types.DETECTIONS
                                  and GT_NAME.search(t) and not t.startswith(OUTPUT_PREFIX)), None)
        if boxes and self.types.get(boxes) not in types.DETECTIONS:
            raise BagError(f"{self.path}: {boxes} is {self.types.get(boxes)}, not a Detection2DArray")
        return Topics(image, self.types[image], gt, domain, self.types.get(domain) if domain else None,
                      boxes, self.types.get(boxes) if boxes else None)

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, bytes]]:
        """(topic, bag time ns, raw CDR) in time order; a break raises `BagError` naming it."""
        read, last = 0, "the start"
        if self.reader is None:
            stream = self._fallback.messages(set(topics))
        else:
            conns = [c for c in self.reader.connections if c.topic in topics]
            stream = ((c.topic, t, raw) for c, t, raw in self.reader.messages(connections=conns))
        try:
            for topic, t_ns, raw in stream:
                yield topic, t_ns, raw
                read += 1
                last = f"{topic} at t={t_ns / 1e9:.3f}"
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated/corrupt storage: name where it broke
            raise BagError(f"{self.path}: the bag breaks after {read} messages (last good: {last}): "
                           f"{one_line(exc)}", read) from None


def _storage_file(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix in (".mcap", ".db3") else None
    files = sorted(path.glob("*.mcap")) + sorted(path.glob("*.db3"))
    return files[0] if len(files) == 1 else None


def _sequential(path: Path, damage: str) -> Any:
    """A record-by-record reader of a bag whose index or end is damaged (truncated recording)."""
    storage = _storage_file(path)
    if storage is None:
        raise BagError(f"{path}: {damage}")
    reader = (_McapStream if storage.suffix == ".mcap" else _SqliteRows)(storage)
    if not reader.types:
        raise BagError(f"{path}: {damage}; no topic could be read")
    return reader


class _McapStream:
    """An mcap read front to back without its summary: channels first, then messages until
    the first bad record (CRCs checked where the writer stored them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.types: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        try:
            for record in self._records():
                if type(record).__name__ == "Channel":
                    self.types[record.topic] = self._schemas.get(record.schema_id, "")
                elif type(record).__name__ == "Message" and record.channel_id in self._channels:
                    topic = self._channels[record.channel_id]
                    self.counts[topic] = self.counts.get(topic, 0) + 1
        except Exception:  # noqa: BLE001 - the break is reported when messages are read
            pass

    def _records(self) -> Any:
        from mcap.records import Channel, Schema
        from mcap.stream_reader import StreamReader

        self._schemas: dict[int, str] = {}
        self._channels: dict[int, str] = {}
        with open(self.path, "rb") as handle:
            for record in StreamReader(handle, validate_crcs=True).records:
                if isinstance(record, Schema):
                    self._schemas[record.id] = record.name
                elif isinstance(record, Channel):
                    self._channels[record.id] = record.topic
                yield record

    def messages(self, topics: set[str]) -> Iterator[tuple[str, int, bytes]]:
        for record in self._records():
            if type(record).__name__ == "Message":
                topic = self._channels.get(record.channel_id)
                if topic in topics:
                    yield topic, int(record.log_time), record.data

    def close(self) -> None:
        pass


class _SqliteRows:
    """A rosbag2 sqlite3 file read row by row (insertion order) until the first bad page."""

    def __init__(self, path: Path) -> None:
        import sqlite3

        self.con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self.ids: dict[int, str] = {}
        self.types: dict[str, str] = {}
        try:
            for topic_id, name, msgtype in self.con.execute("SELECT id, name, type FROM topics"):
                self.ids[topic_id], self.types[name] = name, msgtype
        except sqlite3.DatabaseError:
            pass
        self.counts: dict[str, int] = {}

    def messages(self, topics: set[str]) -> Iterator[tuple[str, int, bytes]]:
        for topic_id, t_ns, data in self.con.execute("SELECT topic_id, timestamp, data FROM messages"):
            topic = self.ids.get(topic_id)
            if topic in topics:
                yield topic, int(t_ns), data

    def close(self) -> None:
        self.con.close()


def mono8(msg: Any) -> np.ndarray:
    """A mono8 Image's pixels (rows of `step` bytes) as HxW uint8."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise BagError(f"ground truth must be mono8 train ids, got {msg.encoding}")
    return image_codec.plane(msg)


def boxes_of(msg: Any, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A Detection2DArray as (boxes float32 [N, 4] xyxy, scores, class indices into `names`,
    detections whose class is not in `names` and are left out)."""
    boxes, scores, labels, unknown = [], [], [], 0
    index = {n: i for i, n in enumerate(names)}
    for det in msg.detections:
        if not det.results or det.results[0].hypothesis.class_id not in index:
            unknown += 1
            continue
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        scores.append(det.results[0].hypothesis.score)
        labels.append(index[det.results[0].hypothesis.class_id])
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
            np.asarray(labels, np.int64), unknown)


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
