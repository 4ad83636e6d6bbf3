"""The perception node on real DDS: the node (`vltseg-ros run` / the ros2-run entry point), the
cameras and this test's subscriber are three separate processes; frames are 2048x1024."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

from export_helpers import WORKDIR  # noqa: E402
from ros_nodes import PROFILE, best_effort, camera_command, node_command, ros_session, trained_model  # noqa: E402

W, H = 2048, 1024
RAW_KINDS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8",
             "bayer_grbg8", "yuv422", "yuv422_yuy2", "uyvy", "yuyv", "rgb16", "mono16"]
LARGE = {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}


@pytest.fixture(scope="module")
def models() -> tuple[Path, Path]:
    """Trained once per test run ($VLTSEG_TEST_CACHE keeps it between runs while developing)."""
    return trained_model(Path(os.environ.get("VLTSEG_TEST_CACHE") or WORKDIR))


def _image_sub(listener, name: str, topic: str) -> None:
    from sensor_msgs.msg import Image

    listener.subscribe(name, Image, topic, best_effort())


def _expected_masks(onnx: Path, kinds: list[str], pad: int, bigendian: bool) -> dict[str, np.ndarray]:
    """What Predictor gives on the frames the camera sends, decoded by the codec."""
    from ros_camera import message, scene

    from vltseg_core.runtime.predictor import Predictor
    from vltseg_ros.image_codec import decode

    predictor = Predictor(onnx, threads=1)
    rgb, _ = scene(0, W, H)
    return {k: predictor(decode(message(rgb, k, pad if k not in ("jpeg", "png") else 0, bigendian))).mask
            for k in kinds}


@pytest.mark.slow
def test_every_encoding_at_camera_size(ros_context, ros_domain, tmp_path, models) -> None:
    """Raw encodings (padded rows, big-endian 16-bit) and JPEG/PNG from camera processes ->
    masks of input size, mono8, header copied, class ids equal to Predictor on the decoded
    frame; received by a best-effort default-config subscriber in this (third) process."""
    _, onnx = models
    params = tmp_path / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    cameras: [raw, packed]\n"
        "    camera:\n      raw: {topic: cam/image_raw}\n"
        "      packed: {topic: cam2/image_raw, compressed: true}\n")
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        _image_sub(listener, "raw", "/vltseg/raw/segmentation")
        _image_sub(listener, "packed", "/vltseg/packed/segmentation")
        node = procs.start(node_command(onnx, camera_topic=None, params_file=params), tmp_path / "node.log")
        procs.start(camera_command("cam/image_raw", ",".join(RAW_KINDS), pad=64, bigendian=True, rate=3),
                    tmp_path / "cam.log", LARGE)
        procs.start(camera_command("cam2/image_raw/compressed", "jpeg,png", rate=2),
                    tmp_path / "cam2.log", LARGE)

        def kinds_seen(name: str) -> set[str]:
            return {m.header.frame_id for m in listener.got(name)}

        listener.wait_for(lambda: kinds_seen("raw") >= set(RAW_KINDS) and kinds_seen("packed") >= {"jpeg", "png"},
                          150, lambda: f"masks of every kind; got {kinds_seen('raw')} {kinds_seen('packed')}; "
                          f"node log: {procs.log(node)[-3000:]}")
        stop_seconds = procs.stop(node)
    assert node.returncode == 0 and stop_seconds < 5, procs.log(node)[-2000:]
    expected = _expected_masks(onnx, RAW_KINDS, 64, True) | _expected_masks(onnx, ["jpeg", "png"], 0, False)
    classes = set()
    for name in ("raw", "packed"):
        for msg in listener.got(name):
            assert (msg.width, msg.height, msg.encoding, msg.step) == (W, H, "mono8", W)
            assert msg.header.stamp.sec > 0  # the camera's stamp, copied
            mask = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, W)
            np.testing.assert_array_equal(mask, expected[msg.header.frame_id], err_msg=msg.header.frame_id)
            classes |= set(np.unique(mask).tolist())
    assert len(classes) >= 3, f"the trained model should see several classes, saw {classes}"


def test_reliable_and_best_effort_cameras(ros_context, ros_domain, tmp_path, models) -> None:
    """A reliable default-config camera and a best-effort camera (large-frame profile), both
    appearing after the node: auto QoS re-matches each; both masks reach a best-effort
    default-config subscriber; SIGTERM stops the node within seconds."""
    import signal

    _, onnx = models
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    cameras: [rel, be]\n"
                      "    camera:\n      rel: {topic: rel/image_raw}\n      be: {topic: be/image_raw}\n")
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        _image_sub(listener, "rel", "/vltseg/rel/segmentation")
        _image_sub(listener, "be", "/vltseg/be/segmentation")
        node = procs.start(node_command(onnx, camera_topic=None, params_file=params), tmp_path / "node.log")
        listener.wait_for(lambda: listener.status(": rel") is not None, 60, lambda: procs.log(node)[-2000:])
        # cameras appear after the node subscribed (best effort while nobody publishes): auto
        # re-matches the reliable one; 2048x1024 reliable frames need a reliable subscription
        procs.start(camera_command("rel/image_raw", reliability="reliable", rate=2), tmp_path / "rel.log")
        procs.start(camera_command("be/image_raw", rate=2), tmp_path / "be.log", LARGE)
        def out(cam: str) -> int:
            return int((listener.status(f": {cam}") or {}).get("frames_out", 0))

        listener.wait_for(lambda: len(listener.got("rel")) >= 2 and len(listener.got("be")) >= 2
                          and out("rel") >= 2 and out("be") >= 2, 90, lambda: procs.log(node)[-3000:])
        rel, be = listener.status(": rel"), listener.status(": be")
        seconds = procs.stop(node, signal.SIGTERM)
    assert rel["reliability"] == "reliable" and be["reliability"] == "best_effort"
    assert "rel/image_raw: publisher offers reliable; resubscribing" in procs.log(node)
    assert node.returncode == 0 and seconds < 5


def test_three_cameras_share_one_model_call(ros_context, ros_domain, tmp_path, models) -> None:
    """3 cameras with a model that takes any batch (torch): frames pending together go through
    one backend call and each camera's outputs (drawn side by side) reach its own topics with
    its own header; drops from the latest-frame policy are counted; outputs without a subscriber
    are not built; label_info reaches a subscriber that joins late."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vltseg_ros.msg import LabelInfo

    checkpoint, _ = models
    names = ["front", "left", "right"]
    kinds = {"front": "rgb8", "left": "bgr8", "right": "mono8"}  # frame_id = kind: tells cameras apart
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    cameras: [front, left, right]\n    max_rate_hz: 1.0\n")
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        for name in names:
            for out in ("segmentation", "segmentation_color"):
                listener.subscribe(f"{name}/{out}", Image, f"/vltseg/{name}/{out}", best_effort())
        node = procs.start(node_command(checkpoint, camera_topic=None, params_file=params), tmp_path / "node.log")
        cams = [procs.start(camera_command(f"{name}/image_raw", kinds[name], width=1024, height=512, rate=8),
                            tmp_path / f"{name}.log", LARGE) for name in names]
        listener.wait_for(lambda: (listener.status(": model") or {}).get("pending_sets", "").count("3x") > 0
                          and int(listener.status(": model")["frames"]) >= 12, 120,
                          lambda: f"{listener.status(': model')}\n{procs.log(node)[-3000:]}")
        for cam in cams:
            procs.stop(cam)
        time.sleep(3)  # the last pending frames go through
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        listener.subscribe("label_info", LabelInfo, "/vltseg/label_info", latched)
        listener.wait_for(lambda: listener.got("label_info"), 20, "label_info for a late subscriber")
        time.sleep(1.5)
        model, cams = listener.status(": model"), [listener.status(f": {n}") for n in names]
    sets = dict(item.split("x") for item in model["pending_sets"].split())
    assert int(model["backend_calls"]) == sum(int(v) for v in sets.values())  # one call per set
    assert int(model["frames"]) == sum(int(k) * int(v) for k, v in sets.items())
    assert int(sets.get("3", 0)) >= 2 and "batched" in model["batching"]
    for cam in cams:  # ~8 fps in, <= 1 call/s: most frames replaced before the worker took them
        frames_in, out, dropped = int(cam["frames_in"]), int(cam["frames_out"]), int(cam["dropped_latest_frame"])
        assert dropped >= frames_in // 2 and frames_in == out + dropped, cam
        assert cam["outputs_drawn"] == "segmentation color", cam  # lazy: no one reads confidence
    for name in names:
        for out, encoding in (("segmentation", "mono8"), ("segmentation_color", "rgb8")):
            msgs = listener.got(f"{name}/{out}")
            assert len(msgs) >= 3, (name, out, len(msgs))
            assert {(m.header.frame_id, m.encoding, m.width, m.height) for m in msgs} == {
                (kinds[name], encoding, 1024, 512)}, (name, out)
    info = listener.got("label_info")[0]
    assert len(info.class_map) == 19 and info.class_map[0].class_name == "road"
    assert info.ignore_id == 255 and info.model_name == checkpoint.name
    assert len(info.class_colors) == 19 and 0 <= info.class_colors[0].r <= 1


