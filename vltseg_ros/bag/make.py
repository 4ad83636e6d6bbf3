"""`vltseg-ros bag make`: frames from a source -> a ROS 2 bag a `ros2 bag play` replays.

Sources yield `Item`s (RGB image, optional train-id ground truth, optional segment name):
  synth     the embedded domain-shift drive (`sequence_frame`), n frames per condition
  images    an image folder, sorted by name (no ground truth)
  video     a video file's frames (no ground truth)
  dataset   a Cityscapes / ACDC split (ACDC conditions become segments); `synth` = the
            synthetic benchmark folder (its clear val split, then each ACDC-layout condition)
Written per frame, all with the same header (stamp = start + i / rate, frame_id):
  <topic>              sensor_msgs/Image (`encoding`), or CompressedImage on <topic>/compressed
  <base>/ground_truth  sensor_msgs/Image mono8 train ids, 255 = ignore
  <base>/domain        std_msgs/Header whose frame_id names the segment (condition)
  <base>/ground_truth/detections  vltseg_ros/Detection2DArray of the thing instances (class_id =
                       the Cityscapes class name, score 1), where the source has instances
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vltseg_ros.bag import types
from vltseg_ros.bag.write import BagWriter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class SourceError(ValueError):
    """A source that yields no frames or cannot be read (one line)."""


@dataclass
class Item:
    image: np.ndarray  # HxWx3 uint8 RGB
    gt: np.ndarray | None = None  # HxW uint8 train ids
    segment: str | None = None
    boxes: np.ndarray | None = None  # float32 [N, 4] xyxy px, with `box_labels` (train ids)
    box_labels: np.ndarray | None = None


@dataclass(frozen=True)
class MakeOptions:
    topic: str = "/camera/image_raw"
    encoding: str = "rgb8"
    compressed: str | None = None  # jpeg | png
    quality: int = 90
    ground_truth: bool = True
    rate: float = 10.0
    start: float | None = None  # seconds since the epoch; None: now
    frame_id: str = "camera"
    storage: str | None = None


def base_topic(topic: str) -> str:
    """/camera/image_raw -> /camera (where ground truth and domain go)."""
    parent = topic.rstrip("/").rsplit("/", 1)[0]
    return parent or ""


def synth_items(conditions: Sequence[str], per_condition: int, size: tuple[int, int],
                seed: int = 0) -> tuple[int, Iterator[Item]]:
    from vltseg_core.data.synth import DOMAINS, sequence_sample

    bad = [c for c in conditions if c not in DOMAINS]
    if bad or not conditions:
        raise SourceError(f"unknown synthetic condition(s) {bad or conditions}; choose from {', '.join(DOMAINS)}")

    def gen() -> Iterator[Item]:
        for cond in conditions:
            for i in range(per_condition):
                rgb, gt, boxes, labels = sequence_sample(cond, i, size, seed)
                yield Item(rgb, gt, cond, boxes, labels)
    return len(conditions) * per_condition, gen()


def image_items(folder: Path, limit: int | None = None) -> tuple[int, Iterator[Item]]:
    from vltseg_core.data.io import read_rgb

    if not folder.is_dir():
        raise SourceError(f"no such image folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise SourceError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return len(files), (Item(read_rgb(p)) for p in files)


def video_items(path: Path, limit: int | None = None) -> tuple[int, Iterator[Item]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not path.is_file() or not cap.isOpened():
        raise SourceError(f"cannot open video {path}")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
    total = min(total, limit) if limit else total

    def gen() -> Iterator[Item]:
        n = 0
        try:
            while limit is None or n < limit:
                ok, bgr = cap.read()
                if not ok:
                    break
                n += 1
                yield Item(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
        if n == 0:
            raise SourceError(f"{path}: no frames could be decoded")
    return total, gen()


def dataset_items(name: str, root: Path, split: str, conditions: Sequence[str] | None = None,
                  limit: int | None = None, ground_truth: bool = True) -> tuple[int, Iterator[Item]]:
    from vltseg_core.data.datasets import build_dataset
    from vltseg_core.data.io import read_rgb

    parts = []
    if name == "synth":  # the synthetic benchmark: Cityscapes-layout clear + ACDC-layout conditions
        parts.append((build_dataset("cityscapes", root, split), "clear"))
        conds = conditions or ("fog", "rain", "snow", "night")
        parts += [(build_dataset("acdc", root, split, conditions=[c]), c) for c in conds]
    elif name == "acdc":
        for c in conditions or ("fog", "night", "rain", "snow"):
            parts.append((build_dataset("acdc", root, split, conditions=[c]), c))
    else:
        parts.append((build_dataset(name, root, split), None))
    picks = [(ds, seg, i) for ds, seg in parts for i in range(len(ds) if limit is None else min(limit, len(ds)))]

    def gen() -> Iterator[Item]:
        for ds, seg, i in picks:
            if ground_truth:
                image, target, _ = ds.sample_arrays(i)
                has_boxes = ds.records[i].instance is not None  # no instance map: no box truth
                yield Item(image, np.asarray(target["sem_seg"], np.uint8), seg,
                           target["boxes"] if has_boxes else None, target["labels"] if has_boxes else None)
            else:
                yield Item(read_rgb(ds.records[i].image), None, seg)
    return len(picks), gen()


def box_msg(boxes: np.ndarray, labels: np.ndarray, header: object) -> object:
    """Ground-truth boxes as the node's detections message (score 1, Cityscapes names)."""
    from vltseg_core.data.labels import class_names
    from vltseg_core.runtime.predictor import Prediction
    from vltseg_ros import outputs

    truth = Prediction(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), scores=np.ones(len(labels), np.float32),
                       labels=np.asarray(labels, np.int64))
    return outputs.detections_msg(truth, tuple(class_names()), header, outputs.detection_types("vltseg_ros"))


