"""Host syncs per training step: the class presence and the matcher's cost matrices of all
decoder layers each come back in one transfer per step, and the loss terms once per log interval.

Before, a step of the tiny model (batch 2, 4 decoder layers) made 27: a `float()` per loss term
(13), one per image and layer for the matcher (8), `torch.unique` and a boolean index per image
(4), `num_masks.item()` and the gradient norm.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch

from sync_counter import count_syncs
from train_helpers import DEMO
from vltseg_core.train import engine
from vltseg_core.train.config import load_config
from vltseg_core.train.distributed import DistInfo
from vltseg_core.train.loader import batch_plan
from vltseg_core.train.monitor import Monitor, PendingLogs, read_jsonl

ITERS, LOG_EVERY, BATCH = 6, 3, 2


def _batches(gen: torch.Generator, device: torch.device):
    """Endless batches of 64x64 images with 8x8-pixel class blocks (many classes per image)."""
    while True:
        images = torch.randint(0, 256, (BATCH, 3, 64, 64), dtype=torch.uint8, generator=gen)
        blocks = torch.randint(0, 19, (BATCH, 8, 8), generator=gen)
        sem = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)
        sem[:, :8] = 255  # an ignored band
        yield images.to(device), [{"sem_seg": s.to(device)} for s in sem], [{}] * BATCH


def _run(tmp_path: Path, device: torch.device, around) -> Counter:  # noqa: ANN001
    """The first ITERS steps of a long run and their periodic work, as `engine.train` runs them,
    inside `around()` (no checkpoint falls among them)."""
    cfg = load_config(DEMO, [
        f"train.out_dir={tmp_path}", "train.iters=1000", f"train.log_every={LOG_EVERY}",
        "train.checkpoint_every=1000", "train.warmup_iters=0", "train.image_every=0", "train.eval_every=0",
        "train.tensorboard=false", f"data.batch_size={BATCH}", f"train.device={device.type}"])
    info = DistInfo(0, 1, 0, device)
    parts, dtype = engine._setup(cfg, info)
    plan, pending = batch_plan(cfg, 1), PendingLogs()
    batches = _batches(torch.Generator().manual_seed(0), device)
    mon = Monitor(tmp_path, ITERS, 0, active=True, tensorboard=False, live=False)
    try:
        with around() as counts:
            for it in range(ITERS):
                step, batch = engine.train_step(parts, batches, plan, cfg, dtype, device)
                pending.add(it, step.names, step.values, step.lr)
                engine._periodic(parts, cfg, info, mon, it, pending, batch)
    finally:
        mon.close()
    return counts


def test_training_step_syncs_once_per_transfer_point(tmp_path: Path) -> None:
    counts = _run(tmp_path, torch.device("cpu"), count_syncs)
    by_site = Counter()
    for key, n in counts.items():  # "cpu @ vltseg_core.models.matcher:87" -> drop the line
        by_site[key.rpartition(":")[0]] += n
    assert by_site == {
        "cpu @ vltseg_core.models.criterion": ITERS,  # classes present in each image
        "cpu @ vltseg_core.models.matcher": ITERS,  # every layer's and image's cost matrix
        "tolist @ vltseg_core.train.monitor": ITERS // LOG_EVERY,  # the pending log rows
    }, counts
    rows = read_jsonl(tmp_path / "loss.jsonl")
    assert [r["iter"] for r in rows] == list(range(ITERS))  # every iteration still logged
    assert {"loss", "loss_ce", "loss_dice_0", "grad_norm", "lr"} <= rows[0].keys()
    parts = sum(v for k, v in rows[0].items() if k.startswith("loss_"))
    assert rows[0]["loss"] == pytest.approx(parts, rel=1e-5)


def test_divergence_is_caught_at_the_next_log_read(tmp_path: Path) -> None:
    pending = PendingLogs()
    pending.add(0, ("loss", "grad_norm"), torch.tensor([1.0, 2.0]), 0.1)
    pending.add(1, ("loss", "grad_norm"), torch.tensor([float("nan"), 2.0]), 0.1)
    mon = Monitor(tmp_path, 2, 0, active=True, tensorboard=False, live=False)
    with pytest.raises(FloatingPointError, match="loss is nan at iteration 1: training diverged"):
        engine._read_logs(pending, mon, scaler_enabled=False)
    mon.close()
    assert [r["iter"] for r in read_jsonl(tmp_path / "loss.jsonl")] == [0, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA syncs; needs a GPU")
def test_training_step_cuda_syncs(tmp_path: Path) -> None:
    """The same count from CUDA's own sync detector, where a GPU exists."""
    from contextlib import contextmanager

    @contextmanager
    def cuda_syncs():
        counts: Counter = Counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield counts
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts["syncs"] = sum("synchroniz" in str(w.message) for w in caught)

    counts = _run(tmp_path, torch.device("cuda"), cuda_syncs)
    assert counts["syncs"] <= 2 * ITERS + ITERS // LOG_EVERY
