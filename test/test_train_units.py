"""Building blocks of training/evaluation, checked in isolation (fast, no real model)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from vltseg_core.evaluation.coco_eval import coco_ap
from vltseg_core.evaluation.evaluator import evaluate_dataset
from vltseg_core.evaluation.inference import InferenceSpec, infer, slide_scores
from vltseg_core.files import atomic_torch_save
from vltseg_core.train import checkpoint as ckpt
from vltseg_core.train.config import Config, ConfigError, DataConfig, TrainConfig
from vltseg_core.train.loader import batch_plan
from vltseg_core.train.monitor import read_jsonl, truncate_jsonl
from vltseg_core.train.optim import PolyWarmup, build_scheduler
from vltseg_core.train.sampling import ResumableSampler


class Out(NamedTuple):
    sem_seg: torch.Tensor | None
    detections: list | None


class PixelModel(nn.Module):
    """Per-pixel (1x1 conv) scorer: sliding-window and whole-image inference must agree."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255

    def forward(self, x: torch.Tensor) -> Out:
        return Out(self.conv(x).softmax(1), None)


def test_poly_warmup_schedule() -> None:
    f = PolyWarmup(total=100, warmup=10, warmup_ratio=1e-6, power=1.0, min_ratio=0.0)
    assert f(0) == pytest.approx(1e-6)
    assert f(5) == pytest.approx(0.95 * (1 - 0.5 * (1 - 1e-6)))
    assert f(10) == pytest.approx(0.9) and f(100) == 0.0
    post = [f(t) for t in range(10, 101)]
    assert all(a > b for a, b in zip(post, post[1:]))
    assert PolyWarmup(100, 0, power=0.9, min_ratio=0.1)(100) == pytest.approx(0.1)


def test_scheduler_groups_keep_their_ratio() -> None:
    """Backbone group (x0.1) follows the same curve as the head group."""
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1e-4}, {"params": [b], "lr": 1e-5}])
    sched = build_scheduler(opt, TrainConfig(iters=10, warmup_iters=2))
    for _ in range(5):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[1] == pytest.approx(lrs[0] * 0.1)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_resumes_mid_epoch_and_shards(world: int) -> None:
    def take(sampler: ResumableSampler, n: int) -> list[tuple[int, int]]:
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    size = 7
    full = [take(ResumableSampler(size, r, world, seed=3), 20) for r in range(world)]
    for start in (0, 1, 4, 9, 13):
        for r in range(world):
            assert take(ResumableSampler(size, r, world, seed=3, start=start), 5) == full[r][start:start + 5]
    per = -(-size // world)
    epoch0 = {i for r in range(world) for (e, i) in full[r][:per]}
    assert epoch0 == set(range(size))  # each epoch covers the dataset across ranks


def test_rng_state_round_trips_through_safe_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1)
    path = tmp_path / "s.pt"
    atomic_torch_save({"rng": ckpt.rng_state()}, path)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    ckpt.set_rng_state(ckpt.load(path)["rng"])  # load() uses weights_only=True
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected


def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    atomic_torch_save({"v": torch.ones(2)}, path)
    with pytest.raises(Exception):
        atomic_torch_save({"v": lambda: 0}, path)  # not picklable
    assert torch.equal(ckpt.load(path)["v"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_truncate_jsonl_drops_lines_after_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "loss.jsonl"
    path.write_text("".join(json.dumps({"iter": i, "loss": i / 3}) + "\n" for i in range(6))
                    + '{"iter": 6, "lo')  # half-written line of a killed run
    truncate_jsonl(path, 4)
    assert [r["iter"] for r in read_jsonl(path)] == [0, 1, 2, 3]


def test_batch_plan_splits_global_batch() -> None:
    cfg = Config(data=DataConfig(batch_size=16), train=TrainConfig(accum_steps=2))
    assert batch_plan(cfg, 4).micro == 2
    with pytest.raises(ConfigError, match="not divisible"):
        batch_plan(cfg, 3)


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (20, 90)])
def test_sliding_window_equals_whole_for_pixelwise_model(size: tuple[int, int]) -> None:
    model = PixelModel().eval()
    x = model.preprocess(torch.randint(0, 255, (1, 3, *size), dtype=torch.uint8))
    whole = model(x).sem_seg
    slide = slide_scores(model, x, crop=(16, 24), stride=(11, 13))
    torch.testing.assert_close(slide, whole)


