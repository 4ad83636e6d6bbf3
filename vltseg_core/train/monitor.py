"""What a run reports while it trains: the JSONL loss curve, Tensorboard, progress (a live bar
on a terminal, plain lines in logs and CI).

Only rank 0 writes; other ranks get a :class:`Monitor` whose methods do nothing. The JSONL
file is the source of truth for the loss curve (one line per iteration). Rows wait on the
device in :class:`PendingLogs` and are written at each log interval and before each checkpoint,
so a kill loses only rows past the last checkpoint; on resume the lines past the checkpoint's
iteration are dropped anyway, so the file equals the one an uninterrupted run writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vltseg_core.files import atomic_write
from vltseg_core.progress import Progress


def truncate_jsonl(path: Path, keep_below: int) -> None:
    """Keep only records with ``iter < keep_below`` (and drop a half-written last line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("iter", keep_below) < keep_below:
            kept.append(line)
    atomic_write(path, "".join(f"{line}\n" for line in kept).encode())  # a kill here loses nothing


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class PendingLogs:
    """Per-iteration log rows kept on the device until read: one host transfer per read instead
    of one sync per loss term per step."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, tuple[str, ...], torch.Tensor, float]] = []

    def add(self, it: int, names: tuple[str, ...], values: torch.Tensor, lr: float) -> None:
        self.rows.append((it, names, values, lr))

    def read(self) -> list[dict[str, Any]]:
        """The rows as JSONL records ``{"iter", *names, "lr"}``, oldest first; empties the queue."""
        if not self.rows:
            return []
        flat = torch.cat([values for _, _, values, _ in self.rows]).tolist()  # the sync
        records, start = [], 0
        for it, names, _, lr in self.rows:
            records.append({"iter": it, **dict(zip(names, flat[start:start + len(names)])), "lr": lr})
            start += len(names)
        self.rows.clear()
        return records


class Monitor:
    """Rank-0 sinks for scalars and images; construct with ``active=False`` on other ranks."""

    def __init__(self, out_dir: Path, total: int, start: int, active: bool,
                 tensorboard: bool = True, live: bool | None = None) -> None:
        """live: a tqdm bar (default: on a terminal), else a plain line per :meth:`progress`
        call, which the loop makes every ``train.log_every`` iterations."""
        self.active, self.out_dir = active, out_dir
        self.jsonl = None
        self.tb = None
        self.bar: Progress | None = None
        if not active:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "loss.jsonl"
        truncate_jsonl(path, start)
        truncate_jsonl(out_dir / "eval.jsonl", start + 1)
        self.jsonl = open(path, "a", buffering=1)  # line-buffered: a kill loses <= 1 written line
        if tensorboard:
            self.tb = _summary_writer(out_dir / "tb")
        self.bar = Progress("train", total, start=start, live=live)

    def log_iter(self, record: dict[str, Any]) -> None:
        """One JSONL line per iteration (full float precision, for curve comparisons)."""
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")

    def log_eval(self, step: int, results: dict[str, dict[str, Any]]) -> None:
        """Summary numbers of an evaluation to ``eval.jsonl`` and Tensorboard (``val/...``)."""
        if not self.active:
            return
        flat = {t: {k: v for k, v in m.items() if isinstance(v, (int, float))}
                for t, m in results.items()}
        with open(self.out_dir / "eval.jsonl", "a") as fh:
            fh.write(json.dumps({"iter": step, **flat}) + "\n")
        for target, values in flat.items():
            self.scalars(step, values, f"val/{target}/")

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"{prefix}{key}", value, step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """``uint8[H, W, 3]`` image to Tensorboard."""
        if self.tb is not None:
            self.tb.add_image(tag, torch.from_numpy(image).permute(2, 0, 1), step)

    def progress(self, step: int, loss: float, lr: float) -> None:
        """Iterations done, loss, lr, it/s and ETA: a live bar or a plain line (log files, CI)."""
        if self.bar is not None:
            self.bar.update(step, loss=f"{loss:.4f}", lr=f"{lr:.2e}")

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


def _summary_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in the optional 'data' extra
        print("tensorboard not installed: scalars go to loss.jsonl only", file=sys.stderr)
        return None
    return SummaryWriter(str(folder))
