"""Initialisation and normalisation details against the references (docs/DESIGN.md lists the
sources): Mask2Former's pixel and transformer decoders, ViTDet's pyramid and box head, and the
position-embedding resize of mmpretrain / mmseg."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vltseg_core.models import build_model, get_preset
from vltseg_core.models.detection import PyramidDetector
from vltseg_core.models.pixel_decoder import MSDeformablePixelDecoder
from vltseg_core.models.pyramid import LayerNorm2d
from vltseg_core.models.transformer_decoder import MaskedAttentionDecoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _is_xavier_uniform(weight: torch.Tensor) -> bool:
    """Drawn from U(-b, b) with Xavier's b = sqrt(6 / (fan_in + fan_out)): the largest of many
    |w| is just under b. PyTorch's default (b = 1/sqrt(fan_in)) differs by > 5 % for the shapes
    used here, so it fails this."""
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert abs(bound * math.sqrt(fan_in) - 1) > 0.05, "shape cannot tell xavier from default"
    largest = float(weight.detach().abs().max())
    return 0.95 * bound < largest <= bound * 1.000001


def _is_c2_xavier(conv: nn.Conv2d) -> bool:
    """fvcore c2_xavier_fill: kaiming_uniform(a=1), b = sqrt(3/fan_in), bias 0."""
    bound = math.sqrt(3 / conv.weight[0].numel())
    largest = float(conv.weight.detach().abs().max())
    zero_bias = conv.bias is None or not conv.bias.any()
    return 0.95 * bound < largest <= bound * 1.000001 and zero_bias


def test_pixel_decoder_init_as_mask2former() -> None:
    torch.manual_seed(0)
    pd = MSDeformablePixelDecoder(in_dim=512, conv_dim=256, mask_dim=256, num_layers=1)
    for proj in pd.input_proj:  # 1x1 conv WITH bias (zero) + GroupNorm, xavier-uniform
        conv = proj[0]
        assert conv.bias is not None and not conv.bias.any() and _is_xavier_uniform(conv.weight)
    for linear in (pd.layers[0].ffn[0], pd.layers[0].ffn[3]):
        assert _is_xavier_uniform(linear.weight)
    assert _is_c2_xavier(pd.lateral[0]) and _is_c2_xavier(pd.output_conv[0])
    assert _is_c2_xavier(pd.mask_features)
    norms = [m for m in pd.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)


def test_transformer_decoder_init_as_mask2former() -> None:
    torch.manual_seed(0)
    dec = MaskedAttentionDecoder(num_classes=19, in_dim=128, hidden_dim=256, num_layers=1)
    assert all(_is_xavier_uniform(lin.weight) for lin in (dec.ffn[0].ffn[0], dec.ffn[0].ffn[3]))
    assert _is_xavier_uniform(dec.cross_attn[0].attn.in_proj_weight)
    assert all(_is_c2_xavier(proj) for proj in dec.input_proj)
    assert all(m.eps == 1e-5 for m in dec.modules() if isinstance(m, nn.LayerNorm))


def test_vitdet_pyramid_and_box_head_layer_norms() -> None:
    """ViTDet: "LN" (detectron2 LayerNorm, eps 1e-6) in the pyramid and after each box-head
    conv; RPN keeps 1000 proposals per image after NMS in training and at test."""
    model = build_model("vltseg_tiny_joint", num_classes=3)
    pyramid_norms = [m for m in model.pyramid.modules() if isinstance(m, nn.LayerNorm)]
    assert pyramid_norms and all(isinstance(m, LayerNorm2d) and m.eps == 1e-6 for m in pyramid_norms)
    head = PyramidDetector(num_classes=3, in_dim=64, box_convs=4, box_fc=128)
    box_head = head.roi_heads.box_head
    convs = [m for m in box_head.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in box_head.modules() if isinstance(m, (nn.GroupNorm, nn.LayerNorm))]
    assert len(convs) == 4 and len(norms) == 4
    assert all(isinstance(m, LayerNorm2d) and m.eps == 1e-6 for m in norms)
    assert all(c.bias is None for c in convs)
    assert get_preset("vltseg_clip_b16_det").rpn_post_nms == (1000, 1000)
    assert head.rpn._post_nms_top_n == {"training": 1000, "testing": 1000}


def test_layer_norm_2d_matches_channel_layer_norm() -> None:
    x = torch.randn(2, 6, 3, 5)
    norm = LayerNorm2d(6)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