def test_infer_resize_and_flip_return_label_size() -> None:
    model = PixelModel().eval()
    img = torch.randint(0, 255, (3, 30, 44), dtype=torch.uint8)
    p = infer(model, img, InferenceSpec(resize=(16, 24), flip=True))
    assert p.scores is not None and p.scores.shape == (5, 30, 44)
    plain = infer(model, img, InferenceSpec()).scores
    flipped = infer(model, img, InferenceSpec(flip=True)).scores
    torch.testing.assert_close(plain, flipped)  # a per-pixel model is flip-equivariant


class SizeSpy(PixelModel):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> Out:
        self.seen.append(tuple(x.shape[-2:]))
        return super().forward(x)


def test_evaluation_leaves_padding_to_the_model() -> None:
    """The model pads to its stride itself; evaluation hands it the image as it is."""
    model = SizeSpy().eval()
    img = torch.randint(0, 255, (3, 37, 53), dtype=torch.uint8)
    infer(model, img, InferenceSpec())
    infer(model, img, InferenceSpec(mode="slide", crop_size=(20, 30), stride=(15, 20)))
    assert model.seen[0] == (37, 53) and set(model.seen[1:]) == {(20, 30)} and len(model.seen) == 1 + 3 * 3


def test_evaluated_boxes_lie_inside_the_real_image() -> None:
    """Boxes are clipped to the image, not to the area it was padded to (70 x 100 -> 96 x 128)."""
    from vltseg_core.models import build_model

    torch.manual_seed(0)
    model = build_model("vltseg_tiny_det", num_classes=3).eval()
    img = torch.randint(0, 255, (3, 70, 100), dtype=torch.uint8)
    boxes = infer(model, img, InferenceSpec()).detections["boxes"]
    assert len(boxes) > 10 and float(boxes[:, 2].max()) == 100 and float(boxes[:, 3].max()) == 70


@pytest.mark.parametrize("workers", [0, 1])
def test_evaluate_dataset_confusion_counts_pixels(workers: int) -> None:
    model = PixelModel(k=4).eval()
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 255, (12, 10, 3), dtype=torch.uint8, generator=g).numpy()
              for _ in range(3)]
    labels = [torch.randint(0, 4, (12, 10), generator=g) for _ in range(3)]
    labels[0][:2] = 255
    data = [(im, {"sem_seg": lb}, {}) for im, lb in zip(images, labels)]
    ev = evaluate_dataset(model, data, InferenceSpec(), num_classes=4,
                          workers=workers)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for im, lb in zip(images, labels):
        pred = infer(model, torch.from_numpy(im).permute(2, 0, 1), InferenceSpec())
        keep = lb != 255
        expected += torch.bincount(lb[keep] * 4 + pred.scores.argmax(0)[keep],
                                   minlength=16).reshape(4, 4)
    assert torch.equal(ev.confusion[:, :4], expected) and int(ev.confusion[:, 4].sum()) == 0
    assert int(ev.confusion.sum()) == 3 * 120 - 20


def test_coco_ap_perfect_partial_and_empty() -> None:
    gts = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 50]]), "labels": torch.tensor([11, 13])}]
    sizes = [(64, 64)]
    perfect = [{"boxes": gts[0]["boxes"].clone(), "scores": torch.tensor([0.9, 0.8]),
                "labels": torch.tensor([11, 13])}]
    assert coco_ap(gts, perfect, sizes, [11, 13])["AP"] == pytest.approx(100.0)
    half = [{"boxes": gts[0]["boxes"][:1], "scores": torch.tensor([0.9]), "labels": torch.tensor([11])}]
    res = coco_ap(gts, half, sizes, [11, 13])
    assert res["AP50"] == pytest.approx(50.0)
    none = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    assert coco_ap(gts, none, sizes, [11, 13])["AP"] == 0.0


