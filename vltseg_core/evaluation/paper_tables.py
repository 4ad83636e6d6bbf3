"""``vltseg report RUNS... --out DIR``: the paper's tables and its freezing figure from runs.

A run is a training output folder as ``vltseg train`` leaves it: ``config.yaml`` (the
resolved config) and ``eval/metrics.json`` (the final evaluation). Runs are grouped into one
table per source dataset and target columns (GTA5 -> Cityscapes, BDD, Mapillary;
Cityscapes -> ACDC fog, night, rain, snow...): rows = pre-training, architecture and freeze
setting, columns = targets + Avg. over the config's averaged targets (a pooled column such
as ACDC 'all' is shown but not averaged). Runs of one model that differ only in freezing
(``model.options.freeze_blocks`` / ``frozen_encoder``) also give the freezing table and plot:
target mIoU against frozen blocks, with full fine-tuning as a dashed line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vltseg_core.evaluation.report import mean_or_none, new_figure, pct, write_json

SOURCE_NAMES = {"gta5": "GTA5", "synthia": "SYNTHIA", "cityscapes": "Cityscapes", "acdc": "ACDC",
                "bdd100k": "BDD100K", "mapillary": "Mapillary"}
PRETRAINING_ORDER = ("ImageNet-21k", "DINOv2", "CLIP", "EVA-02-CLIP")


class ReportError(ValueError):
    """A run folder cannot be read into the tables (one line naming the folder)."""


@dataclass(frozen=True)
class RunResult:
    """One run's final evaluation and what the tables need to know about its config."""

    name: str
    source: str  # training dataset name
    targets: tuple[str, ...]
    averaged: tuple[str, ...]
    preset: str
    pretraining: str
    arch: str
    freeze_blocks: int
    frozen: bool
    depth: int  # encoder blocks in use (the most that can be frozen)
    miou: dict[str, float | None]

    @property
    def average(self) -> float | None:
        return mean_or_none([self.miou.get(t) for t in self.averaged])

    @property
    def model(self) -> str:
        return f"{self.pretraining} {self.arch}"

    @property
    def frozen_blocks(self) -> int:
        return self.depth if self.frozen else self.freeze_blocks

    @property
    def setting(self) -> str:
        if self.frozen:
            return "frozen encoder"
        return "full fine-tuning" if self.freeze_blocks == 0 else f"{self.freeze_blocks}/{self.depth} blocks frozen"

    def sort_key(self) -> tuple:
        order = PRETRAINING_ORDER.index(self.pretraining) if self.pretraining in PRETRAINING_ORDER else 99
        return order, self.arch, self.frozen, self.freeze_blocks, self.name


def load_run(folder: Path) -> RunResult:
    """Read ``folder/config.yaml`` and ``folder/eval/metrics.json`` (ReportError if unusable)."""
    from vltseg_core.models.build import encoder_label, get_preset
    from vltseg_core.train.config import ConfigError, load_config

    folder = Path(folder)
    metrics_path = folder / "eval" / "metrics.json"
    for need in (folder / "config.yaml", metrics_path):
        if not need.is_file():
            raise ReportError(f"{folder}: no {need.relative_to(folder)} (a run folder written by "
                              "vltseg train, evaluated at the end)")
    try:
        cfg = load_config(folder / "config.yaml")
        options = dict(cfg.model.options)
        pretraining, arch = encoder_label(cfg.model.preset, **options)
        preset = get_preset(cfg.model.preset, **{k: v for k, v in options.items() if k != "pretrained"})
    except (ConfigError, ValueError, TypeError) as exc:
        raise ReportError(f"{folder}: {exc}") from None
    try:
        table = json.loads(metrics_path.read_text())
    except ValueError as exc:
        raise ReportError(f"{metrics_path}: not valid JSON ({exc})") from None
    row = _metrics_row(table, cfg.name, metrics_path)
    targets = tuple(t.title for t in cfg.eval.targets) or tuple(row)
    averaged = tuple(t.title for t in cfg.eval.targets if t.in_average) or targets
    return RunResult(cfg.name, cfg.data.train.name, targets, averaged, cfg.model.preset, pretraining,
                     arch, preset.freeze_blocks, preset.frozen_encoder, preset.out_indices[-1] + 1,
                     {t: (row.get(t) or {}).get("mIoU") for t in targets})


def _metrics_row(table: Any, name: str, path: Path) -> dict[str, dict]:
    """The run's own row of an ``eval/metrics.json`` table (``{row: {target: metrics}}``)."""
    if not isinstance(table, dict) or not table or not all(isinstance(v, dict) for v in table.values()):
        raise ReportError(f"{path}: not an evaluation table ({{row: {{target: metrics}}}})")
    return table.get(name, next(iter(table.values())))


