"""`vltseg-ros demo` (what `bash scripts/demo.sh` runs): the live ROS pipeline on the embedded
default.

1. the demo checkpoint (trained with configs/demo.yaml by `vltseg demo` if absent),
2. its ONNX export, with the domain-shift band calibrated on the source domain,
3. the perception node via `ros2 launch vltseg_ros perception.launch.py` when the launch tools
   are installed, else `vltseg-ros run`,
4. a synthetic camera node streaming clear -> fog -> rain -> snow -> night (best effort,
   1024x512 by default, with ground truth),
5. a live per-domain table (fps in/out, latency, mIoU, mean confidence, shift warnings),
6. a contact sheet (input | overlay | ground truth per domain) and a report; every process is
   stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vltseg_ros.processes import sigint_for_children, stop_group

REPO = Path(__file__).resolve().parents[1]


def log(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def demo_checkpoint(args: argparse.Namespace) -> Path:
    """The given checkpoint, or runs/demo/model_final.pt (trained by `vltseg demo` if absent)."""
    if args.checkpoint:
        return Path(args.checkpoint)
    ckpt = Path("runs/demo/model_final.pt")
    if not ckpt.is_file():
        from vltseg_core.demo import run_demo

        log(f"no demo checkpoint at {ckpt}: training configs/demo.yaml (5-10 minutes on a 2-core CPU)")
        run_demo(None, ckpt.parent, (), args.frames)
    return ckpt


def demo_export(ckpt: Path, calibration: Path | None) -> Path:
    """ckpt -> ckpt.onnx (re-exported when older than the checkpoint), with the domain-shift
    band calibrated on `calibration` (default: the synthetic benchmark's clear val images)."""
    from vltseg_core.demo import default_cache, ensure_synth
    from vltseg_core.export.cli import export_checkpoint

    onnx = ckpt.with_suffix(".onnx")
    if onnx.is_file() and onnx.stat().st_mtime >= ckpt.stat().st_mtime:
        return onnx
    calibration = calibration or ensure_synth(default_cache()) / "leftImg8bit" / "val"
    log(f"exporting {ckpt} to {onnx} (parity-checked, domain-shift band from {calibration})")
    export_checkpoint(ckpt, "onnx", onnx, calibrate=calibration)
    return onnx


def _launch_env() -> dict[str, str] | None:
    """Environment for `ros2 launch vltseg_ros ...`, or None where the launch tools are absent."""
    ros2 = shutil.which("ros2") or str(Path(sys.prefix) / "bin" / "ros2")
    if not Path(ros2).is_file():
        return None
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if not any((Path(p) / "share" / "vltseg_ros" / "launch").is_dir() for p in prefixes):
        if not (Path(sys.prefix) / "share" / "vltseg_ros" / "launch").is_dir():
            return None
        prefixes.insert(0, sys.prefix)
    return {"AMENT_PREFIX_PATH": os.pathsep.join(prefixes), "ROS2": ros2}


class Procs:
    """Child processes in their own sessions; stop() sends SIGINT, then kills the group."""

    def __init__(self, out: Path) -> None:
        self.out, self.procs = out, []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        handle = open(self.out / f"{name}.log", "w")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc, handle))
        return proc

    def stop_all(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc, handle in self.procs:
            stop_group(proc, 15, interrupt=False)  # interrupted together above, so they stop in parallel
            handle.close()


def start_node(procs: Procs, onnx: Path, env: dict[str, str]) -> str:
    launch = _launch_env()
    if launch:
        cmd = [launch["ROS2"], "launch", "vltseg_ros", "perception.launch.py", f"model:={onnx}",
               "camera_topic:=/camera/image_raw"]
        procs.start("node", cmd, {**env, "AMENT_PREFIX_PATH": launch["AMENT_PREFIX_PATH"]})
        return "ros2 launch vltseg_ros perception.launch.py"
    cmd = [str(Path(sys.executable).parent / "vltseg-ros"), "run", "--model", str(onnx),
           "--camera-topic", "/camera/image_raw"]
    procs.start("node", cmd, env)
    return "vltseg-ros run (no launch tools here)"


def camera_cmd(args: argparse.Namespace) -> list[str]:
    params = {"rate": float(args.rate), "seconds_per_domain": float(args.seconds_per_domain),
              "width": int(args.width), "height": int(args.height), "unique_frames": int(args.unique_frames),
              "wait_for_subscribers": 60.0}  # every frame of the drive is scored, the first ones too
    cmd = [sys.executable, "-m", "vltseg_ros.synthetic_camera", "--ros-args"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    return cmd


def wait_until(done, timeout: float, what: str, procs: Procs) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if done():
            return
        for name, proc, _ in procs.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early ({proc.returncode}); see {procs.out / (name + '.log')}")
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}; see the logs in {procs.out}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from vltseg_ros import qos
    from vltseg_ros.live_eval import TABLE_HEAD, LiveEvaluator, format_row

    sigint_for_children()  # the node and camera are stopped with SIGINT, even from `demo &`
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx = demo_export(demo_checkpoint(args), Path(args.calibration) if args.calibration else None)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # keep the demo on this host
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(qos.share_file(qos.PROFILE_NAME))}
    procs = Procs(out)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("vltseg_demo_monitor")
    evaluator = LiveEvaluator(node, num_classes=19)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = lambda: executor.spin_once(timeout_sec=0.05)  # noqa: E731
    try:
        how = start_node(procs, onnx, env)
        log(f"perception node: {how}, model {onnx}")
        wait_until(lambda: spin() or node.count_subscribers("/camera/image_raw") > 0, 120, "the node", procs)
        wait_until(lambda: spin() or evaluator.outputs_matched(), 60, "the node's masks to reach the monitor", procs)
        log(f"camera: {args.seconds_per_domain:.0f} s per domain at {args.rate:g} Hz, {args.width}x{args.height}, "
            "best effort; rendering first")
        camera = procs.start("camera", camera_cmd(args), env)
        monitor(evaluator, spin, camera, args)
        time.sleep(0.5)
        for _ in range(40):  # the last results
            spin()
    except KeyboardInterrupt:
        log("interrupted: stopping")
    finally:
        procs.stop_all()
        executor.shutdown(timeout_sec=1)
        node.destroy_node()
        rclpy.try_shutdown()
    rows = evaluator.rows()
    print(TABLE_HEAD)
    for row in rows:
        print(format_row(row))
    return write_report(out, rows, evaluator.samples(), onnx)


