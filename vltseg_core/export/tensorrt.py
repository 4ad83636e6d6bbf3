"""TensorRT 10.x: FP16 engines built from the exported ONNX, cached next to it, run with
`execute_async_v3` on torch-allocated CUDA buffers.

Cache: `<onnx stem>.<precision>.<key[:16]>.engine` beside the ONNX (+ `.json` sidecar with the
model metadata, since engines carry none), key = sha256 of (ONNX bytes sha256, TensorRT version,
GPU name + compute capability, precision, input shapes). Any change (new export, driver-side TRT
upgrade, other GPU) gives another key, so a stale engine is never loaded; an engine that still
fails to deserialise is rebuilt, not fatal. Files are written atomically (temp + rename), so a
crash mid-write or two processes building at once never leave a truncated engine.

The build checks the engine against ONNX Runtime on CPU before caching it (FP16 tolerances),
which catches wrong-result layers such as TensorRT's GridSample; the exporter already replaces
GridSample with gathers (rewrites.py).

`tensorrt` is imported lazily: everything except build/run works (and is tested) without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vltseg_core.export.metadata import ModelMetadata
from vltseg_core.files import atomic_write

Shapes = Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # min, opt, max
FP16_SCORE_TOL = 2e-2
FP16_MIN_AGREEMENT = 0.99


class TensorRTUnavailable(RuntimeError):
    """tensorrt or a CUDA device is missing."""


class EngineLoadError(RuntimeError):
    """An engine file does not deserialise here (other TensorRT version or GPU, or corrupt)."""


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None if it can (used by tests to skip with a reason)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"tensorrt is not installed ({exc})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def require_portable(metadata: ModelMetadata, onnx_path: str | os.PathLike[str]) -> None:
    """TensorRT parses standard ONNX ops only: refuse an export made for ONNX Runtime."""
    if metadata.target != "portable":
        raise ValueError(
            f"{Path(onnx_path).name} was exported for ONNX Runtime (target {metadata.target!r}: "
            "com.microsoft.MultiHeadAttention); TensorRT needs `vltseg export --format tensorrt` "
            "or `--target portable`"
        )


def _trt() -> Any:
    reason = tensorrt_unavailable_reason()
    if reason:
        raise TensorRTUnavailable(reason)
    import tensorrt as trt

    return trt


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


def gpu_name(device: int = 0) -> str:
    """Name + compute capability: two cards sharing a marketing name can differ in SM count,
    but engines are tied to the exact SKU, so include what torch can tell."""
    import torch

    props = torch.cuda.get_device_properties(device)
    return f"{props.name} sm_{props.major}{props.minor} {props.multi_processor_count}SM"


def input_shapes(metadata: ModelMetadata, max_batch: int = 4) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Optimisation profile for `images`: the graph's fixed batch, or 1..max_batch (opt 1)."""
    h, w = metadata.input_size
    if metadata.batch:
        shape = (metadata.batch, 3, h, w)
        return {"images": (shape, shape, shape)}
    return {"images": ((1, 3, h, w), (1, 3, h, w), (max_batch, 3, h, w))}


def _timing_cache_path(onnx_path: Path, gpu: str, trt_version: str) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in f"{gpu}-{trt_version}")
    return onnx_path.with_name(f"tensorrt-timing-{slug}.cache")


def build_engine(
    onnx_path: Path,
    shapes: Shapes,
    *,
    precision: str = "fp16",
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
) -> bytes:
    """Parse the ONNX and build a serialized engine (TensorRT 10 API); updates timing_cache."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision != "fp32":
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=True)  # a stale cache only costs time
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name}")
    if timing_cache:
        atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


_TORCH_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
    "UINT8": "uint8", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}


@dataclass
class _Binding:
    name: str
    is_input: bool
    dtype: str


class TensorRTRunner:
    """A deserialized engine + execution context; `run(images uint8 [B,3,H,W]) -> {name: array}`.

    Buffers are torch CUDA tensors (torch is already a dependency; no pycuda), bound by address
    each call with `set_tensor_address`, executed with `execute_async_v3` on torch's stream.
    """

    def __init__(self, engine_bytes: bytes, device: int = 0) -> None:
        import torch

        trt = _trt()
        self._torch = torch
        self.device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            try:  # a foreign engine gives None (and a logged error); some versions raise
                self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            except Exception:  # noqa: BLE001
                self.engine = None
            if self.engine is None:
                raise EngineLoadError("engine does not deserialise with this TensorRT/GPU")
            self.context = self.engine.create_execution_context()
        self.bindings = [self._binding(trt, i) for i in range(self.engine.num_io_tensors)]

    def _binding(self, trt: Any, index: int) -> _Binding:
        name = self.engine.get_tensor_name(index)
        is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
        return _Binding(name, is_input, dtype)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        stream = torch.cuda.current_stream(self.device)
        keep = []  # buffers must outlive the asynchronous execution
        for b in self.bindings:
            if b.is_input:
                t = torch.from_numpy(np.ascontiguousarray(inputs[b.name])).to(
                    self.device, getattr(torch, b.dtype)
                )
                self.context.set_input_shape(b.name, tuple(t.shape))
                self.context.set_tensor_address(b.name, t.data_ptr())
                keep.append(t)
        outputs = {}
        for b in self.bindings:
            if not b.is_input:
                shape = tuple(self.context.get_tensor_shape(b.name))
                t = torch.empty(shape, dtype=getattr(torch, b.dtype), device=self.device)
                self.context.set_tensor_address(b.name, t.data_ptr())
                outputs[b.name] = t
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outputs.items()}


def check_engine_parity(
    runner: TensorRTRunner, onnx_path: Path, metadata: ModelMetadata, precision: str = "fp16"
) -> str:
    """Engine vs ONNX Runtime (CPU, fp32 graph) on the export parity images; raises on failure."""
    from vltseg_core.export.onnx import ParityError, compare_outputs, parity_images, run_onnxruntime

    images = parity_images(metadata.batch or 2, *metadata.input_size, seed=3).numpy()
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


def load_or_build(
    onnx_path: str | os.PathLike[str],
    metadata: ModelMetadata,
    *,
    precision: str = "fp16",
    device: int = 0,
    workspace_gib: float = 4.0,
    max_batch: int = 4,
    check: bool = True,
) -> tuple[TensorRTRunner, Path]:
    """The cached engine for this ONNX/TensorRT/GPU/precision/shapes, built if absent or if the
    cached file no longer deserialises; returns the runner and the engine path."""
    require_portable(metadata, onnx_path)
    trt = _trt()
    onnx_path = Path(onnx_path)
    shapes = input_shapes(metadata, max_batch)
    gpu = gpu_name(device)
    key = engine_cache_key(sha256_file(onnx_path), trt.__version__, gpu, precision, shapes)
    path = engine_path(onnx_path, precision, key)
    if path.exists():
        try:
            return TensorRTRunner(path.read_bytes(), device), path
        except EngineLoadError:
            path.unlink(missing_ok=True)  # rebuild below
    data = build_engine(
        onnx_path,
        shapes,
        precision=precision,
        workspace_gib=workspace_gib,
        timing_cache=_timing_cache_path(onnx_path, gpu, trt.__version__),
    )
    runner = TensorRTRunner(data, device)
    if check:
        check_engine_parity(runner, onnx_path, metadata, precision)
    atomic_write(path.with_name(path.name + ".json"), metadata.to_json().encode())
    atomic_write(path, data)
    return runner, path
