"""A CPU stand-in for the `tensorrt` module and for the CUDA seam (`tensorrt_runner.cuda`), so
the TensorRT path is tested here without TensorRT or a GPU.

Names. Each fake version defines only names its real Python bindings have (NVIDIA/TensorRT
`python/src/infer/pyCore.cpp`, `pyGraph.cpp`, `pyFoundationalTypes.cpp`,
`parsers/pyOnnx.cpp` at v10.3.0 and release/10.13; 11.x from v11.1 less what the 11.4
migration guide lists as removed, e.g. `BuilderFlag.FP16` and `DIRECT_IO`), and only the
subset the project calls, so a call of a name a version lacks raises AttributeError here as
it would there.

Behaviour. Failures are return values as in TensorRT (False / -1 / None), forcible per name
through `FakeCuda.refuse`. Building records what a real build depends on (parsed file,
strong typing, flags, profile, device) in a JSON "plan"; an engine deserialises only with the
same version and GPU. Executing runs the parsed ONNX in ONNX Runtime, reading inputs from and
writing outputs to the bound addresses, so shapes, dtypes and buffers are really exercised.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"FAKETRT1"
_BUILDER_FLAGS = {  # BuilderFlag members per version, from the bindings named above
    "10.3": "FP16 BF16 INT8 DEBUG GPU_FALLBACK REFIT DISABLE_TIMING_CACHE TF32 SPARSE_WEIGHTS "
            "SAFETY_SCOPE OBEY_PRECISION_CONSTRAINTS PREFER_PRECISION_CONSTRAINTS DIRECT_IO "
            "REJECT_EMPTY_ALGORITHMS VERSION_COMPATIBLE EXCLUDE_LEAN_RUNTIME FP8 "
            "ERROR_ON_TIMING_CACHE_MISS DISABLE_COMPILATION_CACHE WEIGHTLESS STRIP_PLAN "
            "REFIT_IDENTICAL WEIGHT_STREAMING INT4 REFIT_INDIVIDUAL",
    "10.13": "FP16 BF16 INT8 DEBUG GPU_FALLBACK REFIT DISABLE_TIMING_CACHE EDITABLE_TIMING_CACHE "
             "TF32 SPARSE_WEIGHTS SAFETY_SCOPE OBEY_PRECISION_CONSTRAINTS "
             "PREFER_PRECISION_CONSTRAINTS DIRECT_IO REJECT_EMPTY_ALGORITHMS VERSION_COMPATIBLE "
             "EXCLUDE_LEAN_RUNTIME FP8 ERROR_ON_TIMING_CACHE_MISS DISABLE_COMPILATION_CACHE "
             "WEIGHTLESS STRIP_PLAN REFIT_IDENTICAL WEIGHT_STREAMING INT4 REFIT_INDIVIDUAL "
             "STRICT_NANS MONITOR_MEMORY FP4 DISTRIBUTIVE_INDEPENDENCE",
    "11.4": "DEBUG GPU_FALLBACK REFIT DISABLE_TIMING_CACHE EDITABLE_TIMING_CACHE TF32 "
            "SPARSE_WEIGHTS SAFETY_SCOPE VERSION_COMPATIBLE EXCLUDE_LEAN_RUNTIME "
            "ERROR_ON_TIMING_CACHE_MISS DISABLE_COMPILATION_CACHE STRIP_PLAN REFIT_IDENTICAL "
            "WEIGHT_STREAMING REFIT_INDIVIDUAL STRICT_NANS MONITOR_MEMORY DISTRIBUTIVE_INDEPENDENCE",
}
_NETWORK_FLAGS = {
    "10.3": "EXPLICIT_BATCH STRONGLY_TYPED",
    "10.13": "EXPLICIT_BATCH STRONGLY_TYPED PREFER_AOT_PYTHON_PLUGINS PREFER_JIT_PYTHON_PLUGINS",
    "11.4": "STRONGLY_TYPED PREFER_AOT_PYTHON_PLUGINS PREFER_JIT_PYTHON_PLUGINS",  # STRONGLY_TYPED: ignored
}
VERSIONS = {"10.3": "10.3.0.30", "10.13": "10.13.3.9", "11.4": "11.4.0.106"}
_DTYPES = {1: ("FLOAT", np.float32), 10: ("HALF", np.float16), 2: ("UINT8", np.uint8),
           3: ("INT8", np.int8), 6: ("INT32", np.int32), 7: ("INT64", np.int64), 9: ("BOOL", np.bool_)}


@dataclass
class FakeStream:
    cuda_stream: int
    device: int
    cuda: FakeCuda

    def synchronize(self) -> None:
        self.cuda.events.append(("synchronize", self.cuda_stream))


@dataclass
class FakeCuda:
    """The `tensorrt_runner.TorchCuda` seam on CPU: records the device and stream in force."""

    gpus: tuple[str, ...] = ("Fake GPU A sm_90 132SM",)
    current: int = 0
    stream: FakeStream | None = None  # None: the legacy default stream
    events: list[tuple[Any, ...]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # TensorRT calls made to report failure
    corrupt_outputs: bool = False  # engines compute wrong results (parity must catch it)

    def unavailable_reason(self) -> str | None:
        return None

    @contextmanager
    def device(self, index: int) -> Iterator[None]:
        if not 0 <= index < len(self.gpus):
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        previous, self.current = self.current, index
        try:
            yield
        finally:
            self.current = previous

    def new_stream(self, index: int) -> FakeStream:
        return FakeStream(0x1000 + len(self.events) + 16 * index + 1, index, self)

    @contextmanager
    def use_stream(self, stream: FakeStream) -> Iterator[None]:
        previous, self.stream = self.stream, stream
        try:
            yield
        finally:
            self.stream = previous

    def buffer_device(self, index: int) -> Any:
        import torch

        return torch.device("cpu")

    def gpu_name(self, index: int) -> str:
        return self.gpus[index]


def make_tensorrt(version: str, cuda: FakeCuda) -> types.ModuleType:
    """A `tensorrt` module imitating `version` ("10.3", "10.13" or "11.4")."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # importlib.util.find_spec works
    trt.__version__ = VERSIONS[version]
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", _BUILDER_FLAGS[version].split(), start=0)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", _NETWORK_FLAGS[version].split(), start=0)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", "WORKSPACE DLA_MANAGED_SRAM DLA_LOCAL_DRAM "
                                      "DLA_GLOBAL_DRAM TACTIC_DRAM TACTIC_SHARED_MEMORY", start=0)
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", "NONE INPUT OUTPUT", start=0)
    trt.DataType = enum.IntEnum("DataType", "FLOAT HALF BF16 INT8 INT32 INT64 BOOL UINT8 FP8 INT4", start=0)
    severity = enum.IntEnum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE", start=0)
    env = _Env(trt, cuda, version)
    trt.Logger = type("Logger", (_Logger,), {"Severity": severity, **severity.__members__, "_env": env})
    trt.Builder = type("Builder", (_Builder,), {"_env": env})
    trt.OnnxParser = _OnnxParser
    trt.Runtime = type("Runtime", (_Runtime,), {"_env": env})
    return trt


