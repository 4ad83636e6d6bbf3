"""`vltseg-ros bag make|eval|play`: argument parsing and one-line errors; the work is in the
sibling modules. Imports are lazy so `vltseg-ros --help` stays fast."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from vltseg_ros.bag.read import BagError

ERRORS: tuple[type[BaseException], ...] = (BagError,)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def _fail(command: str, exc: BaseException) -> None:
    sys.exit(f"vltseg-ros bag {command}: {exc}")


# ---- make ----

def _make(args: argparse.Namespace) -> None:
    from vltseg_ros.bag import make
    from vltseg_ros.bag.write import BagWriteError

    try:
        if args.synth:
            total, items = make.synth_items(args.synth.split(","), args.frames or 40, args.size, args.seed)
        elif args.images:
            total, items = make.image_items(args.images, args.frames)
        elif args.video:
            total, items = make.video_items(args.video, args.frames)
        else:
            conds = args.conditions.split(",") if args.conditions else None
            total, items = make.dataset_items(args.dataset, args.root, args.split, conds, args.frames,
                                              not args.no_gt)
        opts = make.MakeOptions(args.topic, args.encoding, args.compressed, args.quality, not args.no_gt,
                                args.rate, args.start, args.frame_id, args.storage)
        result = make.write_bag(args.out, total, items, opts)
    except KeyboardInterrupt:
        sys.exit("vltseg-ros bag make: interrupted; no bag written")
    except (make.SourceError, BagWriteError, BagError, OSError, ValueError) as exc:
        _fail("make", exc)
    topics = ", ".join(f"{t} ({n})" for t, n in result["topics"].items())
    print(f"bag make: {result['bag']} ({result['storage']}, {result['frames']} frames, "
          f"{result['bytes'] / 1e6:.1f} MB, {result['seconds']:.1f} s): {topics}")


def _add_make(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make", help="write a ROS 2 bag from images, a video, a dataset or the synthetic drive")
    p.add_argument("out", type=Path, help="bag directory, or a bare .mcap / .db3 file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synth", metavar="CONDITIONS",
                     help="synthetic drive through these conditions, e.g. clear,fog,rain,snow,night")
    src.add_argument("--images", type=Path, help="a folder of images (sorted by name)")
    src.add_argument("--video", type=Path, help="a video file")
    src.add_argument("--dataset", choices=["cityscapes", "acdc", "synth"],
                     help="a dataset split (needs --root); synth = the synthetic benchmark folder")
    p.add_argument("--root", type=Path, help="dataset root (with --dataset)")
    p.add_argument("--split", default="val")
    p.add_argument("--conditions", help="ACDC / benchmark conditions, e.g. fog,night")
    p.add_argument("--frames", type=int, help="frames per condition (synth; default 40) or at most this many")
    p.add_argument("--size", type=_size, default=(1024, 512), help="synthetic frame size WxH (default 1024x512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", choices=["mcap", "sqlite3"], help="default: from the suffix, else mcap")
    p.add_argument("--topic", default="/camera/image_raw", help="camera topic (default /camera/image_raw)")
    p.add_argument("--encoding", default="rgb8", help="raw Image encoding (rgb8, bgr8, mono8, bayer_rggb8, yuv422, ...)")
    p.add_argument("--compressed", choices=["jpeg", "png"], help="CompressedImage on <topic>/compressed instead")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--no-gt", action="store_true", help="no ground-truth topic")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of bag time (default 10)")
    p.add_argument("--start", type=float, help="first stamp, seconds since the epoch (default: now)")
    p.add_argument("--frame-id", default="camera")
    p.set_defaults(func=_make)


# ---- eval ----

def _eval(args: argparse.Namespace) -> None:
    from vltseg_ros.bag import report as reports
    from vltseg_ros.bag.offline import EvalOptions, run_offline
    from vltseg_ros.bag.read import Bag, read_segments_file
    from vltseg_ros.bag.write import BagWriteError

    mode = "live" if args.live else "offline"
    if not Path(args.model).is_file():
        _fail("eval", BagError(f"no such model: {args.model}"))
    bag_path = Path(args.bag)
    out = args.out or bag_path.parent / f"{bag_path.stem if bag_path.is_file() else bag_path.name}_eval"
    kinds = _output_kinds(args.outputs)
    opts = EvalOptions(Path(args.model), args.backend, args.threads, tolerance_ms=args.tolerance_ms,
                       window=args.window, rate=args.rate, clock=args.clock, start_timeout=args.start_timeout,
                       outputs=kinds)
    try:
        segments = read_segments_file(args.segments) if args.segments else None
        with Bag(bag_path) as bag:
            topics = bag.find_topics(args.image_topic, args.gt_topic, args.segment_topic, args.gt_boxes_topic)
            print(f"bag eval ({mode}): {bag_path}: camera {topics.image} ({topics.image_type.split('/')[-1]}), "
                  f"ground truth {topics.gt or 'none'}, conditions {topics.domain or 'none'}", flush=True)
            started = time.perf_counter()
            if args.live:
                from vltseg_ros.bag.live import run_live

                scorer, facts = run_live(bag, topics, opts, out / f"{mode}_bag", out)
            else:
                scorer, facts = run_offline(bag, topics, opts, out / f"{mode}_bag")
        scorer.assign_segments(segments)
        report: dict[str, Any] = {
            "bag": str(bag_path), "mode": mode, "out": str(out), "topics": topics.__dict__,
            "output_bag": str(out / f"{mode}_bag"), "damage": bag.damage, "seconds": time.perf_counter() - started,
            **{k: v for k, v in facts.items() if k not in ("mode",)}, "summary": scorer.summary()}
        path = reports.write_reports(report, scorer.timeline(), out, mode)
    except KeyboardInterrupt:
        sys.exit(f"vltseg-ros bag eval: interrupted; nothing written to {out}")
    except (BagError, BagWriteError, OSError) as exc:
        _fail("eval", exc)
    print(reports.headline(report))
    print(f"  report: {path}")
    if report.get("partial"):
        _fail("eval", BagError(f"{report['partial']} (report marked partial: {path})"))


def _output_kinds(text: str | None) -> frozenset[str] | None:
    from vltseg_ros.params import OUTPUTS

    if text is None:
        return None
    kinds = frozenset(k for k in text.split(",") if k)
    if kinds - set(OUTPUTS):
        _fail("eval", BagError(f"unknown output(s) {', '.join(sorted(kinds - set(OUTPUTS)))}; "
                               f"choose from {', '.join(OUTPUTS)}"))
    return kinds


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="replay a bag through the model (offline) or the node (--live) and score it")
    p.add_argument("bag", type=Path, help="bag directory, .mcap or .db3")
    p.add_argument("--model", required=True, help="checkpoint (.pt), ONNX (.onnx) or TensorRT engine (.engine)")
    p.add_argument("--out", type=Path, help="reports and the output bag (default: <bag>_eval beside the bag)")
    p.add_argument("--live", action="store_true", help="through the running node over DDS at real time x --rate")
    p.add_argument("--rate", type=float, default=1.0, help="live: playback speed (default 1)")
    p.add_argument("--clock", action="store_true", help="live: publish /clock and run the node on sim time")
    p.add_argument("--image-topic", help="camera topic (default: the bag's Image/CompressedImage topic)")
    p.add_argument("--gt-topic", help="ground-truth mono8 topic (default: found by name)")
    p.add_argument("--gt-boxes-topic", help="box truth, Detection2DArray (default: found by name)")
    p.add_argument("--segment-topic", help="condition topic: std_msgs Header (frame_id) or String")
    p.add_argument("--segments", type=Path, help="file of 'name start_s [end_s]' lines (s from the first frame)")
    p.add_argument("--tolerance-ms", type=float, default=0.0, help="stamp tolerance pairing frames with ground truth")
    p.add_argument("--window", type=int, default=30, help="domain-shift running-mean window (frames)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads of the model (0: backend default)")
    p.add_argument("--outputs", help="node outputs written to the output bag, e.g. segmentation,color "
                   "(default: all the node publishes; confidence is the largest)")
    p.add_argument("--start-timeout", type=float, default=180.0, help="live: seconds to wait for the node")
    p.set_defaults(func=_eval)


# ---- play ----

def _play(args: argparse.Namespace) -> None:
    from vltseg_ros.bag.play import play_bag

    try:
        play_bag(str(args.bag), args.rate, args.clock, args.topics, args.loop)
    except BagError as exc:
        _fail("play", exc)


def _add_play(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("play", help="publish a bag's topics at real time x --rate (no ros2 bag needed)")
    p.add_argument("bag", type=Path)
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--clock", action="store_true", help="also publish /clock from the bag time")
    p.add_argument("--topics", nargs="+", help="only these topics")
    p.add_argument("--loop", action="store_true")
    p.set_defaults(func=_play)


def add_parser(sub: argparse._SubParsersAction) -> None:
    bag = sub.add_parser("bag", help="make, evaluate (offline or live) and play ROS 2 bags")
    bag_sub = bag.add_subparsers(dest="bag_command", required=True)
    _add_make(bag_sub)
    _add_eval(bag_sub)
    _add_play(bag_sub)

