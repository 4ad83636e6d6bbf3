"""Reports of a replay: report.json (everything), report.md (the tables), and PNG plots:
per-class IoU bars, mIoU and mean confidence over time with condition bands and domain-shift
warnings marked, and a latency histogram. Written into a temp folder and renamed (no half
reports); no ROS here."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _num(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def headline(report: dict[str, Any]) -> str:
    """The lines printed at the end of `bag eval`."""
    s = report["summary"]
    lines = [f"{report['mode']} eval of {report['bag']} ({s['frames']} frames, {s['frames_scored']} with ground truth)"
             + (f"  PARTIAL: {report['partial']}" if report.get("partial") else "")]
    lines.append(f"  mIoU {_pct(s['mIoU'])} %  mean confidence {_num(s['mean_confidence'], '.3f')}  "
                 f"shift warnings {s['shift_warnings']}/{s['frames']}")
    for row in s["segments"]:
        lines.append(f"  {row['segment']:>10}: mIoU {_pct(row['mIoU'])} %  conf {_num(row['mean_confidence'], '.3f')}  "
                     f"frames {row['frames']}  shift warnings {row['shift_warnings']}/{row['shift_checked']}")
    for key, name in (("model_latency_ms", "model latency"), ("e2e_latency_ms", "end-to-end latency"),
                      ("result_age_ms", "result age")):
        lat = s.get(key) or report.get("live", {}).get(key)
        if lat and lat.get("n"):
            lines.append(f"  {name} ms: p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}")
    det = s.get("detection")
    if det:
        lines.append(f"  detection AP {_num(det['AP'])}  AP50 {_num(det['AP50'])}  ({det['frames']} frames, "
                     f"{det['gt_boxes']} true boxes, {det['detections']} detections)")
    live = report.get("live")
    if live:
        lines.append(f"  frames published {live['published']}, results {live['results']}, "
                     f"dropped by the node {live['dropped']}, playback at most "
                     f"{live.get('max_playback_lag_s', 0.0):.2f} s behind x{live['rate']} real time")
    lines.append(f"  reports: {report['out']}")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    out = [f"# Bag replay: {Path(report['bag']).name} ({report['mode']})", ""]
    if report.get("partial"):
        out += [f"**PARTIAL** - the bag broke while being read: {report['partial']}", ""]
    out += [f"- model: `{report['model']['path']}` ({report['model'].get('preset', '')})",
            f"- frames: {s['frames']}, scored against ground truth: {s['frames_scored']}",
            f"- mIoU: {_pct(s['mIoU'])} %, mean confidence: {_num(s['mean_confidence'], '.3f')}",
            f"- wall time: {report['seconds']:.1f} s", ""]
    out += ["| segment | frames | scored | mIoU % | mean conf. | shift warnings |", "|---|---:|---:|---:|---:|---:|"]
    for row in s["segments"]:
        out.append(f"| {row['segment']} | {row['frames']} | {row['frames_scored']} | {_pct(row['mIoU'])} | "
                   f"{_num(row['mean_confidence'], '.3f')} | {row['shift_warnings']}/{row['shift_checked']} |")
    out += ["", "| latency (ms) | n | p50 | p95 | p99 | max |", "|---|---:|---:|---:|---:|---:|"]
    for key in ("model_latency_ms", "e2e_latency_ms"):
        lat = s[key]
        if lat["n"]:
            out.append(f"| {key[:-3].replace('_', ' ')} | {lat['n']} | {lat['p50']:.1f} | {lat['p95']:.1f} | "
                       f"{lat['p99']:.1f} | {lat['max']:.1f} |")
    live = report.get("live")
    if live:
        age = live["result_age_ms"]
        if age["n"]:
            out.append(f"| result age | {age['n']} | {age['p50']:.1f} | {age['p95']:.1f} | {age['p99']:.1f} | "
                       f"{age['max']:.1f} |")
        out += ["", f"Live: {live['published']} frames published at x{live['rate']} real time, {live['results']} "
                f"results, {live['dropped']} dropped by the node's latest-frame policy; playback at most "
                f"{live.get('max_playback_lag_s', 0.0):.2f} s behind schedule."]
    det = s.get("detection")
    if det:
        out += ["", f"Detection over {det['frames']} frames ({det['gt_boxes']} true boxes, {det['detections']} "
                f"detections): AP {_num(det['AP'])}, AP50 {_num(det['AP50'])}, AP75 {_num(det['AP75'])}."]
    if s["per_class_IoU"]:
        out += ["", "| class | IoU % |", "|---|---:|"]
        out += [f"| {name} | {_pct(v)} |" for name, v in s["per_class_IoU"].items()]
    return "\n".join(out) + "\n"


def plots(report: dict[str, Any], timeline: list[dict[str, Any]], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    s = report["summary"]
    if s["per_class_IoU"]:
        names = list(s["per_class_IoU"])
        values = [100 * (v or 0.0) for v in s["per_class_IoU"].values()]
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.bar(names, values, color="tab:blue")
        ax.set_ylabel("IoU %")
        ax.set_title(f"per-class IoU (mIoU {_pct(s['mIoU'])} %)")
        ax.tick_params(axis="x", rotation=60)
        fig.tight_layout()
        fig.savefig(folder / "per_class_iou.png", dpi=90)
        plt.close(fig)
        made.append("per_class_iou.png")
    if timeline:
        fig, ax = plt.subplots(figsize=(10, 4))
        t = [r["t_s"] for r in timeline]
        colours = plt.get_cmap("tab10")
        for i, row in enumerate(s["segments"]):
            ax.axvspan(row["start_s"], row["end_s"] + 1e-3, color=colours(i % 10), alpha=0.12)
            ax.text(row["start_s"], 1.02, row["segment"], fontsize=8)
        miou = [np.nan if r["mIoU"] is None else r["mIoU"] for r in timeline]
        conf = [np.nan if r["mean_confidence"] is None else r["mean_confidence"] for r in timeline]
        ax.plot(t, miou, ".-", label="frame mIoU", color="tab:green")
        ax.plot(t, conf, ".-", label="mean confidence", color="tab:orange")
        shifted = [r["t_s"] for r in timeline if r["shifted"]]
        if shifted:
            ax.plot(shifted, [0.02] * len(shifted), "|", color="red", markersize=12, label="domain-shift warning")
        ax.set_ylim(0, 1.08)
        ax.set_xlabel("bag time (s)")
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "timeline.png", dpi=90)
        plt.close(fig)
        made.append("timeline.png")
    series = {"model": [r["model_ms"] for r in timeline if r["model_ms"] is not None],
              "end-to-end": [r["e2e_ms"] for r in timeline if r["e2e_ms"] is not None]}
    if any(series.values()):
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, values in series.items():
            if values:
                ax.hist(values, bins=30, alpha=0.6, label=f"{name} (p50 {np.percentile(values, 50):.0f} ms)")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("frames")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "latency.png", dpi=90)
        plt.close(fig)
        made.append("latency.png")
    return made


def write_reports(report: dict[str, Any], timeline: list[dict[str, Any]], out: Path, stem: str) -> Path:
    """`out/<stem>.json`, `<stem>.md` and `<stem>_*.png`, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{stem}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        report["plots"] = [f"{stem}_{name}" for name in plots(report, timeline, tmp)]
        (tmp / "timeline.json").write_text(json.dumps(timeline))
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
        (tmp / "report.md").write_text(markdown(report))
        renames = {"report.json": f"{stem}.json", "report.md": f"{stem}.md", "timeline.json": f"{stem}_timeline.json"}
        for path in tmp.iterdir():
            os.replace(path, out / renames.get(path.name, f"{stem}_{path.name}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / f"{stem}.json"
