"""The `vltseg` command line. Each command imports its subject lazily so `--help` is instant."""

from __future__ import annotations

import typer

from vltseg_core import commands
from vltseg_core.export import cli as export_cli

app = typer.Typer(
    name="vltseg",
    help="VLTSeg: CLIP/EVA-02 domain-generalized segmentation and detection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """VLTSeg: CLIP/EVA-02 domain-generalized segmentation and detection."""


@app.command()
def info() -> None:
    """Print the versions of the libraries vltseg runs on and whether ROS 2 is importable."""
    from vltseg_core.env import environment_report

    for key, value in environment_report().items():
        typer.echo(f"{key:>14}: {value}")


commands.register(app)  # train, eval, score, predict, report, models, data synth, demo
export_cli.register(app)  # export, bench


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
