"""QoS for camera-size frames: matching the camera's reliability ("auto"), the output profile,
the large-frame Fast DDS transport profile, and the diagnosis when frames do not arrive.

Measured here (../shared/NOTES.md, Fast DDS 3.2 from the ROS wheels, two processes): with the
default transports a best-effort Image of 1024x512 or more is silently lost; a reliable one
arrives; what decides it is the publisher's transport. `config/fastdds_large_frames.xml` gives
a publisher a 64 MB shared-memory segment (plus UDPv4), with which its best-effort or reliable
2048x1024 frames reach a default-config best-effort subscriber in another process. The node's
process gets it through FASTDDS_DEFAULT_PROFILES_FILE (launch file and runner set it).
"""

from __future__ import annotations

import os
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds_large_frames.xml"


def input_qos(reliability: ReliabilityPolicy, depth: int) -> QoSProfile:
    """Camera subscription: keep-last `depth`, volatile (REP-2003 sensor data)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    """Outputs: reliable keep-last 1 (REP-2003 publishers), so reliable subscribers (RViz's
    default) and best-effort ones both match; depth 1 never blocks the node."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """label_info: transient local depth 1, so a subscriber joining late still gets it."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def offered_reliability(node: Node, topic: str) -> list[ReliabilityPolicy]:
    """Reliability of each publisher now on `topic` (resolved against the node's namespace)."""
    name = node.resolve_topic_name(topic)
    return [info.qos_profile.reliability for info in node.get_publishers_info_by_topic(name)]


def choose_reliability(setting: str, offered: list[ReliabilityPolicy]) -> ReliabilityPolicy:
    """auto: reliable only when every publisher offers it (a reliable subscription would not
    match a best-effort camera); best effort when none is there yet (sensor-data default)."""
    if setting == "reliable":
        return ReliabilityPolicy.RELIABLE
    if setting == "best_effort":
        return ReliabilityPolicy.BEST_EFFORT
    if offered and all(r == ReliabilityPolicy.RELIABLE for r in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def no_frame_diagnosis(topic: str, ours: ReliabilityPolicy, offered: list[ReliabilityPolicy],
                       seconds: float) -> str:
    """The likely cause, and the fix, when `topic` has publishers but no frame came."""
    head = f"no frame on {topic} for {seconds:.0f} s although {len(offered)} publisher(s) exist"
    if ours == ReliabilityPolicy.RELIABLE and ReliabilityPolicy.BEST_EFFORT in offered:
        return (f"{head}: QoS mismatch (camera best effort, this node reliable); "
                "set qos.reliability to auto or best_effort")
    return (f"{head}: large best-effort frames are lost between processes with the default Fast "
            f"DDS transports; start the camera driver with {PROFILE_ENV} pointing at "
            f"{PROFILE_NAME} (share/vltseg_ros/config), or publish the camera reliably")


def share_file(name: str) -> Path | None:
    """config/<name> of this checkout (editable install), else of the installed
    share/vltseg_ros (ament index; a colcon install has no checkout beside the package)."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / name]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("vltseg_ros")) / "config" / name)
    except Exception:  # noqa: BLE001 - not in an ament index: the checkout's copy
        pass
    return next((p for p in candidates if p.is_file()), None)


def apply_large_frame_profile(environ: dict[str, str] | None = None) -> str | None:
    """Point FASTDDS_DEFAULT_PROFILES_FILE at the profile unless the user set one; must run
    before rclpy.init in this process. Returns the file in effect (None if none)."""
    env = os.environ if environ is None else environ
    if env.get(PROFILE_ENV):
        return env[PROFILE_ENV]
    profile = share_file(PROFILE_NAME)
    if profile is not None:
        env[PROFILE_ENV] = str(profile)
    return str(profile) if profile else None
