"""Mask2Former head internals against direct reference computations."""

from __future__ import annotations

import pytest
import torch

from vltseg_core.models.pixel_decoder import MSDeformAttn, sine_position_embedding


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bilinear(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """``img [C, H, W]`` at normalised (x, y), pixel centres at (i + 0.5) / size, zeros outside."""
    c, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    out = torch.zeros(c)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def test_msdeform_attn_matches_reference() -> None:
    """Deformable DETR Eq. 3 evaluated point by point equals the vectorised module."""
    torch.manual_seed(0)
    dim, heads, levels, points = 8, 2, 2, 3
    shapes = [(3, 5), (2, 3)]
    attn = MSDeformAttn(dim, levels, heads, points)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    b, lq = 2, 4
    query = torch.randn(b, lq, dim)
    ref_points = torch.rand(b, lq, 2)
    value = torch.randn(b, sum(h * w for h, w in shapes), dim)
    with torch.no_grad():
        out = attn(query, ref_points, value, shapes)
        v = attn.value_proj(value).view(b, -1, heads, dim // heads)
        off = attn.sampling_offsets(query).view(b, lq, heads, levels, points, 2)
        wts = attn.attention_weights(query).view(b, lq, heads, levels * points).softmax(-1)
        wts = wts.view(b, lq, heads, levels, points)
        expected = torch.zeros(b, lq, dim)
        for bi in range(b):
            for q in range(lq):
                for hd in range(heads):
                    acc = torch.zeros(dim // heads)
                    start = 0
                    for lvl, (h, w) in enumerate(shapes):
                        img = v[bi, start:start + h * w, hd].T.reshape(-1, h, w)
                        for pt in range(points):
                            x = ref_points[bi, q, 0] + off[bi, q, hd, lvl, pt, 0] / w
                            y = ref_points[bi, q, 1] + off[bi, q, hd, lvl, pt, 1] / h
                            acc += wts[bi, q, hd, lvl, pt] * _bilinear(img, float(x), float(y))
                        start += h * w
                    expected[bi, q, hd * (dim // heads):(hd + 1) * (dim // heads)] = acc
        expected = attn.output_proj(expected)
    assert torch.allclose(out, expected, atol=1e-5)


def test_sine_position_embedding_values() -> None:
    pos = sine_position_embedding(3, 4, 8, torch.zeros(1))
    assert pos.shape == (1, 8, 3, 4)
    y = torch.tensor([1.0, 2, 3]) / 3 * 2 * torch.pi
    x = torch.tensor([1.0, 2, 3, 4]) / 4 * 2 * torch.pi
    assert torch.allclose(pos[0, 0, :, 0], y.sin(), atol=1e-5)  # y, frequency 0, sin
    assert torch.allclose(pos[0, 1, :, 0], y.cos(), atol=1e-5)  # y, frequency 0, cos
    assert torch.allclose(pos[0, 4, 0, :], x.sin(), atol=1e-5)  # x channels follow y's
    assert torch.allclose(pos[0, 6, 0, :], (x / 100).sin(), atol=1e-5)  # 10000 ** (2 * 1 / 4)
