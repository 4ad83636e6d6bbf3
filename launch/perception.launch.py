"""`ros2 launch vltseg_ros perception.launch.py [model:=M] [camera_topic:=T] [rviz:=true] ...`

Starts the vltseg perception lifecycle node with the params YAML, drives it through
configure -> activate (a failed configure leaves it unconfigured, with the reason logged),
gives its process the large-frame Fast DDS profile (unless FASTDDS_DEFAULT_PROFILES_FILE is set),
and starts rviz2 with rviz/perception.rviz when rviz:=true and rviz2 exists.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

SHARE = Path(get_package_share_directory("vltseg_ros"))
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"

ARGUMENTS = {
    "namespace": ("", "namespace of the node (outputs under /<namespace>/vltseg/...)"),
    "params_file": (str(SHARE / "config" / "perception.yaml"), "parameters YAML of the node"),
    "model": ("", "model file (.pt / .onnx / .engine); empty: the params file's"),
    "backend": ("", "auto | torch | onnxruntime | tensorrt; empty: the params file's"),
    "camera_topic": ("", "single camera: sensor_msgs/Image topic; empty: the params file's cameras"),
    "compressed": ("false", "with camera_topic: CompressedImage on <camera_topic>/compressed"),
    "use_sim_time": ("false", "use /clock (bag replay)"),
    "rviz": ("false", "also start rviz2 with rviz/perception.rviz"),
    "log_level": ("info", "log level of the node"),
}


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _overrides(context: LaunchContext) -> dict[str, object]:
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    out: dict[str, object] = {"use_sim_time": _truthy(arg("use_sim_time"))}
    if arg("model"):
        out["model"] = arg("model")
    if arg("backend"):
        out["backend"] = arg("backend")
    if arg("camera_topic"):
        out.update({"cameras": ["camera"], "camera.camera.topic": arg("camera_topic"),
                    "camera.camera.compressed": _truthy(arg("compressed"))})
    return out


def _launch_setup(context: LaunchContext) -> list:
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    env = {}
    if not os.environ.get(PROFILE_ENV):
        env[PROFILE_ENV] = str(SHARE / "config" / "fastdds_large_frames.xml")
    node = LifecycleNode(
        package="vltseg_ros", executable="perception_node", name="vltseg", namespace=arg("namespace"),
        parameters=[arg("params_file"), _overrides(context)], additional_env=env, output="screen",
        arguments=["--ros-args", "--log-level", arg("log_level")],
    )
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    return [node, activate, configure, *_rviz(arg("rviz"))]


def _rviz(flag: str) -> list:
    if not _truthy(flag):
        return []
    if shutil.which("rviz2") is None:
        return [LogInfo(msg="rviz:=true but rviz2 was not found on PATH (not installed here); "
                            "the perception node runs without it. Install ros-<distro>-rviz2, or open "
                            f"{SHARE / 'rviz' / 'perception.rviz'} in RViz on another machine.")]
    return [Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                 arguments=["-d", str(SHARE / "rviz" / "perception.rviz")])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in ARGUMENTS.items()),
        OpaqueFunction(function=_launch_setup),
    ])
