"""Atomic bag writing: everything goes into a hidden folder beside the target, renamed into
place only when the bag is complete; an error or Ctrl-C removes it, so no half bag is left.

A target ending in `.mcap` or `.db3` becomes that one bare file (many tools write and read
those); anything else becomes a rosbag2 directory with metadata.yaml (`ros2 bag play DIR`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

from vltseg_ros.bag import types

BAG_VERSION = 8  # read by rosbag2 on Iron, Jazzy and newer


class BagWriteError(Exception):
    """A bag that cannot be written (the message says why, in one line)."""


def storage_for(target: Path, storage: str | None) -> str:
    """mcap or sqlite3: from a bare file's suffix, else the choice (default mcap)."""
    by_suffix = {".mcap": "mcap", ".db3": "sqlite3"}.get(target.suffix)
    if by_suffix and storage and storage != by_suffix:
        raise BagWriteError(f"{target.name}: a {target.suffix} file cannot hold {storage} storage")
    return by_suffix or storage or "mcap"


def _qos(reliable: bool, depth: int, latched: bool = False) -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


class BagWriter:
    """`with BagWriter(target) as bag: bag.write(topic, t_ns, msg)`; topics are added on first
    use from the message's type (or `write_raw` with an explicit type)."""

    def __init__(self, target: Path, storage: str | None = None, overwrite: bool = False) -> None:
        self.target = Path(target)
        self.storage = storage_for(self.target, storage)
        if self.target.exists() and not overwrite:
            raise BagWriteError(f"{self.target} exists already; remove it or choose another name")
        self.overwrite = overwrite
        self.tmp = self.target.parent / f".{self.target.name}.partial-{os.getpid()}"
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.custom: dict[str, str] = {}  # metadata.yaml custom_data, e.g. vltseg.partial
        self._writer: Any = None

    def __enter__(self) -> BagWriter:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.tmp / "bag", version=BAG_VERSION, storage_plugin=plugin)
        self._writer.open()
        return self

    def write(self, topic: str, t_ns: int, msg: Any, *, latched: bool = False) -> None:
        self.write_raw(topic, types.type_name(msg), t_ns, types.serialize(msg), latched=latched)

    def write_raw(self, topic: str, msgtype: str, t_ns: int, raw: bytes, *, latched: bool = False) -> None:
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._conns[topic] = self._writer.add_connection(
                topic, msgtype, typestore=types.typestore(),
                offered_qos_profiles=[_qos(True, 1 if latched else 10, latched)])
        self._writer.write(conn, int(t_ns), raw)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if kind is None:
                for key, value in self.custom.items():
                    self._writer.set_custom_data(key, value)
                self._writer.close()
                self._commit()
            else:
                self._writer.abort()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _commit(self) -> None:
        bag = self.tmp / "bag"
        source = bag
        if self.target.suffix in (".mcap", ".db3"):
            files = sorted(bag.glob(f"*{self.target.suffix}"))
            if len(files) != 1:
                raise BagWriteError(f"expected one {self.target.suffix} file, the writer made {len(files)}")
            source = files[0]
        if self.overwrite and self.target.exists():
            shutil.rmtree(self.target) if self.target.is_dir() else self.target.unlink()
        os.replace(source, self.target)
