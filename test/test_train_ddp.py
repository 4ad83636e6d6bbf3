"""Two-process ``torchrun`` (gloo) training + evaluation, and rank-reduced confusion matrices."""

from __future__ import annotations

from pathlib import Path

import pytest

from train_helpers import DEMO, read_results, synth_root, tiny_overrides, vltseg


@pytest.mark.slow
def test_torchrun_two_processes_train_and_eval(tmp_path_factory: pytest.TempPathFactory,
                                               tmp_path: Path) -> None:
    root = synth_root(tmp_path_factory)
    out = tmp_path / "ddp"
    # global batch 2 = 2 ranks x 1; eval on clear + fog (4 images each: odd shares per rank
    # would be caught too, the strided shard never pads)
    targets = (f"[{{label: clear, name: cityscapes, root: '{root}'}}, {{label: fog, name: acdc, "
               f"root: '{root}', options: {{conditions: [fog]}}}}]")
    over = tiny_overrides(out, 4, **{"eval.targets": targets})
    run = vltseg("train", "--config", str(DEMO), *over, synth=root, torchrun=2)
    assert "final checkpoint" in run.stdout
    ddp = read_results(out / "eval")
    assert (out / "loss.jsonl").is_file() and len((out / "loss.jsonl").read_text().splitlines()) == 4

    # the checkpoint evaluated by one process gives the matrices the two ranks reduced
    one = tmp_path / "one"
    vltseg("eval", "--config", str(DEMO), "--checkpoint", str(out / "model_final.pt"),
           "--out", str(one), *over, synth=root)
    single = next(iter(read_results(one).values()))
    double = next(iter(ddp.values()))
    for target in ("clear", "fog"):
        assert single[target]["images"] == double[target]["images"] == 4
        assert sum(map(sum, single[target]["confusion"])) > 0
        assert single[target]["confusion"] == double[target]["confusion"]
