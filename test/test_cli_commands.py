"""The `vltseg` sub-commands, in process (typer's runner): help, errors, predict, eval, data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from train_helpers import DEMO, synth_root
from vltseg_core.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny segmentation model saved in the checkpoint format."""
    from vltseg_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(build_model("vltseg_tiny_m2f", 19), path)
    return path


def test_help_lists_every_command() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in ("info", "train", "eval", "score", "predict", "report", "data", "models", "demo"):
        assert name in res.output
    assert "synth" in runner.invoke(app, ["data", "--help"]).output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.iterz=3"], "unknown config key 'train.iterz' (did you mean 'train.iters'?)"),
        (["train.lr=fast"], "train.lr: expected float, got 'fast'"),
        (["data.batch_size=3", "train.accum_steps=2"], "data.batch_size=3 is not divisible"),
    ],
)
def test_train_config_errors_are_one_line(overrides: list[str], message: str,
                                          tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--config", str(DEMO), f"train.out_dir={tmp_path}",
                              *overrides])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_missing_config_file(tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval", "--config", str(tmp_path / "x.yaml"), "--checkpoint", "c.pt"])
    assert res.exit_code == 2 and "config file not found" in res.output


def test_predict_writes_labels_colours_overlays(tiny_checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 72), (64, 64)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["predict", str(images), "--checkpoint", str(tiny_checkpoint),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    for i, (h, w) in enumerate([(40, 72), (64, 64)]):
        label = np.asarray(Image.open(out / "labels" / f"im{i}.png"))
        assert label.shape == (h, w) and label.max() < 19
        assert np.asarray(Image.open(out / "color" / f"im{i}.png")).shape == (h, w, 3)
        assert np.asarray(Image.open(out / "overlay" / f"im{i}.png")).shape == (h, w, 3)
    ids = tmp_path / "ids"
    res = runner.invoke(app, ["predict", str(images / "im0.png"), "--checkpoint",
                              str(tiny_checkpoint), "--out", str(ids), "--label-ids"])
    assert res.exit_code == 0, res.output
    from vltseg_core.data.labels import train_to_label_lut

    train = np.asarray(Image.open(out / "labels" / "im0.png"))
    assert np.array_equal(np.asarray(Image.open(ids / "labels" / "im0.png")),
                          train_to_label_lut()[train])


def test_predict_missing_input_is_clear(tiny_checkpoint: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["predict", str(tmp_path / "nope.png"), "--checkpoint",
                              str(tiny_checkpoint), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no such image or folder" in res.output


@pytest.mark.slow
def test_eval_then_score_agree(tiny_checkpoint: Path, tmp_path: Path,
                               tmp_path_factory: pytest.TempPathFactory,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval` on a target and `score` on `predict`'s label PNGs give the same mIoU."""
    root = synth_root(tmp_path_factory)
    monkeypatch.setenv("VLTSEG_SYNTH", str(root))
    out = tmp_path / "eval"
    res = runner.invoke(app, ["eval", "--config", str(DEMO), "--checkpoint", str(tiny_checkpoint),
                              "--targets", "clear,fog", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = json.loads((out / "metrics.json").read_text())
    row = table["ckpt0/tiny"] if "ckpt0/tiny" in table else next(iter(table.values()))
    assert set(row) == {"clear", "fog"}
    assert (out / "table.md").read_text().count("|") > 4
    assert any(out.rglob("per_class_iou.png")) and any(out.rglob("confusion_matrix.png"))
    assert re.search(r"^eval fog 4/4  [\d.]+ img/s  eta 0:00:00$", res.output, re.M)  # not a TTY
    _check_overlays(out, root)

    pred = tmp_path / "pred"
    val = sorted((root / "leftImg8bit" / "val").rglob("*.png"))
    res = runner.invoke(app, ["predict", *map(str, val), "--checkpoint", str(tiny_checkpoint),
                              "--config", str(DEMO), "--out", str(pred)])  # same inference
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["score", str(pred / "labels"), "--dataset", "cityscapes",
                              "--root", str(root), "--split", "val", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert re.search(r"^scoring 4/4  [\d.]+ img/s  eta 0:00:00$", res.output, re.M)
    scored = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert scored["mIoU"] == pytest.approx(row["clear"]["mIoU"], abs=1e-9)


def _check_overlays(out: Path, root: Path) -> None:
    """eval.overlays (3) panels per target: image | prediction over it | ground-truth colours."""
    from vltseg_core.data.datasets import build_dataset
    from vltseg_core.evaluation.overlay import colorize

    for target in ("clear", "fog"):
        panels = sorted((out / "ckpt0_tiny" / target / "overlays").glob("*.png"))
        assert len(panels) == 3, panels
    ds = build_dataset("cityscapes", root, "val")
    image, t, meta = ds[0]
    first = sorted((out / "ckpt0_tiny" / "clear" / "overlays").glob("*.png"))[0]
    assert first.name == f"00_{meta['name']}.png"
    panel = np.asarray(Image.open(first).convert("RGB"))
    h, w = image.shape[:2]
    assert panel.shape == (h, 3 * w + 8, 3)
    np.testing.assert_array_equal(panel[:, :w], image)
    np.testing.assert_array_equal(panel[:, 2 * w + 8:], colorize(t["sem_seg"].numpy().astype(np.uint8)))
    assert not np.array_equal(panel[:, w + 4:2 * w + 4], image)  # the prediction is drawn over it


def test_data_synth_and_models(tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "s"), "--n", "5",
                              "--width", "128", "--height", "64"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "s" / "synth.json").read_text())
    assert summary["counts"]["clear/train"] == 4 and summary["counts"]["fog/val"] == 1
    res = runner.invoke(app, ["models", "--preset", "vltseg_tiny_m2f"])
    assert res.exit_code == 0, res.output
    assert "vltseg_tiny_m2f" in res.output and "GFLOPs" in res.output
