"""Smoke test of the backend bench on the tiny preset (the real bench is `vltseg bench`)."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from export_helpers import NUM_CLASSES, WORKDIR, tiny_checkpoint, tiny_export
from vltseg_core.runtime.bench import (BenchModel, BenchRow, bench_frames, bench_preset,
                                       busy_warning, class_agreement, format_table,
                                       profile_onnxruntime)


def test_bench_rows_and_table() -> None:
    onnx_path = tiny_export("vltseg_tiny_m2f")  # the bench reuses it (same name, seed, classes)
    rows = bench_preset("vltseg_tiny_m2f", batches=[1], kinds=["torch-fp32", "ort-fp32", "ort-int8"],
                        repeats=3, workdir=WORKDIR, num_classes=NUM_CLASSES)
    by_kind = {r.backend: r for r in rows}
    base = by_kind["torch-fp32"]
    assert base.speedup == base.speedup_min == base.speedup_max == 1.0
    for row in rows:
        assert row.ms > 0 and row.peak_mb == row.peak_mb, row  # not NaN: measured
        assert len(row.rounds) == 3 and row.ms == statistics.median(row.rounds)
        assert row.ms_min <= row.ms <= row.ms_max and row.load >= 0
        ratios = [b / r for b, r in zip(base.rounds, row.rounds)]
        assert row.speedup_min == min(ratios) and row.speedup == statistics.median(ratios)
        # random weights: the eager map has too few classes for agreement to mean anything
        assert row.agreement != row.agreement and "< 5 classes" in row.note
    table = format_table(rows)
    assert table.count("\n") == 1 + len(rows) and "ort-int8" in table
    from vltseg_core.export.onnx import parity_images

    ops = profile_onnxruntime(onnx_path, parity_images(1, 128, 256).numpy(), runs=1)
    assert ops and abs(sum(share for _, _, share in ops)) <= 1.0 + 1e-6


def test_class_agreement_counts_only_varied_reference_maps() -> None:
    ref = np.zeros((3, 4, 5), np.uint8)
    ref[1] = np.arange(20).reshape(4, 5) % 5  # five classes: counted
    ref[2] = np.arange(20).reshape(4, 5) % 4  # four: not
    got = ref.copy()
    got[0] = 9  # a constant map disagreeing everywhere is not counted either
    got[1, 0, :2] = 7
    assert class_agreement(ref, got) == pytest.approx(18 / 20)
    assert class_agreement(ref[[0, 2]], got[[0, 2]]) != class_agreement(ref[[0, 2]], got[[0, 2]])


def test_bench_runs_trained_weights_on_frames(tmp_path: Path) -> None:
    """A checkpoint's preset and classes win; frames come from a folder; exports follow weights."""
    ckpt = tiny_checkpoint("vltseg_tiny_m2f")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        img = (np.random.default_rng(i).random((60, 90, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(frames / f"f{i}.png"), img)
    batch = bench_frames(frames, 3, (32, 48))
    assert batch.shape == (3, 3, 32, 48) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], batch[2])  # two files for three slots: repeated
    rows = bench_preset(BenchModel("", checkpoint=ckpt, images_dir=frames), batches=[1],
                        kinds=["torch-fp32", "ort-fp32"], repeats=1, workdir=tmp_path)
    assert {r.weights for r in rows} == {ckpt.name} and rows[0].preset == "vltseg_tiny_m2f"
    assert any(p.name.startswith("vltseg_tiny_m2f_b1_") for p in tmp_path.glob("*.onnx"))


def test_busy_warning_flags_loaded_runs() -> None:
    cpus = os.cpu_count() or 1
    row = BenchRow("p", (1, 1), 1, "torch-fp32", load=cpus + 2.0)
    assert "load average" in busy_warning([row])
    assert busy_warning([BenchRow("p", (1, 1), 1, "torch-fp32", load=0.5)]) == ""


def test_cli_registers_export_and_bench() -> None:
    from vltseg_core.export.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """root"""

    register(app)
    runner = CliRunner()
    for command in ("export", "bench"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
    assert "--format" in runner.invoke(app, ["export", "--help"]).output


def test_bench_demo_trains_the_demo_only_when_its_checkpoint_is_missing(tmp_path: Path,
                                                                       monkeypatch) -> None:
    from vltseg_core import demo

    calls = []
    monkeypatch.setattr(demo, "ensure_synth", lambda cache, *a: tmp_path / "synth")
    monkeypatch.setattr(demo, "run_demo", lambda cache, out: calls.append(out) or
                        (out / "model_final.pt").write_bytes(b"x"))
    out = tmp_path / "runs" / "demo"
    out.mkdir(parents=True)
    assert demo.demo_checkpoint(out) == (out / "model_final.pt", tmp_path / "synth" / "leftImg8bit" / "val")
    assert calls == [out]
    demo.demo_checkpoint(out)
    assert calls == [out]  # trained once
