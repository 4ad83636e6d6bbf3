"""`ros2 launch vltseg_ros perception.launch.py` for real (the upstream launch tools in the venv),
the RViz config against the node's topics, and `vltseg-ros run` with the same YAML."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ros

from export_helpers import WORKDIR  # noqa: E402
from ros_nodes import PROFILE, REPO, camera_command, node_command, ros_session, trained_model  # noqa: E402
from conftest import free_domain_id  # noqa: E402

VENV = Path(sys.prefix)
ROS2 = VENV / "bin" / "ros2"


def _launch_tools() -> str | None:
    if not ROS2.is_file():
        return (f"the ROS 2 launch tools are not installed in {VENV} (scripts/setup.sh installs them "
                "from ../shared/ros-launch when present; a ROS install has them)")
    if not (VENV / "share" / "vltseg_ros" / "launch" / "perception.launch.py").is_file():
        return "vltseg_ros is not installed into the venv's share/ (run scripts/setup.sh)"
    return None


@pytest.fixture(scope="module")
def onnx() -> Path:
    return trained_model(Path(os.environ.get("VLTSEG_TEST_CACHE") or WORKDIR))[1]


def _node_topics(listener, namespace: str = "/") -> tuple[set[str], set[str]]:
    """(publishers, subscriptions) of the node /vltseg; empty while it is not up."""
    from rclpy.node import NodeNameNonExistentError

    node = listener.node
    try:
        pubs = {name for name, _ in node.get_publisher_names_and_types_by_node("vltseg", namespace)}
        subs = {name for name, _ in node.get_subscriber_names_and_types_by_node("vltseg", namespace)}
    except NodeNameNonExistentError:
        return set(), set()
    return pubs - {"/rosout", "/parameter_events"}, subs - {"/parameter_events"}


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _rviz_topics() -> set[str]:
    config = yaml.safe_load((REPO / "rviz" / "perception.rviz").read_text())
    return {d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"]}


def test_launch_file_runs_the_pipeline(ros_context, ros_domain, tmp_path, onnx) -> None:
    """ros2 launch with model:= camera_topic:= rviz:=true (rviz2 absent): a 2048x1024 frame from
    another process comes back as a mask, the node is active, the message says why RViz did not
    start, RViz's topics are the node's, and SIGINT to ros2 launch stops every process."""
    import psutil
    from lifecycle_msgs.srv import GetState
    from sensor_msgs.msg import Image

    if reason := _launch_tools():
        pytest.skip(reason)
    assert shutil.which("rviz2") is None or pytest.skip("rviz2 is installed here")
    env = {"AMENT_PREFIX_PATH": str(VENV), "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"}
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        from ros_nodes import best_effort

        listener.subscribe("mask", Image, "/vltseg/camera/segmentation", best_effort())
        launch = procs.start([ROS2, "launch", "vltseg_ros", "perception.launch.py", f"model:={onnx}",
                              "camera_topic:=/camera/image_raw", "rviz:=true"], tmp_path / "launch.log", env)
        procs.start(camera_command("camera/image_raw", rate=2), tmp_path / "cam.log",
                    {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)})
        listener.wait_for(lambda: len(listener.got("mask")) >= 2, 120, lambda: procs.log(launch)[-3000:])
        client = listener.node.create_client(GetState, "/vltseg/get_state")
        assert client.wait_for_service(timeout_sec=30)
        future = client.call_async(GetState.Request())
        listener.wait_for(future.done, 30, "get_state reply")
        pubs, subs = _node_topics(listener)
        children = _descendants(launch.pid)
        assert children, "ros2 launch started no process"
        procs.stop(launch, signal.SIGINT, timeout=60)
        log = procs.log(launch)
    assert future.result().current_state.label == "active"
    mask = listener.got("mask")[0]
    assert (mask.width, mask.height, mask.encoding) == (2048, 1024, "mono8")
    assert "rviz2 was not found" in log and "runs without it" in log
    assert launch.returncode == 0 and "process has finished cleanly" in log, log[-2000:]
    assert not [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    # RViz shows the camera input and three of the node's outputs, by their real names
    assert _rviz_topics() <= pubs | subs, (_rviz_topics() - pubs - subs, pubs, subs)
    assert "/camera/image_raw" in subs and len(_rviz_topics() & pubs) == 3


def test_runner_with_the_same_yaml_gives_the_same_topics(ros_context, ros_domain, tmp_path, onnx) -> None:
    """`vltseg-ros run --params-file config/perception.yaml` and `ros2 launch` (same YAML, no
    overrides but the model): the same node name, publishers and subscriptions."""
    if reason := _launch_tools():
        pytest.skip(reason)
    yaml_file = REPO / "config" / "perception.yaml"
    env = {"AMENT_PREFIX_PATH": str(VENV), "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"}
    topics = {}
    for label in ("launch", "run"):
        with ros_session(ros_context, ros_domain, tmp_path / label) as (procs, listener):
            (tmp_path / label).mkdir(exist_ok=True)
            cmd = ([ROS2, "launch", "vltseg_ros", "perception.launch.py", f"model:={onnx}",
                    f"params_file:={yaml_file}"] if label == "launch"
                   else node_command(onnx, camera_topic=None, params_file=yaml_file))
            proc = procs.start(cmd, tmp_path / f"{label}.log", env)
            listener.wait_for(lambda: any(t.endswith("/diagnostics") for t in _node_topics(listener)[0]), 90,
                              lambda: procs.log(proc)[-2000:])
            time.sleep(1.0)
            topics[label] = _node_topics(listener)
    assert topics["launch"] == topics["run"]
    pubs, subs = topics["run"]
    assert {"/vltseg/camera/segmentation", "/vltseg/label_info", "/diagnostics"} <= pubs
    assert subs == {"/camera/image_raw"}


@pytest.mark.slow
def test_live_demo_end_to_end(tmp_path, onnx) -> None:
    """`vltseg-ros demo` with a small frame count: node (ros2 launch where installed), synthetic
    camera at 1024x512, every domain scored, contact sheet and report, no process left."""
    import psutil

    from train_helpers import env as base_env

    checkpoint = onnx.parent / "train" / "model_final.pt"
    out = tmp_path / "live"
    mark = f"vltseg-demo-test-{os.getpid()}-{time.monotonic_ns()}"  # inherited by every child process
    env = {**base_env(), "ROS_DOMAIN_ID": str(free_domain_id()), "AMENT_PREFIX_PATH": str(VENV),
           "VLTSEG_TEST_MARK": mark}
    cmd = [str(VENV / "bin" / "vltseg-ros"), "demo", "--checkpoint", str(checkpoint), "--seconds-per-domain", "4",
           "--rate", "3", "--unique-frames", "2", "--out", str(out),
           "--calibration", str(onnx.parent / "synth" / "leftImg8bit" / "val")]
    import subprocess

    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [r["domain"] for r in report["domains"]] == ["clear", "fog", "rain", "snow", "night"]
    for row in report["domains"]:
        assert row["frames_out"] > 0 and row["mIoU"] is not None and row["latency_ms_p50"] > 0, row
    assert (out / "contact_sheet.png").stat().st_size > 10_000 and "| night |" in run.stdout
    assert ("ros2 launch" if _launch_tools() is None else "vltseg-ros run") in run.stdout
    time.sleep(1)
    assert not [p for p in psutil.process_iter() if _environ(p).get("VLTSEG_TEST_MARK") == mark]


def _environ(proc) -> dict[str, str]:
    import psutil

    try:
        return proc.environ()
    except (psutil.Error, OSError):
        return {}


def test_ros2_finds_the_package_and_its_executable() -> None:
    """The ament index entry and lib/vltseg_ros/perception_node, as `ros2 run` looks them up
    (`ros2 pkg executables`; ros2run itself is not among the launch tools here)."""
    import subprocess

    if reason := _launch_tools():
        pytest.skip(reason)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV)}
    run = subprocess.run([str(ROS2), "pkg", "executables", "vltseg_ros"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.stdout.split() == ["vltseg_ros", "perception_node"], run.stderr
    prefix = subprocess.run([str(ROS2), "pkg", "prefix", "--share", "vltseg_ros"], env=env,
                            capture_output=True, text=True, timeout=60).stdout.strip()
    assert {p.name for p in Path(prefix).iterdir()} >= {"launch", "config", "rviz", "package.xml"}


def test_children_of_a_background_job_can_be_interrupted() -> None:
    """A parent started with SIGINT ignored (a shell's `cmd &`) passes the ignore on to what it
    starts, so `ros2 launch` would not stop on SIGINT; `sigint_for_children` (called by the demo,
    the bench and this suite) gives children the default action back."""
    import subprocess

    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    parent = ("import signal, subprocess, sys\n"
              "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
              "from vltseg_ros.processes import sigint_for_children\n"
              "if sys.argv[1] == 'reset':\n    sigint_for_children()\n"
              f"subprocess.run([sys.executable, '-c', {probe!r}], check=True)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child_ignores = {mode: subprocess.run([sys.executable, "-c", parent, mode], env=env, capture_output=True,
                                          text=True, check=True).stdout.strip()
                     for mode in ("keep", "reset")}
    assert child_ignores == {"keep": "True", "reset": "False"}


def test_synthetic_camera_waits_for_its_subscribers(ros_context, ros_domain, tmp_path) -> None:
    """With `wait_for_subscribers` the demo's camera streams only once every output is matched,
    so a scorer that joins late still gets the first frames (best effort and volatile would drop
    them); its one-second drive is over long before the subscriber here joins."""
    from std_msgs.msg import Header
    from sensor_msgs.msg import Image

    from ros_nodes import best_effort

    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        cmd = [sys.executable, "-m", "vltseg_ros.synthetic_camera", "--ros-args", "-p", "domains:=[clear]",
               "-p", "unique_frames:=1", "-p", "seconds_per_domain:=1.0", "-p", "rate:=5.0", "-p", "width:=64",
               "-p", "height:=32", "-p", "wait_for_subscribers:=60.0"]
        camera = procs.start(cmd, tmp_path / "camera.log")
        time.sleep(4.0)  # rendered and (without the wait) streamed by now
        assert camera.poll() is None, procs.log(camera)[-2000:]
        listener.subscribe("domain", Header, "/camera/domain", 10)
        listener.subscribe("gt", Image, "/camera/ground_truth", best_effort())
        listener.subscribe("image", Image, "/camera/image_raw", best_effort())
        camera.wait(30)
        time.sleep(0.5)
        streamed = int(re.search(r"streamed (\d+) clear frames", procs.log(camera)).group(1))
        assert streamed >= 4 and [m.frame_id for m in listener.got("domain")] == ["clear"] * streamed
        assert len(listener.got("gt")) == len(listener.got("image")) == streamed
