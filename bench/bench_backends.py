#!/usr/bin/env python3
"""Backends side by side (same as `vltseg bench`): eager torch fp32, torch bf16 autocast, ONNX
Runtime fp32 / fp16 / int8, TensorRT fp16 where available; ratios to eager torch fp32.

    python bench/bench_backends.py --presets vltseg_tiny_m2f,vltseg_clip_b16_m2f --batches 1,4 \
        --height 512 --width 1024 --json bench.json

Not part of the test suite (minutes per preset on a CPU). See vltseg_core/runtime/bench.py.
"""

from __future__ import annotations

import typer

from vltseg_core.export.cli import bench_command

if __name__ == "__main__":
    typer.run(bench_command)
