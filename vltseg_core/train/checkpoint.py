"""Training checkpoints: written atomically, readable with ``weights_only=True``.

The file is a model checkpoint in the DESIGN.md format (``preset``, ``num_classes``,
``model``, ``meta``) plus a ``train_state`` entry, so ``vltseg eval --checkpoint last.pt``
works on it directly. ``train_state`` holds everything a resume needs to continue the exact
loss curve: optimizer, scheduler, grad scaler, iteration and every rank's RNG states. RNG
states are stored as tensors/lists (not numpy objects) so the safe loader accepts them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch



def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) global RNG states as safe-loadable values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with the safe loader; a clear error for a missing/garbled file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors vary by version
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}") from exc
