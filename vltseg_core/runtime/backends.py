"""Inference backends behind one call: `run(images uint8 [B,3,H,W] RGB) -> {output name: array}`
with the exported graph's output names (export/onnx.py), so the Predictor post-processes every
backend the same way. `max_batch` says how the Predictor must chunk a batch.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vltseg_core.errors import ModelFileError, require_file
from vltseg_core.export import tensorrt as trt_export
from vltseg_core.export.metadata import ModelMetadata, read_session_metadata
from vltseg_core.export.outputs import confidence_and_ids, pad_detections
from vltseg_core.export.tensorrt_runner import cuda_index

if TYPE_CHECKING:
    from vltseg_core.export.tensorrt_runner import TensorRTRunner


class Backend(Protocol):
    metadata: ModelMetadata
    fixed_batch: int | None  # graph batch size if fixed (chunks are padded to it)
    max_batch: int  # largest chunk a call may carry

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


class TorchBackend:
    """Eager PyTorch (optionally `torch.compile`d, optionally under autocast) with the export
    wrapper's output functions, so it is the reference the graphs are checked against."""

    fixed_batch: int | None = None
    max_batch = 64

    def __init__(
        self,
        model: "torch.nn.Module",  # noqa: F821 - torch imported lazily
        metadata: ModelMetadata,
        *,
        device: str = "cpu",
        compile: bool = False,
        autocast_dtype: "torch.dtype | None" = None,  # noqa: F821
    ) -> None:
        import torch

        self.metadata = metadata
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._forward = torch.compile(self.model) if compile else self.model
        self.autocast_dtype = autocast_dtype

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str = "cpu", **kw: object) -> TorchBackend:
        from vltseg_core.runtime.checkpoint import load_model_and_metadata

        model, metadata = load_model_and_metadata(path)
        return cls(model, metadata, device=device, **kw)  # type: ignore[arg-type]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        x = self.model.preprocess(torch.from_numpy(images).to(self.device))
        dtype = self.autocast_dtype
        with torch.inference_mode(), torch.autocast(self.device.type, dtype, enabled=dtype is not None):
            out = self._forward(x)
            named: dict[str, torch.Tensor] = {}
            if out.sem_seg is not None:
                ids, conf = confidence_and_ids(out.sem_seg, self.metadata.confidence or "normalize")
                named.update(class_ids=ids, confidence=conf)
            if out.detections is not None:
                boxes, scores, labels, count = pad_detections(out.detections, self._max_det())
                named.update(boxes=boxes, scores=scores, labels=labels, num_detections=count)
        return {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
                for k, v in named.items()}

    def _max_det(self) -> int:
        return self.metadata.max_detections or 100


def _ort_providers(device: str) -> list[str | tuple[str, dict[str, str]]]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime here has no CUDAExecutionProvider (needs onnxruntime-gpu)")
        index = device.partition(":")[2] or "0"
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")


def _disabled_optimizers(device: str) -> list[str]:
    """ONNX Runtime graph fusions that make this model slower where it runs.

    CPU: `SkipLayerNormalization` (Add + LayerNorm fused) takes 4x the time of the two ops it
    replaces at the pixel decoder's width 256 (ORT 1.32, 2 threads, B/16 at 1024x512: 12 nodes
    77 ms against 20 ms for Add + LayerNormalization); the fused kernel is kept on GPUs.
    """
    return ["SkipLayerNormFusion"] if device == "cpu" else []


