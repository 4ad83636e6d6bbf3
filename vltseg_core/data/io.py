"""File-level helpers shared by the loaders: reading images/labels and failing clearly.

Every check raises :class:`DatasetError` naming the path and what is wrong, because a loader
that silently yields nothing (or a palette image decoded as colours) wastes a training run.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

cv2.setNumThreads(1)  # loaders run in DataLoader workers; avoid oversubscription


class DatasetError(ValueError):
    """A dataset root, split or file is missing, empty, unreadable or inconsistent."""


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a non-empty directory, else raise naming it as ``what``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{what} does not exist: {path}")
    if not path.is_dir():
        raise DatasetError(f"{what} is not a directory: {path}")
    if not any(path.iterdir()):
        raise DatasetError(f"{what} is empty: {path}")
    return path


def require_split_dir(parent: Path, split: str, what: str) -> Path:
    """``parent/split`` as a directory, or an error listing the splits that do exist."""
    require_dir(parent, what)
    path = Path(parent) / split
    if not path.is_dir():
        have = sorted(p.name for p in Path(parent).iterdir() if p.is_dir())
        raise DatasetError(f"split '{split}' not found under {parent} (found: {have})")
    return require_dir(path, f"{what} split '{split}'")


def glob_files(folder: Path, pattern: str, what: str) -> list[Path]:
    """Sorted recursive matches of ``pattern``; an empty result is an error."""
    files = sorted(Path(folder).glob(pattern))
    if not files:
        raise DatasetError(f"no {what} matching '{pattern}' under {folder}")
    return files


def read_rgb(path: Path) -> np.ndarray:
    """``uint8[H, W, 3]`` RGB; 16-bit or grey inputs are converted, unreadable files raise."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        why = "file does not exist" if not Path(path).exists() else "not a readable image"
        raise DatasetError(f"cannot read image {path}: {why}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_index_png(path: Path) -> np.ndarray:
    """Single-channel label/instance map as stored (indices, not colours).

    PIL keeps palette ('P') PNGs as indices, which GTA5 and Mapillary labels are; OpenCV
    would expand them to colours. 16-bit and 32-bit grey maps come back as int32.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "I;16B", "1"):
                raise DatasetError(f"label {path} has mode {im.mode}; expected a 1-channel map")
            arr = np.asarray(im)
    except (OSError, SyntaxError) as exc:
        why = "file does not exist" if not Path(path).exists() else f"unreadable ({exc})"
        raise DatasetError(f"cannot read label {path}: {why}") from exc
    return arr.astype(np.int32) if arr.dtype not in (np.uint8,) else arr


def read_png_unchanged(path: Path) -> np.ndarray:
    """Raw PNG samples with OpenCV (keeps 16-bit multi-channel data that PIL truncates)."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        why = "file does not exist" if not Path(path).exists() else "not a readable image"
        raise DatasetError(f"cannot read label {path}: {why}")
    return arr


def check_same_size(
    image_shape: tuple[int, ...], label_shape: tuple[int, ...], img_path: Path, lab_path: Path
) -> None:
    """Raise naming both files when an image and its label differ in height or width."""
    if tuple(image_shape[:2]) != tuple(label_shape[:2]):
        raise DatasetError(
            f"size mismatch: image {img_path} is {image_shape[1]}x{image_shape[0]} but label "
            f"{lab_path} is {label_shape[1]}x{label_shape[0]} (WxH)"
        )
