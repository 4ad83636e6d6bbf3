"""Running a TensorRT engine (Python API of TensorRT 10.x and 11.x): which versions work, one
process-wide logger, and `TensorRTRunner`, an engine + execution context on a chosen CUDA device
with its own CUDA stream and torch-allocated buffers.

The runner calls only names both the 10.x and the 11.x bindings have (NVIDIA/TensorRT
`python/src/infer/pyCore.cpp`: `deserialize_cuda_engine`, `create_execution_context`,
`get_tensor_profile_shape`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`). The
CUDA calls go through `cuda` (a `TorchCuda`), the one seam tests replace with a CPU stand-in
(test/fake_tensorrt.py), so device and stream decisions are checked without a GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_VERSION = (10, 0)  # explicit batch only, enqueueV3 API; JetPack 6 ships 10.3
END_VERSION = (12, 0)  # first major not known to work
STRONG_TYPING_FROM = (10, 12)  # BuilderFlag.FP16 deprecated here, removed in 11.0
Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max


class TensorRTUnavailable(RuntimeError):
    """tensorrt, a CUDA device or a supported TensorRT version is missing."""


class EngineLoadError(RuntimeError):
    """An engine file does not deserialise here (other TensorRT version or GPU, or corrupt)."""


class TorchCuda:
    """The CUDA calls of the TensorRT path, through torch (already a dependency; no pycuda)."""

    def unavailable_reason(self) -> str | None:
        import torch

        return None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"

    def device(self, index: int) -> Any:
        """Context in which `index` is the current device (TensorRT builds and runs there)."""
        import torch

        return torch.cuda.device(index)

    def new_stream(self, index: int) -> Any:
        """A non-default stream on `index` (`.cuda_stream` handle, `.synchronize()`)."""
        import torch

        return torch.cuda.Stream(device=index)

    def use_stream(self, stream: Any) -> Any:
        import torch

        return torch.cuda.stream(stream)

    def buffer_device(self, index: int) -> Any:
        import torch

        return torch.device("cuda", index)

    def gpu_name(self, index: int) -> str:
        """Name + compute capability + SM count: engines are tied to the exact SKU."""
        import torch

        props = torch.cuda.get_device_properties(index)
        return f"{props.name} sm_{props.major}{props.minor} {props.multi_processor_count}SM"


cuda = TorchCuda()


def cuda_index(device: str) -> int:
    """'cuda' / 'cuda:N' -> N; anything else is refused (TensorRT runs on CUDA devices only)."""
    kind, _, index = device.partition(":")
    if kind != "cuda" or not (index.isdigit() or index == ""):
        raise ValueError(f"TensorRT needs a CUDA device ('cuda' or 'cuda:N'), got {device!r}")
    return int(index or 0)


def version_of(trt: Any) -> tuple[int, int]:
    major, minor = (int(p) for p in str(trt.__version__).split(".")[:2])
    return major, minor


def strongly_typed(version: tuple[int, int]) -> bool:
    """Build strongly typed networks (fp16 from an fp16 ONNX) from 10.12 on; 11.x has no other."""
    return version >= STRONG_TYPING_FROM


def unsupported_version_reason(version: tuple[int, int]) -> str | None:
    if MIN_VERSION <= version < END_VERSION:
        return None
    return (f"TensorRT {version[0]}.{version[1]} is not supported (need >= "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} and < {END_VERSION[0]}); see docs/EXPORT.md")


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None if it can (tests skip with it, export fails early)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        return f"tensorrt is not installed ({exc})"
    return unsupported_version_reason(version_of(trt)) or cuda.unavailable_reason()


def import_tensorrt() -> Any:
    if reason := tensorrt_unavailable_reason():
        raise TensorRTUnavailable(reason)
    import tensorrt as trt

    return trt


@functools.cache
def trt_logger(trt: Any) -> Any:
    """One logger per process: TensorRT keeps a single logger pointer, so every Builder and
    Runtime must get the same object (and it must outlive them)."""
    return trt.Logger(trt.Logger.WARNING)


def require(ok: object, message: str) -> None:
    """TensorRT reports most failures as False / -1 / None return values, not exceptions."""
    if ok is None or ok is False or (isinstance(ok, int) and not isinstance(ok, bool) and ok < 0):
        raise RuntimeError(f"TensorRT: {message}")


_TORCH_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
    "UINT8": "uint8", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}


@dataclass(frozen=True)
class Binding:
    name: str
    is_input: bool
    dtype: str  # torch dtype name


class TensorRTRunner:
    """A deserialized engine + execution context; `run({name: array}) -> {name: array}`.

    Everything happens on `device`: deserialisation, buffers, execution. Copies and
    `execute_async_v3` are enqueued on the runner's own non-default stream (on the legacy
    default stream TensorRT adds device-wide synchronisations). The batch limits come from the
    engine's optimisation profile, so an engine file is used with the limits it was built with.
    """

    def __init__(self, engine_bytes: bytes, device: int = 0) -> None:
        trt = import_tensorrt()
        self.index = device
        with cuda.device(device):
            self._runtime = trt.Runtime(trt_logger(trt))
            try:  # a foreign engine gives None (and a logged error); some versions raise
                self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            except Exception:  # noqa: BLE001
                self.engine = None
            if self.engine is None:
                raise EngineLoadError("engine does not deserialise with this TensorRT/GPU")
            self.context = self.engine.create_execution_context()
            require(self.context, "create_execution_context() failed (out of device memory?)")
            self.stream = cuda.new_stream(device)
        self.bindings = [self._binding(trt, i) for i in range(self.engine.num_io_tensors)]
        self.profiles: dict[str, Profile] = {b.name: self._profile(b.name) for b in self.bindings if b.is_input}

    def _binding(self, trt: Any, index: int) -> Binding:
        name = self.engine.get_tensor_name(index)
        is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        return Binding(name, is_input, _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name])

    def _profile(self, name: str) -> Profile:
        lo, opt, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))
        return lo, opt, hi

    @property
    def max_batch(self) -> int:
        """Largest batch the profile allows (the Predictor's chunk size)."""
        return min(hi[0] for _, _, hi in self.profiles.values())

    @property
    def fixed_batch(self) -> int | None:
        """The batch size if the profile allows only one (chunks are padded to it)."""
        lows = {lo[0] for lo, _, _ in self.profiles.values()}
        return self.max_batch if lows == {self.max_batch} else None

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        lo, _, hi = self.profiles[name]
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            raise ValueError(f"input {name} of shape {shape} is outside the engine's optimisation "
                             f"profile: min {lo}, max {hi} (batch at most {hi[0]})")

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with cuda.device(self.index), cuda.use_stream(self.stream), self._bound(inputs) as outputs:
            require(self.context.execute_async_v3(self.stream.cuda_stream), "execute_async_v3 failed")
            self.stream.synchronize()
            return {k: v.cpu().numpy() for k, v in outputs.items()}

    @contextmanager
    def _bound(self, inputs: Mapping[str, np.ndarray]) -> Iterator[dict[str, Any]]:
        """Device buffers for every I/O tensor, bound by address; they live until the caller's
        block ends (after the stream synchronised)."""
        import torch

        device = cuda.buffer_device(self.index)
        keep, outputs = [], {}
        for b in (b for b in self.bindings if b.is_input):
            array = np.ascontiguousarray(inputs[b.name])
            self._check_shape(b.name, array.shape)
            t = torch.from_numpy(array).to(device, getattr(torch, b.dtype))
            require(self.context.set_input_shape(b.name, tuple(t.shape)),
                    f"set_input_shape({b.name}, {tuple(t.shape)}) refused; profile {self.profiles[b.name]}")
            require(self.context.set_tensor_address(b.name, t.data_ptr()),
                    f"set_tensor_address({b.name}) failed")
            keep.append(t)
        for b in (b for b in self.bindings if not b.is_input):
            shape = tuple(self.context.get_tensor_shape(b.name))
            require(min(shape, default=0) >= 0, f"output {b.name} has no static shape {shape}")
            outputs[b.name] = torch.empty(shape, dtype=getattr(torch, b.dtype), device=device)
            require(self.context.set_tensor_address(b.name, outputs[b.name].data_ptr()),
                    f"set_tensor_address({b.name}) failed")
        yield outputs
        del keep
