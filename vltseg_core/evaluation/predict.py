"""``vltseg predict``: label PNGs, colourised maps and overlays (and boxes) for image files.

Output layout under ``out``::

    labels/{stem}.png     uint8 train ids, or Cityscapes label ids with ``label_ids``
                          (what ``vltseg score`` and the benchmark server read)
    color/{stem}.png      Cityscapes colours
    overlay/{stem}.png    colours blended over the image, detections drawn as boxes
    detections/{stem}.json  boxes (xyxy pixels), scores, labels, when the model detects
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from vltseg_core.evaluation.inference import InferenceSpec, infer
from vltseg_core.data.labels import palette
from vltseg_core.evaluation.overlay import colorize, overlay

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Files as given; folders contribute their images (recursively, sorted)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
    if not files:
        raise FileNotFoundError(f"no images found in {[str(p) for p in inputs]}")
    return files


def _spec(config: Path | None) -> InferenceSpec:
    if config is None:
        return InferenceSpec()
    from vltseg_core.train.config import load_config

    return InferenceSpec.from_config(load_config(config).eval)


def _write(path: Path, rgb_or_label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rgb_or_label if rgb_or_label.ndim == 2 else cv2.cvtColor(rgb_or_label, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"could not write {path}")


def draw_boxes(image: np.ndarray, det: dict[str, torch.Tensor], thresh: float = 0.3) -> np.ndarray:
    """Draw detections scoring >= ``thresh`` in their class colours."""
    pal = palette()
    out = image.copy()
    for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                 det["labels"].tolist()):
        if score < thresh:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        colour = tuple(int(c) for c in pal[int(label)])
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2)
    return out


def predict_image(model: torch.nn.Module, image: np.ndarray, spec: InferenceSpec,
                  stem: str, out: Path, id_lut: np.ndarray | None = None) -> None:
    """Run one ``uint8[H, W, 3]`` RGB image and write its files under ``out``."""
    pred = infer(model, torch.from_numpy(image).permute(2, 0, 1), spec)
    shown = image
    if pred.scores is not None:
        label = pred.scores.argmax(0).to(torch.uint8).cpu().numpy()
        _write(out / "labels" / f"{stem}.png", label if id_lut is None else id_lut[label])
        _write(out / "color" / f"{stem}.png", colorize(label))
        shown = overlay(image, label)
    if pred.detections is not None:
        det = pred.detections
        shown = draw_boxes(shown, det)
        rec = {k: v.tolist() for k, v in det.items()}
        (out / "detections").mkdir(parents=True, exist_ok=True)
        (out / "detections" / f"{stem}.json").write_text(json.dumps(rec))
    _write(out / "overlay" / f"{stem}.png", shown)


def predict_files(inputs: Sequence[Path], checkpoint: Path, out: Path,
                  config: Path | None = None, device: str = "auto",
                  label_ids: bool = False) -> list[Path]:
    """Predict every input image with the model in ``checkpoint``; returns the images done."""
    from vltseg_core.data.io import read_rgb
    from vltseg_core.data.labels import train_to_label_lut
    from vltseg_core.evaluation.evaluator import load_for_eval
    from vltseg_core.train.distributed import resolve_device

    files = expand_inputs(inputs)
    spec = _spec(config)
    model = load_for_eval(checkpoint, resolve_device(device))
    out = Path(out)
    lut = train_to_label_lut() if label_ids else None
    for path in files:
        predict_image(model, read_rgb(path), spec, path.stem, out, lut)
    return files
