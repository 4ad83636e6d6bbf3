"""Backends side by side in one process: eager torch fp32 (the reference), torch bf16 autocast,
ONNX Runtime fp32 / fp16 / dynamic int8, TensorRT fp16 (when a GPU and tensorrt exist).

Each row: best ms per batch over `repeats` interleaved rounds (median kept too), images/s,
speed-up over eager fp32 of the same preset and batch, class-map agreement with eager fp32 on the same
input, and peak resident memory. Memory is the VmHWM rise from just before the backend is
created (Linux `clear_refs` resets the high-water mark; no psutil needed), so ONNX Runtime rows
include their weight copy and arenas; torch rows reuse the already-built model, so its
parameter bytes are added to theirs to compare like with like.

Used by `vltseg bench` and bench/bench_backends.py; never by the test suite except a tiny smoke.
"""

from __future__ import annotations

import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

ROWS = ("torch-fp32", "torch-bf16", "ort-fp32", "ort-fp16", "ort-int8", "trt-fp16")


@dataclass
class BenchRow:
    preset: str
    size: tuple[int, int]
    batch: int
    backend: str
    threads: int = 0
    ms: float = float("nan")  # best round
    ms_median: float = float("nan")
    images_per_s: float = float("nan")
    speedup: float = float("nan")
    agreement: float = float("nan")
    peak_mb: float = float("nan")
    note: str = ""


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


def _export_variants(model: object, metadata: object, workdir: Path, kinds: Sequence[str]) -> dict[str, Path]:
    """fp32 ONNX for ONNX Runtime (no parity check: agreement is measured by the bench itself)
    + its variants, and a portable fp32 ONNX for TensorRT."""
    from vltseg_core.export.onnx import export_onnx
    from vltseg_core.export.tensorrt import tensorrt_unavailable_reason
    from vltseg_core.export.variants import convert_fp16, quantize_int8

    stem = f"{metadata.preset}_b{metadata.batch}"  # type: ignore[attr-defined]
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


def bench_preset(
    preset: str,
    *,
    size: tuple[int, int] | None = None,
    batches: Sequence[int] = (1, 4),
    kinds: Sequence[str] = ROWS,
    warmup: int = 0,
    repeats: int = 3,
    threads: int = 0,
    workdir: Path | None = None,
    num_classes: int = 19,
    report: Callable[[BenchRow], None] = lambda row: None,
) -> list[BenchRow]:
    """All rows for one preset (random weights: speed does not depend on them).

    Backends are created one after another (memory is measured then, over creation and the
    first call, which also gives the class map for agreement and warms up), then timed in
    interleaved rounds, so a load spike from other processes hits every row alike; a row's
    time is its best round (noise only ever adds), the median is kept in the JSON.
    """
    import torch

    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)  # the same intra-op thread count for torch and ORT
    try:
        return _bench_batches(preset, size, batches, kinds, warmup, repeats, threads, workdir,
                              num_classes, report)
    finally:
        torch.set_num_threads(previous)


def _bench_batches(preset: str, size: tuple[int, int] | None, batches: Sequence[int],
                   kinds: Sequence[str], warmup: int, repeats: int, threads: int,
                   workdir: Path | None, num_classes: int, report: Callable[[BenchRow], None]
                   ) -> list[BenchRow]:
    import torch

    from vltseg_core.export.onnx import parity_images
    from vltseg_core.models import build_model
    from vltseg_core.runtime.checkpoint import metadata_for

    threads_used = threads or torch.get_num_threads()
    torch.manual_seed(0)
    model = build_model(preset, num_classes).eval()
    param_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    workdir = workdir or Path(tempfile.mkdtemp(prefix="vltseg-bench-"))
    rows: list[BenchRow] = []
    for batch in batches:
        metadata = metadata_for(model, preset, num_classes, input_size=size, batch=batch,
                                confidence="normalize")
        images = parity_images(batch, *metadata.input_size, seed=0).numpy()
        onnx_paths = _export_variants(model, metadata, workdir, kinds)
        started = {}
        for kind in kinds:
            row = BenchRow(preset, metadata.input_size, batch, kind, threads_used)
            backend, ids = _start(row, kind, model, metadata, onnx_paths, images, threads,
                                  param_mb if kind.startswith("torch") else 0.0)
            started[kind] = (row, backend, ids)
        _time_rounds({k: (r, b) for k, (r, b, _) in started.items() if b is not None}, images,
                     warmup, repeats)
        base_row, _, reference = started.get("torch-fp32", (None, None, None))
        for row, _, ids in started.values():
            if base_row is not None:
                row.speedup = base_row.ms / row.ms
            if reference is not None and ids is not None:
                row.agreement = float((ids == reference).mean())
            report(row)
            rows.append(row)
    return rows


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
    times: dict[str, list[float]] = {k: [] for k in started}
    for round_ in range(warmup + repeats):
        for kind, (_, backend) in started.items():
            start = time.perf_counter()
            backend.run(images)  # type: ignore[attr-defined]
            if round_ >= warmup:
                times[kind].append((time.perf_counter() - start) * 1e3)
    for kind, (row, _) in started.items():
        row.ms, row.ms_median = min(times[kind]), statistics.median(times[kind])
        row.images_per_s = row.batch / row.ms * 1e3


def format_table(rows: Sequence[BenchRow]) -> str:
    """Markdown table; ratios are to eager torch fp32 of the same preset and batch."""
    lines = [
        "| preset | HxW | batch | threads | backend | best ms/batch | img/s | x eager fp32 | class agree | peak MB | note |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.size[0]}x{r.size[1]} | {r.batch} | {r.threads} | {r.backend} | {r.ms:.1f} | "
            f"{r.images_per_s:.2f} | {r.speedup:.2f} | {r.agreement:.4f} | {r.peak_mb:.0f} | {r.note} |"
        )
    return "\n".join(lines).replace("| nan ", "| - ")


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
