#!/usr/bin/env python3
"""The perception node on real DDS, against the model alone, in one run (ratios, not seconds,
are what carries across machines):

  latency   one frame at a time: publish -> mask received here (end to end through the node
            process) against `Predictor` on the same frame in this process, interleaved
  age       a 30 Hz camera with a model slower than 33 ms: result age (mask received - header
            stamp) of the node's latest-frame policy against a naive node that queues frames
            and infers in its callback; divided by `Predictor` alone and by the node's own
            model latency under the stream (its diagnostics: receiving 30 Hz frames takes CPU)
  batching  4 cameras, frames per second with every pending frame in one call (max_batch 0)
            against one call per frame (max_batch 1), for the ONNX export (ONNX Runtime) and
            the checkpoint (torch), beside the same ratio of `Predictor` alone; needs models
            taking any batch (the default dynamic-batch export)
  rss       node RSS at frame 500 and after N frames

    python bench/bench_node.py --model m.onnx --checkpoint m.pt --json bench_node.json

The node runs as `vltseg-ros run` in its own process; this process is the camera (with the
large-frame Fast DDS profile) and the receiver. Not part of the test suite (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_frames.xml"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from vltseg_ros import image_codec  # noqa: E402
from vltseg_ros.diagnostics import values_of  # noqa: E402
from vltseg_ros.processes import sigint_for_children, stop_group  # noqa: E402

BIN = Path(sys.executable).parent


def camera_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    from vltseg_core.data.synth_domains import apply_domain
    from vltseg_core.data.synth_objects import render_scene

    frames = []
    for i in range(count):
        scene = render_scene(np.random.default_rng([i]), width, height)
        frames.append(apply_domain(scene, "clear", np.random.default_rng([i, 1])))
    return frames


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Node:
    """`vltseg-ros run` (or the naive node) in its own session, stopped on exit."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def rss_mb(self) -> float:
        pids = [self.proc.pid, *self._children()]
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def _children(self) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except OSError:
            return []

    def stop(self) -> None:
        stop_group(self.proc, 10)
        self.log.close()


SEG_ONLY = {"publish.color": "false", "publish.confidence": "false"}  # what the naive node publishes


