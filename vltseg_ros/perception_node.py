"""The perception node: camera topics in -> class masks, confidence, overlay, boxes, label info
and diagnostics out. A lifecycle node (rclpy.lifecycle), driven from outside (launch file,
`vltseg-ros run`, `ros2 lifecycle set`) unless `autostart` is set.

A frame's way: message -> `image_codec.decode` (subscription callback) -> `frames` slot ->
worker thread -> `Predictor` (one call for every pending camera) -> `outputs` -> publish.
Outputs nobody subscribes to are not built (`lazy_outputs`).
No inference runs in a callback; no model math here. The frames of one call have their
outputs drawn and published side by side on a small pool (OpenCV and NumPy release the GIL),
so cameras pending together also share the 2048x1024 output work across cores.

    configure   read + validate parameters, load the model, create publishers
    activate    subscriptions, worker, diagnostics and QoS-watch timers, label_info
    deactivate  drop subscriptions, worker, timers
    cleanup     drop publishers and the model
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vltseg_core.runtime.domain_shift import ShiftBand, ShiftMonitor, band_from_metadata, mean_confidence
from vltseg_core.runtime.predictor import Prediction, Predictor
from vltseg_ros import image_codec, outputs, params, qos
from vltseg_ros.diagnostics import CameraStats, ModelStats, diagnostic_array
from vltseg_ros.frames import Frame, LatestFrames, Worker
from vltseg_ros.msg import LabelInfo

NODE_NAME = "vltseg"
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class PerceptionNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._param_errors = params.declare_all(self)
        self.config: params.NodeConfig | None = None
        self.predictor: Predictor | None = None
        self._pubs: dict[str, dict[str, Any]] = {}
        self._subs: dict[str, Any] = {}
        self._reliability: dict[str, ReliabilityPolicy] = {}
        self._timers: list[Any] = []
        self._worker: Worker | None = None
        self._out_pool: ThreadPoolExecutor | None = None
        self._frames: LatestFrames | None = None
        self._stats: dict[str, CameraStats] = {}
        self._monitors: dict[str, ShiftMonitor] = {}
        self._activated_at = 0.0
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ---- lifecycle ----

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            cfg = params.read_config(self, self._param_errors)
            self.predictor = Predictor(cfg.model, backend=cfg.backend, device=cfg.device,
                                       score_threshold=cfg.score_threshold, threads=cfg.num_threads)
            self._det_types = outputs.detection_types(cfg.detections_type)
            warm_ms = self._warm_up()
        except Exception as exc:  # noqa: BLE001 - every reason becomes one line, node stays up
            self.get_logger().error(f"configure failed: {_one_line(exc)}")
            self.predictor = None
            return FAILURE
        self.config = cfg
        meta = self.predictor.metadata
        self._palette = outputs.palette(meta)
        self._style = outputs.Style(tuple(meta.class_names), self._palette, cfg.overlay_alpha,
                                    self._det_types, tuple(meta.tasks))
        self._band = self._shift_band(cfg.domain_shift, meta.extra)
        self._create_publishers(cfg)
        self.get_logger().info(
            f"configured: {Path(cfg.model).name} ({meta.preset}, {type(self.predictor.backend).__name__}, "
            f"{self._batching()}), {len(cfg.cameras)} camera(s), decoding with {image_codec.bridge_name()}, "
            f"first inference (warm-up) {warm_ms:.0f} ms")
        return SUCCESS

    def _warm_up(self) -> float:
        """One inference on a black frame at the graph's size, in configure: the first camera
        frame then does not pay the backend's first-run cost (allocations, kernel selection;
        long for TensorRT and CUDA), and a model that loads but cannot run fails configure."""
        height, width = self.predictor.metadata.input_size
        start = time.perf_counter()
        self.predictor(np.zeros((height, width, 3), np.uint8))
        return (time.perf_counter() - start) * 1e3

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.config
        self._frames = LatestFrames([c.name for c in cfg.cameras])
        self._stats = {c.name: CameraStats(c.name, self.resolve_topic_name(c.topic)) for c in cfg.cameras}
        num_classes = self.predictor.metadata.num_classes
        self._monitors = {c.name: ShiftMonitor(self._band, cfg.domain_shift.window,
                                               low_threshold=cfg.domain_shift.low_threshold,
                                               num_classes=num_classes)
                          for c in cfg.cameras}
        self._model_stats = ModelStats(self._model_description())
        for cam in cfg.cameras:
            self._subscribe(cam)
        min_period = 1.0 / cfg.max_rate_hz if cfg.max_rate_hz > 0 else 0.0
        workers = min(len(cfg.cameras), os.cpu_count() or 1)
        if workers > 1:
            self._out_pool = ThreadPoolExecutor(workers, thread_name_prefix="vltseg-out")
        self._worker = Worker(self._frames, self._process, self._on_worker_error, min_period,
                              fresh=cfg.fresh_frames)
        self._worker.start()
        self._activated_at = time.monotonic()
        self._timers = [self.create_timer(cfg.diagnostics_period, self._publish_diagnostics),
                        self.create_timer(1.0, self._watch_inputs)]
        self._label_pub.publish(outputs.label_info_msg(
            self.predictor.metadata, Path(cfg.model).name, cfg.score_threshold,
            Header(stamp=self.get_clock().now().to_msg())))
        self.get_logger().info("active: " + ", ".join(f"{c.name} <- {self.resolve_topic_name(c.topic)}"
                                                      for c in cfg.cameras))
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_outputs()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.teardown()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.teardown()
        return SUCCESS

    def teardown(self) -> None:
        """Stop the worker and drop everything (also used when the context is already down)."""
        self._stop_inputs()
        self._drop_outputs()

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    # ---- set-up pieces ----

    def _shift_band(self, cfg: params.ShiftConfig, extra: dict[str, str]) -> ShiftBand | None:
        """The model's calibrated band with the parameter overrides applied (None: off)."""
        if not cfg.enabled:
            return None
        band = band_from_metadata(extra)
        overrides = {k: v for k, v in (("min_confidence", cfg.min_confidence),
                                       ("max_low_fraction", cfg.max_low_fraction),
                                       ("low_threshold", cfg.low_threshold)) if v is not None}
        if not overrides:
            return band
        return dataclasses.replace(band or ShiftBand(min_confidence=0.0, max_low_fraction=1.0), **overrides)

    def _create_publishers(self, cfg: params.NodeConfig) -> None:
        out_qos = qos.output_qos()
        kinds = {"segmentation": Image, "color": Image, "confidence": Image,
                 "detections": self._det_types[0], "detections_image": Image}
        topics = {"segmentation": "segmentation", "color": "segmentation_color", "confidence": "confidence",
                  "detections": "detections", "detections_image": "detections_image"}
        self._pubs = {
            cam.name: {kind: self.create_publisher(kinds[kind], f"~/{cam.namespace}/{topics[kind]}", out_qos)
                       for kind in params.OUTPUTS if kind in cfg.publish}
            for cam in cfg.cameras
        }
        self._label_pub = self.create_publisher(LabelInfo, "~/label_info", qos.latched_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _subscribe(self, cam: params.CameraConfig) -> None:
        reliability = qos.choose_reliability(self.config.reliability, qos.offered_reliability(self, cam.topic))
        self._reliability[cam.name] = reliability
        self._stats[cam.name].reliability = reliability.name.lower()
        self._subs[cam.name] = self.create_subscription(
            CompressedImage if cam.compressed else Image, cam.topic,
            lambda msg, cam=cam: self._on_image(cam.name, cam.topic, msg),
            qos.input_qos(reliability, self.config.depth))

    def _stop_inputs(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self._out_pool is not None:
            self._out_pool.shutdown(wait=True)
            self._out_pool = None
        for sub in self._subs.values():
            self.destroy_subscription(sub)
        for timer in self._timers:
            self.destroy_timer(timer)
        self._subs, self._timers = {}, []

    def _drop_outputs(self) -> None:
        for pubs in self._pubs.values():
            for pub in pubs.values():
                self.destroy_publisher(pub)
        for name in ("_label_pub", "_diag_pub"):
            if getattr(self, name, None) is not None:
                self.destroy_publisher(getattr(self, name))
                setattr(self, name, None)
        self._pubs, self.predictor, self.config = {}, None, None

    # ---- the frame's way ----

    def _on_image(self, camera: str, topic: str, msg: Any) -> None:
        stats = self._stats[camera]
        try:
            image = image_codec.decode(msg)
        except Exception as exc:  # noqa: BLE001 - FrameError and anything a decoder raises
            stats.bad(_one_line(exc))
            self.get_logger().warning(f"{topic}: bad frame ignored: {_one_line(exc)}",
                                      throttle_duration_sec=5.0)
            return
        stats.received()
        if self._frames is not None and self._frames.put(Frame(camera, image, msg.header)) is not None:
            stats.drop()

    def _process(self, frames: list[Frame]) -> None:
        """One Predictor call per chunk of at most max_batch pending frames (0: all)."""
        size = self.config.max_batch or len(frames)
        for start in range(0, len(frames), size):
            self._predict(frames[start:start + size])

    def _predict(self, frames: list[Frame]) -> None:
        predictor = self.predictor
        calls = predictor.calls
        start = time.perf_counter()
        preds = predictor.predict([f.image for f in frames])
        model_ms = (time.perf_counter() - start) * 1e3
        self._model_stats.called(len(frames), predictor.calls - calls)
        pool = self._out_pool
        if pool is None or len(frames) == 1:
            for frame, pred in zip(frames, preds):
                self._publish(frame, pred, model_ms)
            return
        # one camera per task (its publishers, stats and monitor are its own); map re-raises
        list(pool.map(lambda pair: self._publish(*pair, model_ms), zip(frames, preds)))

    def _publish(self, frame: Frame, pred: Prediction, model_ms: float) -> None:
        cfg, pubs = self.config, self._pubs[frame.camera]
        drawn = lazy_outputs(pubs)
        for kind, msg in outputs.frame_messages(frame.image, pred, frame.header, drawn, self._style):
            pubs[kind].publish(msg)
        shift, mean_conf = None, None
        if pred.confidence is not None and pred.mask is not None and cfg.domain_shift.enabled:
            monitor = self._monitors[frame.camera]
            shift, mean_conf = monitor.update(pred.confidence, pred.mask), monitor.frame_confidence
        elif pred.confidence is not None:
            mean_conf = mean_confidence(pred.confidence)
        self._stats[frame.camera].published(model_ms, self._e2e_ms(frame), mean_conf, shift, drawn)

    def _e2e_ms(self, frame: Frame) -> float:
        """Header stamp -> now on the node's clock; receive -> now when the stamp is unset."""
        stamp = frame.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return (time.monotonic() - frame.received) * 1e3
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6

    def _on_worker_error(self, exc: BaseException) -> None:
        self._model_stats.failed(_one_line(exc))
        self.get_logger().error(f"inference failed: {_one_line(exc)}", throttle_duration_sec=5.0)

    # ---- timers ----

    def _publish_diagnostics(self) -> None:
        name = self.get_fully_qualified_name()
        statuses = [s.status(name, self._band) for s in self._stats.values()]
        statuses.append(self._model_stats.status(name))
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), statuses))
        for status in statuses[:-1]:
            if status.level == status.WARN and status.message.startswith("domain shift"):
                self.get_logger().warning(status.message, throttle_duration_sec=10.0)

    def _watch_inputs(self) -> None:
        """Re-match reliability when publishers change (auto); warn when frames do not come."""
        for cam in self.config.cameras:
            offered = qos.offered_reliability(self, cam.topic)
            wanted = qos.choose_reliability(self.config.reliability, offered)
            if offered and wanted != self._reliability[cam.name]:
                self.get_logger().info(f"{cam.topic}: publisher offers {wanted.name.lower()}; resubscribing")
                self.destroy_subscription(self._subs[cam.name])
                self._subscribe(cam)
            self._check_silence(cam, offered)

    def _check_silence(self, cam: params.CameraConfig, offered: list[ReliabilityPolicy]) -> None:
        stats = self._stats[cam.name]
        since = stats.last_frame if stats.last_frame is not None else self._activated_at
        silent = time.monotonic() - since
        if offered and silent >= self.config.no_frame_timeout:
            if not stats.no_frame_warning:
                stats.no_frame_warning = qos.no_frame_diagnosis(
                    self.resolve_topic_name(cam.topic), self._reliability[cam.name], offered, silent)
                self.get_logger().warning(stats.no_frame_warning)
        elif stats.no_frame_warning and silent < self.config.no_frame_timeout:
            stats.no_frame_warning = ""
            self.get_logger().info(f"{cam.topic}: frames arriving again")

    # ---- descriptions ----

    def _batching(self) -> str:
        backend = self.predictor.backend
        if backend.fixed_batch == 1 or backend.max_batch == 1:
            return "per-frame calls: the graph's batch is fixed at 1"
        if self.config is not None and self.config.max_batch == 1:
            return "per-frame calls: max_batch is 1"
        limit = min(backend.max_batch, self.config.max_batch or backend.max_batch) if self.config else backend.max_batch
        return f"batched: pending cameras in one call (up to {limit})"

    def _model_description(self) -> dict[str, str]:
        meta = self.predictor.metadata
        return {"model": str(self.config.model), "preset": meta.preset,
                "backend": type(self.predictor.backend).__name__, "precision": meta.precision,
                "batching": self._batching(), "decoder": image_codec.bridge_name(),
                "domain_shift_band": self._band.to_json() if self._band else "none"}


def lazy_outputs(pubs: dict[str, Any]) -> list[str]:
    """The output kinds someone subscribes to, as image_transport's lazy publishers: a stack
    that reads only the masks does not pay for 2048x1024 overlays and confidence images
    (a bag recorder or RViz subscribing is what turns an output on)."""
    return [kind for kind, pub in pubs.items() if pub.get_subscription_count() > 0]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def main(args: list[str] | None = None) -> None:
    """`ros2 run vltseg_ros perception_node [--ros-args ...]`: the node, spun until SIGINT/SIGTERM.

    The signals only set a flag: the worker is stopped and the node torn down while the ROS
    context is still valid, then the context is shut down (no publish into a dead context)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = PerceptionNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.get_logger().info("shutting down")
        node.teardown()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
