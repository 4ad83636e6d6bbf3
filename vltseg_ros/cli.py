"""The `vltseg-ros` command: ROS 2 side tools (needs rclpy and the built vltseg_ros msgs).

    vltseg-ros info                      middleware and the built messages
    vltseg-ros run [--params-file F] [--model M] [--camera-topic T] [--compressed] [--backend B]
                                         the perception node, configured and activated, in
                                         this process (no launch tools needed); Ctrl-C stops it
    vltseg-ros demo                      the live pipeline on the embedded default
    vltseg-ros bag make|eval|play        ROS 2 bags: write from images/video/datasets, replay
                                         through the model or the live node and score, play
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vltseg_ros import demo
from vltseg_ros.bag import cli as bag_cli


def _require_ros() -> None:
    try:
        import rclpy  # noqa: F401
        from vltseg_ros.msg import LabelInfo  # noqa: F401
    except ImportError as exc:
        sys.exit(
            f"vltseg-ros: ROS 2 is not available ({exc}); run scripts/setup.sh, "
            "or source a ROS 2 install and colcon-build this package"
        )


def _info(_: argparse.Namespace) -> None:
    import rclpy
    from rclpy.utilities import get_rmw_implementation_identifier

    from vltseg_ros import image_codec, msg

    names = sorted(n for n in dir(msg) if n[0].isupper())
    print(f"rmw: {get_rmw_implementation_identifier()}")
    print(f"rclpy: {rclpy.__file__}")
    print(f"vltseg_ros messages: {', '.join(names)}")
    print(f"image decoding: {image_codec.bridge_name()}")


def default_params_file() -> Path | None:
    """config/perception.yaml, installed (share/vltseg_ros) or in this checkout."""
    from vltseg_ros.qos import share_file

    return share_file("perception.yaml")


def ros_arguments(args: argparse.Namespace) -> list[str]:
    """The runner's options as ROS arguments: the params file first, then overrides."""
    params_file = args.params_file or default_params_file()
    out = ["--ros-args"]
    if params_file is not None:
        if not Path(params_file).is_file():
            sys.exit(f"vltseg-ros run: no such params file: {params_file}")
        out += ["--params-file", str(params_file)]
    overrides = {"autostart": "true"}
    if args.model:
        overrides["model"] = str(args.model)
    if args.backend:
        overrides["backend"] = args.backend
    if args.camera_topic:
        overrides.update({"cameras": "[camera]", "camera.camera.topic": args.camera_topic,
                          "camera.camera.compressed": "true" if args.compressed else "false"})
    for key, value in overrides.items():
        out += ["-p", f"{key}:={value}"]
    if args.namespace:
        out += ["-r", f"__ns:={args.namespace}"]
    return out + list(getattr(args, "ros_args", None) or [])


def _run(args: argparse.Namespace) -> None:
    from vltseg_ros import qos
    from vltseg_ros.perception_node import main as node_main

    profile = qos.apply_large_frame_profile()  # before rclpy.init: the DDS participant reads it
    print(f"vltseg-ros run: Fast DDS profile {profile or 'default (none found)'}", flush=True)
    node_main(ros_arguments(args))


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the perception node (configured and activated)")
    run.add_argument("--params-file", type=Path, help="params YAML (default: config/perception.yaml)")
    run.add_argument("--model", help="checkpoint (.pt), ONNX (.onnx) or TensorRT engine (.engine)")
    run.add_argument("--camera-topic", help="single camera: sensor_msgs/Image on this topic")
    run.add_argument("--compressed", action="store_true",
                     help="with --camera-topic: CompressedImage on <topic>/compressed")
    run.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    run.add_argument("--namespace", help="node namespace (outputs under /<ns>/vltseg/...)")
    run.set_defaults(func=_run)
    run.epilog = "More ROS arguments follow --ros-args, e.g. --ros-args -p max_rate_hz:=5.0"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vltseg-ros", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="show the middleware and the vltseg_ros messages").set_defaults(func=_info)
    _add_run(sub)
    demo.add_parser(sub)
    bag_cli.add_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.ros_args = argv[cut + 1:]
    _require_ros()
    args.func(args)


if __name__ == "__main__":
    main()
