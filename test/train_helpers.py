"""Shared pieces of the training/CLI tests: a small synthetic benchmark and subprocess runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
BIN = Path(sys.executable).parent


def synth_root(factory: pytest.TempPathFactory, n: int = 20) -> Path:
    """A benchmark of ``n`` clear frames (80 % train) and n/5 per target, made once per run."""
    return synth_root_at(factory.getbasetemp() / f"synth-n{n}", n)


def synth_root_at(root: Path, n: int) -> Path:
    """A benchmark of ``n`` clear frames at ``root`` (generated unless already there)."""
    if not (root / "synth.json").is_file():
        from vltseg_core.data.synth import generate

        generate(root, n, seed=0, workers=1, progress=False)
    return root


def env() -> dict[str, str]:
    """Subprocess environment: this checkout first on the path, single-threaded BLAS."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}


def tiny_overrides(out: Path, iters: int, **extra: object) -> list[str]:
    """demo.yaml (data from $VLTSEG_SYNTH): few iterations, small crops, deterministic, quiet."""
    opts = {
        "train.out_dir": str(out), "train.iters": iters, "train.warmup_iters": 0,
        "train.deterministic": True, "train.tensorboard": False, "train.image_every": 0,
        "data.crop_size": "[64,64]", "data.batch_size": 2, "data.num_workers": 0,
        "eval.max_images": 0,
    }
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


def cli_command(*args: str, synth: Path | None = None, torchrun: int = 0
                ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run the CLI (``python -m vltseg_core.cli``, or
    under torchrun with N processes)."""
    cmd = [sys.executable, "-m", "vltseg_core.cli", *args]
    if torchrun:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={torchrun}",
               "-m", "vltseg_core.cli", *args]
    e = env()
    if synth is not None:
        e["VLTSEG_SYNTH"] = str(synth)
    return cmd, e


def vltseg(*args: str, timeout: float = 900, check: bool = True, synth: Path | None = None,
           torchrun: int = 0) -> subprocess.CompletedProcess:
    """Run the CLI (see :func:`cli_command`) and wait for it."""
    cmd, e = cli_command(*args, synth=synth, torchrun=torchrun)
    proc = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_results(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())