def write_bag(target: Path, total: int, items: Iterator[Item], opts: MakeOptions,
              progress: bool | None = None) -> dict:
    """Write `items` into `target` atomically; returns counts, duration and size."""
    from vltseg_core.progress import image_progress
    from vltseg_ros.image_codec import encode_compressed, encode_image, to_image_msg

    start_ns = int((time.time() if opts.start is None else opts.start) * 1e9)
    period_ns = int(round(1e9 / opts.rate))
    base = base_topic(opts.topic)
    image_topic = f"{opts.topic.rstrip('/')}/compressed" if opts.compressed else opts.topic
    bar = image_progress("bag make", max(total, 1))
    t0 = time.perf_counter()
    n = 0
    try:
        with BagWriter(target, opts.storage) as bag:
            for n, item in enumerate(items, 1):
                t = start_ns + (n - 1) * period_ns
                header = types.header_at(t, opts.frame_id)
                if item.segment is not None:
                    bag.write(f"{base}/domain", t, types.header_at(t, item.segment))
                if opts.ground_truth and item.gt is not None:
                    bag.write(f"{base}/ground_truth", t, to_image_msg(item.gt, "mono8", header))
                if opts.ground_truth and item.boxes is not None:
                    bag.write(f"{base}/ground_truth/detections", t, box_msg(item.boxes, item.box_labels, header))
                msg = (encode_compressed(item.image, opts.compressed, header, opts.quality) if opts.compressed
                       else encode_image(item.image, opts.encoding, header))
                bag.write(image_topic, t, msg)
                bar.update(n)
            if n == 0:
                raise SourceError("the source yielded no frames")
    finally:
        bar.close()
    size = sum(p.stat().st_size for p in ([target] if target.is_file() else target.rglob("*")) if p.is_file())
    return {"bag": str(target), "frames": n, "topics": bag.counts, "storage": bag.storage,
            "seconds": time.perf_counter() - t0, "bytes": size, "image_topic": image_topic}
