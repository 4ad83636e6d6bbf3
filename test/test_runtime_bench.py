"""Smoke test of the backend bench on the tiny preset (the real bench is `vltseg bench`)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from export_helpers import NUM_CLASSES, WORKDIR, tiny_export
from vltseg_core.runtime.bench import bench_preset, format_table, profile_onnxruntime


def test_bench_rows_and_table() -> None:
    onnx_path = tiny_export("vltseg_tiny_m2f")  # the bench reuses it (same name, seed, classes)
    rows = bench_preset("vltseg_tiny_m2f", batches=[1], kinds=["torch-fp32", "ort-fp32", "ort-int8"],
                        repeats=1, workdir=WORKDIR, num_classes=NUM_CLASSES)
    by_kind = {r.backend: r for r in rows}
    assert by_kind["torch-fp32"].speedup == 1.0
    assert by_kind["ort-fp32"].agreement >= 0.999  # the same weights as the torch rows
    for row in rows:
        assert row.ms > 0 and row.peak_mb == row.peak_mb, row  # not NaN: measured
    table = format_table(rows)
    assert table.count("\n") == 1 + len(rows) and "ort-int8" in table
    from vltseg_core.export.onnx import parity_images

    ops = profile_onnxruntime(onnx_path, parity_images(1, 128, 256).numpy(), runs=1)
    assert ops and abs(sum(share for _, _, share in ops)) <= 1.0 + 1e-6


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
