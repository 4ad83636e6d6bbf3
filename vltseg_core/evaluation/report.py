"""Human- and machine-readable results: JSON, Markdown tables and PNG plots.

Plots use matplotlib's object API with the Agg canvas (no pyplot global state), so they work
headless and inside DataLoader workers or threads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _clean(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars/arrays -> Python, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(dict(data)), indent=2, allow_nan=False) + "\n")
    return path


def pct(x: float | None, digits: int = 1) -> str:
    """Fraction -> percentage string; undefined values print as an en dash."""
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def markdown_report(metrics: Mapping[str, Any], title: str = "Segmentation results") -> str:
    """Summary line plus a per-class IoU/Acc table from :meth:`SegMetrics.as_dict` output."""
    lines = [f"# {title}", "", "| mIoU | mAcc | aAcc |", "|---:|---:|---:|",
             f"| {pct(metrics['mIoU'])} | {pct(metrics['mAcc'])} | {pct(metrics['aAcc'])} |",
             "", "| class | IoU | Acc |", "|---|---:|---:|"]
    for name, iou in metrics["IoU"].items():
        lines.append(f"| {name} | {pct(iou)} | {pct(metrics['Acc'].get(name))} |")
    return "\n".join(lines) + "\n"


def multi_target_table(results: Mapping[str, Mapping[str, float | None]],
                       domains: Sequence[str] | None = None, digits: int = 1,
                       average_over: Sequence[str] | None = None) -> str:
    """Paper-style table: rows = checkpoints, columns = target domains + average (mIoU %).

    ``results[row][domain]`` is a fraction. The average is over ``average_over`` (default:
    all listed domains; a pooled column such as ACDC's 'all' is left out of it, and a note
    under the table says so) and is left empty for a row that misses any of them, so
    averages stay comparable across rows.
    """
    domains = list(domains) if domains is not None else list(
        dict.fromkeys(d for row in results.values() for d in row))
    averaged = [d for d in domains if average_over is None or d in average_over]
    head = "| model | " + " | ".join(domains) + " | Avg. |"
    lines = [head, "|---|" + "---:|" * (len(domains) + 1)]
    for name, row in results.items():
        avg = mean_or_none([row.get(d) for d in averaged])
        cells = [pct(row.get(d), digits) for d in domains] + [pct(avg, digits)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(averaged) < len(domains):
        lines += ["", f"Avg. over {', '.join(averaged)}."]
    return "\n".join(lines) + "\n"


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of ``values``, or None when any is missing/non-finite (or there are none)."""
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return sum(ok) / len(ok) if ok and len(ok) == len(values) else None


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_per_class_iou(iou: Mapping[str, float | None], path: str | Path,
                       title: str = "per-class IoU", colors: np.ndarray | None = None) -> Path:
    """Horizontal bars of IoU (%) per class; undefined classes are shown empty."""
    names = list(iou)
    vals = [0.0 if iou[n] is None or not math.isfinite(iou[n]) else 100 * iou[n] for n in names]
    fig = new_figure(7, 0.3 * len(names) + 1.2)
    ax = fig.add_subplot(111)
    col = None if colors is None else [tuple(np.asarray(c) / 255.0) for c in colors[: len(names)]]
    ax.barh(range(len(names)), vals, color=col, edgecolor="black", linewidth=0.4)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title)
    for i, v in enumerate(vals):
        ax.text(min(v + 1, 90), i, pct(iou[names[i]]), va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: str | Path,
                   title: str = "confusion (row-normalised)") -> Path:
    """Heat map of ``[K, K]`` (or ``[K, K+1]`` with a void column) normalised per GT row."""
    m = np.asarray(matrix, np.float64)
    labels = list(names) + (["void"] if m.shape[1] == m.shape[0] + 1 else [])
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig = new_figure(0.35 * len(labels) + 2.5, 0.35 * len(names) + 2)
    ax = fig.add_subplot(111)
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_report(out_dir: str | Path, metrics: Mapping[str, Any], matrix: np.ndarray,
                 names: Sequence[str], title: str, extra: Mapping[str, Any] | None = None,
                 colors: np.ndarray | None = None) -> dict[str, Path]:
    """``metrics.json``, ``metrics.md``, ``per_class_iou.png``, ``confusion_matrix.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {**(extra or {}), **metrics, "confusion_matrix": np.asarray(matrix).tolist(),
            "class_names": list(names)}
    (out / "metrics.md").write_text(markdown_report(metrics, title))
    return {
        "json": write_json(out / "metrics.json", data),
        "markdown": out / "metrics.md",
        "iou_plot": plot_per_class_iou(metrics["IoU"], out / "per_class_iou.png", title, colors),
        "confusion_plot": plot_confusion(matrix, names, out / "confusion_matrix.png"),
    }
