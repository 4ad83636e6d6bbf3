"""``vltseg demo``: the embedded end-to-end job on the synthetic domain-shift benchmark.

1. generate the benchmark into the cache (once; keyed by generator version, size and seed,
   written to a temp folder and renamed so an interrupted generation is never reused),
2. train ``configs/demo.yaml`` (tiny preset) on the ``clear`` source domain,
3. evaluate on clear + fog/night/rain/snow and print the table and where the plots and the
   prediction overlays (image | prediction | ground truth, a few per domain) are.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from vltseg_core.train.config import ConfigError

DEMO_FRAMES = 300  # clear frames (80 % train); each target domain gets a tenth of this
DEMO_SEED = 0
SYNTH_ENV = "VLTSEG_SYNTH"  # demo.yaml reads its dataset root from here


def demo_config_path() -> Path:
    """``configs/demo.yaml`` of the checkout this package runs from."""
    path = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    if not path.is_file():
        raise ConfigError(f"demo config not found at {path}; run from a vltseg checkout")
    return path


def default_cache() -> Path:
    return Path(os.environ.get("VLTSEG_CACHE") or Path.home() / ".cache" / "vltseg")


def ensure_synth(cache: Path, n: int = DEMO_FRAMES, seed: int = DEMO_SEED) -> Path:
    """The benchmark folder in ``cache``, generated first if it is not there yet."""
    from vltseg_core.data.synth import VERSION, generate

    n_target = max(1, n // 10)  # evaluation dominates the demo's run time otherwise
    root = Path(cache) / f"synth-v{VERSION}-n{n}-t{n_target}-s{seed}"
    if (root / "synth.json").is_file():
        return root
    tmp = root.with_name(f".{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"generating the synthetic benchmark ({n} clear frames) into {root}")
    summary = generate(tmp, n, seed, n_target=n_target, progress=False)
    print(f"  {summary['frames']} frames in {summary['seconds']:.0f}s")
    if root.exists():  # a stale partial folder without synth.json
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def run_demo(cache: Path | None, out: Path, overrides: Sequence[str] = (),
             frames: int = DEMO_FRAMES) -> dict:
    """Generate (if needed), train, evaluate; returns ``{target: metrics}``."""
    from vltseg_core.evaluation.evaluator import table_markdown
    from vltseg_core.train.config import load_config
    from vltseg_core.train.engine import train

    root = ensure_synth(cache or default_cache(), frames)
    os.environ[SYNTH_ENV] = str(root)
    cfg = load_config(demo_config_path(), [f"train.out_dir={out}", *overrides])
    result = train(cfg)
    print(f"trained {cfg.train.iters} iterations in {result.train_seconds:.0f}s")
    if result.metrics:
        print(table_markdown({cfg.name: result.metrics}))
    print(f"checkpoint: {result.checkpoint}")
    print(f"reports, plots and prediction overlays: {result.out_dir / 'eval'}")
    print(f"tensorboard --logdir {result.out_dir / 'tb'}")
    return result.metrics


def demo_checkpoint(out: Path = Path("runs/demo"), cache: Path | None = None) -> tuple[Path, Path]:
    """The demo's trained checkpoint and its benchmark's clear val frames (`vltseg bench
    --demo`); runs the demo first when ``out`` has no checkpoint."""
    checkpoint = Path(out) / "model_final.pt"
    if not checkpoint.is_file():
        run_demo(cache, out)
    root = ensure_synth(cache or default_cache())
    return checkpoint, root / "leftImg8bit" / "val"
