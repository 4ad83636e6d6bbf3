"""Count what would be a device->host synchronisation on a GPU, while running on the CPU.

On CUDA `torch.cuda.set_sync_debug_mode` reports these; the CPU has no such thing, so this counts
the calls that cause one when the tensor lives on a GPU: reading a value to the host (`.item()`,
`float()`, `bool()`, `.tolist()`, `.cpu()`) and ops whose output size depends on
the data (`nonzero`, `unique`, `masked_select`, boolean indexing, ...). Only calls made by
project code count, made directly or through torch's one-op Python wrappers: torch's own
internals take other code paths on a GPU (AdamW's step counters live on the host; clip_grad_norm_
loops per tensor only on the CPU). `.to(device)` is not counted: on the CPU it cannot tell a
host->device copy (no sync) from a device->host one, so project code reads back with `.cpu()`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SYNC_OPS = {
    aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,
    aten.nonzero.default, aten.masked_select.default, aten._unique2.default,
    aten.unique_dim.default, aten.unique_consecutive.default, aten.repeat_interleave.Tensor,
    aten.bincount.default,  # sizes its output from the data's max on CUDA
}
BOOL_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}


# torch's thin Python wrappers around single ops: a sync inside them is the caller's. Deeper torch
# code (optimisers, clip_grad_norm_'s CPU fallback loop) runs other kernels on a GPU.
WRAPPERS = ("torch.functional", "torch.nn.functional", "torch._tensor", "torch._jit_internal")
SKIP = (__name__, "torch.utils._python_dispatch", "torch._ops", "torch._dynamo", "torch._compile",
        "contextlib")


def _project_caller() -> str | None:
    """`module:line` of the project code that called the op, directly or through a wrapper."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(SKIP):
        frame = frame.f_back
    first = frame
    while frame is not None and frame.f_globals.get("__name__", "") in WRAPPERS:
        frame = frame.f_back
    if first is None or frame is None:
        return None
    name = frame.f_globals.get("__name__", "")
    return f"{name}:{frame.f_lineno}" if name.startswith("vltseg_core") else None


class _Mode(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        syncs = func in SYNC_OPS or (func in BOOL_INDEX_OPS and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None))
        if syncs and (where := _project_caller()):
            self.counts[f"{func.__name__} @ {where}"] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_syncs() -> Iterator[Counter]:
    """Counter of `op @ module:line` -> calls, filled while the block runs."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in ("cpu", "tolist")}

    def wrap(name: str, method: Any) -> Any:
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if where := _project_caller():
                counts[f"{name} @ {where}"] += 1
            return method(self, *args, **kwargs)
        return counted

    for name, method in originals.items():
        setattr(torch.Tensor, name, wrap(name, method))
    try:
        with _Mode(counts):
            yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