class LinearSeg(nn.Module):
    """Toy model with the training contract: mean per-pixel MSE to the one-hot target."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255

    def forward(self, x: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        onehot = torch.stack([nn.functional.one_hot(t["sem_seg"], 4).permute(2, 0, 1)
                              for t in targets]).float()
        return {"loss_mse": ((self.conv(x) - onehot) ** 2).mean()}


def _parts(amp_scaler: bool = False):
    from vltseg_core.train.engine import Parts

    model = LinearSeg()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = build_scheduler(opt, TrainConfig(iters=10))
    return Parts(model, model, opt, sched, torch.amp.GradScaler("cpu", enabled=amp_scaler))


def _batches(n: int, per: int):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 4, (n, 8, 8), generator=g)
    for i in range(0, n, per):
        yield images[i:i + per], [{"sem_seg": lb} for lb in labels[i:i + per]]


def _read(step_and_batch: tuple) -> dict[str, float]:
    """A train_step's logs as the JSONL row they become."""
    from vltseg_core.train.monitor import PendingLogs

    step, pending = step_and_batch[0], PendingLogs()
    pending.add(0, step.names, step.values, step.lr)
    return pending.read()[0]


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_grad_accumulation_equals_the_full_batch(clip: float | None) -> None:
    """2 micro-batches of 2 with accum_steps=2 == one batch of 4 (mean losses, one step)."""
    from vltseg_core.train.engine import train_step
    from vltseg_core.train.loader import BatchPlan

    cfg = Config(train=TrainConfig(iters=10, clip_grad=clip))
    full, acc = _parts(), _parts()
    logs_f = _read(train_step(full, _batches(4, 4), BatchPlan(4, 1, 1), cfg, None, torch.device("cpu")))
    logs_a = _read(train_step(acc, _batches(4, 2), BatchPlan(2, 2, 1), cfg, None, torch.device("cpu")))
    assert logs_a["loss"] == pytest.approx(logs_f["loss"], rel=1e-6)
    assert logs_a["grad_norm"] == pytest.approx(logs_f["grad_norm"], rel=1e-5)
    for a, b in zip(full.model.parameters(), acc.model.parameters()):
        torch.testing.assert_close(a, b)
    assert logs_f["lr"] == pytest.approx(1e-2)


@pytest.mark.parametrize(("dtype", "scaler"), [(torch.bfloat16, False), (torch.float16, True)])
def test_amp_step_updates_parameters(dtype: torch.dtype, scaler: bool) -> None:
    from vltseg_core.train.engine import train_step
    from vltseg_core.train.loader import BatchPlan

    parts = _parts(scaler)
    before = [p.detach().clone() for p in parts.model.parameters()]
    logs = _read(train_step(parts, _batches(2, 2), BatchPlan(2, 1, 1), Config(), dtype,
                            torch.device("cpu")))
    assert np.isfinite(logs["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, parts.model.parameters()))


def test_monitor_writes_jsonl_tensorboard_and_progress_lines_off_tty(tmp_path: Path, capsys) -> None:
    from vltseg_core.train.monitor import Monitor

    mon = Monitor(tmp_path, total=3, start=0, active=True, tensorboard=True)
    assert mon.bar.bar is None  # pytest's stdout is not a TTY: plain lines, no live bar
    mon.log_iter({"iter": 0, "loss": 1.5})
    mon.scalars(1, {"loss": 1.5}, "train/")
    mon.progress(1, 1.5, 1e-3)
    mon.image(1, "sample", np.zeros((4, 6, 3), np.uint8))
    mon.log_eval(1, {"clear": {"mIoU": 0.5, "IoU": {"road": 0.5}}})
    mon.close()
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"train 1/3  loss 1\.5000  lr 1\.00e-03  [\d.]+ it/s  eta \d+:\d\d:\d\d", line)
    assert read_jsonl(tmp_path / "loss.jsonl") == [{"iter": 0, "loss": 1.5}]
    assert read_jsonl(tmp_path / "eval.jsonl") == [{"iter": 1, "clear": {"mIoU": 0.5}}]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    silent = Monitor(tmp_path / "rank1", total=3, start=0, active=False)
    silent.log_iter({"iter": 0})
    assert not (tmp_path / "rank1").exists()
