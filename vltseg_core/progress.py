"""Progress of a long loop (training iterations, evaluated images) for people and for logs.

On a terminal a live tqdm bar redraws in place. Anywhere else (a log file, CI, `nohup`) a bar
writes nothing useful, so one plain line is printed every `every` steps and at the end:

    train 120/600  loss 1.2345  lr 9.10e-04  2.41 it/s  eta 0:03:19
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import IO, Any


def on_terminal() -> bool:
    """Whether a live bar can be drawn: stdout and stderr (where tqdm draws) are terminals."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """Steps ``start..total`` of a loop; call :meth:`update` with the number of steps done."""

    def __init__(self, desc: str, total: int, *, start: int = 0, every: int = 1,
                 unit: str = "it", live: bool | None = None, stream: IO[str] | None = None) -> None:
        self.desc, self.total, self.start, self.every, self.unit = desc, total, start, every, unit
        self.stream = stream or sys.stdout
        self.last = start
        self.t0 = time.perf_counter()
        self.bar: Any = None
        if on_terminal() if live is None else live:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, step: int, **fields: str) -> None:
        """``step`` steps done; ``fields`` (already formatted) are shown after the count."""
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(fields, refresh=False)
            self.bar.refresh()
            return
        if step - self.last < self.every and step < self.total:
            return
        self.last = step
        print(self.line(step, time.perf_counter() - self.t0, fields), file=self.stream, flush=True)

    def line(self, step: int, elapsed: float, fields: dict[str, str]) -> str:
        """The plain progress line after ``elapsed`` seconds."""
        done = step - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _duration((self.total - step) / rate) if rate > 0 else "?"
        extra = "".join(f"  {k} {v}" for k, v in fields.items())
        return f"{self.desc} {step}/{self.total}{extra}  {rate:.2f} {self.unit}/s  eta {eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def image_progress(desc: str, total: int) -> Progress:
    """Progress over ``total`` images: a live bar, or a line at each quarter."""
    return Progress(desc, total, every=max(1, total // 4), unit="img")
