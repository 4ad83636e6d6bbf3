"""The `vltseg` sub-commands for data, training and evaluation, as plain functions.

``register(app)`` adds them to the typer app in ``cli.py``. Each body imports its subject
lazily so ``vltseg --help`` stays instant, and expected user errors (bad config key,
missing dataset folder, unreadable checkpoint) print one line and exit with status 2
instead of a traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(fn: F) -> F:
    """Turn config/dataset/checkpoint errors into ``error: ...`` and exit status 2
    (``VLTSEG_DEBUG=1`` re-raises them with the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from vltseg_core.train.config import ConfigError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, FileNotFoundError, ValueError) as exc:
            if os.environ.get("VLTSEG_DEBUG"):
                raise
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _split_targets(values: Optional[list[str]]) -> list[str]:
    """``--targets fog,night --targets rain`` -> ``['fog', 'night', 'rain']``."""
    return [t for v in values or [] for t in v.split(",") if t]


@_user_errors
def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="experiment YAML (configs/*.yaml)"),
    resume: bool = typer.Option(False, "--resume", help="continue from last.pt"),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides: train.iters=100"),
) -> None:
    """Train a config (one process, or every rank under torchrun)."""
    from vltseg_core.train.config import load_config
    from vltseg_core.train.distributed import cleanup, is_main
    from vltseg_core.train.engine import train

    cfg = load_config(config, overrides or [])
    try:
        result = train(cfg, resume=resume)
        if is_main():
            typer.echo(f"trained {cfg.train.iters} iterations in {result.train_seconds:.0f}s; "
                       f"final checkpoint: {result.checkpoint}")
    finally:
        cleanup()


@_user_errors
def eval_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="experiment YAML"),
    checkpoint: list[Path] = typer.Option(..., "--checkpoint", help="one table row per checkpoint"),
    targets: Optional[list[str]] = typer.Option(None, "--targets", help="subset of target labels"),
    out: Optional[Path] = typer.Option(None, "--out", help="report folder (default out_dir/eval)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides: eval.flip=true"),
) -> None:
    """Evaluate checkpoints on the config's targets: JSON + Markdown table + plots."""
    from vltseg_core.evaluation.evaluator import run_eval
    from vltseg_core.train.config import load_config, select_targets

    cfg = select_targets(load_config(config, overrides or []), _split_targets(targets))
    run_eval(cfg, checkpoint, out)


@_user_errors
def score_cmd(
    pred_dir: Path = typer.Argument(..., help="folder of predicted label PNGs"),
    dataset: str = typer.Option("cityscapes", "--dataset"),
    root: Path = typer.Option(..., "--root", help="dataset root in its official layout"),
    split: str = typer.Option("val", "--split"),
    out: Optional[Path] = typer.Option(None, "--out", help="default: PRED_DIR_score"),
) -> None:
    """Score a folder of label PNGs (trainIds or labelIds, benchmark names) against a split."""
    from vltseg_core.evaluation.score import score_main

    score_main(pred_dir, dataset, root, split, out or pred_dir.with_name(f"{pred_dir.name}_score"))


@_user_errors
def predict_cmd(
    images: list[Path] = typer.Argument(..., help="image files or folders"),
    checkpoint: Path = typer.Option(..., "--checkpoint"),
    out: Path = typer.Option(..., "--out"),
    config: Optional[Path] = typer.Option(None, "--config", help="inference settings (eval.*)"),
    label_ids: bool = typer.Option(False, "--label-ids", help="labels as Cityscapes label ids "
                                   "(test-server submissions) instead of train ids"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Label PNGs, colourised maps and overlays (and detection JSON) for images."""
    from vltseg_core.evaluation.predict import predict_files

    written = predict_files(images, checkpoint, out, config, device, label_ids)
    typer.echo(f"wrote predictions for {len(written)} images to {out}")


@_user_errors
def synth_cmd(
    out: Path = typer.Option(..., "--out", help="output root (Cityscapes + ACDC layouts)"),
    n: int = typer.Option(500, "--n", help="clear frames (train + val)"),
    seed: int = typer.Option(0, "--seed"),
    width: int = typer.Option(512, "--width"),
    height: int = typer.Option(256, "--height"),
) -> None:
    """Generate the synthetic domain-shift benchmark (clear source, fog/night/rain/snow)."""
    from vltseg_core.data.synth import synth_main

    synth_main(out, n=n, seed=seed, width=width, height=height)


@_user_errors
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="run folders (config.yaml + eval/metrics.json)"),
    out: Path = typer.Option(..., "--out", help="folder for report.md, results.json, plots"),
) -> None:
    """The paper's tables (and the freezing figure) from training runs: Markdown + PNG."""
    from vltseg_core.evaluation.paper_tables import write_paper_report

    written = write_paper_report(runs, out)
    typer.echo(written["report"].read_text())
    figures = "".join(f", {p.name}" for p in written["figures"])
    typer.echo(f"wrote {written['report']}{figures} ({len(written['runs'])} runs)")


@_user_errors
def models_cmd(
    preset: Optional[list[str]] = typer.Option(None, "--preset", help="default: all presets"),
    height: Optional[int] = typer.Option(None, "--height"),
    width: Optional[int] = typer.Option(None, "--width"),
) -> None:
    """Parameters and GFLOPs per model preset."""
    from vltseg_core.models import print_model_table

    size = (height, width) if height and width else None
    print_model_table(preset or None, size)


@_user_errors
def demo_cmd(
    cache: Optional[Path] = typer.Option(None, "--cache", help="$VLTSEG_CACHE or ~/.cache/vltseg"),
    out: Path = typer.Option(Path("runs/demo"), "--out"),
    frames: int = typer.Option(300, "--frames", help="clear frames to generate (80 % train)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides for demo.yaml"),
) -> None:
    """Synthetic benchmark -> train the tiny model on `clear` -> evaluate on all domains."""
    from vltseg_core.demo import run_demo

    run_demo(cache, out, overrides or [], frames)


def register(app: typer.Typer) -> None:
    """Add the commands to ``app`` (``vltseg``); ``data`` becomes a sub-group."""
    app.command("train", context_settings={"ignore_unknown_options": True})(train_cmd)
    app.command("eval", context_settings={"ignore_unknown_options": True})(eval_cmd)
    app.command("score")(score_cmd)
    app.command("predict")(predict_cmd)
    app.command("report")(report_cmd)
    app.command("models")(models_cmd)
    app.command("demo", context_settings={"ignore_unknown_options": True})(demo_cmd)
    data_app = typer.Typer(help="Datasets: the synthetic domain-shift benchmark.",
                           no_args_is_help=True)
    data_app.command("synth")(synth_cmd)
    app.add_typer(data_app, name="data")
