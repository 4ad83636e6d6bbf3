"""Domain-shift calibration of an exported model: run it on source-domain validation images,
derive the confidence band (`runtime.domain_shift.calibrate`) and store it in the model's own
metadata (ONNX `metadata_props`, or a TensorRT engine's JSON sidecar), so a deployed node
knows what "in domain" looks like with no extra file.

    vltseg export --checkpoint ckpt.pt --calibrate DATA/leftImg8bit/val
    vltseg calibrate model.onnx DATA/leftImg8bit/val        # an existing export
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from vltseg_core.export.metadata import ModelMetadata
from vltseg_core.files import atomic_write, atomic_write_with
from vltseg_core.runtime.domain_shift import METADATA_KEY, ShiftBand, calibrate

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(folder: Path, limit: int) -> list[Path]:
    """Up to `limit` images under `folder` (recursive, sorted, evenly spread over the list)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .png/.jpg images under {folder}")
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


def _read_rgb(paths: list[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"unreadable image: {path}")
        yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def calibrate_model(model: Path, images: Path, *, limit: int = 100, low_threshold: float = 0.5,
                    backend: str | None = None) -> ShiftBand:
    """The band of `model` (any file Predictor takes) on up to `limit` images of `images`."""
    from vltseg_core.runtime.predictor import Predictor

    predictor = Predictor(model, backend=backend)
    if "seg" not in predictor.metadata.tasks:
        raise ValueError(f"{model}: domain-shift calibration needs a segmentation model")
    preds = (predictor(image) for image in _read_rgb(image_files(images, limit)))
    return calibrate(((p.confidence, p.mask) for p in preds), predictor.metadata.num_classes,
                     low_threshold=low_threshold)


def with_band(metadata: ModelMetadata, band: ShiftBand) -> ModelMetadata:
    return dataclasses.replace(metadata, extra={**metadata.extra, METADATA_KEY: band.to_json()})


def store_band(model: Path, band: ShiftBand) -> None:
    """Write `band` into an .onnx file's metadata or an .engine's .json sidecar (atomically)."""
    if model.suffix == ".onnx":
        import onnx

        proto = onnx.load_model(str(model))
        props = {p.key: p.value for p in proto.metadata_props}
        meta = with_band(ModelMetadata.from_props(props), band)
        del proto.metadata_props[:]
        for key, value in meta.to_props().items():
            proto.metadata_props.add(key=key, value=value)
        atomic_write_with(model, lambda tmp: onnx.save_model(proto, tmp))
    elif model.suffix == ".engine":
        sidecar = model.with_name(model.name + ".json")
        meta = with_band(ModelMetadata.from_json(sidecar.read_text()), band)
        atomic_write(sidecar, meta.to_json().encode())
    else:
        raise ValueError(f"{model}: calibration is stored in .onnx or .engine exports")
