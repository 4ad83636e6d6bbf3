"""`vltseg export` and `vltseg bench`: plain functions (`export_checkpoint`, `run_bench`) plus
`register(app)`, which the top-level typer app calls. Heavy imports stay inside the functions
so `vltseg --help` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from vltseg_core.export.metadata import ModelMetadata
    from vltseg_core.runtime.bench import BenchModel
    from vltseg_core.runtime.domain_shift import ShiftBand


def export_checkpoint(
    checkpoint: Path,
    fmt: str = "onnx",
    out: Path | None = None,
    size: tuple[int, int] | None = None,
    *,
    batch: int | None = None,
    fp16: bool | None = None,
    int8: bool = False,
    input_dtype: str = "uint8",
    class_scores: bool = False,
    max_detections: int = 100,
    check: bool = True,
    device: str = "cuda:0",
    target: str | None = None,
    calibrate: Path | None = None,
) -> list[Path]:
    """Checkpoint -> ONNX (+ fp16 / int8 variants) or -> ONNX + cached TensorRT engine.

    batch None (default): the graph takes any batch size (1..64); an int fixes it.
    fp16 None means: an fp16 engine for tensorrt, no fp16 ONNX for onnx. target None means
    "onnxruntime" for onnx (fused attention) and "portable" for tensorrt. calibrate: a folder
    of source-domain images; the domain-shift band measured on it goes into the metadata of
    every file written (before the variants and the engine, which copy it). Returns files.
    """
    from vltseg_core.export.onnx import TARGETS, export_onnx
    from vltseg_core.runtime.checkpoint import load_model_and_metadata

    if fmt not in ("onnx", "tensorrt"):
        raise typer.BadParameter(f"--format must be onnx or tensorrt, got {fmt!r}")
    if batch is not None and batch < 1:
        raise typer.BadParameter(f"--batch must be >= 1 (or left out for a dynamic batch), got {batch}")
    target = target or ("portable" if fmt == "tensorrt" else "onnxruntime")
    if target not in TARGETS:
        raise typer.BadParameter(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if fmt == "tensorrt" and target != "portable":
        raise typer.BadParameter("TensorRT parses standard ONNX ops only: use --target portable")
    if calibrate is not None and not calibrate.is_dir():
        raise typer.BadParameter(f"--calibrate: no such folder: {calibrate}")
    if fmt == "tensorrt":  # fail before a minutes-long export, not after
        from vltseg_core.export.tensorrt import require_tensorrt
        from vltseg_core.export.tensorrt_runner import cuda_index

        trt_version, index = require_tensorrt(), cuda_index(device)
    model, metadata = load_model_and_metadata(
        checkpoint, input_size=size, batch=batch, input_dtype=input_dtype,
        max_detections=max_detections,
    )
    out = out or checkpoint.with_suffix(".onnx")
    result = export_onnx(model, out, metadata, class_scores=class_scores, check=check, target=target)
    written = [result.path]
    if result.parity:
        typer.echo(f"parity ONNX Runtime vs PyTorch: {result.parity}")
    metadata = result.metadata
    if calibrate is not None:
        from vltseg_core.export.calibrate import with_band

        metadata = with_band(metadata, _calibrate(result.path, calibrate))
    if fmt == "onnx":
        written += _variants(result.path, fp16=bool(fp16), int8=int8, check=check)
    else:
        written += _engine(result.path, metadata, "fp32" if fp16 is False else "fp16",
                           trt_version, index, check)
    return written


def _calibrate(model: Path, images: Path, limit: int = 100) -> ShiftBand:
    """Store the band in `model` and return it."""
    from vltseg_core.export.calibrate import calibrate_model, store_band

    band = calibrate_model(model, images, limit=limit)
    store_band(model, band)
    typer.echo(f"domain-shift band from {band.images} images: mean confidence >= "
               f"{band.min_confidence:.3f}, low-confidence pixels <= {band.max_low_fraction:.1%}, "
               f"class-mix divergence <= {band.max_class_divergence:.4f}")
    return band


def _engine(path: Path, metadata: ModelMetadata, precision: str, trt_version: tuple[int, int],
            device: int, check: bool) -> list[Path]:
    """The TensorRT engine (and, for a strongly typed fp16 build, the fp16 ONNX it is built from,
    checked against the fp32 graph like `--format onnx --fp16`)."""
    from vltseg_core.export.tensorrt import load_or_build
    from vltseg_core.export.tensorrt_runner import strongly_typed

    written = []
    if precision == "fp16" and strongly_typed(trt_version):
        written += _variants(path, fp16=True, int8=False, check=check)
    _, engine = load_or_build(path, metadata, precision=precision, device=device, check=check)
    return [*written, engine]


def _variants(path: Path, *, fp16: bool, int8: bool, check: bool = True) -> list[Path]:
    """Write the requested fp16 / int8 copies, each checked against the fp32 graph."""
    from vltseg_core.export.variants import check_variant, convert_fp16, quantize_int8

    written = []
    for precision, wanted, convert in (("fp16", fp16, convert_fp16), ("int8", int8, quantize_int8)):
        if wanted:
            written.append(convert(path))
            if check:
                typer.echo(f"parity {precision} vs fp32 (ONNX Runtime): "
                           f"{check_variant(path, written[-1], precision)}")
    return written


def run_bench(
    presets: list[str | BenchModel],
    size: tuple[int, int] | None = None,
    batches: list[int] | None = None,
    backends: list[str] | None = None,
    repeats: int = 5,
    warmup: int = 0,
    threads: int = 0,
    json_out: Path | None = None,
    workdir: Path | None = None,
) -> str:
    """Bench every preset, print rows as they finish, return the Markdown table."""
    from vltseg_core.runtime.bench import ROWS, bench_preset, busy_warning, format_table, save_json

    rows = []
    for preset in presets:
        rows += bench_preset(
            preset, size=size, batches=batches or [1, 4], kinds=backends or list(ROWS),
            repeats=repeats, warmup=warmup, threads=threads, workdir=workdir,
            report=lambda r: typer.echo(format_table([r]).splitlines()[-1], err=True),
        )
    if json_out:
        save_json(rows, json_out)
    warning = busy_warning(rows)
    return format_table(rows) + (f"\n\n{warning}" if warning else "")


def _size(height: int | None, width: int | None) -> tuple[int, int] | None:
    if (height is None) != (width is None):
        raise typer.BadParameter("give both --height and --width, or neither")
    return (height, width) if height and width else None


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


_TARGET_HELP = ("onnx graph flavour: onnxruntime (fused attention, ONNX Runtime only; default for "
                "--format onnx) or portable (standard ops: TensorRT, other runtimes)")
_FP16_HELP = "onnx: also write model.fp16.onnx; tensorrt: engine precision (default fp16)"
_BENCH_PRESETS = "vltseg_tiny_m2f,vltseg_clip_b16_m2f"
_BACKENDS_HELP = "subset of torch-fp32,torch-bf16,ort-fp32,ort-fp16,ort-int8,trt-fp16"
_THREADS_HELP = "intra-op threads for torch and ONNX Runtime (0: their defaults)"
_CALIBRATE_HELP = ("folder of source-domain validation images: store the domain-shift confidence "
                   "band measured on them in the model (read by the ROS node)")
_WORKDIR_HELP = "keep/reuse exported graphs here (default: a temp dir)"
_CHECKPOINT_HELP = "bench this checkpoint's preset with its trained weights (not --presets)"
_IMAGES_HELP = "frames to run on, resized to the input size (default: smooth noise)"
_DEMO_HELP = ("--checkpoint runs/demo/model_final.pt (running `vltseg demo` first if absent) "
              "and --images its benchmark's clear val frames: a class agreement that tests")


def export_command(
    checkpoint: Annotated[Path, typer.Option(help="vltseg checkpoint (.pt)")],
    format: Annotated[str, typer.Option("--format", help="onnx | tensorrt")] = "onnx",  # noqa: A002
    out: Annotated[Path | None, typer.Option(help="ONNX path (default: checkpoint with .onnx)")] = None,
    height: Annotated[int | None, typer.Option(help="graph input height (default: preset's)")] = None,
    width: Annotated[int | None, typer.Option(help="graph input width (default: preset's)")] = None,
    batch: Annotated[int | None, typer.Option(
        help="fixed batch size of the graph (default: dynamic, one graph for 1..64 images)")] = None,
    fp16: Annotated[bool | None, typer.Option("--fp16/--fp32", help=_FP16_HELP)] = None,
    int8: Annotated[bool, typer.Option(help="onnx: also write a dynamic-int8 model.int8.onnx")] = False,
    float_input: Annotated[bool, typer.Option(help="float32 0..255 input instead of uint8")] = False,
    class_scores: Annotated[bool, typer.Option(help="also output class scores [B,K,H,W]")] = False,
    max_detections: Annotated[int, typer.Option(help="fixed detection count per image")] = 100,
    check: Annotated[bool, typer.Option(help="parity check vs PyTorch (and engine vs ORT)")] = True,
    device: Annotated[str, typer.Option(help="CUDA device the engine is built for (tensorrt)")] = "cuda:0",
    target: Annotated[str | None, typer.Option(help=_TARGET_HELP)] = None,
    calibrate: Annotated[Path | None, typer.Option(help=_CALIBRATE_HELP)] = None,
) -> None:
    """Export a checkpoint to ONNX (fixed input size; parity-checked) or a TensorRT engine."""
    written = export_checkpoint(
        checkpoint, format, out, _size(height, width), batch=batch, fp16=fp16, int8=int8,
        input_dtype="float32" if float_input else "uint8", class_scores=class_scores,
        max_detections=max_detections, check=check, device=device, target=target,
        calibrate=calibrate,
    )
    for path in written:
        typer.echo(f"wrote {path}")


def bench_command(
    presets: Annotated[str, typer.Option(help="comma-separated presets (random weights)")] = _BENCH_PRESETS,
    height: Annotated[int | None, typer.Option(help="input height (default: preset's)")] = None,
    width: Annotated[int | None, typer.Option(help="input width (default: preset's)")] = None,
    batches: Annotated[str, typer.Option(help="comma-separated batch sizes")] = "1,4",
    backends: Annotated[str | None, typer.Option(help=_BACKENDS_HELP)] = None,
    repeats: Annotated[int, typer.Option(help="timed interleaved rounds per row (median kept)")] = 5,
    warmup: Annotated[int, typer.Option(help="extra untimed calls per row")] = 0,
    threads: Annotated[int, typer.Option(help=_THREADS_HELP)] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write rows as JSON")] = None,
    workdir: Annotated[Path | None, typer.Option(help=_WORKDIR_HELP)] = None,
    checkpoint: Annotated[Path | None, typer.Option(help=_CHECKPOINT_HELP)] = None,
    images: Annotated[Path | None, typer.Option(help=_IMAGES_HELP)] = None,
    demo: Annotated[bool, typer.Option(help=_DEMO_HELP)] = False,
) -> None:
    """Time torch / ONNX Runtime / TensorRT side by side; ratios to eager torch fp32."""
    from vltseg_core.runtime.bench import BenchModel

    models: list[str | BenchModel] = list(_csv(presets) or [])
    if demo:
        from vltseg_core.demo import demo_checkpoint

        checkpoint, demo_frames = demo_checkpoint()
        images = images or demo_frames
    if checkpoint is not None:
        models = [BenchModel("", checkpoint=checkpoint, images_dir=images)]
    elif images is not None:
        models = [BenchModel(p, images_dir=images) for p in models]  # type: ignore[arg-type]
    table = run_bench(
        models, _size(height, width), [int(b) for b in _csv(batches) or []],
        _csv(backends), repeats, warmup, threads, json_out, workdir,
    )
    typer.echo(table)


def calibrate_command(
    model: Annotated[Path, typer.Argument(help="exported .onnx or .engine")],
    images: Annotated[Path, typer.Argument(help="folder of source-domain validation images")],
    limit: Annotated[int, typer.Option(help="images used at most (spread over the folder)")] = 100,
) -> None:
    """Measure the domain-shift confidence band of an export and store it in its metadata."""
    from vltseg_core.errors import ModelFileError

    try:
        _calibrate(model, images, limit)
    except (FileNotFoundError, ValueError, ModelFileError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add `export`, `calibrate` and `bench` to the `vltseg` app."""
    app.command("export")(export_command)
    app.command("calibrate")(calibrate_command)
    app.command("bench")(bench_command)
