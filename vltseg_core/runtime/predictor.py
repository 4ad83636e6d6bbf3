"""`Predictor`: numpy images in, class-id masks / confidences / boxes out at input resolution,
over torch, ONNX Runtime or TensorRT (after segment-anything's `predictor.py`: numpy in/out).

    predictor = Predictor("model.onnx", backend="onnxruntime")
    result = predictor(image_bgr, bgr=True)           # one HxWx3 uint8 image -> Prediction
    results = predictor([im1, im2, im3])              # a list -> list[Prediction], batched

Every backend gets identical uint8 network inputs from `processing.py` and returns the graph's
named outputs, so results differ only by the backends' arithmetic.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vltseg_core.errors import ModelFileError
from vltseg_core.export.metadata import ModelMetadata
from vltseg_core.runtime import processing
from vltseg_core.runtime.backends import Backend

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


@dataclass
class Prediction:
    """One image's results at its own resolution (HxW).

    mask: HxW uint8 class ids, confidence: HxW float32 max class probability (both None for a
    detection-only model); boxes Nx4 float32 xyxy pixels, scores N float32, labels N int64.
    """

    mask: np.ndarray | None = None
    confidence: np.ndarray | None = None
    boxes: np.ndarray = field(default_factory=_empty_boxes)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def make_backend(
    model_path: str | os.PathLike[str], backend: str | None, device: str, compile: bool,
    threads: int = 0,
) -> Backend:
    """The backend for a file; backend None picks it from the suffix (.pt/.onnx/.engine).
    threads > 0 sets CPU intra-op threads (ONNX Runtime session; torch's process-wide pool)."""
    from vltseg_core.runtime import backends
    from vltseg_core.runtime.checkpoint import model_file_kind

    kind = backend or model_file_kind(model_path)
    if kind == "torch":
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        return backends.TorchBackend.from_checkpoint(model_path, device=device, compile=compile)
    if kind == "onnxruntime":
        return backends.OnnxRuntimeBackend(model_path, device=device, threads=threads)
    if kind == "tensorrt":
        return backends.TensorRTBackend(model_path, device=device if device != "cpu" else "cuda:0")
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


class Predictor:
    """Letterbox -> backend -> map back. Thread-compatible, not thread-safe (one per thread).

    score_threshold drops detections below it (padding rows have score 0 and are always
    dropped); bgr is the default channel order of the images passed in. `calls` counts backend
    runs (one per chunk of at most `backend.max_batch` images).
    """

    calls: int = 0

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        backend: str | None = None,
        device: str = "cpu",
        compile: bool = False,
        *,
        bgr: bool = False,
        score_threshold: float = 0.0,
        threads: int = 0,
    ) -> None:
        self.backend = make_backend(model_path, backend, device, compile, threads)
        self.bgr = bgr
        self.score_threshold = score_threshold

    @classmethod
    def from_backend(cls, backend: Backend, *, bgr: bool = False, score_threshold: float = 0.0) -> Predictor:
        self = cls.__new__(cls)
        self.backend, self.bgr, self.score_threshold = backend, bgr, score_threshold
        return self

    @property
    def metadata(self) -> ModelMetadata:
        return self.backend.metadata

    @property
    def pad_value(self) -> tuple[int, ...]:
        return tuple(int(round(v)) for v in self.metadata.pixel_mean)

    def __call__(
        self, images: np.ndarray | Sequence[np.ndarray], bgr: bool | None = None
    ) -> Prediction | list[Prediction]:
        """One HxWx3 uint8 image -> Prediction; a list (or a BxHxWx3 array) -> list."""
        single = isinstance(images, np.ndarray) and images.ndim == 3
        batch = [images] if single else list(images)
        results = self.predict(batch, self.bgr if bgr is None else bgr)
        return results[0] if single else results

    def predict(self, images: Sequence[np.ndarray], bgr: bool = False) -> list[Prediction]:
        results: list[Prediction] = []
        for start in range(0, len(images), self.backend.max_batch):
            results += self._predict_chunk(images[start : start + self.backend.max_batch], bgr)
        return results

    def _predict_chunk(self, images: Sequence[np.ndarray], bgr: bool) -> list[Prediction]:
        batch, boxes = processing.make_batch(images, self.metadata.input_size, self.pad_value, bgr)
        fixed = self.backend.fixed_batch
        if fixed and len(batch) < fixed:  # graph with a fixed batch: pad with copies
            batch = np.concatenate([batch, np.repeat(batch[-1:], fixed - len(batch), axis=0)])
        outputs = self.backend.run(batch)
        self.calls += 1
        return [self._restore(outputs, i, box) for i, box in enumerate(boxes)]

    def _restore(self, outputs: dict[str, np.ndarray], i: int, box: processing.Letterbox) -> Prediction:
        pred = Prediction()
        if "class_ids" in outputs:
            pred.mask = processing.restore_mask(outputs["class_ids"][i], box)
            pred.confidence = processing.restore_confidence(outputs["confidence"][i], box)
        if "boxes" in outputs:
            keep = outputs["scores"][i] > max(self.score_threshold, 0.0)
            pred.boxes = processing.restore_boxes(outputs["boxes"][i][keep], box)
            pred.scores = outputs["scores"][i][keep].astype(np.float32)
            pred.labels = outputs["labels"][i][keep].astype(np.int64)
        return pred


__all__ = ["BACKENDS", "ModelFileError", "Prediction", "Predictor", "make_backend"]