def node_cmd(model: Path, threads: int, cameras: list[str], **params: object) -> list[str]:
    cmd = [str(BIN / "vltseg-ros"), "run", "--model", str(model), "--ros-args",
           "-p", f"num_threads:={threads}", "-p", f"cameras:=[{','.join(cameras)}]"]
    for cam in cameras:
        cmd += ["-p", f"camera.{cam}.topic:=bench/{cam}"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    return cmd


class Bench:
    """The bench's own ROS node: camera publishers and mask subscribers, spun in a thread."""

    def __init__(self) -> None:
        self.node = rclpy.create_node("vltseg_bench")
        self.received: dict[str, list[tuple[float, int, str]]] = {}  # topic -> (time, stamp ns, frame_id)
        self.pubs: dict[str, object] = {}
        self.diagnostics: dict[str, dict[str, str]] = {}  # camera (hardware_id) -> latest values
        self.lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._keep_diagnostics, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.stop_flag = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _keep_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                self.diagnostics[status.hardware_id] = values_of(status)

    def node_model_ms(self, camera: str) -> float:
        """The node's own model latency p50 (its diagnostics) while it works under the stream."""
        with self.lock:
            return float(self.diagnostics.get(camera, {}).get("model_latency_ms_p50", "nan"))

    def _spin(self) -> None:
        while not self.stop_flag:
            self.executor.spin_once(timeout_sec=0.05)

    def camera(self, name: str) -> object:
        if name not in self.pubs:
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
            self.pubs[name] = self.node.create_publisher(Image, f"bench/{name}", qos)
        return self.pubs[name]

    def listen(self, topic: str) -> None:
        if topic in self.received:
            return
        self.received[topic] = []
        def keep(msg: Image) -> None:
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with self.lock:
                self.received.setdefault(topic, []).append((time.time(), stamp, msg.header.frame_id))

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(Image, topic, keep, qos)

    def got(self, topic: str) -> list[tuple[float, int, str]]:
        with self.lock:
            return list(self.received.get(topic, []))

    def wait(self, done, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if done():
                return True
            time.sleep(0.002)
        return False

    def publish(self, name: str, msg: Image, frame_id: str) -> int:
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        msg.header.frame_id = frame_id
        self.pubs[name].publish(msg)
        return now

    def connect(self, name: str, topic: str) -> None:
        """Camera `name` publishing to the node, `topic` received here, both matched."""
        self.camera(name)
        self.listen(topic)
        self.wait_matched(name, topic)

    def wait_matched(self, name: str, topic: str, timeout: float = 60) -> None:
        ok = self.wait(lambda: self.pubs[name].get_subscription_count() > 0
                       and self.node.count_publishers(topic) > 0, timeout)
        if not ok:
            raise RuntimeError(f"node did not come up (no subscriber on bench/{name} or no {topic})")


def bench_latency(bench: Bench, args: argparse.Namespace, frames: list[np.ndarray], out: Path) -> dict:
    """Publish one frame, wait for its mask; then Predictor on that frame here; repeat."""
    from vltseg_core.runtime.predictor import Predictor

    node = Node(node_cmd(args.model, args.threads, ["cam"]), out / "node_latency.log")
    try:
        topic = "/vltseg/cam/segmentation"
        bench.connect("cam", topic)
        predictor = Predictor(args.model, threads=args.threads)
        msgs = [image_codec.encode_image(f, "rgb8") for f in frames]
        e2e, model = [], []
        for i in range(args.repeats + 1):
            for j, msg in enumerate(msgs):
                seen = len(bench.got(topic))
                sent = bench.publish("cam", msg, f"{i}-{j}")
                if not bench.wait(lambda: len(bench.got(topic)) > seen, 120):
                    raise RuntimeError("no mask within 120 s")
                arrived = bench.got(topic)[-1][0]
                start = time.perf_counter()
                predictor(image_codec.decode(msg))
                if i:  # the first round warms both up
                    model.append((time.perf_counter() - start) * 1e3)
                    e2e.append((arrived * 1e9 - sent) / 1e6)
        return {"e2e_ms_p50": pct(e2e, 50), "model_ms_p50": pct(model, 50), "ratio_p50": pct(e2e, 50) / pct(model, 50),
                "e2e_ms_p95": pct(e2e, 95), "model_ms_p95": pct(model, 95), "frames": len(e2e)}
    finally:
        node.stop()


def naive_main(model: str, threads: int) -> None:
    """A naive node: a queue of 100 frames, inference inside the subscription callback."""
    from vltseg_core.runtime.predictor import Predictor

    rclpy.init()
    node = rclpy.create_node("naive")
    predictor = Predictor(model, threads=threads)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
    out_pub = node.create_publisher(Image, "naive/segmentation", qos)

    def callback(msg: Image) -> None:
        pred = predictor(image_codec.decode(msg))
        out_pub.publish(image_codec.to_image_msg(pred.mask, "mono8", msg.header))

    node.create_subscription(Image, "bench/cam", callback, qos)
    signal.signal(signal.SIGINT, lambda *_: rclpy.try_shutdown())
    try:
        rclpy.spin(node)
    except Exception:  # noqa: BLE001 - shutdown from the signal handler
        pass


def stream(bench: Bench, name: str, frames: list[np.ndarray], rate: float, seconds: float) -> int:
    msgs = [image_codec.encode_image(f, "rgb8") for f in frames]
    end, i = time.monotonic() + seconds, 0
    next_at = time.monotonic()
    while time.monotonic() < end:
        bench.publish(name, msgs[i % len(msgs)], str(i))
        i += 1
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    return i


def ages(received: list[tuple[float, int, str]]) -> list[float]:
    return [(t * 1e9 - stamp) / 1e6 for t, stamp, _ in received]


def bench_age(bench: Bench, args: argparse.Namespace, frames: list[np.ndarray], out: Path, model_ms: float) -> dict:
    results = {}
    for label, cmd, topic in (
        ("node", node_cmd(args.model, args.threads, ["cam"], **SEG_ONLY), "/vltseg/cam/segmentation"),
        ("naive", [sys.executable, __file__, "--serve-naive", str(args.model), "--threads", str(args.threads)],
         "/naive/segmentation"),
    ):
        node = Node(cmd, out / f"node_age_{label}.log")
        try:
            bench.connect("cam", topic)
            before = len(bench.got(topic))
            sent = stream(bench, "cam", frames, args.rate, args.seconds)
            time.sleep(1.0)
            got = bench.got(topic)[before:]
            a = ages(got)
            third = max(1, len(a) // 3)
            results[label] = {"sent": sent, "results": len(a), "age_ms_p50": pct(a, 50), "age_ms_p95": pct(a, 95),
                              "age_ms_first_third": float(np.mean(a[:third])) if a else float("nan"),
                              "age_ms_last_third": float(np.mean(a[-third:])) if a else float("nan"),
                              "p95_over_model": pct(a, 95) / model_ms}
            if label == "node":  # the model's time under the camera's load (transport takes CPU too)
                loaded = bench.node_model_ms("cam")
                results[label].update(node_model_ms_p50=loaded, p95_over_node_model=pct(a, 95) / loaded)
        finally:
            node.stop()
    return results


def model_batching(model: Path, threads: int, frames: list[np.ndarray], rounds: int = 5) -> dict:
    """`Predictor` alone in this process: 4 frames in one call against 4 calls of one (best of
    `rounds`, interleaved): the most batching can give the node on this machine."""
    from vltseg_core.runtime.predictor import Predictor

    predictor = Predictor(model, threads=threads)
    images = frames[:4]
    predictor.predict(images)
    one, four = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for image in images:
            predictor.predict([image])
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        predictor.predict(images)
        four.append(time.perf_counter() - start)
    return {"sequential_ms": min(one) * 1e3, "batched_ms": min(four) * 1e3, "ratio": min(one) / min(four)}


def bench_batching(bench: Bench, args: argparse.Namespace, frames: list[np.ndarray], out: Path) -> dict:
    """Per model file (ONNX Runtime and/or torch): the node's fps with 4 cameras, batched
    (max_batch 0: every pending frame in one call, outputs drawn side by side) and sequential
    (max_batch 1), and the same ratio for `Predictor` alone."""
    cams = ["c0", "c1", "c2", "c3"]
    results = {}
    for model in (m for m in (args.model, args.checkpoint) if m is not None):
        backend = "torch" if model.suffix == ".pt" else "onnxruntime"
        row = {"model": str(model), "model_only": model_batching(model, args.threads, frames)}
        print(f"  {backend} Predictor alone, 4 frames: {json.dumps(row['model_only'])}", flush=True)
        for label, max_batch in (("batched", 0), ("sequential", 1)):
            node = Node(node_cmd(model, args.threads, cams, max_batch=max_batch), out / f"node_{backend}_{label}.log")
            try:
                row[label] = stream_cameras(bench, cams, frames, args)
            finally:
                node.stop()
        row["ratio"] = row["batched"]["fps"] / max(row["sequential"]["fps"], 1e-9)
        print(f"  {backend} node: {json.dumps(row)}", flush=True)
        results[backend] = row
    return results


def stream_cameras(bench: Bench, cams: list[str], frames: list[np.ndarray], args: argparse.Namespace) -> dict:
    """All cameras at `args.rate` for `args.seconds`; masks received per second."""
    topics = [f"/vltseg/{c}/segmentation" for c in cams]
    for cam, topic in zip(cams, topics):
        bench.camera(cam)
        bench.listen(topic)
    for cam, topic in zip(cams, topics):
        bench.wait_matched(cam, topic)
    before = sum(len(bench.got(t)) for t in topics)
    threads = [threading.Thread(target=stream, args=(bench, c, frames, args.rate, args.seconds)) for c in cams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.0)
    done = sum(len(bench.got(t)) for t in topics) - before
    return {"fps": done / args.seconds, "results": done}


def bench_rss(bench: Bench, args: argparse.Namespace, out: Path) -> dict:
    frames = camera_frames(8, 320, 240)
    node = Node(node_cmd(args.model, args.threads, ["cam"]), out / "node_rss.log")
    try:
        topic = "/vltseg/cam/segmentation"
        bench.connect("cam", topic)
        for other in ("segmentation_color", "confidence"):  # outputs are lazy: read them all
            bench.listen(f"/vltseg/cam/{other}")
        msgs = [image_codec.encode_image(f, "rgb8") for f in frames]
        samples, start_len = {}, len(bench.got(topic))
        for i in range(args.rss_frames):
            seen = len(bench.got(topic))
            bench.publish("cam", msgs[i % len(msgs)], str(i))
            bench.wait(lambda: len(bench.got(topic)) > seen, 30)
            if i + 1 in (500, args.rss_frames) or (i + 1) % 1000 == 0:
                samples[i + 1] = node.rss_mb()
                print(f"  rss after {i + 1} frames: {samples[i + 1]:.1f} MB", flush=True)
        growth = samples[args.rss_frames] / samples[500] - 1
        return {"rss_mb": samples, "growth_after_500": growth, "answered": len(bench.got(topic)) - start_len}
    finally:
        node.stop()


def main() -> None:
    sigint_for_children()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="ONNX export (latency, age, rss, batching)")
    parser.add_argument("--checkpoint", type=Path, help="torch checkpoint (batching, beside the ONNX export)")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="latency rounds over the frames")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate for age and batching (Hz)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rss-frames", type=int, default=5000)
    parser.add_argument("--only", default="latency,age,batching,rss")
    parser.add_argument("--out", type=Path, default=Path("bench_node_out"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve-naive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_naive:
        return naive_main(args.serve_naive, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    rclpy.init()
    bench = Bench()
    frames = camera_frames(6, args.width, args.height)
    report: dict = {"size": [args.width, args.height], "threads": args.threads, "model": str(args.model)}
    try:
        if "latency" in only:
            report["latency"] = bench_latency(bench, args, frames, args.out)
            print(json.dumps(report["latency"]), flush=True)
        if "age" in only:
            model_ms = report.get("latency", {}).get("model_ms_p50") or bench_latency(bench, args, frames[:2], args.out)["model_ms_p50"]
            report["age"] = bench_age(bench, args, frames, args.out, model_ms)
            print(json.dumps(report["age"]), flush=True)
        if "batching" in only:
            report["batching"] = bench_batching(bench, args, frames, args.out)
            print(json.dumps(report["batching"]), flush=True)
        if "rss" in only:
            report["rss"] = bench_rss(bench, args, args.out)
            print(json.dumps(report["rss"]), flush=True)
    finally:
        bench.stop_flag = True
        bench.thread.join(2)
        rclpy.try_shutdown()
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
