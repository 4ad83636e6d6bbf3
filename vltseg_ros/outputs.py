"""`Prediction` -> the node's output messages (mask, colour overlay, confidence, detections,
detections image, label info). Each image output copies the input header and has the input's
resolution. Drawing only: no model math here.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from std_msgs.msg import ColorRGBA

from vltseg_core.evaluation.overlay import overlay
from vltseg_core.export.metadata import ModelMetadata
from vltseg_core.runtime.predictor import Prediction
from vltseg_ros.image_codec import to_image_msg

IGNORE_ID = 255


def palette(metadata: ModelMetadata) -> np.ndarray:
    """256x3 uint8 colours indexed by class id (ids without a class: black)."""
    pal = np.zeros((256, 3), np.uint8)
    pal[: metadata.num_classes] = np.asarray(metadata.class_colors, np.uint8)
    return pal


def detection_types(choice: str) -> tuple[Any, Any, Any, str]:
    """(Detection2DArray, Detection2D, ObjectHypothesisWithPose, package) for `choice`
    (auto | vision_msgs | vltseg_ros); the mirror has vision_msgs' fields, so both fill alike."""
    packages = {"auto": ("vision_msgs", "vltseg_ros"), "vision_msgs": ("vision_msgs",),
                "vltseg_ros": ("vltseg_ros",)}[choice]
    for package in packages:
        try:
            mod = importlib.import_module(f"{package}.msg")
            return mod.Detection2DArray, mod.Detection2D, mod.ObjectHypothesisWithPose, package
        except ImportError:
            continue
    raise ImportError("vision_msgs is not importable here (detections_type: vision_msgs); "
                      "install ros-<distro>-vision-msgs or use detections_type: auto")


@dataclass(frozen=True)
class Style:
    """What turns a `Prediction` into messages besides the frame: fixed when the model loads."""

    names: tuple[str, ...]
    palette: np.ndarray
    alpha: float
    det_types: tuple
    tasks: tuple[str, ...]


def frame_messages(image: np.ndarray, pred: Prediction, header: Any, kinds: Collection[str],
                   style: Style) -> Iterator[tuple[str, Any]]:
    """One frame's (kind, message) pairs (kinds of `params.OUTPUTS`) in the node's publish order,
    mask first, each built only when the one before has been taken: the node publishes the mask
    before it draws the overlays, and `vltseg-ros bag eval` writes the same messages, so a bag's
    outputs are the node's outputs."""
    if pred.mask is not None:
        if "segmentation" in kinds:
            yield "segmentation", mask_msg(pred, header)
        if "color" in kinds:
            yield "color", color_msg(image, pred, style.palette, style.alpha, header)
        if "confidence" in kinds:
            yield "confidence", confidence_msg(pred, header)
    if "det" in style.tasks:
        if "detections" in kinds:
            yield "detections", detections_msg(pred, style.names, header, style.det_types)
        if "detections_image" in kinds:
            yield "detections_image", detections_image_msg(image, pred, style.names, style.palette, header)


def mask_msg(pred: Prediction, header: Any) -> Any:
    """mono8 class ids, 255 = ignore."""
    return to_image_msg(pred.mask, "mono8", header)


def color_msg(image: np.ndarray, pred: Prediction, pal: np.ndarray, alpha: float, header: Any) -> Any:
    """rgb8: the class colours blended over the camera image."""
    return to_image_msg(overlay(image, pred.mask, alpha, pal), "rgb8", header)


def confidence_msg(pred: Prediction, header: Any) -> Any:
    """32FC1 per-pixel confidence in [0, 1] (`Predictor` clips it)."""
    return to_image_msg(np.asarray(pred.confidence, np.float32), "32FC1", header)


def detections_msg(pred: Prediction, names: tuple[str, ...], header: Any, types: tuple) -> Any:
    """Detection2DArray: one Detection2D per box, class_id = the class name, centre/size in px."""
    array_type, det_type, hyp_type = types[:3]
    msg = array_type(header=header)
    for i, (box, score, label) in enumerate(zip(pred.boxes, pred.scores, pred.labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        det = det_type(header=header, id=str(i))
        det.bbox.center.position.x, det.bbox.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
        det.bbox.size_x, det.bbox.size_y = x1 - x0, y1 - y0
        hyp = hyp_type()
        hyp.hypothesis.class_id = names[int(label)] if 0 <= int(label) < len(names) else str(int(label))
        hyp.hypothesis.score = float(score)
        det.results.append(hyp)
        msg.detections.append(det)
    return msg


def detections_image_msg(image: np.ndarray, pred: Prediction, names: tuple[str, ...],
                         pal: np.ndarray, header: Any) -> Any:
    """rgb8: the camera image with each box and "name score" drawn in its class colour."""
    canvas = np.ascontiguousarray(image).copy()
    thick = max(1, round(min(canvas.shape[:2]) / 300))
    for box, score, label in zip(pred.boxes, pred.scores, pred.labels):
        colour = tuple(int(c) for c in pal[int(label) % 256])
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thick)
        name = names[int(label)] if 0 <= int(label) < len(names) else str(int(label))
        cv2.putText(canvas, f"{name} {float(score):.2f}", (x0, max(12, y0 - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, colour, thick, cv2.LINE_AA)
    return to_image_msg(canvas, "rgb8", header)


def label_info_msg(metadata: ModelMetadata, model_name: str, threshold: float, header: Any) -> Any:
    """LabelInfo: class id -> name, colours (0..1), ignore id, model name and input size."""
    from vltseg_ros.msg import LabelInfo, VisionClass

    msg = LabelInfo(header=header, threshold=float(threshold), ignore_id=IGNORE_ID,
                    model_name=model_name, input_height=int(metadata.input_size[0]),
                    input_width=int(metadata.input_size[1]))
    for i, (name, colour) in enumerate(zip(metadata.class_names, metadata.class_colors)):
        msg.class_map.append(VisionClass(class_id=i, class_name=str(name)))
        r, g, b = (c / 255.0 for c in colour)
        msg.class_colors.append(ColorRGBA(r=r, g=g, b=b, a=1.0))
    return msg
