"""ONNX export of the seg / det / joint models through a wrapper module (after segment-anything's
`utils/onnx.py`): the wrapper fixes what a vehicle consumes, the model code stays training code.

Graph contract (names in `ExportModule.output_names`):
  input  `images`       [B,3,H,W] uint8 (or float32 0..255) RGB at a FIXED H, W (the preset's
                        input size unless overridden); B dynamic (metadata.batch None, what
                        `vltseg export` writes by default: one graph for 1..64 images) or fixed.
  seg    `class_ids`    [B,H,W] uint8   argmax class
         `confidence`   [B,H,W] float32 max class probability
         `class_scores` [B,K,H,W] float32 (optional) the model's class scores
  det    `boxes`        [B,N,4] float32 xyxy in input pixels, `scores` [B,N] float32,
         `labels`       [B,N] int64, `num_detections` [B] int64; N = max_detections, rows past
                        num_detections are zero (score 0), rows sorted by score.

Targets: "onnxruntime" (default) writes the encoder's attention as ONNX Runtime's fused
`com.microsoft.MultiHeadAttention` (attention.py; 0.1-0.2 s of 2.4 s at B/16 on CPU); "portable" keeps
to standard ONNX ops, for TensorRT and other runtimes. The metadata records which.

Dynamic H/W: not exported. Fixed shapes keep TensorRT engines single-profile and fast, and the
ViT position embeddings / pyramid are resampled for one size only. `vltseg_core.runtime.Predictor`
letterboxes any image to the graph size (pad = pixel mean) and maps masks and boxes back.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vltseg_core.files import atomic_write_with
from vltseg_core.export.metadata import ModelMetadata, read_session_metadata
from vltseg_core.export.outputs import confidence_and_ids, pad_detections
from vltseg_core.export.rewrites import export_rewrites

DEFAULT_OPSET = 18
SEG_OUTPUTS = ("class_ids", "confidence")
DET_OUTPUTS = ("boxes", "scores", "labels", "num_detections")
CONFIDENCE_MODES = ("probs", "logits", "normalize")
TARGETS = ("onnxruntime", "portable")


class ParityError(RuntimeError):
    """The exported graph does not reproduce PyTorch within tolerance."""


class ExportModule(nn.Module):
    """images [B,3,H,W] uint8|float 0..255 RGB -> the fixed tensors of the graph contract."""

    def __init__(
        self,
        model: nn.Module,
        tasks: Sequence[str],
        *,
        class_scores: bool = False,
        max_detections: int = 100,
        confidence: str = "normalize",
    ) -> None:
        super().__init__()
        if confidence not in CONFIDENCE_MODES:
            raise ValueError(f"confidence must be one of {CONFIDENCE_MODES}, got {confidence!r}")
        self.model = model
        self.tasks = tuple(tasks)
        self.class_scores = class_scores
        self.max_detections = max_detections
        self.confidence = confidence

    @property
    def output_names(self) -> tuple[str, ...]:
        names: tuple[str, ...] = ()
        if "seg" in self.tasks:
            names += SEG_OUTPUTS + (("class_scores",) if self.class_scores else ())
        if "det" in self.tasks:
            names += DET_OUTPUTS
        return names

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(self.model.preprocess(images))
        results: tuple[torch.Tensor, ...] = ()
        if "seg" in self.tasks:
            ids, confidence = confidence_and_ids(out.sem_seg, self.confidence)
            results += (ids, confidence)
            if self.class_scores:
                results += (out.sem_seg.float(),)
        if "det" in self.tasks:
            det = getattr(out, "det", None)  # a VLTSeg's padded batch: no per-image loop, any batch
            results += tuple(det.rows(self.max_detections)) if det is not None \
                else pad_detections(out.detections, self.max_detections)
        return results


def infer_tasks(model: nn.Module, images: torch.Tensor) -> tuple[str, ...]:
    """Which heads the model has: a VLTSeg's `seg_head` / `det_head`, else from one eval forward
    (sem_seg / detections not None)."""
    from vltseg_core.models import VLTSeg

    if isinstance(model, VLTSeg):
        return tuple(t for t, h in (("seg", model.seg_head), ("det", model.det_head)) if h is not None)
    with torch.no_grad():
        out = model(model.preprocess(images))
    tasks = tuple(t for t, v in (("seg", out.sem_seg), ("det", out.detections)) if v is not None)
    if not tasks:
        raise ValueError("model returned neither sem_seg nor detections")
    return tasks


def parity_images(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth random RGB uint8 images [count,3,H,W]: blobs plus noise, closer to photos than
    white noise, so parity is checked where the model is confident as well as where it is not."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, max(2, height // 32), max(2, width // 32), generator=gen)
    smooth = nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    noise = torch.rand(count, 3, height, width, generator=gen) * 0.1
    return ((smooth * 0.9 + noise) * 255).round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: dict[str, float]
    class_agreement: float
    ok: bool
    details: str

    def __str__(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        return f"class agreement {self.class_agreement:.5f}; max |d| {diffs}{self.details}"


def compare_outputs(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    *,
    score_tol: float = 1e-3,
    min_agreement: float = 0.999,
    box_tol: float = 0.5,
    strict_detections: bool = True,
    best_score_tol: float = 0.1,
) -> ParityReport:
    """Compare graph outputs by name: scores/confidences to score_tol, class maps by agreement,
    boxes in pixels to box_tol (over rows both sides count as detections), labels and counts
    exactly. strict_detections False (reduced precision: box coordinates lose bits, proposals
    shift, NMS and thresholds decide differently, so the detection sets legitimately differ):
    only the best score per image is compared, to best_score_tol, which catches a broken
    detector, not fp16 drift (2.6e-2 measured on the random-init tiny joint model)."""
    diffs: dict[str, float] = {}
    agreement = 1.0
    notes = ""
    ok = True
    for name, ref in reference.items():
        got = candidate[name]
        if name == "class_ids":
            agreement = float((ref == got).mean())
            ok &= agreement >= min_agreement
        elif name in ("confidence", "class_scores") or (name == "scores" and strict_detections):
            diffs[name] = float(np.abs(ref.astype(np.float64) - got).max(initial=0.0))
            ok &= diffs[name] <= score_tol
        elif name == "scores":  # the best detection per image only
            diffs[name] = float(np.abs(ref.max(-1, initial=0.0) - got.max(-1, initial=0.0)).max())
            ok &= diffs[name] <= best_score_tol
        elif name == "boxes" and strict_detections:
            valid = (reference["scores"] > 0) & (candidate["scores"] > 0)
            diffs[name] = float(np.abs(ref - got)[valid].max(initial=0.0))
            ok &= diffs[name] <= box_tol
        elif name in ("labels", "num_detections") and strict_detections and not np.array_equal(ref, got):
            notes += f"; {name} differ in {int((ref != got).sum())} entries"
            ok = False
    return ParityReport(diffs, agreement, bool(ok), notes)


def run_torch(module: ExportModule, images: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outs = module(images)
    return {n: t.cpu().numpy() for n, t in zip(module.output_names, outs)}


def run_onnxruntime(path: Path, images: np.ndarray, threads: int = 0) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # constant-folding notes about fp16 nodes are not errors
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    dtype = np.uint8 if session.get_inputs()[0].type == "tensor(uint8)" else np.float32
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": images.astype(dtype)})))


def check_parity(
    module: ExportModule,
    path: Path,
    images: torch.Tensor,
    *,
    score_tol: float = 1e-3,
    min_agreement: float = 0.999,
) -> ParityReport:
    """ONNX Runtime (CPU) vs eager PyTorch on the same images; raises ParityError on failure.

    The eager side runs the model's own ops (GridSample included), so this also checks the
    export-time rewrites in `rewrites.py`.
    """
    reference = run_torch(module, images)
    candidate = run_onnxruntime(path, images.numpy())
    report = compare_outputs(
        reference, candidate, score_tol=score_tol, min_agreement=min_agreement
    )
    if not report.ok:
        raise ParityError(f"{path.name}: ONNX Runtime vs PyTorch parity failed: {report}")
    return report


def finalize_onnx(path: Path, metadata: ModelMetadata, *, forbid_ops: Sequence[str] = (),
                  portable: bool = False) -> None:
    """Write metadata_props into the file; refuse graphs that still contain `forbid_ops` or,
    if `portable`, ops outside the standard ONNX domain."""
    import onnx

    proto = onnx.load_model(str(path))
    present = sorted({n.op_type for n in proto.graph.node} & set(forbid_ops))
    if present:
        raise RuntimeError(
            f"exported graph still contains {present}: the model binds the op outside the "
            "export rewrites (see vltseg_core/export/rewrites.py)"
        )
    custom = sorted({f"{n.domain}.{n.op_type}" for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if portable and custom:
        raise RuntimeError(f"a portable export must use standard ONNX ops only, found {custom}")
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    atomic_write_with(path, lambda tmp: onnx.save_model(proto, tmp))


def read_metadata(path: Path) -> ModelMetadata:
    """ModelMetadata from an ONNX file (via onnxruntime, which the runtime has anyway)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return read_session_metadata(session, Path(path))


