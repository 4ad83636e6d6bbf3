"""``score_folder`` against cityscapesscripts' own evaluation on generated files, plus the
matching rules, format detection and the report writers."""

from __future__ import annotations

import copy
import json
import math

import cv2
import numpy as np
import pytest

from vltseg_core.data.io import DatasetError
from vltseg_core.data.labels import class_names, cityscapes_lut, train_to_label_lut
from vltseg_core.data.synth import generate
from vltseg_core.evaluation.report import multi_target_table
from vltseg_core.evaluation.score import score_folder, score_main

EVAL_IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33])


@pytest.fixture(scope="module")
def gt_root(tmp_path_factory):
    """Synthetic Cityscapes val whose GT also has ignored ids (unlabeled 0, parking 9)."""
    root = tmp_path_factory.mktemp("cs")
    generate(root, n=12, seed=1, size=(96, 48), domains=("clear",), split_fractions=(0, 1),
             workers=0, progress=False)
    for i, p in enumerate(sorted((root / "gtFine" / "val").rglob("*_labelIds.png"))):
        ids = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        ids[:3] = 0
        ids[-4:, i * 5 : i * 5 + 20] = 9
        cv2.imwrite(str(p), ids)
        cv2.imwrite(str(p).replace("labelIds", "labelTrainIds"), cityscapes_lut()[ids])
    return root


def _gt_files(root):
    return sorted((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))


def _write_predictions(root, out, fmt="labelIds", seed=0):
    """Noisy copies of the GT: random eval ids, ignored ids (0, 9), a car->truck swap."""
    rng = np.random.default_rng(seed)
    for p in _gt_files(root):
        ids = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        noise = rng.random(ids.shape)
        pred = ids.copy()
        pred[noise < 0.15] = rng.choice(EVAL_IDS, int((noise < 0.15).sum()))
        pred[noise > 0.97] = rng.choice([0, 9], int((noise > 0.97).sum()))
        pred[(ids == 26) & (noise < 0.5)] = 27
        pred[ids == 0] = 7  # predictions on ignored GT must not count
        core = p.name[: -len("_gtFine_labelIds.png")]
        dest = out / p.parent.name / f"{core}_leftImg8bit_pred.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dest), pred if fmt == "labelIds" else cityscapes_lut()[pred])
    return out


def _cityscapes_reference(pred_dir, root, tmp_path):
    """Run cityscapesscripts' evaluateImgLists on the same files (pixel-level, no nIoU:
    its instance and pixel-accuracy paths call np.in1d, which numpy >= 2.4 removed)."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs

    args = copy.copy(cs.args)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    args.JSONOutput = True
    args.exportFile = str(tmp_path / "cs_result.json")
    args.predictionPath, args.predictionWalk = str(pred_dir), None
    gts = [str(p) for p in _gt_files(root)]
    preds = [cs.getPrediction(args, g) for g in gts]
    cs.evaluateImgLists(preds, gts, args)
    return json.loads((tmp_path / "cs_result.json").read_text())


@pytest.mark.parametrize("fmt", ["labelIds", "trainIds"])
def test_score_equals_cityscapesscripts(gt_root, tmp_path, fmt):
    lab_dir = _write_predictions(gt_root, tmp_path / "pred_labelIds", "labelIds")
    ref = _cityscapes_reference(lab_dir, gt_root, tmp_path)
    pred_dir = lab_dir if fmt == "labelIds" else _write_predictions(gt_root, tmp_path / "p", fmt)
    res = score_folder(pred_dir, "cityscapes", gt_root, "val")
    assert res.pred_format == fmt and res.n_images == 12
    assert res.metrics["mIoU"] == pytest.approx(ref["averageScoreClasses"], abs=1e-12)
    assert 0.3 < res.metrics["mIoU"] < 0.95  # a real, non-trivial comparison
    for name in class_names():
        ours, theirs = res.metrics["IoU"][name], ref["classScores"][name]
        assert (ours is None and math.isnan(theirs)) or ours == pytest.approx(theirs, abs=1e-12)


def test_explicit_format_flag_and_train_to_label(gt_root, tmp_path):
    pred = _write_predictions(gt_root, tmp_path / "t", "trainIds")
    a = score_folder(pred, "cityscapes", gt_root, "val", pred_format="trainIds")
    # the same predictions converted back to label ids score identically
    for p in pred.rglob("*.png"):
        cv2.imwrite(str(p), train_to_label_lut()[cv2.imread(str(p), cv2.IMREAD_UNCHANGED)])
    b = score_folder(pred, "cityscapes", gt_root, "val", pred_format="labelIds")
    assert a.metrics["mIoU"] == pytest.approx(b.metrics["mIoU"])


def test_missing_duplicate_and_mismatched_predictions(gt_root, tmp_path):
    pred = _write_predictions(gt_root, tmp_path / "m")
    victim = sorted(pred.rglob("*.png"))[3]
    victim.unlink()
    core = "_".join(victim.name.split("_")[:3])
    with pytest.raises(DatasetError, match=rf"no prediction for ground truth '{core}'"):
        score_folder(pred, "cityscapes", gt_root, "val")
    cv2.imwrite(str(victim), np.zeros((48, 96), np.uint8))
    cv2.imwrite(str(victim.parent / f"{core}_other.png"), np.zeros((48, 96), np.uint8))
    with pytest.raises(DatasetError, match=rf"2 predictions .* '{core}'"):
        score_folder(pred, "cityscapes", gt_root, "val")
    (victim.parent / f"{core}_other.png").unlink()
    cv2.imwrite(str(victim), np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"size mismatch: prediction .* is \(10, 10\)"):
        score_folder(pred, "cityscapes", gt_root, "val")


def test_prefix_matching_is_exact_on_name_boundaries(tmp_path):
    from vltseg_core.evaluation.score import index_predictions, match_predictions

    for name in ("00001.png", "000010.png", "aachen_000001_000019_pred.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((2, 2), np.uint8))
    idx = index_predictions(tmp_path)
    assert [p.name for p in match_predictions(idx, ["00001", "000010"])] == ["00001.png",
                                                                             "000010.png"]
    assert match_predictions(idx, ["aachen_000001_000019"])[0].name.endswith("_pred.png")


def test_score_main_writes_report(gt_root, tmp_path):
    pred = _write_predictions(gt_root, tmp_path / "r")
    m = score_main(pred, "cityscapes", gt_root, "val", tmp_path / "out")
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["mIoU"] == pytest.approx(m["mIoU"]) and len(data["confusion_matrix"]) == 19
    assert data["pred_format"] == "labelIds"
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert f"| {100 * m['mIoU']:.1f} |" in md and "| traffic light |" in md
    for png in ("per_class_iou.png", "confusion_matrix.png"):
        img = cv2.imread(str(tmp_path / "out" / png))
        assert img is not None and img.shape[0] > 100 and img.std() > 5


def test_multi_target_table():
    rows = {"ckpt_a": {"fog": 0.5, "night": 0.25, "snow": 0.4},
            "ckpt_b": {"fog": 0.6, "night": None, "snow": 0.5}}
    table = multi_target_table(rows, ["fog", "night", "snow"])
    lines = table.strip().splitlines()
    assert lines[0] == "| model | fog | night | snow | Avg. |"
    assert lines[2] == "| ckpt_a | 50.0 | 25.0 | 40.0 | 38.3 |"
    assert lines[3] == "| ckpt_b | 60.0 | – | 50.0 | – |"
