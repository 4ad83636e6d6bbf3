#!/usr/bin/env python3
"""Peak training memory and step time of the pixel decoder's multi-scale deformable attention,
with and without recomputing its layers in backward (``pd_grad_checkpointing``), side by side.

    python bench/bench_msda_memory.py --sizes 512,1024 --scopes pixel_decoder,model

Every (scope, crop, mode) runs in a fresh process, batch 1, training mode, on the CPU: one
forward + backward per step, ``--steps`` steps; ``--rounds`` repeats the processes with the
modes interleaved, so a busy machine slows both alike (the fastest step is kept). Peak memory is the rise of the resident set
over the step (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``, with glibc
told to hand large blocks back at once so freed memory does not linger); a CUDA device would
report ``torch.cuda.max_memory_allocated`` instead (not measured here). Scopes:
``pixel_decoder``: B/16's pixel decoder alone on random pyramid maps of a crop (its share of a
training step); ``model``: the whole B/16 segmenter (``vltseg_clip_b16_m2f``, random weights)
on a random crop and label map. Modes: ``off`` (every activation kept: the code before
checkpointing) and ``on``. Run under another checkout's ``PYTHONPATH`` to measure that code
(a checkout without the option measures as ``off``).

Not part of the test suite (minutes at 1024 x 1024 on two cores); the equality of outputs and
gradients is tested in test/test_models_heads.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PRESET = "vltseg_clip_b16_m2f"


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> float:
    """Reset VmHWM to the current RSS; returns the current RSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _step_fn(scope: str, size: int, mode: str):
    """Build the part under test; returns a function doing one forward + backward."""
    import torch

    from vltseg_core.models import Preset, build_model
    from vltseg_core.models.pyramid import FeaturePyramid

    torch.manual_seed(0)
    overrides = {}
    if "pd_grad_checkpointing" in Preset.__dataclass_fields__:
        overrides["pd_grad_checkpointing"] = mode == "on"
    elif mode == "on":
        raise SystemExit("this checkout has no pd_grad_checkpointing: measure it with --modes off")
    model = build_model(PRESET, num_classes=19, **overrides).train()
    if scope == "pixel_decoder":
        decoder = model.seg_head.pixel_decoder
        dim = decoder.input_proj[0][0].in_channels
        pyramid = FeaturePyramid(*(torch.randn(1, dim, size // s, size // s) for s in (4, 8, 16, 32)))

        def step() -> None:
            out = decoder(pyramid)
            loss = out.mask_features.square().mean() + sum(m.square().mean() for m in out.multi_scale)
            loss.backward()
        return step
    images = torch.randn(1, 3, size, size)
    labels = torch.randint(0, 19, (1, size // 64, size // 64)).repeat_interleave(64, 1).repeat_interleave(64, 2)
    targets = [{"sem_seg": labels[0]}]

    def step() -> None:
        sum(model(images, targets).values()).backward()
    return step


def child(scope: str, size: int, mode: str, steps: int) -> dict:
    import torch

    step = _step_fn(scope, size, mode)
    peaks, times = [], []
    for _ in range(steps):
        before = _reset_peak()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        peaks.append(_status_mb("VmHWM") - before)
    return {"scope": scope, "size": size, "mode": mode, "peak_mb": max(peaks),
            "step_s": min(times), "threads": torch.get_num_threads()}


def run(scope: str, size: int, mode: str, steps: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    cmd = [sys.executable, __file__, "--child", f"{scope},{size},{mode}", "--steps", str(steps)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"scope": scope, "size": size, "mode": mode, "error": done.stderr.strip()[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _best(runs: list[dict]) -> dict:
    """One row from a mode's rounds: the highest peak, the fastest step."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    return dict(ok[0], peak_mb=max(r["peak_mb"] for r in ok), step_s=min(r["step_s"] for r in ok),
                rounds=len(ok))


def table(rows: list[dict]) -> str:
    lines = ["| scope | crop | mode | peak MB | step s | peak vs off | time vs off |",
             "|---|---|---|---:|---:|---:|---:|"]
    off = {(r["scope"], r["size"]): r for r in rows if r["mode"] == "off" and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['scope']} | {r['size']} | {r['mode']} | failed: {r['error']} | | | |")
            continue
        base = off.get((r["scope"], r["size"]))
        ratio = f"{r['peak_mb'] / base['peak_mb']:.2f}" if base else ""
        slower = f"{r['step_s'] / base['step_s']:.2f}" if base else ""
        lines.append(f"| {r['scope']} | {r['size']}x{r['size']} | {r['mode']} | {r['peak_mb']:.0f} | "
                     f"{r['step_s']:.2f} | {ratio} | {slower} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--scopes", default="pixel_decoder,model")
    parser.add_argument("--modes", default="off,on")
    parser.add_argument("--steps", type=int, default=2, help="forward + backward steps per process")
    parser.add_argument("--rounds", type=int, default=1,
                        help="processes per mode, modes interleaved (best time, highest peak kept)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scope, size, mode = args.child.split(",")
        print(json.dumps(child(scope, int(size), mode, args.steps)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for scope in args.scopes.split(","):
            runs: dict[str, list[dict]] = {}
            for _ in range(args.rounds):  # modes interleaved, one process at a time (shared RAM)
                for mode in args.modes.split(","):
                    runs.setdefault(mode, []).append(run(scope, size, mode, args.steps))
                    print(json.dumps(runs[mode][-1]), file=sys.stderr, flush=True)
            rows += [_best(r) for r in runs.values()]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