class OnnxRuntimeBackend:
    """An exported graph in ONNX Runtime (CPU or CUDA execution provider)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        threads: int = 0,
        optimization: str = "all",
        profile: bool = False,
        spin: bool = False,
    ) -> None:
        """threads 0: one per core. spin False: idle intra-op threads sleep instead of
        busy-waiting; on a CPU shared with other processes (ROS nodes, other jobs) spinning
        threads steal the cores they wait for (measured here: 2x slower tiny model under load)."""
        import onnxruntime as ort

        self.path = require_file(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0: one per physical core
        opts.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        opts.enable_profiling = profile
        opts.log_severity_level = 3  # errors only: constant-folding notes are not for users
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=_ort_providers(device),
                                                disabled_optimizers=_disabled_optimizers(device))
        except (RuntimeError, ValueError) as exc:
            if "ExecutionProvider" in str(exc):
                raise
            raise ModelFileError(self.path, f"not a loadable ONNX model ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind types (InvalidProtobuf, Fail)
            raise ModelFileError(self.path, f"not a loadable ONNX model ({exc})") from None
        self.metadata = read_session_metadata(self.session, self.path)
        self.fixed_batch = self.metadata.batch
        self.max_batch = self.metadata.batch or 64
        self._input_dtype = np.uint8 if self.metadata.input_dtype == "uint8" else np.float32
        self._names = [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(None, {"images": images.astype(self._input_dtype, copy=False)})
        return dict(zip(self._names, outs))


class TensorRTBackend:
    """A TensorRT engine. Given an `.onnx`: the cached engine for it, built if absent
    (export/tensorrt.py). Given an `.engine`: that engine as it is, with its own precision (name,
    `.json` sidecar) and batch limit (its optimisation profile); only if it does not deserialise
    here (other GPU / TensorRT version) is it rebuilt alike from the ONNX beside it.
    `checked`: whether the engine passed the parity check against ONNX Runtime.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, device: str = "cuda:0", precision: str | None = None,
        max_batch: int | None = None, check: bool = True,
    ) -> None:
        index = cuda_index(device)
        path = require_file(path)
        if path.suffix == ".onnx":
            metadata = OnnxRuntimeBackend(path).metadata  # validates the file too
            precision = precision or "fp16"
            self.runner, self.engine_path = trt_export.load_or_build(
                path, metadata, precision=precision, device=index,
                max_batch=max_batch or trt_export.DEFAULT_MAX_BATCH, check=check,
            )
            self.metadata = replace(metadata, precision=precision)
        else:
            self.runner, self.engine_path, self.metadata = _load_engine(path, index, precision, check)
            _refuse_other(path, "a batch limit of", self.runner.max_batch, max_batch)
        self.checked = trt_export.is_checked(self.engine_path)
        self.fixed_batch = self.runner.fixed_batch
        self.max_batch = self.runner.max_batch

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        dtype = np.uint8 if self.metadata.input_dtype == "uint8" else np.float32
        return self.runner.run({"images": images.astype(dtype, copy=False)})


def _load_engine(
    path: Path, index: int, precision: str | None, check: bool
) -> tuple[TensorRTRunner, Path, ModelMetadata]:
    """An engine file as it is; rebuilt alike (same precision and batch limit) from its ONNX only
    when it does not deserialise here."""
    metadata = _engine_metadata(path)
    _refuse_other(path, "precision", metadata.precision, precision)
    try:
        return trt_export.TensorRTRunner(path.read_bytes(), index), path, metadata
    except trt_export.EngineLoadError as exc:
        onnx_path = _onnx_for_engine(path, metadata)
        if onnx_path is None:
            raise ModelFileError(path, f"{exc}; re-export it or put its .onnx beside it to rebuild") from None
    limit = int(metadata.extra.get("tensorrt.max_batch", trt_export.DEFAULT_MAX_BATCH))
    runner, rebuilt = trt_export.load_or_build(
        onnx_path, OnnxRuntimeBackend(onnx_path).metadata, precision=metadata.precision,
        device=index, max_batch=limit, check=check,
    )
    return runner, rebuilt, _engine_metadata(rebuilt)


def _refuse_other(path: Path, what: str, has: object, asked: object | None) -> None:
    if asked is not None and asked != has:
        raise ValueError(f"{path.name} has {what} {has}, not {asked}: pass its .onnx to build "
                         "another engine")


def _engine_metadata(path: Path) -> ModelMetadata:
    """The sidecar's metadata; the precision in the engine's name wins (sidecars written before
    the engine's precision was recorded carry the ONNX's)."""
    try:
        metadata = trt_export.read_sidecar(path)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelFileError(path, f"engine metadata {trt_export.sidecar_path(path).name} unreadable ({exc})") from None
    parts = path.name.rsplit(".", 3)  # stem, precision, key, "engine"
    if len(parts) == 4 and parts[1] in trt_export.PRECISIONS:
        metadata = replace(metadata, precision=parts[1])
    return metadata


def _onnx_for_engine(path: Path, metadata: ModelMetadata) -> Path | None:
    """The ONNX an engine was built from, beside it (its recorded name, or model.onnx for
    model.fp16.<key>.engine), to rebuild from."""
    names = [metadata.extra.get("tensorrt.onnx", ""), path.name.rsplit(".", 3)[0] + ".onnx"]
    return next((path.with_name(n) for n in names if n and path.with_name(n).is_file()), None)
