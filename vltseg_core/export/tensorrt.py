"""TensorRT engines (10.x and 11.x) built from the exported ONNX, cached next to it, run by
`TensorRTRunner` (tensorrt_runner.py).

Precision. fp16 engines are strongly typed from TensorRT 10.12 on (the only mode in 11.x, where
`BuilderFlag.FP16` no longer exists): TensorRT parses `model.fp16.onnx` (variants.py, written
beside the ONNX if absent or older than it) and keeps its types. Before 10.12 (JetPack 6 has
10.3) the fp32 ONNX is built with `BuilderFlag.FP16`. fp32 engines clear `BuilderFlag.TF32`
(on by default), so they are fp32 and pass the strict detection parity.

Batch. The optimisation profile follows the graph's batch axis as TensorRT parsed it: a fixed
batch is the only shape; a symbolic one gives min 1 / opt N / max N, N = `max_batch`, which is
also the Predictor's chunk size (it reads the limit back from the engine's profile).

Cache: `<onnx stem>.<precision>.<key[:16]>.engine` beside the ONNX + a `.json` sidecar (the
model metadata with the engine's precision, TensorRT version, profile limit, whether it passed
the parity check; engines carry no metadata). key = sha256 of (ONNX bytes sha256, TensorRT
version, GPU name + compute capability, precision, profile shapes): a new export, TensorRT
upgrade or other GPU gives another key. An engine that still fails to deserialise is rebuilt.
Files are written atomically, sidecar first. Before caching, the engine is checked against ONNX
Runtime on CPU (fp16 tolerances); an engine built with `check=False` is recorded as unchecked
and checked when a later call asks for the check.

`tensorrt` is imported lazily: everything except build/run works (and is tested) without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vltseg_core.export import tensorrt_runner as rt
from vltseg_core.export.metadata import ModelMetadata
from vltseg_core.export.tensorrt_runner import (  # noqa: F401 - the export-side names of the runner
    EngineLoadError,
    TensorRTRunner,
    TensorRTUnavailable,
    tensorrt_unavailable_reason,
)
from vltseg_core.files import atomic_write, atomic_write_with

Shapes = Mapping[str, rt.Profile]
FP16_SCORE_TOL = 2e-2
FP16_MIN_AGREEMENT = 0.99
DEFAULT_MAX_BATCH = 4
PRECISIONS = ("fp16", "fp32")


def require_portable(metadata: ModelMetadata, onnx_path: str | os.PathLike[str]) -> None:
    """TensorRT parses standard ONNX ops only: refuse an export made for ONNX Runtime."""
    if metadata.target != "portable":
        raise ValueError(
            f"{Path(onnx_path).name} was exported for ONNX Runtime (target {metadata.target!r}: "
            "com.microsoft.MultiHeadAttention); TensorRT needs `vltseg export --format tensorrt` "
            "or `--target portable`"
        )


def require_precision(metadata: ModelMetadata, onnx_path: str | os.PathLike[str], precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if metadata.precision not in PRECISIONS or (metadata.precision == "fp16" and precision == "fp32"):
        raise ValueError(f"{Path(onnx_path).name} is an {metadata.precision} graph; build "
                         f"{precision} engines from the fp32 ONNX")


def require_tensorrt() -> tuple[int, int]:
    """The TensorRT version, or TensorRTUnavailable (checked before a minutes-long export)."""
    return rt.version_of(rt.import_tensorrt())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def engine_cache_key(
    onnx_sha256: str, trt_version: str, gpu_name: str, precision: str, shapes: Shapes
) -> str:
    """Pure function of everything an engine depends on; hex sha256."""
    payload = {
        "onnx": onnx_sha256,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "precision": precision,
        "shapes": {k: [list(s) for s in v] for k, v in sorted(shapes.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def engine_path(onnx_path: Path, precision: str, key: str) -> Path:
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.{key[:16]}.engine")


def profile_shapes(dims: Sequence[int], max_batch: int) -> rt.Profile:
    """(min, opt, max) for an input of shape `dims` (-1: symbolic): min 1 / opt N / max N over a
    symbolic batch axis (opt N: the Predictor sends chunks of N), the shape itself otherwise."""
    dims = tuple(int(d) for d in dims)
    if any(d < 0 for d in dims[1:]):
        raise ValueError(f"only the batch axis may be dynamic, the graph input has shape {dims}")
    if dims[0] >= 0:
        return dims, dims, dims
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return (1, *dims[1:]), (max_batch, *dims[1:]), (max_batch, *dims[1:])


def input_shapes(metadata: ModelMetadata, max_batch: int = DEFAULT_MAX_BATCH) -> dict[str, rt.Profile]:
    """The profile `images` gets, from the metadata (which the export checked against the graph)."""
    h, w = metadata.input_size
    return {"images": profile_shapes((metadata.batch or -1, 3, h, w), max_batch)}


def _timing_cache_path(onnx_path: Path, gpu: str, trt_version: str) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in f"{gpu}-{trt_version}")
    return onnx_path.with_name(f"tensorrt-timing-{slug}.cache")


def build_source(onnx_path: Path, metadata: ModelMetadata, precision: str, version: tuple[int, int]) -> Path:
    """The ONNX TensorRT parses: for a strongly typed fp16 build the fp16 copy beside the fp32
    graph (reused unless older than it), else the graph itself."""
    from vltseg_core.export.variants import convert_fp16, variant_path

    if precision != "fp16" or metadata.precision == "fp16" or not rt.strongly_typed(version):
        return onnx_path
    fp16 = variant_path(onnx_path, "fp16")
    if not fp16.exists() or fp16.stat().st_mtime_ns < onnx_path.stat().st_mtime_ns:
        atomic_write_with(fp16, lambda tmp: convert_fp16(onnx_path, tmp))
    return fp16


def network_flags(trt: Any, version: tuple[int, int]) -> int:
    """STRONGLY_TYPED on 10.12-10.x; 0 on 11.x, where every network is strongly typed (the flag
    survives only as a deprecated no-op) and on older 10.x (weakly typed)."""
    if rt.strongly_typed(version) and version[0] == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _set_precision(trt: Any, config: Any, precision: str, version: tuple[int, int]) -> None:
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 rounds fp32 GEMM inputs to 10 bits
    elif not rt.strongly_typed(version):
        config.set_flag(trt.BuilderFlag.FP16)  # weak typing: TensorRT picks fp16 kernels


def _add_profile(trt: Any, builder: Any, config: Any, network: Any, max_batch: int) -> None:
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, *profile_shapes(tuple(tensor.shape), max_batch))
    rt.require(config.add_optimization_profile(profile), "add_optimization_profile refused the profile")


def build_engine(
    source: Path,
    *,
    precision: str = "fp16",
    max_batch: int = DEFAULT_MAX_BATCH,
    device: int = 0,
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
) -> bytes:
    """Parse `source` (see build_source) and build a serialized engine on `device`."""
    trt = rt.import_tensorrt()
    version = rt.version_of(trt)
    with rt.cuda.device(device):
        builder = trt.Builder(rt.trt_logger(trt))
        network = builder.create_network(network_flags(trt, version))
        parser = trt.OnnxParser(network, rt.trt_logger(trt))
        if not parser.parse_from_file(str(source)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {source.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        _set_precision(trt, config, precision, version)
        _add_profile(trt, builder, config, network, max_batch)
        cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
        config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=True)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {source.name}")
    if timing_cache:
        atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def check_engine_parity(
    runner: TensorRTRunner, onnx_path: Path, metadata: ModelMetadata, precision: str = "fp16"
) -> str:
    """Engine vs ONNX Runtime (CPU, the graph as given) on the export parity images, at the
    engine's fixed batch or a batch of up to 2; raises ParityError on failure."""
    import numpy as np

    from vltseg_core.export.onnx import ParityError, compare_outputs, parity_images, run_onnxruntime

    batch = runner.fixed_batch or min(runner.max_batch, 2)
    images = parity_images(batch, *metadata.input_size, seed=3).numpy()
    if metadata.input_dtype != "uint8":
        images = images.astype(np.float32)
    report = compare_outputs(
        run_onnxruntime(onnx_path, images),
        runner.run({"images": images}),
        score_tol=FP16_SCORE_TOL,
        min_agreement=FP16_MIN_AGREEMENT,
        strict_detections=precision == "fp32",
    )
    if not report.ok:
        raise ParityError(f"TensorRT engine vs ONNX Runtime parity failed: {report}")
    return str(report)


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def write_sidecar(engine: Path, metadata: ModelMetadata, *, precision: str, onnx_name: str,
                  max_batch: int, checked: bool) -> None:
    """The model metadata with the engine's precision and how it was built (to rebuild it alike)."""
    extra = {**metadata.extra, "tensorrt.onnx": onnx_name, "tensorrt.max_batch": str(max_batch),
             "tensorrt.checked": "1" if checked else "0"}
    meta = replace(metadata, precision=precision, extra=extra)
    atomic_write(sidecar_path(engine), meta.to_json().encode())


