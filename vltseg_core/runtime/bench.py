"""Backends side by side in one process: eager torch fp32 (the reference), torch bf16 autocast,
ONNX Runtime fp32 / fp16 / dynamic int8, TensorRT fp16 (when a GPU and tensorrt exist).

Each row: median ms per batch over `repeats` interleaved rounds with its spread (min-max),
images/s, speed-up over eager fp32 of the same preset and batch (the median of the per-round
ratios, with their range: a round times every backend back to back, so load from other
processes that comes and goes hits both sides of a ratio alike), the 1-minute load average
while timing, class-map agreement with eager fp32 on the same input, and peak resident memory.
Agreement counts only images whose eager class map has at least `MIN_AGREEMENT_CLASSES`
classes: random weights give near-constant maps, on which any two backends agree. Trained
weights on real frames (`checkpoint`, `images_dir`; `vltseg bench --demo`) make it a test. Memory is the VmHWM rise from just before the backend is
created (Linux `clear_refs` resets the high-water mark; no psutil needed), so ONNX Runtime rows
include their weight copy and arenas; torch rows reuse the already-built model, so its
parameter bytes are added to theirs to compare like with like.

Used by `vltseg bench` and bench/bench_backends.py; never by the test suite except a tiny smoke.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROWS = ("torch-fp32", "torch-bf16", "ort-fp32", "ort-fp16", "ort-int8", "trt-fp16")
MIN_AGREEMENT_CLASSES = 5
NAN = float("nan")


@dataclass
class BenchRow:
    preset: str
    size: tuple[int, int]
    batch: int
    backend: str
    threads: int = 0
    ms: float = NAN  # median round
    ms_min: float = NAN
    ms_max: float = NAN
    images_per_s: float = NAN
    speedup: float = NAN  # median of per-round ratios to eager fp32
    speedup_min: float = NAN
    speedup_max: float = NAN
    load: float = NAN  # 1-minute load average after the timed rounds
    agreement: float = NAN
    peak_mb: float = NAN
    weights: str = "random"  # or the checkpoint's file name
    note: str = ""
    rounds: list[float] = field(default_factory=list)  # ms of each timed round


def _status_kb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; returns RSS in MB."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def _make_backend(kind: str, model: object, metadata: object, onnx_paths: dict[str, Path],
                  threads: int) -> object:
    import torch

    from vltseg_core.runtime.backends import OnnxRuntimeBackend, TensorRTBackend, TorchBackend

    if kind == "torch-fp32":
        return TorchBackend(model, metadata)
    if kind == "torch-bf16":
        return TorchBackend(model, metadata, autocast_dtype=torch.bfloat16)
    if kind.startswith("ort-"):
        return OnnxRuntimeBackend(onnx_paths[kind.removeprefix("ort-")], threads=threads)
    if kind == "trt-fp16":
        return TensorRTBackend(onnx_paths["portable"], device="cuda:0")
    raise ValueError(kind)


def _export_variants(model: object, metadata: object, workdir: Path, kinds: Sequence[str],
                     weights: str) -> dict[str, Path]:
    """fp32 ONNX for ONNX Runtime (no parity check: agreement is measured by the bench itself)
    + its variants, and a portable fp32 ONNX for TensorRT."""
    from vltseg_core.export.onnx import export_onnx
    from vltseg_core.export.tensorrt import tensorrt_unavailable_reason
    from vltseg_core.export.variants import convert_fp16, quantize_int8

    stem = f"{metadata.preset}_b{metadata.batch}"  # type: ignore[attr-defined]
    stem = stem if weights == "random" else f"{stem}_{weights}"
    fp32 = workdir / f"{stem}.onnx"
    if not fp32.exists():
        export_onnx(model, fp32, metadata, check=False)  # type: ignore[arg-type]
    paths = {"fp32": fp32}
    if "trt-fp16" in kinds and not tensorrt_unavailable_reason():
        paths["portable"] = workdir / f"{stem}.portable.onnx"
        if not paths["portable"].exists():
            export_onnx(model, paths["portable"], metadata, check=False, target="portable")  # type: ignore[arg-type]
    if "ort-fp16" in kinds:
        paths["fp16"] = convert_fp16(fp32)
    if "ort-int8" in kinds:
        paths["int8"] = quantize_int8(fp32)
    return paths


@dataclass(frozen=True)
class BenchModel:
    """What is timed: a preset with random or trained weights, and the frames it sees."""

    preset: str
    checkpoint: Path | None = None  # trained weights (its preset and classes win)
    images_dir: Path | None = None  # frames resized to the input size (else smooth noise)
    num_classes: int = 19


def bench_preset(
    preset: str | BenchModel,
    *,
    size: tuple[int, int] | None = None,
    batches: Sequence[int] = (1, 4),
    kinds: Sequence[str] = ROWS,
    warmup: int = 0,
    repeats: int = 5,
    threads: int = 0,
    workdir: Path | None = None,
    num_classes: int = 19,
    report: Callable[[BenchRow], None] = lambda row: None,
) -> list[BenchRow]:
    """All rows for one preset (random weights unless a :class:`BenchModel` names a checkpoint).

    Backends are created one after another (memory is measured then, over creation and the
    first call, which also gives the class map for agreement and warms up), then timed in
    interleaved rounds, so a load spike from other processes hits every row alike; a row's
    time is its median round and its ratio the median of per-round ratios.
    """
    import torch

    spec = preset if isinstance(preset, BenchModel) else BenchModel(preset, num_classes=num_classes)
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)  # the same intra-op thread count for torch and ORT
    try:
        return _bench_batches(spec, size, batches, kinds, warmup, repeats, threads, workdir, report)
    finally:
        torch.set_num_threads(previous)


def _load(spec: BenchModel) -> tuple[object, dict, str]:
    """(eval model, checkpoint meta, weights label) for `spec`."""
    import torch

    from vltseg_core.models import build_model
    from vltseg_core.runtime.checkpoint import load_model

    if spec.checkpoint is None:
        torch.manual_seed(0)
        return build_model(spec.preset, spec.num_classes).eval(), {}, "random"
    model, meta = load_model(spec.checkpoint)
    stat = Path(spec.checkpoint).stat()  # exported graphs in a kept workdir follow the weights
    return model, meta, f"{Path(spec.checkpoint).stem}-{stat.st_size}-{stat.st_mtime_ns}"


def bench_frames(folder: Path, batch: int, size: tuple[int, int]) -> np.ndarray:
    """The first ``batch`` images of ``folder`` (sorted, repeated if fewer), resized to ``size``
    (H, W): uint8 [B, 3, H, W] RGB."""
    import cv2

    from vltseg_core.data.io import read_rgb
    from vltseg_core.evaluation.predict import expand_inputs

    files = expand_inputs([folder])
    frames = [cv2.resize(read_rgb(files[i % len(files)]), (size[1], size[0]),
                         interpolation=cv2.INTER_AREA) for i in range(batch)]
    return np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2))


def _bench_batches(spec: BenchModel, size: tuple[int, int] | None, batches: Sequence[int],
                   kinds: Sequence[str], warmup: int, repeats: int, threads: int,
                   workdir: Path | None, report: Callable[[BenchRow], None]) -> list[BenchRow]:
    import torch

    from vltseg_core.export.onnx import parity_images
    from vltseg_core.runtime.checkpoint import metadata_for

    # ORT gets torch's count explicitly: the same threads on both sides, and ORT's default (0)
    # would also pin its threads to cores, which a busy neighbour then blocks
    threads_used = threads or torch.get_num_threads()
    model, meta, weights = _load(spec)
    preset, classes = str(getattr(model, "preset", spec.preset)), int(model.num_classes)
    param_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    workdir = workdir or Path(tempfile.mkdtemp(prefix="vltseg-bench-"))
    rows: list[BenchRow] = []
    for batch in batches:
        metadata = metadata_for(model, preset, classes, meta, input_size=size, batch=batch,
                                confidence="normalize")
        images = (bench_frames(spec.images_dir, batch, metadata.input_size) if spec.images_dir
                  else parity_images(batch, *metadata.input_size, seed=0).numpy())
        onnx_paths = _export_variants(model, metadata, workdir, kinds, weights)
        started = {}
        for kind in kinds:
            row = BenchRow(preset, metadata.input_size, batch, kind, threads_used,
                           weights="random" if spec.checkpoint is None else Path(spec.checkpoint).name)
            backend, ids = _start(row, kind, model, metadata, onnx_paths, images, threads_used,
                                  param_mb if kind.startswith("torch") else 0.0)
            started[kind] = (row, backend, ids)
        _time_rounds({k: (r, b) for k, (r, b, _) in started.items() if b is not None}, images,
                     warmup, repeats)
        _compare(started)
        for row, _, _ in started.values():
            report(row)
            rows.append(row)
    return rows


def _compare(started: dict[str, tuple[BenchRow, object, np.ndarray | None]]) -> None:
    """Speed-ups (per-round ratios to eager fp32) and class agreement with eager fp32."""
    base_row, _, reference = started.get("torch-fp32", (None, None, None))
    for row, _, ids in started.values():
        if base_row is not None and row.rounds and base_row.rounds:
            ratios = [b / r for b, r in zip(base_row.rounds, row.rounds)]
            row.speedup = statistics.median(ratios)
            row.speedup_min, row.speedup_max = min(ratios), max(ratios)
        if reference is not None and ids is not None:
            row.agreement = class_agreement(reference, ids)
            if row.agreement != row.agreement:
                row.note = (row.note + "; " if row.note else "") + (
                    f"agreement: eager maps have < {MIN_AGREEMENT_CLASSES} classes")


def class_agreement(reference: np.ndarray, ids: np.ndarray,
                    min_classes: int = MIN_AGREEMENT_CLASSES) -> float:
    """Share of equal pixels over the images whose reference class map [H, W] (of [B, H, W])
    holds at least ``min_classes`` classes; NaN when none does."""
    keep = [i for i in range(len(reference)) if len(np.unique(reference[i])) >= min_classes]
    return float((reference[keep] == ids[keep]).mean()) if keep else NAN


def _start(row: BenchRow, kind: str, model: object, metadata: object, onnx_paths: dict[str, Path],
           images: np.ndarray, threads: int, extra_mb: float) -> tuple[object | None, np.ndarray | None]:
    """Create a backend and run it once; fills row.peak_mb (or row.note on failure/skip)."""
    from vltseg_core.export.tensorrt import tensorrt_unavailable_reason

    if kind == "trt-fp16" and (reason := tensorrt_unavailable_reason()):
        row.note = f"skipped: {reason}"
        return None, None
    base = reset_peak_rss()
    try:
        backend = _make_backend(kind, model, metadata, onnx_paths, threads)
        ids = backend.run(images).get("class_ids")  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - a backend that cannot run this graph is a result
        row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        return None, None
    row.peak_mb = peak_rss_mb() - base + extra_mb
    return backend, ids


def _time_rounds(started: dict[str, tuple[BenchRow, object]], images: np.ndarray, warmup: int,
                 repeats: int) -> None:
    """`warmup` + `repeats` rounds, each calling every backend once in turn."""
    for round_ in range(warmup + repeats):
        for row, backend in started.values():
            start = time.perf_counter()
            backend.run(images)  # type: ignore[attr-defined]
            if round_ >= warmup:
                row.rounds.append((time.perf_counter() - start) * 1e3)
    load = os.getloadavg()[0]
    for row, _ in started.values():
        row.ms, row.ms_min, row.ms_max = statistics.median(row.rounds), min(row.rounds), max(row.rounds)
        row.images_per_s = row.batch / row.ms * 1e3
        row.load = load


def format_table(rows: Sequence[BenchRow]) -> str:
    """Markdown table; ratios are to eager torch fp32 of the same preset and batch, medians of
    the interleaved rounds with their range."""
    lines = [
        "| preset | weights | HxW | batch | threads | backend | ms/batch (min-max) | img/s "
        "| x eager fp32 (range) | load | class agree | peak MB | note |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.weights} | {r.size[0]}x{r.size[1]} | {r.batch} | {r.threads} "
            f"| {r.backend} | {r.ms:.1f} ({r.ms_min:.1f}-{r.ms_max:.1f}) | {r.images_per_s:.2f} "
            f"| {r.speedup:.2f} ({r.speedup_min:.2f}-{r.speedup_max:.2f}) | {r.load:.1f} "
            f"| {r.agreement:.4f} | {r.peak_mb:.0f} | {r.note} |"
        )
    return "\n".join(lines).replace("nan (nan-nan)", "-").replace("| nan ", "| - ")


def busy_warning(rows: Sequence[BenchRow]) -> str:
    """A warning when the load average while timing says other processes competed for the
    cores (the bench's own threads count too); empty on an idle machine."""
    cpus = os.cpu_count() or 1
    load = max((r.load for r in rows if r.load == r.load), default=0.0)
    if load <= cpus + 0.5:
        return ""
    return (f"warning: load average {load:.1f} on {cpus} CPUs while timing: other processes took "
            "cores, which slows multi-threaded runs unevenly; compare ratios of idle runs")


def save_json(rows: Sequence[BenchRow], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in rows], indent=1))


def profile_onnxruntime(path: Path, images: np.ndarray, *, runs: int = 2, threads: int = 0,
                        optimization: str = "all", top: int = 12) -> list[tuple[str, float, float]]:
    """Where ONNX Runtime spends its time: (op type, ms per run, share) summed over nodes,
    from ORT's own profiler."""
    from vltseg_core.runtime.backends import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(path, threads=threads, optimization=optimization, profile=True)
    backend.run(images)  # warm-up, also profiled; excluded below by dividing by runs + 1
    for _ in range(runs):
        backend.run(images)
    trace = Path(backend.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink(missing_ok=True)
    per_op: dict[str, float] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + ev.get("dur", 0) / 1e3
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return [(op, ms / (runs + 1), ms / total) for op, ms in ranked]