def _trace_to_onnx(
    module: ExportModule,
    path: Path,
    size: tuple[int, int],
    batch: int | None,
    input_dtype: str,
    opset: int,
    gather_sampling: bool,
    target: str,
) -> None:
    """torch.export (dynamo) -> ONNX with the rewrites of rewrites.py active."""
    from vltseg_core.export.attention import translation_table

    example = parity_images(batch or 2, *size, seed=1)  # 2, not 1: size-1 dims get specialised
    example = example if input_dtype == "uint8" else example.float()
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=64)},)
    fused = target == "onnxruntime"
    with _quiet(), export_rewrites(gather_sampling, module.model, fused), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["images"],
            output_names=list(module.output_names),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic,
            external_data=False,
            verbose=False,
            custom_translation_table=translation_table() if fused else None,
        )


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter and its optimiser, which narrate every step on stdout, stderr and
    warnings; errors still propagate as exceptions."""
    log = io.StringIO()
    optimiser = logging.getLogger("onnxscript")  # logs through handlers made before the redirect
    level = optimiser.level
    optimiser.setLevel(logging.ERROR)
    try:
        with redirect_stdout(log), redirect_stderr(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optimiser.setLevel(level)


def _graph_batch(path: Path) -> int | None:
    """The batch size the graph really has (None if symbolic): tracing may specialise it."""
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph
    dim = graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


@dataclass(frozen=True)
class ExportResult:
    path: Path
    metadata: ModelMetadata
    parity: ParityReport | None


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    metadata: ModelMetadata,
    *,
    class_scores: bool = False,
    opset: int = DEFAULT_OPSET,
    gather_sampling: bool = True,
    check: bool = True,
    parity_count: int = 2,
    target: str = "onnxruntime",
) -> ExportResult:
    """Export `model` (eval mode) to `path` at metadata.input_size, then check parity.

    metadata gives preset, classes, colours, mean/std, input size, input dtype, batch (fixed;
    None asks for a dynamic batch, which the model code must not specialise: VLTSeg's seg and
    det heads do not; a model returning per-image detection lists does) and
    max_detections; tasks, outputs and confidence are filled in here.
    gather_sampling exports `F.grid_sample` as gathers (TensorRT-safe, see rewrites.py).
    target: "onnxruntime" (fused attention, ONNX Runtime only) or "portable" (standard ops).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if metadata.num_classes > 256:
        raise ValueError(f"{metadata.num_classes} classes do not fit the uint8 class_ids output")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # moved into place only once checked
    model = model.eval()
    height, width = metadata.input_size
    probe = parity_images(1, height, width, seed=1)
    tasks = infer_tasks(model, probe)
    module = ExportModule(
        model,
        tasks,
        class_scores=class_scores,
        max_detections=metadata.max_detections or 100,
        confidence=metadata.confidence or "normalize",
    ).eval()
    try:
        _trace_to_onnx(module, partial, (height, width), metadata.batch, metadata.input_dtype,
                       opset, gather_sampling, target)
        metadata = replace(metadata, target=target)
        metadata, parity = _finish(module, partial, metadata, gather_sampling, check, parity_count)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(path, metadata, parity)


def _finish(
    module: ExportModule,
    path: Path,
    metadata: ModelMetadata,
    gather_sampling: bool,
    check: bool,
    parity_count: int,
) -> tuple[ModelMetadata, ParityReport | None]:
    """Fill in what the trace decided, write metadata, check ops and parity."""
    if _graph_batch(path) != metadata.batch:
        raise RuntimeError(
            f"the model specialised the batch dimension to {_graph_batch(path)} while tracing "
            "(Python code on images.shape[0]); export with a fixed batch instead"
        )
    metadata = replace(
        metadata,
        tasks=module.tasks,
        outputs=module.output_names,
        max_detections=module.max_detections if "det" in module.tasks else 0,
        confidence=module.confidence,
    )
    finalize_onnx(path, metadata, forbid_ops=("GridSample",) if gather_sampling else (),
                  portable=metadata.target == "portable")
    if not check:
        return metadata, None
    images = parity_images(metadata.batch or parity_count, *metadata.input_size, seed=2)
    images = images if metadata.input_dtype == "uint8" else images.float()
    return metadata, check_parity(module, path, images)
