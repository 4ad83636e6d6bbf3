"""Reduced-precision copies of an exported fp32 graph: fp16 (for GPUs: CUDA EP / TensorRT) and
dynamic int8 (weights int8, activations quantised per call; the CPU option).

fp16 uses the converter that ships inside onnxruntime (`onnxruntime.transformers.float16`, a
maintained copy of onnxconverter-common's), so no extra dependency. Inputs/outputs keep their
types (uint8 images in, uint8 ids / fp32 confidences out), so the runtime treats all variants
alike; metadata is carried over with `precision` updated.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from vltseg_core.export.metadata import ModelMetadata

# Ops kept in fp32 in the fp16 graph: reductions over classes and box arithmetic whose range or
# precision fp16 cannot hold (softmax over 19 classes is fine, sums of 1e4 values are not),
# index/NMS ops without fp16 kernels in ONNX Runtime, and the mask einsums (Mask2Former's class
# scores sum query probabilities at full resolution: in fp16, near-tied classes flip pixels).
FP16_KEEP_FP32 = (
    "Einsum",
    "NonMaxSuppression",
    "TopK",
    "ReduceSum",
    "ReduceMean",
    "CumSum",
    "RoiAlign",
    "Resize",
    "Range",
)


def variant_path(path: Path, precision: str) -> Path:
    """model.onnx -> model.fp16.onnx / model.int8.onnx (next to it)."""
    return path.with_name(f"{path.stem}.{precision}{path.suffix}")


def _with_precision(proto: object, precision: str) -> None:
    props = {p.key: p.value for p in proto.metadata_props}  # type: ignore[attr-defined]
    meta = replace(ModelMetadata.from_props(props), precision=precision)
    del proto.metadata_props[:]  # type: ignore[attr-defined]
    for key, value in meta.to_props().items():
        proto.metadata_props.add(key=key, value=value)  # type: ignore[attr-defined]


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None) -> Path:
    """fp16 weights and activations, fp32/uint8 graph inputs and outputs; returns dst."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = Path(src)
    dst = Path(dst) if dst else variant_path(src, "fp16")
    proto = convert_float_to_float16(
        onnx.load_model(str(src)), keep_io_types=True, op_block_list=list(FP16_KEEP_FP32)
    )
    _with_precision(proto, "fp16")
    onnx.save_model(proto, str(dst))
    return dst


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None) -> Path:
    """Dynamic int8 quantisation of MatMul/Gemm weights (activations quantised at run time,
    uses VNNI on CPUs that have it); convolutions stay fp32 (ConvInteger is slow on x86)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = Path(src)
    dst = Path(dst) if dst else variant_path(src, "int8")
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    proto = onnx.load_model(str(dst))
    _with_precision(proto, "int8")
    onnx.save_model(proto, str(dst))
    return dst


# fp16 is judged against the fp32 graph with looser bounds than the fp32 export (max |d score|,
# class agreement); int8 is only reported: its error depends on the weights (a random-init
# model with near-tied classes flips many pixels) and it is a CPU speed option, not a default.
TOLERANCES = {"fp16": (2e-2, 0.99)}


def check_variant(fp32: Path, variant: Path, precision: str) -> str:
    """Run both graphs in ONNX Runtime (CPU) on the parity images and compare; raises
    ParityError beyond TOLERANCES (fp16), returns the report (or why it could not run)."""
    import onnxruntime as ort

    from vltseg_core.export.onnx import (
        ParityError,
        compare_outputs,
        parity_images,
        read_metadata,
        run_onnxruntime,
    )

    meta = read_metadata(fp32)
    images = parity_images(meta.batch or 2, *meta.input_size, seed=7).numpy()
    reference = run_onnxruntime(fp32, images)
    try:
        candidate = run_onnxruntime(variant, images)
    except ort.capi.onnxruntime_pybind11_state.NotImplemented as exc:  # no CPU kernel for an op
        return f"not checked: ONNX Runtime CPU cannot run it ({str(exc).splitlines()[0][:100]})"
    score_tol, agreement = TOLERANCES.get(precision, (float("inf"), 0.0))
    report = compare_outputs(reference, candidate, score_tol=score_tol, min_agreement=agreement,
                             strict_detections=False)
    if not report.ok and precision in TOLERANCES:
        raise ParityError(f"{variant.name}: {precision} vs fp32 parity failed: {report}")
    return str(report)