@dataclass
class _Env:
    trt: types.ModuleType
    cuda: FakeCuda
    version: str
    loggers: list[Any] = field(default_factory=list)
    builds: list[dict[str, Any]] = field(default_factory=list)


def _refused(env: _Env, name: str) -> bool:
    return name in env.cuda.refuse


class _Logger:
    _env: _Env

    def __init__(self, min_severity: Any) -> None:
        self.min_severity = min_severity
        self._env.loggers.append(self)


class _Tensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class _Network:
    def __init__(self, env: _Env, flags: int) -> None:
        known = sum(1 << int(f) for f in env.trt.NetworkDefinitionCreationFlag)
        if flags & ~known:
            raise TypeError(f"create_network: unknown flag bits {flags:#x}")
        bit = 1 << int(env.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        self._env, self.flags = env, flags
        self._strongly_typed = env.version.startswith("11.") or bool(flags & bit)
        self._inputs: list[_Tensor] = []
        self._outputs: list[_Tensor] = []
        self._source = ""

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> _Tensor:
        return self._inputs[index]


class _OnnxParser:
    def __init__(self, network: _Network, logger: _Logger) -> None:
        self._network, self._errors = network, []

    def parse_from_file(self, model: str) -> bool:
        import onnx

        try:
            graph = onnx.load_model(model, load_external_data=False).graph
        except Exception as exc:  # noqa: BLE001 - the parser reports, never raises
            self._errors.append(f"could not read {model}: {exc}")
            return False
        dt = self._network._env.trt.DataType
        for values, into in ((graph.input, self._network._inputs), (graph.output, self._network._outputs)):
            for v in values:
                t = v.type.tensor_type
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
                into.append(_Tensor(v.name, dims, dt[_DTYPES[t.elem_type][0]]))
        self._network._source = model
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        return self._errors[index]


class _Profile:
    def __init__(self) -> None:
        self._shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - binding names
        if not all(a <= b <= c for a, b, c in zip(min, opt, max)) or not len(min) == len(opt) == len(max):
            raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
        self._shapes[input] = [list(min), list(opt), list(max)]


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def serialize(self) -> bytes:
        return self._data or b"fake timing cache"


class _Config:
    def __init__(self, env: _Env) -> None:
        self._env = env
        self._flag_set = {env.trt.BuilderFlag.TF32}  # TF32 is on by default
        self._profiles: list[_Profile] = []
        self._pools: dict[Any, int] = {}
        self._cache: _TimingCache | None = None

    def set_flag(self, flag: Any) -> None:
        self._flag_set.add(self._env.trt.BuilderFlag(flag))

    def clear_flag(self, flag: Any) -> None:
        self._flag_set.discard(self._env.trt.BuilderFlag(flag))

    def get_flag(self, flag: Any) -> bool:
        return flag in self._flag_set

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self._pools[self._env.trt.MemoryPoolType(pool)] = pool_size

    def add_optimization_profile(self, profile: _Profile) -> int:
        if _refused(self._env, "add_optimization_profile") or not profile._shapes:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> _TimingCache:
        return _TimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        self._cache = cache
        return True

    def get_timing_cache(self) -> _TimingCache | None:
        return self._cache


class _Builder:
    _env: _Env

    def __init__(self, logger: _Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> _Network:
        return _Network(self._env, flags)

    def create_builder_config(self) -> _Config:
        return _Config(self._env)

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
        env, flags = self._env, sorted(f.name for f in config._flag_set)
        dynamic = [t.name for t in network._inputs if -1 in t.shape]
        profile = config._profiles[0]._shapes if config._profiles else {}
        if (network._strongly_typed and {"FP16", "BF16", "INT8"} & set(flags)) or set(dynamic) - set(profile):
            return None  # TensorRT logs the error and returns no plan
        plan = {"version": env.version, "gpu": env.cuda.gpu_name(env.cuda.current), "source": network._source,
                "strongly_typed": network._strongly_typed, "network_flags": network.flags, "flags": flags,
                "device": env.cuda.current, "profile": profile, "logger": id(self.logger),
                "io": [(t.name, list(t.shape), t.dtype.name, True) for t in network._inputs]
                + [(t.name, list(t.shape), t.dtype.name, False) for t in network._outputs]}
        env.builds.append(plan)
        return MAGIC + json.dumps(plan).encode()


class _Runtime:
    _env: _Env

    def __init__(self, logger: _Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> _Engine | None:
        env, data = self._env, bytes(serialized_engine)
        if not data.startswith(MAGIC):
            return None
        plan = json.loads(data[len(MAGIC):])
        if plan["version"] != env.version or plan["gpu"] != env.cuda.gpu_name(env.cuda.current):
            return None  # built by another TensorRT or for another GPU
        env.cuda.events.append(("deserialize", env.cuda.current, id(self.logger)))
        return _Engine(env, plan)


class _Engine:
    def __init__(self, env: _Env, plan: dict[str, Any]) -> None:
        self._env, self._plan = env, plan
        self._io = {name: (tuple(shape), dtype, is_input) for name, shape, dtype, is_input in plan["io"]}

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    def get_tensor_name(self, index: int) -> str:
        return list(self._io)[index]

    def get_tensor_mode(self, name: str) -> Any:
        return self._env.trt.TensorIOMode.INPUT if self._io[name][2] else self._env.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return self._env.trt.DataType[self._io[name][1]]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        shapes = self._plan["profile"].get(name) or [self._io[name][0]] * 3
        return [tuple(s) for s in shapes]

    def _ort_session(self) -> Any:
        """The parsed graph in ONNX Runtime: what this engine computes."""
        import onnxruntime as ort

        if not hasattr(self, "_session"):
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(self._plan["source"], opts,
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def create_execution_context(self) -> _Context | None:
        return None if _refused(self._env, "create_execution_context") else _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine, self._shapes, self._addresses = engine, {}, {}
        self._env = engine._env

    def set_input_shape(self, name: str, shape: Any) -> bool:
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        ok = len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))
        if ok and not _refused(self._env, "set_input_shape"):
            self._shapes[name] = tuple(shape)
            return True
        return False

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        shape = self.engine._io[name][0]
        batch = next(iter(self._shapes.values()), (-1,))[0]
        return tuple(batch if d == -1 and i == 0 else d for i, d in enumerate(shape))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine._io or _refused(self._env, "set_tensor_address"):
            return False
        self._addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda = self._env.cuda
        current = cuda.stream.cuda_stream if cuda.stream else 0
        cuda.events.append(("execute", cuda.current, stream_handle, current, *self._shapes.values()))
        if _refused(self._env, "execute_async_v3") or set(self.engine._io) - set(self._addresses):
            return False
        outputs = self.engine._ort_session().run(None, {n: self._read(n) for n in self._shapes})
        for (name, _), value in zip(self._outputs(), outputs):
            if cuda.corrupt_outputs and value.dtype.kind == "f":
                value = value + 0.5
            self._write(name, value)
        return True

    def _outputs(self) -> list[tuple[str, Any]]:
        return [(n, v) for n, v in self.engine._io.items() if not v[2]]

    def _numpy_dtype(self, name: str) -> Any:
        return next(np_t for trt_name, np_t in _DTYPES.values() if trt_name == self.engine._io[name][1])

    def _read(self, name: str) -> np.ndarray:
        dtype, shape = np.dtype(self._numpy_dtype(name)), self._shapes[name]
        nbytes = int(np.prod(shape)) * dtype.itemsize
        raw = (ctypes.c_char * nbytes).from_address(self._addresses[name])
        return np.frombuffer(bytes(raw), dtype).reshape(shape)

    def _write(self, name: str, value: np.ndarray) -> None:
        expected = self.get_tensor_shape(name)
        value = np.ascontiguousarray(value, dtype=self._numpy_dtype(name))
        if value.shape != expected:
            raise AssertionError(f"fake engine: {name} computed {value.shape}, bound {expected}")
        ctypes.memmove(self._addresses[name], value.ctypes.data, value.nbytes)


def plan_of(engine_file: Path) -> dict[str, Any]:
    """What a fake engine file recorded at build time."""
    return json.loads(engine_file.read_bytes()[len(MAGIC):])


def builds(trt: types.ModuleType) -> list[dict[str, Any]]:
    """The plans every build with this fake module produced, in order."""
    return trt.Builder._env.builds


def loggers(trt: types.ModuleType) -> list[Any]:
    """Every trt.Logger created with this fake module."""
    return trt.Logger._env.loggers
