"""Checkpoint -> (model, ModelMetadata), shared by the torch backend and `vltseg export`.

Checkpoints are `{"preset", "num_classes", "model": state_dict, "meta"}` (DESIGN.md), read by
`vltseg_core.models.load_checkpoint` (`weights_only=True`). Class names and colours come from
`meta["class_names"]` / `meta["class_colors"]` when the training run recorded them, else
generic ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from vltseg_core.errors import ModelFileError, require_file
from vltseg_core.export.metadata import ModelMetadata, default_class_names, default_palette


def metadata_for(
    model: nn.Module,
    preset: str,
    num_classes: int,
    meta: dict[str, Any] | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    **fields: Any,
) -> ModelMetadata:
    """ModelMetadata from the model's own constants (mean/std, input size) and checkpoint meta."""
    meta = meta or {}
    names = tuple(meta.get("class_names") or default_class_names(num_classes))
    colors = tuple(tuple(int(v) for v in c) for c in meta.get("class_colors") or default_palette(num_classes))
    if len(names) != num_classes or len(colors) != num_classes:
        raise ValueError(f"{len(names)} class names / {len(colors)} colours for {num_classes} classes")
    size = input_size or tuple(int(v) for v in model.input_size)
    fields.setdefault("tasks", model_tasks(model))
    return ModelMetadata(
        preset=preset,
        num_classes=num_classes,
        class_names=names,
        class_colors=colors,  # type: ignore[arg-type]
        pixel_mean=tuple(float(v) for v in model.pixel_mean.flatten()),  # type: ignore[arg-type]
        pixel_std=tuple(float(v) for v in model.pixel_std.flatten()),  # type: ignore[arg-type]
        input_size=size,  # type: ignore[arg-type]
        **fields,
    )


def model_tasks(model: nn.Module) -> tuple[str, ...]:
    """("seg",), ("det",) or ("seg", "det") from the heads a VLTSeg has, so a detection or joint
    checkpoint served by the torch backend publishes its boxes as its ONNX export does."""
    heads = (("seg", getattr(model, "seg_head", None)), ("det", getattr(model, "det_head", None)))
    return tuple(task for task, head in heads if head is not None) or ("seg",)


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(eval model, checkpoint meta) via `vltseg_core.models.load_checkpoint`; a missing,
    corrupt or foreign file raises ModelFileError with a one-line reason."""
    from vltseg_core.models import load_checkpoint

    path = require_file(path)
    try:
        model, meta = load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - zip, pickle, EOF, key and shape errors: all "bad file"
        raise ModelFileError(path, f"not a loadable vltseg checkpoint ({type(exc).__name__}: {exc})") from None
    return model.to(device).eval(), dict(meta or {})


def load_model_and_metadata(
    path: str | os.PathLike[str], device: str = "cpu", **fields: Any
) -> tuple[nn.Module, ModelMetadata]:
    model, meta = load_model(path, device)
    preset = str(getattr(model, "preset", "custom"))
    return model, metadata_for(model, preset, int(model.num_classes), meta, **fields)


def model_file_kind(path: str | os.PathLike[str]) -> str:
    """Backend a file is for, by suffix: torch (.pt/.pth/.ckpt), onnxruntime (.onnx),
    tensorrt (.engine)."""
    suffix = Path(path).suffix.lower()
    kinds = {".pt": "torch", ".pth": "torch", ".ckpt": "torch", ".onnx": "onnxruntime",
             ".engine": "tensorrt"}
    if suffix not in kinds:
        raise ModelFileError(path, f"unknown model file type {suffix!r} (.pt, .onnx or .engine)")
    return kinds[suffix]
