"""The eval graph (encoder incl. rope / pos-embed resizing, deformable-attention pixel
decoder, masked-attention decoder) exports to ONNX opset 17 with static shapes and matches
PyTorch in onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from vltseg_core.models import build_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _SegScores(nn.Module):
    """Minimal export wrapper: 0..255 RGB in, class scores out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.model.preprocess(images)).sem_seg


@pytest.mark.parametrize("preset,size", [("vltseg_tiny_m2f", (96, 160)),
                                         ("vltseg_tiny_eva02_p14_m2f", (80, 144))])
def test_onnx_opset17_parity(preset: str, size: tuple[int, int], tmp_path) -> None:
    torch.manual_seed(0)
    wrapper = _SegScores(build_model(preset, num_classes=5)).eval()
    x = torch.randint(0, 256, (1, 3, *size)).float()
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints (static shapes)
        torch.onnx.export(wrapper, (x,), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["scores"])
    graph = onnx.load(str(path))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert "GridSample" in {n.op_type for n in graph.graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = wrapper(x).numpy()
    assert scores.shape == (1, 5, *size)
    assert np.abs(scores - ref).max() < 1e-4
