"""Live replay: the bag's camera frames played into the running perception node over DDS at
real time x rate (with /clock when the node runs on sim time), the node's outputs recorded.

The node runs as `vltseg-ros run` in its own process (its own session; SIGINT, then the whole
group is killed, so nothing outlives the replay). Latencies are measured here, on one clock:
end-to-end = mask received - frame published; result age = at each frame published, how old
the newest result's frame is. Frames without a result were dropped by the node's latest-frame
policy (it keeps only the newest pending frame). Ground truth and conditions are read from
the bag directly, not over DDS, so scoring does not depend on them arriving."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from vltseg_ros import image_codec
from vltseg_ros.bag import types
from vltseg_ros.bag.offline import NODE, EvalOptions, copy_side, make_scorer, output_topics
from vltseg_ros.bag.play import Player
from vltseg_ros.bag.read import Bag, BagError, Topics, broken_at
from vltseg_ros.bag.score import Scorer, percentiles
from vltseg_ros.bag.write import BagWriter
from vltseg_ros.processes import stop_group


def node_command(opts: EvalOptions, topics: Topics) -> list[str]:
    """`vltseg-ros run` on the bag's camera topic (its base for a CompressedImage topic)."""
    compressed = topics.image_type == types.COMPRESSED
    topic = topics.image.removesuffix("/compressed") if compressed else topics.image
    cmd = [str(Path(sys.executable).parent / "vltseg-ros"), "run", "--model", str(opts.model),
           "--camera-topic", topic, "--backend", opts.backend] + (["--compressed"] if compressed else [])
    cmd += ["--ros-args", "-p", f"use_sim_time:={'true' if opts.clock else 'false'}"]
    if opts.threads:
        cmd += ["-p", f"num_threads:={opts.threads}"]
    return cmd