def read_sidecar(engine: Path) -> ModelMetadata:
    """Raises OSError / KeyError / ValueError if missing or not a vltseg sidecar."""
    return ModelMetadata.from_json(sidecar_path(engine).read_text())


def is_checked(engine: Path) -> bool:
    try:
        return read_sidecar(engine).extra.get("tensorrt.checked") == "1"
    except (OSError, KeyError, ValueError):
        return False


def _load_cached(path: Path, device: int) -> TensorRTRunner | None:
    """The cached engine, or None if absent or no longer deserialising (then removed)."""
    if not path.exists():
        return None
    try:
        return TensorRTRunner(path.read_bytes(), device)
    except EngineLoadError:
        path.unlink(missing_ok=True)
        return None


def load_or_build(
    onnx_path: str | os.PathLike[str],
    metadata: ModelMetadata,
    *,
    precision: str = "fp16",
    device: int = 0,
    workspace_gib: float = 4.0,
    max_batch: int = DEFAULT_MAX_BATCH,
    check: bool = True,
) -> tuple[TensorRTRunner, Path]:
    """The cached engine for this ONNX/TensorRT/GPU/precision/profile, built if absent or if
    the cached file no longer deserialises (checked first if `check` and it never was);
    returns the runner and the engine path."""
    require_portable(metadata, onnx_path)
    require_precision(metadata, onnx_path, precision)
    trt = rt.import_tensorrt()
    onnx_path = Path(onnx_path)
    gpu = rt.cuda.gpu_name(device)
    shapes = input_shapes(metadata, max_batch)
    key = engine_cache_key(sha256_file(onnx_path), trt.__version__, gpu, precision, shapes)
    path = engine_path(onnx_path, precision, key)
    record = dict(metadata=metadata, precision=precision, onnx_name=onnx_path.name,
                  max_batch=max_batch)
    if (runner := _load_cached(path, device)) is not None:
        if check and not is_checked(path):  # built with check=False: check before serving it
            check_engine_parity(runner, onnx_path, metadata, precision)
            write_sidecar(path, **record, checked=True)
        return runner, path
    source = build_source(onnx_path, metadata, precision, rt.version_of(trt))
    data = build_engine(source, precision=precision, max_batch=max_batch, device=device,
                        workspace_gib=workspace_gib,
                        timing_cache=_timing_cache_path(onnx_path, gpu, trt.__version__))
    runner = TensorRTRunner(data, device)
    if check:
        check_engine_parity(runner, onnx_path, metadata, precision)
    write_sidecar(path, **record, checked=check)
    atomic_write(path, data)
    return runner, path
