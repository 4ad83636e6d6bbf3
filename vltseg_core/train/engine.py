"""The training loop: AdamW + poly/warm-up, AMP, clipping, accumulation, DDP, exact resume.

Run it with ``vltseg train --config FILE`` (one process) or under
``torchrun --nproc_per_node N -m vltseg_core.cli train --config FILE`` (DDP; only rank 0
writes). ``train.deterministic: true`` plus a fixed seed makes a SIGKILLed run resumed with
``--resume`` reproduce the uninterrupted loss curve exactly on CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vltseg_core.env import apply_threads
from vltseg_core.evaluation.evaluator import evaluate_targets
from vltseg_core.files import atomic_torch_save
from vltseg_core.train import checkpoint as ckpt
from vltseg_core.train.config import Config, expand_path, to_dict
from vltseg_core.train.distributed import (DistInfo, all_gather_objects, all_reduce_mean,
                                           barrier, init_distributed)
from vltseg_core.train.loader import BatchPlan, batch_plan, normalise_batch, train_loader
from vltseg_core.train.monitor import Monitor, PendingLogs
from vltseg_core.train.optim import build_optimizer, build_scheduler
from vltseg_core.train.visual import prediction_panel


@dataclass
class Parts:
    """Everything whose state a checkpoint carries."""

    model: nn.Module  # unwrapped
    net: nn.Module  # what forward is called on (DDP wrapper or the model)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    checkpoint: Path  # model-only final checkpoint
    last_loss: float
    metrics: dict[str, dict]  # final evaluation per target ({} if none)
    train_seconds: float  # wall-clock of the iterations run by this call (no evaluation)


def build_model_from(cfg: Config) -> nn.Module:
    from vltseg_core.models import build_model

    weights = cfg.model.checkpoint
    if weights:
        weights = str(expand_path(weights))
        if not Path(weights).is_file():
            raise FileNotFoundError(f"model.checkpoint: no such weight file {weights}")
    return build_model(cfg.model.preset, cfg.model.num_classes, checkpoint=weights,
                       **cfg.model.options)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = bf16 where supported (CPU, Ampere+), else fp16 on GPU."""
    if mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or device.type == "cpu":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def set_determinism(cfg: Config, rank: int, device: torch.device) -> None:
    """Seed every RNG (per rank) and, if asked, force deterministic kernels.

    On CUDA some kernels the model needs (grid_sample backward) have no deterministic
    version, so there it only warns; the exact-resume guarantee is for CPU.
    """
    seed = cfg.train.seed + rank
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
        # the same kernels without also filling each new tensor with NaN first: that is a check
        # for reads of uninitialised memory, not needed for determinism, and ~5 % of a CPU step
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False


def _setup(cfg: Config, info: DistInfo) -> tuple[Parts, torch.dtype | None]:
    model = build_model_from(cfg).to(info.device)
    model.train()
    net: nn.Module = model
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids,
                                      find_unused_parameters=cfg.train.find_unused_parameters)
    optimizer = build_optimizer(model, cfg.train)
    dtype = amp_dtype(cfg.train.amp, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=dtype == torch.float16)
    return Parts(model, net, optimizer, build_scheduler(optimizer, cfg.train), scaler), dtype


def _last_path(cfg: Config) -> Path:
    return cfg.out_dir / "checkpoints" / "last.pt"


def save_state(parts: Parts, cfg: Config, info: DistInfo, next_iter: int) -> None:
    """Atomic ``last.pt`` with model + everything needed to continue at ``next_iter``."""
    from vltseg_core.models import checkpoint_payload

    rngs = all_gather_objects(ckpt.rng_state())  # collective: every rank calls it
    if not info.is_main:
        return
    payload = checkpoint_payload(parts.model, {"config": to_dict(cfg), "iter": next_iter})
    payload["train_state"] = {
        "iter": next_iter,
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng": rngs,
        "world_size": info.world_size,
    }
    atomic_torch_save(payload, _last_path(cfg))  # a resume after SIGKILL sees it whole or not at all


