"""The export-time op rewrites compute what the ops they replace compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from vltseg_core.export.rewrites import batched_nms_for_export, bilinear_grid_sample, export_rewrites


@pytest.mark.parametrize("align_corners", [False, True])
def test_gather_sampling_matches_grid_sample(align_corners: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(6, 5, 7, 9, generator=gen)
    grid = torch.rand(6, 11, 4, 2, generator=gen) * 2.6 - 1.3  # some points outside the image
    expected = F.grid_sample(image, grid, "bilinear", "zeros", align_corners)
    got = bilinear_grid_sample(image, grid, align_corners)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_nms_rewrite_matches_torchvision_and_handles_empty() -> None:
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=gen) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(40, 2, generator=gen) * 20], dim=1)
    scores = torch.rand(40, generator=gen)
    labels = torch.randint(0, 3, (40,), generator=gen)
    expected = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)
    assert torch.equal(batched_nms_for_export(boxes, scores, labels, 0.5), expected)
    empty = batched_nms_for_export(boxes[:0], scores[:0], labels[:0], 0.5)
    assert empty.shape == (0,)


def test_rewrites_are_scoped_to_the_block() -> None:
    original_sample, original_nms = F.grid_sample, torchvision.ops.boxes.batched_nms
    with export_rewrites():
        assert F.grid_sample is not original_sample
        assert torchvision.ops.boxes.batched_nms is batched_nms_for_export
    assert F.grid_sample is original_sample
    assert torchvision.ops.boxes.batched_nms is original_nms
    assert torchvision.ops.batched_nms is original_nms


def test_deformable_attention_rewrite_matches_the_module() -> None:
    from vltseg_core.export.rewrites import msdeform_attn_forward_for_export
    from vltseg_core.models.pixel_decoder import MSDeformAttn

    torch.manual_seed(0)
    attn = MSDeformAttn(64, 3, 4, 4).eval()
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.5)  # offsets reaching off-map
    torch.nn.init.normal_(attn.attention_weights.weight)
    shapes = [(4, 8), (8, 16), (16, 32)]
    query = torch.randn(2, 50, 64)
    ref = torch.rand(1, 50, 2) * 1.2 - 0.1
    value = torch.randn(2, sum(h * w for h, w in shapes), 64)
    with torch.no_grad():
        expected = attn(query, ref, value, shapes)
        assert torch.allclose(msdeform_attn_forward_for_export(attn, query, ref, value, shapes),
                              expected, atol=1e-5)
        holder = torch.nn.Sequential(attn)
        with export_rewrites(model=holder):
            assert "forward" in attn.__dict__  # the instance uses the gather path here
            assert torch.allclose(attn(query, ref, value, shapes), expected, atol=1e-5)
        assert "forward" not in attn.__dict__


def test_deformable_attention_rewrite_in_query_chunks_and_off_the_map(monkeypatch) -> None:
    """Many gather chunks (a ragged last one), a batch of 3 and points far outside every level
    give the module's result."""
    from vltseg_core.export import rewrites
    from vltseg_core.models.pixel_decoder import MSDeformAttn

    torch.manual_seed(1)
    attn = MSDeformAttn(32, 3, 2, 3).eval()
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=4.0)  # many points leave the maps
    shapes = [(8, 10), (16, 20), (32, 40)]
    query, ref = torch.randn(3, 37, 32), torch.rand(1, 37, 2) * 1.6 - 0.3
    value = torch.randn(3, sum(h * w for h, w in shapes), 32)
    per_query = 3 * 2 * (3 * 3 * 4) * 16 * 4  # batch x heads x taps x channels x bytes
    monkeypatch.setattr(rewrites, "GATHER_CHUNK_BYTES", 5 * per_query)  # 8 chunks
    with torch.no_grad():
        expected = attn(query, ref, value, shapes)
        got = rewrites.msdeform_attn_forward_for_export(attn, query, ref, value, shapes)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("preset", ["vltseg_tiny_m2f", "vltseg_tiny_eva02_p14_m2f"])
def test_fused_attention_forwards_match_timm(preset: str, monkeypatch) -> None:
    """The export-time attention forwards (CLIP: timm Attention; EVA-02: EvaAttention with
    rotary embedding) give the encoder's outputs, through the custom op in every block."""
    from vltseg_core.export import attention
    from vltseg_core.models import build_model

    torch.manual_seed(0)
    model = build_model(preset, 5).eval()
    torch.nn.init.normal_(model.encoder.trunk.blocks[0].attn.proj.weight)  # not a near-identity
    calls, original = [], attention.fused_attention

    def counted(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(attention, "fused_attention", counted)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model.encoder(x)
        with attention.fused_attention_forwards(model) as swapped:
            got = model.encoder(x)
        assert swapped == len(calls) == len(model.encoder.trunk.blocks)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected))
        assert "forward" not in model.encoder.trunk.blocks[0].attn.__dict__


def test_fused_attention_refuses_masks() -> None:
    from vltseg_core.export.attention import fused_attention_forwards
    from vltseg_core.models import build_model

    model = build_model("vltseg_tiny_m2f", 5).eval()
    attn = model.encoder.trunk.blocks[0].attn
    with fused_attention_forwards(model), pytest.raises(ValueError, match="unmasked"):
        attn(torch.randn(1, 4, attn.qkv.in_features), attn_mask=torch.zeros(4, 4))
