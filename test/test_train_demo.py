"""`vltseg demo` end to end: generate, train the demo config on `clear`, evaluate all domains.

The fixed schedule (ITERS iterations of demo.yaml on a 60-frame benchmark, deterministic
mode) reached source mIoU MEASURED on the 2-core dev machine (73 s of training, alone; the
demo recipe H1 of issue 13); the test asserts a margin below it and a multiple of the
all-road predictor's mIoU on the same images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from train_helpers import vltseg

ITERS = 300
MEASURED = 0.269  # clear mIoU of this schedule here (targets 0.08-0.25); the slower p8 recipe
# on version-3 data 0.275, with 16-pixel patches 0.226, the recipe before issue 13 0.156
THRESHOLD = 0.14  # margin for other CPUs/BLAS builds; chance (all-road) is 0.023
DOMAINS = ("clear", "fog", "night", "rain", "snow")


def _all_road_miou(root: Path) -> float:
    """mIoU of predicting 'road' everywhere on the clear val labels (chance-level reference)."""
    import cv2

    hist = np.zeros(256, np.int64)
    for path in (root / "gtFine" / "val").rglob("*_labelTrainIds.png"):
        hist += np.bincount(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ravel(), minlength=256)
    present = int((hist[:19] > 0).sum())
    return float(hist[0] / hist[:19].sum()) / present


@pytest.mark.slow
def test_demo_learns_the_source_and_reports_every_domain(tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "run"
    run = vltseg("demo", "--cache", str(cache), "--frames", "60", "--out", str(out),
                 f"train.iters={ITERS}", "train.checkpoint_every=1000", "train.tensorboard=false")
    table = json.loads((out / "eval" / "metrics.json").read_text())
    results = next(iter(table.values()))
    assert tuple(results) == DOMAINS
    for domain in DOMAINS:
        assert results[domain]["images"] > 0 and results[domain]["mIoU"] is not None
        assert domain in run.stdout  # the printed table
    assert (out / "eval" / "table.md").is_file()
    assert any((out / "eval").rglob("per_class_iou.png"))
    for domain in DOMAINS:  # image | prediction | ground truth panels next to the tables
        assert len(list((out / "eval" / "demo" / domain / "overlays").glob("*.png"))) == 3
    # stdout is a pipe here: plain progress lines at train.log_every, not a live bar
    assert re.search(rf"^train {ITERS}/{ITERS}  loss \d+\.\d{{4}}  lr .* it/s  eta 0:00:00$",
                     run.stdout, re.M)
    assert len(re.findall(r"^train \d+/", run.stdout, re.M)) == ITERS // 10
    assert re.search(r"^eval night \d+/\d+  [\d.]+ img/s", run.stdout, re.M)
    root = next(cache.glob("synth-*"))
    chance = _all_road_miou(root)
    clear = results["clear"]["mIoU"]
    assert clear >= THRESHOLD, f"clear mIoU {clear:.3f} < {THRESHOLD} (measured {MEASURED})"
    assert clear >= 3 * chance, f"clear mIoU {clear:.3f} is not well above chance {chance:.3f}"

    # the bench on these trained weights and frames: class maps varied enough to compare
    bench = tmp_path / "bench.json"
    vltseg("bench", "--checkpoint", str(out / "model_final.pt"), "--images",
           str(root / "leftImg8bit" / "val"), "--batches", "2", "--repeats", "1",
           "--backends", "torch-fp32,ort-fp32", "--workdir", str(tmp_path), "--json", str(bench))
    rows = {r["backend"]: r for r in json.loads(bench.read_text())}
    assert rows["ort-fp32"]["weights"] == "model_final.pt"
    assert rows["ort-fp32"]["agreement"] >= 0.999, rows["ort-fp32"]
