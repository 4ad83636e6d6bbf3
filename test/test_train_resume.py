"""A run SIGKILLed after a checkpoint and resumed reproduces the uninterrupted loss curve."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from train_helpers import DEMO, cli_command, synth_root, tiny_overrides, vltseg
from vltseg_core.train.monitor import read_jsonl

ITERS, EVERY = 14, 4


def _last_iter(path: Path) -> int:
    """Highest complete JSONL record so far (-1 if none)."""
    if not path.is_file():
        return -1
    its = [-1]
    for line in path.read_text().splitlines():
        try:
            its.append(json.loads(line)["iter"])
        except (json.JSONDecodeError, KeyError):
            pass
    return max(its)


def _kill_after(cmd: list[str], env_: dict, jsonl: Path, after_iter: int) -> int:
    """Start ``cmd``; SIGKILL it once iteration ``after_iter`` is logged. Returns the rc."""
    proc = subprocess.Popen(cmd, env=env_, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None and _last_iter(jsonl) < after_iter:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_sigkill_and_resume_repeats_the_loss_curve(tmp_path_factory: pytest.TempPathFactory,
                                                    tmp_path: Path) -> None:
    root = synth_root(tmp_path_factory)
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    # rows reach loss.jsonl at log reads (every 3) and checkpoints (every 4): the kill below
    # follows the read at iteration 5, two iterations before the checkpoint at 8
    extra = {"train.checkpoint_every": EVERY, "train.log_every": 3, "eval.at_end": False}
    vltseg("train", "--config", str(DEMO), *tiny_overrides(ref_dir, ITERS, **extra), synth=root)

    args = ["train", "--config", str(DEMO), *tiny_overrides(cut_dir, ITERS, **extra)]
    cmd, e = cli_command(*args, synth=root)  # as vltseg() runs it, but killed midway
    # killed after iteration 5 is logged: past the checkpoint at 4, before the one at 8
    rc = _kill_after(cmd, e, cut_dir / "loss.jsonl", EVERY + 1)
    assert rc == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = _last_iter(cut_dir / "loss.jsonl")
    state = torch.load(cut_dir / "checkpoints" / "last.pt", weights_only=True)["train_state"]
    assert state["iter"] < killed_at + 1 < ITERS  # lines past the checkpoint exist

    vltseg(*args, "--resume", synth=root)
    ref = read_jsonl(ref_dir / "loss.jsonl")
    got = read_jsonl(cut_dir / "loss.jsonl")
    assert [r["iter"] for r in got] == list(range(ITERS)) == [r["iter"] for r in ref]
    for a, b in zip(ref, got):
        assert a.keys() == b.keys()
        for key in a:
            assert abs(a[key] - b[key]) <= 1e-6, (a["iter"], key, a[key], b[key])
    final_a = torch.load(ref_dir / "model_final.pt", weights_only=True)["model"]
    final_b = torch.load(cut_dir / "model_final.pt", weights_only=True)["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    final_meta = torch.load(cut_dir / "model_final.pt", weights_only=True)["meta"]
    assert final_meta["class_names"][0] == "road" and final_meta["class_colors"][0] == [128, 64, 128]

    from vltseg_core.models import load_checkpoint  # a training last.pt is a model file too

    model, meta = load_checkpoint(cut_dir / "checkpoints" / "last.pt")
    assert meta["iter"] == ITERS
    assert all(torch.equal(v, final_b[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_loader_workers_do_not_change_the_curve(tmp_path_factory: pytest.TempPathFactory,
                                                tmp_path: Path) -> None:
    """Augmentation is seeded per (seed, epoch, index): 2 workers replay 0 workers' batches."""
    root = synth_root(tmp_path_factory)
    curves = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        extra = {"eval.at_end": False, "data.num_workers": workers}
        vltseg("train", "--config", str(DEMO), *tiny_overrides(out, 5, **extra), synth=root)
        curves.append([r["loss"] for r in read_jsonl(out / "loss.jsonl")])
    assert len(curves[0]) == 5 and curves[0] == curves[1]
