"""The `vltseg-ros` command: ROS 2 side tools (needs rclpy and the built vltseg_ros msgs)."""

from __future__ import annotations

import argparse
import sys


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

    from vltseg_ros import msg

    names = sorted(n for n in dir(msg) if n[0].isupper())
    print(f"rmw: {get_rmw_implementation_identifier()}")
    print(f"rclpy: {rclpy.__file__}")
    print(f"vltseg_ros messages: {', '.join(names)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vltseg-ros", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="show the middleware and the vltseg_ros messages").set_defaults(func=_info)
    args = parser.parse_args(argv)
    _require_ros()
    args.func(args)


if __name__ == "__main__":
    main()