def _lifecycle_client(listener):
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.srv import SetParameters

    node = listener.node
    clients = {"change": node.create_client(ChangeState, "/vltseg/change_state"),
               "get": node.create_client(GetState, "/vltseg/get_state"),
               "params": node.create_client(SetParameters, "/vltseg/set_parameters")}
    for client in clients.values():
        assert client.wait_for_service(timeout_sec=60), "lifecycle services did not appear"

    def call(name: str, request):
        future = clients[name].call_async(request)
        listener.wait_for(future.done, 60, f"{name} service reply")
        return future.result()

    return call


def test_lifecycle_transitions_and_failed_configure(ros_context, ros_domain, tmp_path, models) -> None:
    """`lib/vltseg_ros/perception_node` (what `ros2 run vltseg_ros perception_node` starts; no
    autostart) driven through its lifecycle services: a bad
    parameter and a missing model each fail configure with a one-line reason and leave the
    node unconfigured and alive; fixed, it configures, activates (frames flow), deactivates
    (they stop), cleans up and shuts down."""
    import sys

    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    _, onnx = models
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        _image_sub(listener, "mask", "/vltseg/camera/segmentation")
        executable = Path(sys.prefix) / "lib" / "vltseg_ros" / "perception_node"
        assert os.access(executable, os.X_OK), f"{executable} not installed (scripts/setup.sh)"
        cmd = [str(executable), "--ros-args",
               "-p", "qos.depth:=0", "-p", f"model:={tmp_path / 'missing.onnx'}",
               "-p", "camera.camera.topic:=cam/image_raw", "-p", "num_threads:=1"]
        node = procs.start(cmd, tmp_path / "node.log", LARGE)
        procs.start(camera_command("cam/image_raw", width=640, height=480, rate=5), tmp_path / "cam.log", LARGE)
        call = _lifecycle_client(listener)

        def state() -> str:
            return call("get", GetState.Request()).current_state.label

        def change(transition: int) -> bool:
            return call("change", ChangeState.Request(transition=Transition(id=transition))).success

        def set_param(name: str, value: str | int) -> None:
            kind = ParameterType.PARAMETER_STRING if isinstance(value, str) else ParameterType.PARAMETER_INTEGER
            pv = ParameterValue(type=kind, string_value=value) if isinstance(value, str) else \
                ParameterValue(type=kind, integer_value=value)
            result = call("params", SetParameters.Request(parameters=[Parameter(name=name, value=pv)]))
            assert result.results[0].successful, result.results[0].reason

        assert state() == "unconfigured"
        assert not change(Transition.TRANSITION_CONFIGURE) and state() == "unconfigured"
        set_param("qos.depth", 1)
        assert not change(Transition.TRANSITION_CONFIGURE) and state() == "unconfigured"
        set_param("model", str(onnx))
        assert change(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        assert change(Transition.TRANSITION_ACTIVATE) and state() == "active"
        listener.wait_for(lambda: len(listener.got("mask")) >= 3, 60, "masks while active")
        assert change(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
        time.sleep(1.0)
        count = len(listener.got("mask"))
        time.sleep(2.0)
        assert len(listener.got("mask")) == count  # inactive: no outputs
        assert change(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
        assert change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) and state() == "finalized"
        assert node.poll() is None  # alive until told to exit
        procs.stop(node)
        log = procs.log(node)
    assert node.returncode == 0
    assert "configure failed: parameter 'qos.depth'" in log
    assert f"configure failed: {tmp_path / 'missing.onnx'}: no such model file" in log
    assert re.search(r"configured: .*first inference \(warm-up\) \d+ ms", log), log[-2000:]


def test_no_frame_warning_names_the_cause(ros_context, ros_domain, tmp_path, models) -> None:
    """A publisher exists but nothing arrives: a reliable-only node facing a best-effort
    camera gets the QoS-mismatch diagnosis; once frames flow the warning clears."""
    _, onnx = models
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        node = procs.start(node_command(onnx, params={"qos.reliability": "reliable", "no_frame_timeout": "1.0"}),
                           tmp_path / "node.log")
        cam = procs.start(camera_command("cam/image_raw", width=320, height=240, rate=5), tmp_path / "cam.log")
        listener.wait_for(lambda: "QoS mismatch" in (listener.status(": camera") or {}).get("no_frame_warning", ""),
                          60, lambda: procs.log(node)[-2000:])
        status = listener.status(": camera")
        procs.stop(cam)
        procs.start(camera_command("cam/image_raw", width=320, height=240, rate=5, reliability="reliable"),
                    tmp_path / "cam2.log")
        listener.wait_for(lambda: int((listener.status(": camera") or {})["frames_out"]) > 0
                          and not listener.status(": camera")["no_frame_warning"], 60, "warning cleared")
        log = procs.log(node)
    assert status["level"] == 1 and "qos.reliability" in status["no_frame_warning"]
    assert "QoS mismatch" in log and "frames arriving again" in log


def test_large_best_effort_frames_over_default_transport_are_diagnosed(ros_context, ros_domain, tmp_path,
                                                                        models) -> None:
    """A default-config camera sending best-effort 2048x1024 frames (lost between processes
    by Fast DDS's default transports): the node names the cause and the profile to use."""
    _, onnx = models
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        procs.start(camera_command("cam/image_raw", rate=4), tmp_path / "cam.log")
        time.sleep(2)  # the camera is publishing before the node starts
        node = procs.start(node_command(onnx, params={"no_frame_timeout": "1.0"}), tmp_path / "node.log")
        listener.wait_for(lambda: listener.status(": camera") is not None, 60, lambda: procs.log(node)[-2000:])
        start = time.monotonic()
        listener.wait_for(lambda: "large best-effort" in (listener.status(": camera") or {}).get("no_frame_warning", ""),
                          60, lambda: f"{listener.status(': camera')}\n{procs.log(node)[-2000:]}")
        warning = listener.status(": camera")["no_frame_warning"]
        time.sleep(max(0.0, 8 - (time.monotonic() - start)))
        sent = 4 * (time.monotonic() - start)
        status = listener.status(": camera")
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in warning and status["reliability"] == "best_effort"
    assert int(status["frames_in"]) < sent / 2, (status["frames_in"], sent)  # most frames lost


@pytest.mark.slow
def test_domain_shift_is_flagged_at_night(ros_context, ros_domain, tmp_path, models) -> None:
    """New synthetic scenes, clear then night, through the calibrated model: clear stays in
    the source band (OK), night leaves it (WARN naming the figures), never before night."""
    _, onnx = models
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        _image_sub(listener, "mask", "/vltseg/camera/segmentation")
        node = procs.start(node_command(onnx, params={"domain_shift.window": "8"}), tmp_path / "node.log")
        procs.start(camera_command("cam/image_raw", width=1024, height=512, rate=3, seed=1000,
                                   domains="clear:24,night:24"), tmp_path / "cam.log", LARGE)
        listener.wait_for(lambda: sum(m.header.frame_id == "night" for m in listener.got("mask")) >= 16, 180,
                          lambda: procs.log(node)[-2000:])
        time.sleep(1.0)
        masks, arrays = listener.got("mask"), listener.got("diagnostics")
    night_start = min(_ns(m.header.stamp) for m in masks if m.header.frame_id == "night")
    states = [(_ns(a.header.stamp), s) for a in arrays for s in a.status if s.name.endswith(": camera")]
    values = [(t, {kv.key: kv.value for kv in s.values}, s) for t, s in states]
    before = [v["domain_shift_state"] for t, v, _ in values if t < night_start]
    after = [(v, s) for t, v, s in values if t > night_start and v["domain_shift_state"] == "shifted"]
    assert "in band" in before and "shifted" not in before, before
    assert after, "night never left the band"
    v, s = after[-1]
    assert s.level == s.WARN and s.message.startswith("domain shift") and "OUTSIDE" in v["domain_shift"]


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@pytest.mark.slow
def test_fuzzed_frames_are_counted_and_the_node_keeps_serving(ros_context, ros_domain, tmp_path, models) -> None:
    """10 000 malformed Image / CompressedImage messages over DDS (hypothesis): the node stays
    up, counts every one in bad_frames, and answers a good frame afterwards."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from ros_camera import message, scene
    from ros_fuzz import bad_compressed, bad_images, rejected

    _, onnx = models
    total, chunk = 10_000, 400
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    cameras: [raw, packed]\n"
                      "    camera:\n      raw: {topic: fuzz/image_raw}\n"
                      "      packed: {topic: fuzz/image_raw, compressed: true}\n"
                      "    qos: {reliability: reliable, depth: 2000}\n    diagnostics_period: 0.2\n")
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        _image_sub(listener, "mask", "/vltseg/raw/segmentation")
        node = procs.start(node_command(onnx, camera_topic=None, params_file=params), tmp_path / "node.log")
        reliable = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {Image: listener.node.create_publisher(Image, "fuzz/image_raw", reliable),
                CompressedImage: listener.node.create_publisher(CompressedImage, "fuzz/image_raw/compressed", reliable)}
        listener.wait_for(lambda: all(p.get_subscription_count() for p in pubs.values()), 60,
                          lambda: procs.log(node)[-2000:])
        sent = {"n": 0, "kinds": set()}

        def counted() -> int:
            raw, packed = listener.status(": raw"), listener.status(": packed")
            return int((raw or {}).get("bad_frames", 0)) + int((packed or {}).get("bad_frames", 0))

        @settings(max_examples=total, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(msg=st.one_of(bad_images(), bad_compressed()))
        def send(msg) -> None:
            assert rejected(msg)
            pubs[type(msg)].publish(msg)
            sent["n"] += 1
            if sent["n"] % chunk == 0:  # pace: never more than one chunk in flight
                listener.wait_for(lambda: counted() >= sent["n"], 120,
                                  lambda: f"bad_frames {counted()} of {sent['n']}\n{procs.log(node)[-2000:]}")

        send()
        listener.wait_for(lambda: counted() >= sent["n"], 120, lambda: f"bad_frames {counted()} of {sent['n']}")
        time.sleep(1.0)
        final = counted()
        good = message(scene(3, 640, 480)[0], "rgb8")
        pubs[Image].publish(good)
        listener.wait_for(lambda: listener.got("mask"), 60, "a mask for the good frame after the fuzz")
        assert node.poll() is None
    assert sent["n"] >= total and final == sent["n"], (final, sent["n"])
    assert listener.got("mask")[0].width == 640


def test_detections_of_a_joint_model(ros_context, ros_domain, tmp_path) -> None:
    """A seg + det model: Detection2DArray (the vltseg_ros mirror where vision_msgs is absent)
    with the boxes, scores and class names Predictor gives, and the detections image."""
    from ros_camera import message, scene

    from export_helpers import CLASS_NAMES, tiny_export
    from vltseg_core.runtime.predictor import Predictor
    from vltseg_ros.image_codec import decode
    from vltseg_ros.outputs import detection_types

    model = tiny_export("vltseg_tiny_joint")
    array_type = detection_types("auto")[0]
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        listener.subscribe("dets", array_type, "/vltseg/camera/detections", best_effort())
        _image_sub(listener, "drawn", "/vltseg/camera/detections_image")
        node = procs.start(node_command(model, params={"score_threshold": "0.1"}), tmp_path / "node.log")
        procs.start(camera_command("cam/image_raw", width=1024, height=512, rate=2), tmp_path / "cam.log", LARGE)
        listener.wait_for(lambda: listener.got("dets") and listener.got("drawn"), 90, lambda: procs.log(node)[-2000:])
    dets, drawn = listener.got("dets")[0], listener.got("drawn")[0]
    expected = Predictor(model, threads=1, score_threshold=0.1)(decode(message(scene(0, 1024, 512)[0], "rgb8")))
    assert len(dets.detections) == len(expected.boxes) > 0
    assert dets.header.frame_id == "rgb8" and (drawn.width, drawn.height, drawn.encoding) == (1024, 512, "rgb8")
    for det, box, score, label in zip(dets.detections, expected.boxes, expected.scores, expected.labels):
        x0, y0, x1, y1 = box
        assert det.bbox.center.position.x == pytest.approx((x0 + x1) / 2, abs=1e-3)
        assert det.bbox.size_y == pytest.approx(y1 - y0, abs=1e-3)
        assert det.results[0].hypothesis.class_id == CLASS_NAMES[label]
        assert det.results[0].hypothesis.score == pytest.approx(score, abs=1e-6)