def group_runs(runs: Sequence[RunResult]) -> dict[tuple[str, tuple[str, ...]], list[RunResult]]:
    """Runs by (source, target columns), each group in table order."""
    groups: dict[tuple[str, tuple[str, ...]], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.source, run.targets), []).append(run)
    return {k: sorted(v, key=RunResult.sort_key) for k, v in groups.items()}


def table_title(source: str, targets: Sequence[str]) -> str:
    return f"{SOURCE_NAMES.get(source, source)} → {', '.join(targets)}"


def results_table(runs: Sequence[RunResult], by: str = "model") -> str:
    """Markdown: one row per run, target columns + Avg. (mIoU %, one decimal). Rows are named
    by model (and freeze setting unless fully fine-tuned), or ``by="setting"`` by frozen blocks."""
    first = runs[0]
    head = "model" if by == "model" else "frozen blocks"
    lines = [f"| {head} | " + " | ".join(first.targets) + " | Avg. |",
             "|---|" + "---:|" * (len(first.targets) + 1)]
    for run in runs:
        cells = [pct(run.miou.get(t)) for t in first.targets] + [pct(run.average)]
        lines.append(f"| {_row_name(run, by)} | " + " | ".join(cells) + " |")
    if first.averaged != first.targets:
        lines += ["", f"Avg. over {', '.join(first.averaged)}."]
    return "\n".join(lines) + "\n"


def _row_name(run: RunResult, by: str) -> str:
    if by == "model":
        return run.model if run.setting == "full fine-tuning" else f"{run.model}, {run.setting}"
    if run.frozen:
        return f"frozen encoder ({run.depth}, eval mode)"
    return f"{run.freeze_blocks} (full fine-tuning)" if run.freeze_blocks == 0 else str(run.freeze_blocks)


def freezing_series(runs: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """Per model (preset), its runs by frozen blocks, for models run with several settings."""
    by_model: dict[str, list[RunResult]] = {}
    for run in runs:
        by_model.setdefault(run.preset, []).append(run)
    return {m: sorted(rs, key=lambda r: (r.frozen, r.freeze_blocks))
            for m, rs in by_model.items() if len({(r.frozen, r.freeze_blocks) for r in rs}) > 1}


def plot_freezing(runs: Sequence[RunResult], path: Path, title: str) -> Path:
    """Target mIoU (%) against frozen blocks: the Avg. line, thin per-target lines, the
    frozen encoder as a star, full fine-tuning as a dashed line."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot(111)
    blocks = [r for r in runs if not r.frozen]
    xs = [r.freeze_blocks for r in blocks]
    for target in runs[0].averaged:
        ys = [_pct(r.miou.get(target)) for r in blocks]
        ax.plot(xs, ys, marker=".", linewidth=0.8, alpha=0.6, label=target)
    ax.plot(xs, [_pct(r.average) for r in blocks], marker="o", color="black", linewidth=2,
            label="Avg.")
    full = next((r for r in runs if r.setting == "full fine-tuning"), None)
    if full is not None and full.average is not None:
        ax.axhline(100 * full.average, color="black", linestyle="--", linewidth=1,
                   label="full fine-tuning")
    for r in runs:
        if r.frozen:
            ax.plot([r.depth], [_pct(r.average)], marker="*", markersize=14, color="tab:red",
                    linestyle="none", label="frozen encoder (Avg.)")
    ax.set_xlabel(f"frozen blocks (of {runs[0].depth})")
    ax.set_ylabel("mIoU (%)")
    ax.set_xticks(sorted({r.frozen_blocks for r in runs}))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def _pct(x: float | None) -> float:
    return float("nan") if x is None else 100 * x


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_")


def write_paper_report(folders: Sequence[Path], out: Path) -> dict[str, Any]:
    """Every table (and freezing plot) of ``folders`` into ``out``: ``report.md``,
    ``results.json``, ``freezing_*.png``. All runs are read before anything is written."""
    if not folders:
        raise ReportError("no run folders given")
    runs = [load_run(Path(f)) for f in folders]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts, figures, cells = ["# Results\n"], [], []
    for (source, targets), group in group_runs(runs).items():
        title = table_title(source, targets)
        parts.append(f"## {title} (mIoU %)\n\n{results_table(group)}")
        for preset, series in freezing_series(group).items():
            name = f"Freezing ablation: {series[0].model}, {title}"
            png = plot_freezing(series, out / f"freezing_{_slug(source)}_{_slug(preset)}.png",
                                f"Freezing ablation: {series[0].model}\n{title}")
            figures.append(png)
            parts.append(f"## {name} (mIoU %)\n\n{results_table(series, 'setting')}\n![{name}]({png.name})\n")
        cells += [{"table": title, "run": r.name, "model": r.model, "setting": r.setting,
                   "mIoU": r.miou, "Avg.": r.average} for r in group]
    (out / "report.md").write_text("\n".join(parts))
    write_json(out / "results.json", {"rows": cells})
    return {"report": out / "report.md", "figures": figures, "runs": runs}
