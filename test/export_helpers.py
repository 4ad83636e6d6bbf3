"""Tiny checkpoints and their exports, made once per test process and shared by the export,
runtime and bench tests (a tiny export takes 20-60 s on two cores)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

WORKDIR = Path(tempfile.mkdtemp(prefix="vltseg-export-tests-"))
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
NUM_CLASSES = 7
CLASS_NAMES = tuple(f"thing{i}" for i in range(NUM_CLASSES))
CLASS_COLORS = tuple((10 * i, 255 - 10 * i, 3 * i) for i in range(NUM_CLASSES))


@functools.cache
def tiny_checkpoint(preset: str) -> Path:
    """A randomly initialised tiny preset saved as a vltseg checkpoint with class meta."""
    from vltseg_core.models import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(preset, NUM_CLASSES)
    path = WORKDIR / f"{preset}.pt"
    save_checkpoint(model, path, meta={"class_names": list(CLASS_NAMES),
                                       "class_colors": [list(c) for c in CLASS_COLORS]})
    return path


@functools.cache
def tiny_export(preset: str, target: str = "onnxruntime") -> Path:
    """The checkpoint exported through `vltseg export` (parity-checked), batch 1, named as the
    bench names its exports so the bench smoke test reuses it; seg presets get fp16 + int8.
    target "portable" (standard ops, for TensorRT) gets no variants."""
    from vltseg_core.export.cli import export_checkpoint

    seg = not preset.endswith("_det") and target == "onnxruntime"
    out = WORKDIR / (f"{preset}_b1.onnx" if target == "onnxruntime" else f"{preset}_b1.{target}.onnx")
    written = export_checkpoint(tiny_checkpoint(preset), "onnx", out, batch=1, fp16=seg, int8=seg,
                                max_detections=20, target=target)
    assert written[0] == out
    return out


@functools.cache
def tiny_dynamic_export(preset: str) -> Path:
    """The checkpoint exported by `vltseg export` with its defaults (a dynamic batch), no
    reduced-precision variants; parity-checked inside (2 images)."""
    from vltseg_core.export.cli import export_checkpoint

    out = WORKDIR / f"{preset}_dynamic.onnx"
    (written,) = export_checkpoint(tiny_checkpoint(preset), "onnx", out, max_detections=20)
    return written
