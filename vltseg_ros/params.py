"""The perception node's parameters: declared with descriptors and ranges, read into one frozen
`NodeConfig`. Every parameter is listed, with its default and meaning, in
`config/perception.yaml` (the file a test checks against `PARAMETERS`).

A value that does not fit (wrong type, out of range, unknown choice) must not kill the node:
declaration errors are kept and reported by `read_config`, so `configure` fails with a
one-line reason and the node stays alive in `unconfigured`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
RELIABILITY = ("auto", "best_effort", "reliable")
DETECTION_TYPES = ("auto", "vision_msgs", "vltseg_ros")
OUTPUTS = ("segmentation", "color", "confidence", "detections", "detections_image")


@dataclass(frozen=True)
class Spec:
    """One parameter: default, description, and a range (numbers) or choices (strings)."""

    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


PARAMETERS: dict[str, Spec] = {
    "model": Spec("", "model file: checkpoint (.pt), ONNX export (.onnx) or TensorRT engine (.engine)"),
    "backend": Spec("auto", "inference backend; auto picks it from the model file suffix", choices=BACKENDS),
    "device": Spec("cpu", "cpu, or cuda[:N] for torch / onnxruntime-gpu / tensorrt"),
    "num_threads": Spec(0, "intra-op threads of CPU backends (0: the backend's default)", 0, 256),
    "cameras": Spec(["camera"], "camera names; each has camera.<name>.{topic,compressed,namespace}"),
    "qos.reliability": Spec("auto", "input reliability; auto matches what the camera offers", choices=RELIABILITY),
    "qos.depth": Spec(1, "input queue depth (1: latest frame only)", 1, 10000),
    "score_threshold": Spec(0.3, "detections below this score are not published", 0.0, 1.0),
    "overlay_alpha": Spec(0.5, "weight of the class colours in segmentation_color", 0.0, 1.0),
    "max_batch": Spec(0, "at most this many camera frames per model call (0: all pending, as the "
                      "backend allows; 1: one call per frame)", 0, 64),
    "fresh_frames": Spec(True, "when the pending frame is older than half its camera's period, wait "
                         "for the next one (fresher results, slightly fewer of them)"),
    "max_rate_hz": Spec(0.0, "at most this many model calls per second (0: as frames come)", 0.0, 1000.0),
    "detections_type": Spec("auto", "Detection2DArray type; auto: vision_msgs when importable",
                            choices=DETECTION_TYPES),
    "diagnostics_period": Spec(1.0, "seconds between /diagnostics messages", 0.05, 60.0),
    "no_frame_timeout": Spec(5.0, "warn when a camera with a publisher sends nothing this long (s)",
                             0.5, 3600.0),
    "domain_shift.enabled": Spec(True, "monitor mean confidence against the calibrated band"),
    "domain_shift.window": Spec(30, "frames in the running mean", 1, 100000),
    "domain_shift.min_confidence": Spec(-1.0, "band: lowest in-domain mean confidence (-1: model's)",
                                        -1.0, 1.0),
    "domain_shift.max_low_fraction": Spec(-1.0, "band: highest in-domain low-confidence fraction "
                                          "(-1: model's)", -1.0, 1.0),
    "domain_shift.low_threshold": Spec(-1.0, "pixels below this confidence count as low (-1: model's, "
                                       "else 0.5)", -1.0, 1.0),
    "autostart": Spec(False, "configure and activate at start (the runner and launch file set it)"),
    **{f"publish.{name}": Spec(True, f"publish ~/<camera>/{name if name != 'color' else 'segmentation_color'}")
       for name in OUTPUTS},
}

CAMERA_PARAMETERS: dict[str, Spec] = {
    "topic": Spec("", "input topic (default <name>/image_raw); with compressed, <topic>/compressed is read"),
    "compressed": Spec(False, "subscribe to sensor_msgs/CompressedImage on <topic>/compressed"),
    "namespace": Spec("", "outputs go to ~/<namespace>/... (default: the camera name)"),
}


@dataclass(frozen=True)
class CameraConfig:
    name: str
    topic: str  # the subscribed topic (with /compressed when compressed)
    compressed: bool
    namespace: str


@dataclass(frozen=True)
class ShiftConfig:
    enabled: bool
    window: int
    min_confidence: float | None  # None: the model's calibrated value
    max_low_fraction: float | None
    low_threshold: float | None


@dataclass(frozen=True)
class NodeConfig:
    model: str
    backend: str | None  # None: by suffix
    device: str
    num_threads: int
    cameras: tuple[CameraConfig, ...]
    reliability: str
    depth: int
    score_threshold: float
    overlay_alpha: float
    max_batch: int
    fresh_frames: bool
    max_rate_hz: float
    detections_type: str
    diagnostics_period: float
    no_frame_timeout: float
    publish: frozenset[str]
    domain_shift: ShiftConfig


def _descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=name, description=spec.description)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.low is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
    elif spec.low is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=spec.low, to_value=spec.high, step=0.0)]
    if isinstance(spec.default, list):
        desc.type = ParameterType.PARAMETER_STRING_ARRAY
    return desc


def declare(node: LifecycleNode, name: str, spec: Spec, errors: dict[str, str]) -> None:
    """Declare one parameter; an invalid override is recorded in `errors` and the default kept."""
    if node.has_parameter(name):
        return
    try:
        node.declare_parameter(name, spec.default, _descriptor(name, spec))
    except (ParameterException, TypeError, ValueError) as exc:
        errors[name] = f"parameter {name!r}: {str(exc).splitlines()[0]}"
        node.declare_parameter(name, spec.default, _descriptor(name, spec), ignore_override=True)


def declare_all(node: LifecycleNode) -> dict[str, str]:
    """Declare the node-wide parameters; returns {name: error} for invalid overrides. A later
    valid `set_parameters` (ranges are enforced by the descriptors) clears that entry."""
    errors: dict[str, str] = {}
    for name, spec in PARAMETERS.items():
        declare(node, name, spec, errors)
    node.add_post_set_parameters_callback(
        lambda changed: [errors.pop(p.name, None) for p in changed])
    return errors


class ConfigError(ValueError):
    """A parameter value the node cannot run with (one line)."""


def read_config(node: LifecycleNode, errors: dict[str, str]) -> NodeConfig:
    """Declare the per-camera parameters, validate everything, return the config."""
    value = lambda name: node.get_parameter(name).value  # noqa: E731
    names = [str(n) for n in value("cameras") or []]
    for cam in names:
        for key, spec in CAMERA_PARAMETERS.items():
            declare(node, f"camera.{cam}.{key}", spec, errors)
    if errors:
        raise ConfigError(next(iter(errors.values())))
    for name, spec in PARAMETERS.items():
        if spec.choices and value(name) not in spec.choices:
            raise ConfigError(f"parameter {name!r} is {value(name)!r}; expected one of {', '.join(spec.choices)}")
    if not value("model"):
        raise ConfigError("parameter 'model' is empty: give a .pt, .onnx or .engine file")
    return NodeConfig(
        model=str(value("model")),
        backend=None if value("backend") == "auto" else value("backend"),
        device=str(value("device")),
        num_threads=int(value("num_threads")),
        cameras=_cameras(names, value),
        reliability=value("qos.reliability"),
        depth=int(value("qos.depth")),
        score_threshold=float(value("score_threshold")),
        overlay_alpha=float(value("overlay_alpha")),
        max_batch=int(value("max_batch")),
        fresh_frames=bool(value("fresh_frames")),
        max_rate_hz=float(value("max_rate_hz")),
        detections_type=value("detections_type"),
        diagnostics_period=float(value("diagnostics_period")),
        no_frame_timeout=float(value("no_frame_timeout")),
        publish=frozenset(o for o in OUTPUTS if value(f"publish.{o}")),
        domain_shift=ShiftConfig(
            enabled=bool(value("domain_shift.enabled")),
            window=int(value("domain_shift.window")),
            min_confidence=_optional(value("domain_shift.min_confidence")),
            max_low_fraction=_optional(value("domain_shift.max_low_fraction")),
            low_threshold=_optional(value("domain_shift.low_threshold")),
        ),
    )


def _optional(v: float) -> float | None:
    return None if v < 0 else float(v)


def _cameras(names: list[str], value: Any) -> tuple[CameraConfig, ...]:
    if not names:
        raise ConfigError("parameter 'cameras' is empty: name at least one camera")
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter 'cameras' names a camera twice: {names}")
    cams = []
    for name in names:
        if not name.replace("_", "").isalnum() or name[0].isdigit():
            raise ConfigError(f"camera name {name!r} must be a ROS name token (letters, digits, _)")
        topic = str(value(f"camera.{name}.topic")) or f"{name}/image_raw"
        compressed = bool(value(f"camera.{name}.compressed"))
        namespace = str(value(f"camera.{name}.namespace")) or name
        cams.append(CameraConfig(name, f"{topic.rstrip('/')}/compressed" if compressed else topic,
                                 compressed, namespace))
    return tuple(cams)