def restore_state(parts: Parts, cfg: Config, info: DistInfo) -> int:
    """Load ``last.pt`` if present; returns the iteration to continue from (0 if none)."""
    path = _last_path(cfg)
    if not path.is_file():
        if info.is_main:
            print(f"--resume: no checkpoint at {path}; starting from iteration 0")
        return 0
    data = ckpt.load(path)
    state = data["train_state"]
    parts.model.load_state_dict(data["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    ckpt.set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
    if info.is_main:
        print(f"resumed from {path} at iteration {state['iter']}")
    return int(state["iter"])


def _to_device(batch: tuple, device: torch.device) -> tuple[torch.Tensor, list[dict]]:
    """Host -> device without waiting for the device (pinned or pageable, CUDA copies at once)."""
    images, targets = batch[0], batch[1]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images.to(device, non_blocking=True), targets


@dataclass(frozen=True)
class StepLogs:
    """One step's loss terms, total and gradient norm as one device tensor: reading them is a
    host sync, so they wait in :class:`PendingLogs` until a log interval reads them all."""

    names: tuple[str, ...]
    values: torch.Tensor  # [len(names)] float32 on the training device
    lr: float  # head lr (not backbone), known on the host


def _micro_step(parts: Parts, batch: tuple, dtype: torch.dtype | None, device: torch.device,
                scale: float, sync: bool) -> tuple[tuple[str, ...], torch.Tensor]:
    images, targets = _to_device(batch, device)
    sync_ctx = contextlib.nullcontext() if sync or parts.net is parts.model else parts.net.no_sync()
    with sync_ctx:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            x = normalise_batch(parts.model, images, batch[2] if len(batch) > 2 else ())
            losses = parts.net(x, targets)
        total = sum(losses.values())
        parts.scaler.scale(total * scale).backward()
    values = torch.stack([v.detach().float() for v in (*losses.values(), total)])
    return (*losses, "loss"), values


def train_step(parts: Parts, batches: Iterator, plan: BatchPlan, cfg: Config,
               dtype: torch.dtype | None, device: torch.device) -> tuple[StepLogs, Any]:
    """One optimizer step over ``accum_steps`` micro-batches; returns mean logs, last batch.

    Nothing here reads a device value: the logs stay a device tensor (see :class:`StepLogs`).
    """
    names: tuple[str, ...] = ()
    mean: torch.Tensor | float = 0.0
    batch = None
    for i in range(plan.accum_steps):
        batch = next(batches)
        names, values = _micro_step(parts, batch, dtype, device, 1 / plan.accum_steps,
                                    sync=i == plan.accum_steps - 1)
        mean = mean + values / plan.accum_steps
    parts.scaler.unscale_(parts.optimizer)
    params = [p for g in parts.optimizer.param_groups for p in g["params"]]
    max_norm = cfg.train.clip_grad if cfg.train.clip_grad is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).detach().float()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    lr = max(g["lr"] for g in parts.optimizer.param_groups)
    parts.scheduler.step()
    values = torch.cat([mean, grad_norm[None]])
    return StepLogs((*names, "grad_norm"), values, lr), batch


def _due(it: int, every: int, total: int) -> bool:
    return every > 0 and ((it + 1) % every == 0 or it + 1 == total)


def _read_logs(pending: PendingLogs, mon: Monitor, scaler_enabled: bool) -> dict[str, float]:
    """All pending rows to the JSONL (one host transfer); the newest row.

    A non-finite loss stops training here, at most one log interval after it happened (with fp16
    the gradient scaler skips such steps instead); its row is written first, for the post-mortem.
    """
    records = pending.read()
    for record in records:
        mon.log_iter(record)
        if not math.isfinite(record["loss"]) and not scaler_enabled:
            raise FloatingPointError(
                f"loss is {record['loss']} at iteration {record['iter']}: training diverged")
    return records[-1]


def _periodic(parts: Parts, cfg: Config, info: DistInfo, mon: Monitor, it: int,
              pending: PendingLogs, batch: Any) -> dict[str, float] | None:
    """Everything done after iteration ``it`` besides the step itself, in a fixed order.

    Logs are read at log intervals, before checkpoints (so a checkpoint never holds a diverged
    model and the JSONL reaches it) and at the end; returns them when read.
    """
    t = cfg.train
    logs = None
    if _due(it, t.log_every, t.iters) or _due(it, t.checkpoint_every, t.iters) or it + 1 == t.iters:
        logs = _read_logs(pending, mon, parts.scaler.is_enabled())
    if logs is not None and _due(it, t.log_every, t.iters):
        mon.scalars(it + 1, logs, "train/")
        mon.progress(it + 1, logs["loss"], logs["lr"])
    if mon.tb is not None and _due(it, t.image_every, t.iters):  # rank 0 only
        mon.image(it + 1, "train/prediction", prediction_panel(parts.model, batch))
    if t.eval_every and _due(it, t.eval_every, t.iters) and it + 1 < t.iters:
        _evaluate(parts.model, cfg, mon, it + 1, quick=True)
    if _due(it, t.checkpoint_every, t.iters):
        save_state(parts, cfg, info, it + 1)
    return logs


def _evaluate(model: nn.Module, cfg: Config, mon: Monitor, step: int, quick: bool) -> dict:
    out = None if quick else cfg.out_dir / "eval"
    results = evaluate_targets(model, cfg, out_dir=out, quick=quick)
    mon.log_eval(step, results)
    model.train()
    return results


def train(cfg: Config, resume: bool = False) -> TrainResult:
    """Train ``cfg`` (resuming from ``out_dir/checkpoints/last.pt`` if asked); rank 0 writes."""
    if cfg.train.deterministic:  # cuBLAS reads it when its first handle is created
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    info = init_distributed(cfg.train.device)
    apply_threads(cfg.train.threads)
    set_determinism(cfg, info.rank, info.device)
    plan = batch_plan(cfg, info.world_size)
    check_eval_targets(cfg)  # a wrong path fails now, not after hours of training
    parts, dtype = _setup(cfg, info)
    start = restore_state(parts, cfg, info) if resume else 0
    if info.is_main:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        _write_config(cfg)
    loader = train_loader(cfg, info.rank, plan, start, pin_memory=info.device.type == "cuda")
    mon = Monitor(cfg.out_dir, cfg.train.iters, start, info.is_main, cfg.train.tensorboard)
    batches = iter(loader)
    logs: dict[str, float] = {"loss": math.nan}
    pending = PendingLogs()
    t0 = time.perf_counter()
    try:
        for it in range(start, cfg.train.iters):
            step, batch = train_step(parts, batches, plan, cfg, dtype, info.device)
            pending.add(it, step.names, all_reduce_mean(step.values), step.lr)
            logs = _periodic(parts, cfg, info, mon, it, pending, batch) or logs
        seconds = time.perf_counter() - t0
        final, metrics = _finish(parts, cfg, info, mon)
    finally:
        mon.close()
    return TrainResult(cfg.out_dir, final, logs["loss"], metrics, seconds)


def check_eval_targets(cfg: Config) -> None:
    """Index every evaluation dataset once (cheap: file listing) so bad roots fail early."""
    from vltseg_core.train.loader import build_dataset

    for target in cfg.eval.targets if cfg.eval.at_end or cfg.train.eval_every else ():
        build_dataset(target, boxes=False)


def _finish(parts: Parts, cfg: Config, info: DistInfo, mon: Monitor
            ) -> tuple[Path, dict[str, dict]]:
    """Model-only ``model_final.pt`` and, if configured, the full multi-target evaluation."""
    from vltseg_core.models import save_checkpoint

    path = cfg.out_dir / "model_final.pt"
    if info.is_main:
        save_checkpoint(parts.model, path, {"config": to_dict(cfg), "iter": cfg.train.iters,
                                            **_label_meta(cfg.model.num_classes)})
    metrics: dict[str, dict] = {}
    if cfg.eval.at_end and cfg.eval.targets:
        metrics = _evaluate(parts.model, cfg, mon, cfg.train.iters, quick=False)
    barrier()
    return path, metrics


def _label_meta(num_classes: int) -> dict[str, list]:
    """Class names and RGB colours for exports and overlays: every dataset loader maps to the
    19 Cityscapes train classes, so a 19-class model carries their names."""
    from vltseg_core.data.labels import class_names, palette

    if num_classes != len(class_names()):
        return {}
    return {"class_names": list(class_names()), "class_colors": palette()[:num_classes].tolist()}


def _write_config(cfg: Config) -> None:
    import yaml

    (cfg.out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
