"""`vltseg report RUNS... --out DIR` on recorded runs: the paper-style cells, the freezing table
and plot, the Avg. without pooled columns, and one-line errors without partial output.

The fixtures (test/fixtures/report/) are the results of the synthetic-benchmark comparison in
docs/TRAINING.md (tiny presets, 300 iterations each), reduced to the config keys and numbers
the report reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from vltseg_core.cli import app
from vltseg_core.evaluation.paper_tables import load_run

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "report"
runner = CliRunner()


def _report(runs: list[Path], out: Path):
    return runner.invoke(app, ["report", *map(str, runs), "--out", str(out)])


def test_encoder_table_and_freezing_figure_from_recorded_runs(tmp_path: Path) -> None:
    runs = sorted(FIXTURES.glob("synth_*"))
    res = _report(runs, tmp_path / "out")
    assert res.exit_code == 0, res.output
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Cityscapes → clear, fog, night, rain, snow (mIoU %)" in md
    assert "| model | clear | fog | night | rain | snow | Avg. |" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "ViT-tiny" in line]
    assert rows[:4] == [  # pre-training order: vision-only first
        "| ImageNet-21k ViT-tiny/16 | 17.8 | 13.8 | 8.6 | 16.5 | 14.9 | 14.3 |",
        "| DINOv2 ViT-tiny/14 | 18.7 | 14.3 | 8.8 | 17.8 | 16.1 | 15.1 |",
        "| CLIP ViT-tiny/16 | 15.3 | 11.9 | 7.3 | 14.7 | 12.1 | 12.3 |",
        "| EVA-02-CLIP ViT-tiny/16 | 17.3 | 13.5 | 8.5 | 16.5 | 14.9 | 14.1 |",
    ]
    assert "| EVA-02-CLIP ViT-tiny/16, 2/4 blocks frozen | 16.8 | 12.3 | 7.9 | 15.9 | 13.0 | 13.2 |" in md
    assert "## Freezing ablation: EVA-02-CLIP ViT-tiny/16, Cityscapes → clear" in md
    assert "| 0 (full fine-tuning) | 17.3 | 13.5 | 8.5 | 16.5 | 14.9 | 14.1 |" in md
    assert "| 3 | 16.9 | 12.6 | 8.0 | 16.2 | 13.3 | 13.4 |" in md
    assert "| frozen encoder (4, eval mode) | 16.5 | 12.1 | 7.8 | 15.5 | 13.6 | 13.1 |" in md
    png = tmp_path / "out" / "freezing_cityscapes_vltseg_tiny_eva02_m2f.png"
    assert f"]({png.name})" in md and "freezing_cityscapes_vltseg_tiny_eva02_m2f.png" in res.output
    with Image.open(png) as image:
        assert image.size == (640, 420)
    cells = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert len(cells) == 9
    dino = next(c for c in cells if c["run"] == "synth_dinov2")
    assert dino["mIoU"]["night"] == pytest.approx(0.088128, abs=1e-6) and dino["setting"] == "full fine-tuning"


def test_only_models_with_several_freeze_settings_get_a_figure(tmp_path: Path) -> None:
    res = _report([FIXTURES / "synth_in21k", FIXTURES / "synth_eva02"], tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert not list((tmp_path / "out").glob("*.png"))
    assert "Freezing ablation" not in (tmp_path / "out" / "report.md").read_text()


def _acdc_run(root: Path, name: str, values: dict[str, float]) -> Path:
    """A run of configs/cityscapes_to_acdc.yaml's targets (acdc_all pooled, not averaged)."""
    run = root / name
    shutil.copytree(FIXTURES / "synth_clip", run)
    cfg = (run / "config.yaml").read_text().replace("synth_clip", name)
    cfg = cfg[: cfg.index("eval:")] + "eval:\n  targets:\n" + "".join(
        f"  - {{label: {t}, name: acdc, root: x, options: {{conditions: [{t}]}}}}\n"
        for t in ("fog", "night", "rain", "snow")) + "  - {label: acdc_all, name: acdc, root: x, in_average: false}\n"
    (run / "config.yaml").write_text(cfg)
    (run / "eval" / "metrics.json").write_text(json.dumps({name: {t: {"mIoU": v} for t, v in values.items()}}))
    return run


def test_acdc_average_leaves_the_pooled_column_out(tmp_path: Path) -> None:
    run = _acdc_run(tmp_path, "acdc_clip", {"fog": 0.7, "night": 0.5, "rain": 0.7, "snow": 0.7,
                                             "acdc_all": 0.1})
    res = _report([run], tmp_path / "out")
    assert res.exit_code == 0, res.output
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| CLIP ViT-tiny/16 | 70.0 | 50.0 | 70.0 | 70.0 | 10.0 | 65.0 |" in md
    assert "Avg. over fog, night, rain, snow." in md
    assert load_run(run).averaged == ("fog", "night", "rain", "snow")


def test_bad_runs_fail_in_one_line_without_output(tmp_path: Path) -> None:
    incomplete = tmp_path / "incomplete"
    shutil.copytree(FIXTURES / "synth_clip", incomplete)
    (incomplete / "eval" / "metrics.json").unlink()
    out = tmp_path / "out"
    res = _report([FIXTURES / "synth_eva02", incomplete], out)
    assert res.exit_code == 2 and not out.exists()
    assert "incomplete: no eval/metrics.json" in res.output and res.output.count("\n") == 1
    (incomplete / "eval" / "metrics.json").write_text("{not json")
    res = _report([incomplete], out)
    assert res.exit_code == 2 and "not valid JSON" in res.output and not out.exists()
    (incomplete / "eval" / "metrics.json").write_text("[1, 2]")
    assert "not an evaluation table" in _report([incomplete], out).output