def monitor(evaluator: Any, spin: Any, camera: subprocess.Popen, args: argparse.Namespace) -> None:
    """Spin until the camera ends; a progress line every few seconds, a row per finished domain."""
    from vltseg_ros.live_eval import TABLE_HEAD, format_row

    last_print, seen = time.monotonic(), []
    print(TABLE_HEAD, flush=True)
    while camera.poll() is None:
        spin()
        current = evaluator.current
        if current and current not in seen:
            if seen:
                print(format_row(next(r for r in evaluator.rows() if r["domain"] == seen[-1])), flush=True)
            seen.append(current)
        if time.monotonic() - last_print > args.progress_every and current:
            row = next(r for r in evaluator.rows() if r["domain"] == current)
            latency = "-" if row["latency_ms_p50"] is None else f"{row['latency_ms_p50']:.0f} ms"
            miou = "-" if row["mIoU"] is None else f"{100 * row['mIoU']:.1f} %"
            log(f"{current}: {row['frames_in']} frames in, {row['frames_out']} out, latency p50 {latency}, "
                f"mIoU {miou}, shift warnings {row['shift_warnings']}")
            last_print = time.monotonic()


def write_report(out: Path, rows: list[dict[str, Any]], samples: dict[str, dict[str, np.ndarray]],
                 model: Path) -> dict[str, Any]:
    from vltseg_core.evaluation.report import write_json
    from vltseg_ros.live_eval import TABLE_HEAD, format_row

    sheet = contact_sheet(samples, out / "contact_sheet.png") if samples else None
    report = {"model": str(model), "domains": rows, "contact_sheet": str(sheet) if sheet else None}
    write_json(out / "report.json", report)
    lines = ["# vltseg live demo", "", f"Model: `{model}`; the perception node on real DDS, fed by the "
             "synthetic camera; latency = camera stamp to mask received in the monitor process.", "",
             TABLE_HEAD, *(format_row(r) for r in rows), ""]
    if sheet:
        lines += [f"![contact sheet]({sheet.name})", ""]
    (out / "report.md").write_text("\n".join(lines))
    log(f"report: {out / 'report.md'}; contact sheet: {sheet}")
    return report


def contact_sheet(samples: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """One row per domain: input | overlay | ground truth (colourised), labelled."""
    import cv2

    from vltseg_core.evaluation.overlay import colorize, side_by_side
    from vltseg_core.files import atomic_write

    rows = []
    for name, s in samples.items():
        panel = side_by_side(s["input"], s["overlay"], colorize(s["gt"]))
        panel = cv2.resize(panel, (panel.shape[1] // 2, panel.shape[0] // 2), interpolation=cv2.INTER_AREA)
        cv2.putText(panel, name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        rows.append(panel)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sheet = np.concatenate(rows, axis=0)
    ok, png = cv2.imencode(".png", sheet[..., ::-1])
    if not ok:
        raise RuntimeError("could not encode the contact sheet")
    atomic_write(path, png.tobytes())
    return path


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the live ROS pipeline on the embedded default (scripts/demo.sh)")
    demo.add_argument("--checkpoint", help="model checkpoint (default: runs/demo/model_final.pt, trained if absent)")
    demo.add_argument("--calibration", help="source-domain images for the domain-shift band "
                      "(default: the synthetic benchmark's clear val)")
    demo.add_argument("--frames", type=int, default=300, help="clear frames of the benchmark when training")
    demo.add_argument("--rate", type=float, default=5.0, help="camera rate (Hz)")
    demo.add_argument("--seconds-per-domain", type=float, default=12.0)
    demo.add_argument("--unique-frames", type=int, default=8, help="scenes rendered per domain (cycled)")
    demo.add_argument("--width", type=int, default=1024)
    demo.add_argument("--height", type=int, default=512)
    demo.add_argument("--progress-every", type=float, default=3.0, help="seconds between progress lines")
    demo.add_argument("--out", default="runs/demo/live", help="report, contact sheet and logs")
    demo.set_defaults(func=run)
