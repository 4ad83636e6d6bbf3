"""Export for vehicles: ONNX through a wrapper module (`onnx.py`, with the op rewrites of
`rewrites.py`), fp16/int8 variants (`variants.py`), TensorRT engines with a cache
(`tensorrt.py`) and their runner (`tensorrt_runner.py`), and the `vltseg export` / `vltseg bench` commands (`cli.py`).

Submodules import torch/onnx lazily where they can, so `vltseg --help` stays instant.
"""