class NodeProcess:
    """The perception node as a child process; `stop()` always leaves nothing running."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        self._handle = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._handle, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=dict(os.environ))

    def failed(self) -> str | None:
        if self.proc.poll() is None:
            return None
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        return f"the node exited ({self.proc.returncode}): {lines[-1] if lines else 'no output'}"

    def stop(self) -> None:
        stop_group(self.proc, 15)
        self._handle.close()


class Recorder:
    """Subscribes to the node's outputs; writes them into the output bag and feeds the scorer.
    Runs in the executor thread; `lock` guards the bag and the scorer against the player."""

    def __init__(self, node: Any, bag_out: BagWriter, camera: str, keep: frozenset[str] | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from vltseg_ros import outputs
        from vltseg_ros.msg import LabelInfo

        self.bag_out, self.lock = bag_out, threading.Lock()
        self.keep = keep  # output kinds written to the bag (None: all)
        self.closed = False
        self.scorer: Scorer | None = None
        self.label_info: Any = None
        self.published: dict[int, tuple[int, int]] = {}  # stamp -> (bag time, monotonic ns published)
        self.results: dict[int, int] = {}  # stamp -> monotonic ns its mask arrived
        self._masks: dict[int, tuple[np.ndarray, int]] = {}
        self._sizes: dict[int, tuple[int, int]] = {}
        self.last_diagnostics: dict[str, str] = {}
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        names = output_topics(camera)
        det_type = outputs.detection_types("auto")[0]
        for kind, topic in names.items():
            msg_type = det_type if kind == "detections" else Image
            node.create_subscription(msg_type, topic, lambda m, k=kind, t=topic: self._on_output(k, t, m), reliable)
        node.create_subscription(LabelInfo, f"{NODE}/label_info", self._on_label_info, latched)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 20)

    def _bag_time(self, stamp: int, now: int) -> int:
        t_bag, t_pub = self.published.get(stamp, (stamp, now))
        return t_bag + (now - t_pub)

    def _on_label_info(self, msg: Any) -> None:
        with self.lock:
            self.label_info = msg

    def _on_diagnostics(self, msg: Any) -> None:
        from vltseg_ros.diagnostics import values_of

        now = time.monotonic_ns()
        with self.lock:
            if self.closed:
                return
            for status in msg.status:
                if status.name.endswith(": camera"):
                    self.last_diagnostics = values_of(status)
            if self.published:
                last = max(self.published, key=lambda s: self.published[s][1])
                self.bag_out.write("/diagnostics", self._bag_time(last, now), msg)

    def _on_output(self, kind: str, topic: str, msg: Any) -> None:
        from vltseg_ros.bag.read import mono8

        now = time.monotonic_ns()
        stamp = types.stamp_ns(msg.header)
        with self.lock:
            if self.closed:
                return
            if self.keep is None or kind in self.keep:
                self.bag_out.write(topic, self._bag_time(stamp, now), msg)
            if kind == "segmentation":
                self.results.setdefault(stamp, now)
                self._sizes[stamp] = (int(msg.height), int(msg.width))
                self._masks[stamp] = (mono8(msg).copy(), now)
            elif kind == "detections" and self.scorer is not None:
                from vltseg_ros.bag.read import boxes_of

                boxes, scores, labels, _ = boxes_of(msg, self.scorer.names)
                size = self._sizes.get(stamp, (0, 0))
                self.scorer.pred_boxes(stamp, boxes, scores, labels, size)
            elif kind == "confidence" and stamp in self._masks:
                self._score(stamp, image_codec.plane(msg, np.float32))

    def _score(self, stamp: int, confidence: np.ndarray | None) -> None:
        mask, received = self._masks.pop(stamp)
        sent = self.published.get(stamp)
        e2e = (received - sent[1]) / 1e6 if sent else None
        if self.scorer is not None:
            self.scorer.prediction(stamp, mask, confidence, e2e_ms=e2e)

    def flush(self) -> None:
        """Masks whose confidence never came are scored without it."""
        with self.lock:
            for stamp in list(self._masks):
                self._score(stamp, None)


def result_ages(published: dict[int, tuple[int, int]], results: dict[int, int]) -> list[float]:
    """At each frame published: ms since the newest frame with a result by then was published."""
    events = sorted((recv, published[s][1]) for s, recv in results.items() if s in published)
    ages, j, newest = [], 0, None
    for t_pub in sorted(p for _, p in published.values()):
        while j < len(events) and events[j][0] <= t_pub:
            newest = events[j][1] if newest is None else max(newest, events[j][1])
            j += 1
        if newest is not None:
            ages.append((t_pub - newest) / 1e6)
    return ages


def _wait(done: Any, timeout: float, node_proc: NodeProcess, what: str) -> None:
    end = time.monotonic() + timeout
    while not done():
        if (why := node_proc.failed()) is not None:
            raise BagError(why)
        if time.monotonic() > end:
            raise BagError(f"timed out after {timeout:.0f} s waiting for {what} (node log: {node_proc.log})")
        time.sleep(0.05)


def run_live(bag: Bag, topics: Topics, opts: EvalOptions, out_bag: Path, out_dir: Path) -> tuple[Scorer, dict[str, Any]]:
    """Play the bag into a fresh node and record it; returns the scorer and run facts."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from vltseg_ros import qos

    extra = _model_extra(opts.model)  # the domain-shift band, before the node competes for the CPU
    qos.apply_large_frame_profile()  # before rclpy.init: frames >= 1024x512 need it
    context = Context()
    rclpy.init(context=context)
    node = Node("vltseg_bag_eval", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    facts: dict[str, Any] = {"mode": "live", "partial": None}
    node_proc = None
    t0 = time.perf_counter()
    try:
        with BagWriter(out_bag, "mcap", overwrite=True) as bag_out:
            recorder = Recorder(node, bag_out, opts.camera, opts.outputs)
            player = Player(node, bag, [topics.image], opts.rate, opts.clock, clock_topic=topics.image)
            spinner.start()
            out_dir.mkdir(parents=True, exist_ok=True)
            node_proc = NodeProcess(node_command(opts, topics), out_dir / "live_node.log")
            _wait(lambda: recorder.label_info is not None, opts.start_timeout, node_proc, "the node to activate")
            _wait(lambda: player.pubs[topics.image].get_subscription_count() > 0, 30, node_proc,
                  f"the node to subscribe to {topics.image}")
            names = tuple(c.class_name for c in recorder.label_info.class_map)
            with recorder.lock:
                recorder.scorer = make_scorer(names, extra, opts, topics.gt is not None)
            side = [t for t in (topics.gt, topics.domain, topics.gt_boxes) if t]
            facts["setup_seconds"] = time.perf_counter() - t0
            _play(bag, topics, player, recorder, bag_out, side, facts, node_proc)
            recorder.flush()
            if facts["partial"]:
                bag_out.custom["vltseg.partial"] = facts["partial"]
            facts["node_diagnostics"] = recorder.last_diagnostics
            facts["live"] = {**_live_facts(recorder, opts.rate), "max_playback_lag_s": round(player.max_lag_s, 3)}
            with recorder.lock:
                recorder.closed = True  # late callbacks must not write into the closing bag
    finally:
        if node_proc is not None:
            node_proc.stop()
        stop.set()
        if spinner.is_alive():
            spinner.join(5)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    facts["seconds"] = time.perf_counter() - t0
    facts["model"] = {"path": str(opts.model), "preset": "", "classes": len(recorder.scorer.names)}
    return recorder.scorer, facts


def _model_extra(model: Path) -> dict[str, str]:
    """The model's metadata extras (the domain-shift band); loading it here first also turns a
    model the node could not load into one line now rather than a start time-out."""
    from vltseg_ros.bag.offline import load_predictor

    return dict(load_predictor(EvalOptions(model=model)).metadata.extra)


def _play(bag: Bag, topics: Topics, player: Player, recorder: Recorder, bag_out: BagWriter,
          side: list[str], facts: dict[str, Any], node_proc: NodeProcess) -> None:
    """Frames to the node (paced), side topics straight to the scorer; then wait for the tail."""
    from vltseg_core.progress import image_progress

    bar = image_progress("bag eval live", max(bag.counts.get(topics.image) or 0, 1))

    def on_publish(topic: str, t_ns: int, raw: bytes, sent_ns: int) -> None:
        stamp = types.cdr_stamp_ns(raw)
        with recorder.lock:
            if not recorder.published:  # the label info opens the output bag at the first frame's time
                bag_out.write(f"{NODE}/label_info", t_ns, recorder.label_info, latched=True)
            recorder.published[stamp] = (t_ns, sent_ns)
            bag_out.write_raw(topic, topics.image_type, t_ns, raw)
            bar.update(len(recorder.published), results=str(len(recorder.results)))

    def first(t0_ns: int) -> None:
        if player.clock:  # the node's sim clock starts before its first frame
            player.publish_clock(t0_ns)
            time.sleep(0.2)

    side_reader = threading.Thread(target=_read_side, args=(bag, topics, side, recorder, bag_out, facts), daemon=True)
    side_reader.start()
    try:
        player.play(on_publish, first)
    except BagError as exc:
        facts["partial"] = str(exc)
    finally:
        bar.close()
    side_reader.join()
    quiet_since, last_count = time.monotonic(), -1
    while time.monotonic() - quiet_since < 3.0 and len(recorder.results) < len(recorder.published):
        if len(recorder.results) != last_count:
            last_count, quiet_since = len(recorder.results), time.monotonic()
        if node_proc.failed():
            break
        time.sleep(0.1)
    time.sleep(0.3)  # the confidence of the last mask


def _read_side(bag: Bag, topics: Topics, side: list[str], recorder: Recorder, bag_out: BagWriter,
               facts: dict[str, Any]) -> None:
    if not side:
        return
    try:
        with Bag(bag.path) as again:
            stream = again.messages(side)
            for topic, t_ns, raw in stream:
                with recorder.lock:
                    try:
                        copy_side(bag_out, recorder.scorer, topics, topic, t_ns, raw)
                    except types.MessageError as exc:
                        raise broken_at(stream, exc) from None
    except BagError as exc:
        facts["partial"] = facts.get("partial") or str(exc)


def _live_facts(recorder: Recorder, rate: float) -> dict[str, Any]:
    with recorder.lock:
        published, results = dict(recorder.published), dict(recorder.results)
    got = sum(1 for s in published if s in results)
    return {"rate": rate, "published": len(published), "results": got, "dropped": len(published) - got,
            "result_age_ms": percentiles(result_ages(published, results))}
