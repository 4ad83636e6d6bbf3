"""`vltseg-ros bag make|eval|play`: real ROS 2 bags (rosbags writes them, the independent
`mcap` + `mcap_ros2` reader checks them), offline replay through the node's frame path,
live replay through the node process over Fast DDS, damaged bags, bags without ground truth."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

from export_helpers import WORKDIR  # noqa: E402
from ros_nodes import ros_session, trained_model  # noqa: E402

SIZE = (256, 128)
RATE = 5.0
START = 1_700_000_000.0
CONDITIONS = ("clear", "night")
PER_CONDITION = 3


@pytest.fixture(scope="module")
def onnx(ros_domain) -> Path:
    return trained_model(Path(os.environ.get("VLTSEG_TEST_CACHE") or WORKDIR))[1]


def cli(*args: str) -> str | None:
    """`vltseg-ros ...` in this process; the exit message (None when it succeeded)."""
    from vltseg_ros.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return None if exc.code in (None, 0) else str(exc.code)
    return None


def make(target: Path, *extra: str, conditions: tuple[str, ...] = CONDITIONS, frames: int = PER_CONDITION) -> Path:
    err = cli("bag", "make", target, "--synth", ",".join(conditions), "--frames", frames,
              "--size", f"{SIZE[0]}x{SIZE[1]}", "--rate", RATE, "--start", START, *extra)
    assert err is None, err
    return target


def evaluate(bag: Path, model: Path, out: Path, *extra: str) -> tuple[dict, str | None]:
    err = cli("bag", "eval", bag, "--model", model, "--out", out, "--threads", 1, *extra)
    mode = "live" if "--live" in extra else "offline"
    path = out / f"{mode}.json"
    return (json.loads(path.read_text()) if path.is_file() else {}), err


def expected_miou(model: Path, conditions=CONDITIONS, frames: int = PER_CONDITION) -> dict[str, float]:
    """mIoU per condition computed directly: `sequence_frame` -> Predictor -> ConfusionMatrix."""
    import torch

    from vltseg_core.data.synth import sequence_frame
    from vltseg_core.evaluation.metrics import ConfusionMatrix
    from vltseg_core.runtime.predictor import Predictor

    predictor = Predictor(model, threads=1)
    out = {}
    for cond in conditions:
        matrix = ConfusionMatrix(predictor.metadata.num_classes)
        for i in range(frames):
            rgb, gt = sequence_frame(cond, i, SIZE, 0)
            matrix.update(torch.from_numpy(predictor.predict([rgb])[0].mask), torch.from_numpy(gt))
        out[cond] = matrix.compute().mIoU
    return out


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial-" in p.name]


# ---- make -> eval round trips ----

@pytest.mark.parametrize("kind", ["mcap_dir", "sqlite3_dir", "bare_mcap"])
def test_make_eval_round_trip(tmp_path, onnx, kind) -> None:
    target = {"mcap_dir": tmp_path / "drive", "sqlite3_dir": tmp_path / "drive",
              "bare_mcap": tmp_path / "drive.mcap"}[kind]
    make(target, *(["--storage", "sqlite3"] if kind == "sqlite3_dir" else []))
    if kind == "bare_mcap":
        assert target.is_file()
    else:
        assert (target / "metadata.yaml").is_file()
        suffix = ".db3" if kind == "sqlite3_dir" else ".mcap"
        assert len(list(target.glob(f"*{suffix}"))) == 1
    report, err = evaluate(target, onnx, tmp_path / "eval")
    assert err is None, err
    s = report["summary"]
    assert s["frames"] == s["frames_scored"] == len(CONDITIONS) * PER_CONDITION
    assert [row["segment"] for row in s["segments"]] == list(CONDITIONS)
    want = expected_miou(onnx)
    for row in s["segments"]:
        assert row["mIoU"] == pytest.approx(want[row["segment"]], abs=1e-9)
        assert row["frames"] == PER_CONDITION
    assert s["model_latency_ms"]["n"] == s["frames"] and s["model_latency_ms"]["p50"] > 0
    for name in ("offline.md", "offline_per_class_iou.png", "offline_timeline.png", "offline_latency.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    assert "clear" in (tmp_path / "eval" / "offline.md").read_text()
    assert not leftovers(tmp_path)


def read_ros2_messages(path: str):
    """The independent reader: `mcap` with the `mcap_ros2` decoder (schemas from the file)."""
    from types import SimpleNamespace

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            yield SimpleNamespace(channel=channel, log_time_ns=message.log_time, ros_msg=decoded)


def test_mcap_reader_agrees_on_counts_and_stamps(tmp_path, onnx) -> None:

    bag = make(tmp_path / "drive.mcap")
    _, err = evaluate(bag, onnx, tmp_path / "eval")
    assert err is None, err
    n = len(CONDITIONS) * PER_CONDITION
    want = [int(START * 1e9) + i * int(1e9 / RATE) for i in range(n)]
    stamps: dict[str, list[int]] = {}
    for m in read_ros2_messages(str(bag)):
        stamp = m.ros_msg.header.stamp if hasattr(m.ros_msg, "header") else m.ros_msg.stamp
        assert m.log_time_ns == stamp.sec * 1_000_000_000 + stamp.nanosec
        stamps.setdefault(m.channel.topic, []).append(m.log_time_ns)
    assert stamps == {"/camera/image_raw": want, "/camera/ground_truth": want, "/camera/domain": want,
                      "/camera/ground_truth/detections": want}
    out_bag = next((tmp_path / "eval" / "offline_bag").glob("*.mcap"))
    counts: dict[str, int] = {}
    for m in read_ros2_messages(str(out_bag)):
        counts[m.channel.topic] = counts.get(m.channel.topic, 0) + 1
        if m.channel.topic == "/vltseg/camera/segmentation":
            assert (m.ros_msg.encoding, m.ros_msg.width, m.ros_msg.height) == ("mono8", *SIZE)
    for topic in ("/camera/image_raw", "/camera/ground_truth", "/vltseg/camera/segmentation",
                  "/vltseg/camera/segmentation_color", "/vltseg/camera/confidence", "/diagnostics"):
        assert counts.get(topic) == n, (topic, counts)
    assert counts["/vltseg/label_info"] == 1


def test_compressed_and_other_encodings_match_raw(tmp_path, onnx) -> None:
    raw, _ = evaluate(make(tmp_path / "raw.mcap"), onnx, tmp_path / "e_raw")
    png, _ = evaluate(make(tmp_path / "png.mcap", "--compressed", "png"), onnx, tmp_path / "e_png")
    bgr, _ = evaluate(make(tmp_path / "bgr.mcap", "--encoding", "bgr8"), onnx, tmp_path / "e_bgr")
    jpeg, _ = evaluate(make(tmp_path / "jpeg.mcap", "--compressed", "jpeg", "--quality", "95"), onnx,
                       tmp_path / "e_jpeg")
    assert png["topics"]["image"] == "/camera/image_raw/compressed"
    assert png["summary"]["mIoU"] == raw["summary"]["mIoU"] == bgr["summary"]["mIoU"]  # lossless
    assert jpeg["summary"]["mIoU"] == pytest.approx(raw["summary"]["mIoU"], abs=0.03)
    assert jpeg["summary"]["frames_scored"] == raw["summary"]["frames_scored"]


def test_bag_without_ground_truth_reports_latency_confidence_and_shift(tmp_path, onnx) -> None:
    # the monitor's window fills with night frames; at the frame size the band was calibrated at
    bag = make(tmp_path / "nogt", "--no-gt", "--size", "512x256", conditions=("clear", "night"), frames=16)
    report, err = evaluate(bag, onnx, tmp_path / "eval", "--window", "4")
    assert err is None, err
    s = report["summary"]
    assert report["topics"]["gt"] is None and s["mIoU"] is None and s["frames_scored"] == 0
    assert s["frames"] == 32 and s["model_latency_ms"]["n"] == 32
    assert s["domain_shift_band"] is not None
    rows = {row["segment"]: row for row in s["segments"]}
    assert all(row["mean_confidence"] > 0 for row in rows.values())
    assert rows["night"]["shift_checked"] > 0
    assert rows["night"]["shift_warnings"] > rows["clear"]["shift_warnings"]  # the band flags the night
    assert (tmp_path / "eval" / "offline_timeline.png").is_file()


def test_topics_by_name_and_errors_are_one_line(tmp_path, onnx) -> None:
    bag = make(tmp_path / "drive.mcap")
    report, err = evaluate(bag, onnx, tmp_path / "eval", "--image-topic", "/camera/image_raw",
                           "--gt-topic", "/camera/ground_truth")
    assert err is None and report["summary"]["frames_scored"] == 6
    from vltseg_ros.bag.read import Bag

    _, err = evaluate(bag, onnx, tmp_path / "small", "--outputs", "segmentation")
    with Bag(tmp_path / "small" / "offline_bag") as small:
        assert small.counts["/vltseg/camera/segmentation"] == 6 and "/vltseg/camera/confidence" not in small.counts
    for args, words in (((tmp_path / "missing.mcap",), "no such bag"),
                        ((bag, "--image-topic", "/nope"), "no topic /nope"),
                        ((tmp_path / "model.txt",), "cannot open")):
        (tmp_path / "model.txt").write_text("not a bag")
        _, err = evaluate(args[0], onnx, tmp_path / "bad", *args[1:])
        assert err is not None and words in err and "\n" not in err, err
    _, err = evaluate(bag, tmp_path / "missing.onnx", tmp_path / "bad")
    assert "no such model" in err
    _, err = evaluate(bag, onnx, tmp_path / "bad", "--outputs", "masks")
    assert "unknown output(s) masks" in err
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    for mode in ((), ("--live",)):  # live: refused before any node starts, not after a time-out
        _, err = evaluate(bag, tmp_path / "broken.onnx", tmp_path / "bad", *mode)
        assert err is not None and "cannot load model" in err and "\n" not in err, err
    assert not (tmp_path / "bad").exists()


def test_box_truth_is_written_and_scored(tmp_path) -> None:
    from export_helpers import tiny_export

    from vltseg_ros.bag.read import Bag

    bag = make(tmp_path / "drive.mcap")
    with Bag(bag) as reader:
        topics = reader.find_topics()
        assert topics.gt_boxes == "/camera/ground_truth/detections"
        assert reader.counts[topics.gt_boxes] == 6
    report, err = evaluate(bag, tiny_export("vltseg_tiny_det"), tmp_path / "eval")
    assert err is None, err
    det = report["summary"]["detection"]
    assert det["frames"] == 6  # a detection model: every frame paired with its box truth
    assert det["gt_boxes_of_unknown_classes"] > 0  # the random model's classes are thing0.., not Cityscapes'


def test_scorer_detection_ap() -> None:
    from vltseg_ros.bag.score import Scorer

    truth = np.array([[10, 10, 50, 40], [60, 20, 90, 70]], np.float32)
    labels = np.array([0, 1], np.int64)
    perfect, shifted = Scorer(("a", "b")), Scorer(("a", "b"))
    for scorer, boxes in ((perfect, truth), (shifted, truth + 12)):
        for stamp in (1, 2):
            scorer.gt_boxes(stamp, truth, labels)
            scorer.pred_boxes(stamp, boxes, np.array([0.9, 0.8], np.float32), labels, (100, 100))
        scorer.pred_boxes(3, truth, np.ones(2, np.float32), labels, (100, 100))  # no truth: not scored
    assert perfect.detection()["AP"] == pytest.approx(100.0) and perfect.detection()["frames"] == 2
    assert shifted.detection()["AP50"] < 100.0


# ---- damaged bags ----

def test_truncated_and_corrupt_mcap_give_partial_report(tmp_path, onnx) -> None:
    bag = make(tmp_path / "drive.mcap", conditions=("clear", "fog", "night"), frames=10)
    data = bag.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    garbled = tmp_path / "garbled.mcap"
    garbled.write_bytes(data[: len(data) // 2] + bytes(np.random.default_rng(0).integers(0, 256, len(data) - len(data) // 2,
                                                                                         dtype=np.uint8)))
    for damaged in (cut, garbled):
        out = tmp_path / f"eval_{damaged.stem}"
        report, err = evaluate(damaged, onnx, out)
        assert err is not None and "\n" not in err and "breaks after" in err and "last good" in err, err
        assert report["partial"] and "PARTIAL" in (out / "offline.md").read_text()
        assert 0 < report["summary"]["frames"] < 30
        assert report["summary"]["frames_scored"] == report["summary"]["frames"]
        meta = (out / "offline_bag" / "metadata.yaml").read_text()  # a complete bag of what was read
        assert "vltseg.partial" in meta
    assert not leftovers(tmp_path)


def test_truncated_sqlite_is_one_line_and_leaves_nothing(tmp_path, onnx) -> None:
    bag = make(tmp_path / "drive", "--storage", "sqlite3")
    db = next(bag.glob("*.db3"))
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    report, err = evaluate(bag, onnx, tmp_path / "eval")
    assert err is not None and "\n" not in err and str(bag) in err, err
    assert not report or report["partial"]
    assert not leftovers(tmp_path)


def test_make_from_a_dataset_and_a_video(tmp_path, onnx) -> None:
    import cv2

    from train_helpers import synth_root_at

    root = synth_root_at(tmp_path / "synth", 10)
    assert cli("bag", "make", tmp_path / "ds.mcap", "--dataset", "synth", "--root", root, "--frames", 2,
               "--conditions", "fog,night") is None
    report, err = evaluate(tmp_path / "ds.mcap", onnx, tmp_path / "eval")
    assert err is None, err
    rows = report["summary"]["segments"]
    assert [r["segment"] for r in rows] == ["clear", "fog", "night"] and all(r["frames_scored"] == 2 for r in rows)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(5):
        writer.write(np.full((64, 96, 3), 30 * i, np.uint8))
    writer.release()
    assert cli("bag", "make", tmp_path / "clip", "--video", video, "--storage", "sqlite3") is None
    from vltseg_ros.bag.read import Bag

    with Bag(tmp_path / "clip") as bag:
        assert bag.counts == {"/camera/image_raw": 5}
    assert "cannot open video" in cli("bag", "make", tmp_path / "x.mcap", "--video", tmp_path / "none.avi")


def test_make_is_atomic(tmp_path) -> None:
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((64, 96, 3), 40 * i, np.uint8))
    (folder / "002b.png").write_bytes(b"not a png")  # sorted between the third and fourth frame
    err = cli("bag", "make", tmp_path / "out.mcap", "--images", folder)
    assert err is not None and "\n" not in err
    assert not (tmp_path / "out.mcap").exists() and not leftovers(tmp_path)
    (folder / "002b.png").unlink()
    assert cli("bag", "make", tmp_path / "out.mcap", "--images", folder) is None
    assert cli("bag", "make", tmp_path / "out.mcap", "--images", folder) is not None  # exists: refused
    from vltseg_ros.bag.read import Bag

    with Bag(tmp_path / "out.mcap") as bag:
        assert bag.counts == {"/camera/image_raw": 4}


# ---- live ----

@pytest.mark.slow
@pytest.mark.parametrize("variant", ["raw_sim_time", "png_compressed"])
def test_live_agrees_with_offline_on_common_frames(tmp_path, onnx, ros_domain, variant) -> None:
    extra = ("--compressed", "png") if variant == "png_compressed" else ()
    bag = make(tmp_path / "drive.mcap", *extra, conditions=("clear", "fog"), frames=6)
    offline, err = evaluate(bag, onnx, tmp_path / "eval")
    assert err is None, err
    clock = ("--clock",) if variant == "raw_sim_time" else ()
    live, err = evaluate(bag, onnx, tmp_path / "eval", "--live", "--rate", "0.5", *clock)
    assert err is None, err
    frames = live["live"]
    assert frames["published"] == 12 and frames["results"] + frames["dropped"] == 12
    assert frames["results"] >= 6, frames
    assert live["summary"]["e2e_latency_ms"]["n"] == frames["results"]
    assert live["summary"]["e2e_latency_ms"]["p50"] > 0 and frames["result_age_ms"]["n"] > 0
    off = {r["stamp_ns"]: r for r in json.loads((tmp_path / "eval" / "offline_timeline.json").read_text())}
    on = {r["stamp_ns"]: r for r in json.loads((tmp_path / "eval" / "live_timeline.json").read_text())}
    common = sorted(set(off) & set(on))
    assert len(common) == frames["results"]
    for stamp in common:
        assert on[stamp]["mIoU"] == pytest.approx(off[stamp]["mIoU"], abs=1e-9)
        assert on[stamp]["segment"] == off[stamp]["segment"]
        assert on[stamp]["mean_confidence"] == pytest.approx(off[stamp]["mean_confidence"], abs=1e-5)
    out_bag = tmp_path / "eval" / "live_bag"
    from vltseg_ros.bag.read import Bag

    with Bag(out_bag) as replay:
        assert replay.counts["/vltseg/camera/segmentation"] == frames["results"]
        assert replay.counts[live["topics"]["image"]] == 12
        assert replay.reader.start_time == int(START * 1e9)  # plays beside the input bag


def test_play_publishes_the_bag(tmp_path, ros_context, ros_domain) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    bag = make(tmp_path / "drive.mcap")
    with ros_session(ros_context, ros_domain, tmp_path) as (procs, listener):
        listener.subscribe("image", Image, "/camera/image_raw", QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
        cmd = [Path(sys.executable).parent / "vltseg-ros", "bag", "play", bag, "--rate", "4", "--loop"]
        proc = procs.start(cmd, tmp_path / "play.log")
        listener.wait_for(lambda: len(listener.got("image")) >= 8, 60, lambda: procs.log(proc))
        stamps = {m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in listener.got("image")}
        assert stamps <= {int(START * 1e9) + i * int(1e9 / RATE) for i in range(6)}
        procs.stop(proc)
        assert proc.returncode is not None
