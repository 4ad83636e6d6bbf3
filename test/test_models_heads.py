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


def _torchvision_detections(model, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """torchvision's own per-image RPN + RoI heads inference on the model's pyramid."""
    from collections import OrderedDict

    from torchvision.models.detection.image_list import ImageList

    from vltseg_core.models.detection import LEVEL_NAMES

    h, w = x.shape[-2:]
    padded = model._pad(x, 0.0)
    pyramid = model.pyramid(model.encoder(padded), tuple(padded.shape[-2:]))
    features = OrderedDict(zip(LEVEL_NAMES, pyramid))
    features["pool"] = torch.nn.functional.max_pool2d(pyramid.s32, kernel_size=1, stride=2)
    images = ImageList(padded, [(h, w)] * x.shape[0])
    det = model.det_head
    proposals, _ = det.rpn(images, features)
    out, _ = det.roi_heads(features, proposals, images.image_sizes)
    return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in out]


# fewer proposals than RPN candidates and fewer detections than rows / more of both
@pytest.mark.parametrize(("post_nms", "per_image"), [(50, 400), (2000, 100)])
def test_batched_detection_equals_torchvision_per_image(post_nms: int, per_image: int) -> None:
    """The whole-batch test-time detector (one graph for any batch) gives torchvision's
    per-image results: same boxes, scores, labels, in the same order, for each image of a
    batch of 3 different images, with the boxes inside the real (unpadded) image."""
    from vltseg_core.models import build_model

    torch.manual_seed(0)
    model = build_model("vltseg_tiny_det", num_classes=3, rpn_post_nms=(100, post_nms),
                        detections_per_img=per_image).eval()
    x = torch.randn(3, 3, 70, 100)  # padded to 96 x 128 inside
    with torch.no_grad():
        ours = model(x).detections
        reference = _torchvision_detections(model, x)
    assert sum(len(d["scores"]) for d in reference) > 20
    for got, ref in zip(ours, reference):
        assert torch.equal(got["labels"], ref["labels"])
        torch.testing.assert_close(got["scores"], ref["scores"], rtol=0, atol=1e-6)
        torch.testing.assert_close(got["boxes"], ref["boxes"], rtol=0, atol=1e-4)
        assert float(got["boxes"][:, 2].max()) <= 100 and float(got["boxes"][:, 3].max()) <= 70


def test_attention_with_a_head_broadcast_bias_equals_multihead_attention() -> None:
    """``multi_head_attention`` with a ``[B, 1, Q, S]`` bias is ``nn.MultiheadAttention`` with
    the ``[B*heads, Q, S]`` copy of it (same weights), in eval and in training mode."""
    from vltseg_core.models.transformer_decoder import multi_head_attention

    torch.manual_seed(0)
    b, q, s, dim, heads = 2, 5, 7, 16, 4
    mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
    query, key, value = torch.randn(b, q, dim), torch.randn(b, s, dim), torch.randn(b, s, dim)
    bias = torch.zeros(b, 1, q, s).masked_fill(torch.rand(b, 1, q, s) < 0.4, float("-inf"))
    bias[..., 0] = 0  # no fully blocked row
    for train in (False, True):
        mha.train(train)
        expected = mha(query, key, value, attn_mask=bias.expand(-1, heads, -1, -1).flatten(0, 1),
                       need_weights=False)[0]
        torch.testing.assert_close(multi_head_attention(mha, query, key, value, bias), expected)


def test_decoder_attention_masks_are_not_copied_per_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every masked cross-attention gets one ``[B, 1, Q, h*w]`` bias, in training and eval."""
    from vltseg_core.models import build_model

    masks: list[tuple[int, ...]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        if mask is not None:
            masks.append(tuple(mask.shape))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    model = build_model("vltseg_tiny_m2f", num_classes=3)
    decoder = model.seg_head.decoder
    pyramid = model.pyramid(model.encoder(torch.randn(2, 3, 64, 96)), (64, 96))
    for train in (True, False):
        masks.clear()
        model.seg_head.train(train)
        with torch.no_grad():
            model.seg_head(pyramid)
        sizes = [2 * 3, 4 * 6, 8 * 12]  # strides 32, 16, 8 of 64 x 96, round robin
        queries = decoder.query_feat.num_embeddings
        assert masks == [(2, 1, queries, sizes[i % 3]) for i in range(decoder.num_layers)]


def test_pixel_decoder_recomputation_changes_no_result() -> None:
    """Recomputing the deformable layers (and their sampled values) in backward gives the
    outputs and gradients of keeping every activation, to 1e-5."""
    import copy

    from vltseg_core.models.pixel_decoder import MSDeformablePixelDecoder
    from vltseg_core.models.pyramid import FeaturePyramid

    torch.manual_seed(0)
    kept = MSDeformablePixelDecoder(16, conv_dim=32, mask_dim=24, num_layers=2, num_heads=4,
                                    ffn_dim=64, grad_checkpointing=False).train()
    for layer in kept.layers:  # zero-initialised: no gradient would reach the queries
        torch.nn.init.normal_(layer.attn.sampling_offsets.weight, std=0.1)
        torch.nn.init.normal_(layer.attn.attention_weights.weight, std=0.1)
    recomputed = copy.deepcopy(kept)
    recomputed.grad_checkpointing = True
    for layer in recomputed.layers:
        layer.attn.recompute_sampling = True
    maps = [torch.randn(2, 16, 64 // s, 96 // s) for s in (4, 8, 16, 32)]
    results = []
    for decoder in (kept, recomputed):
        inputs = [m.clone().requires_grad_() for m in maps]
        out = decoder(FeaturePyramid(*inputs))
        loss = out.mask_features.square().mean() + sum(m.sin().mean() for m in out.multi_scale)
        loss.backward()
        grads = [p.grad for p in decoder.parameters()] + [i.grad for i in inputs]
        results.append(([out.mask_features, *out.multi_scale], grads))
    for a, b in zip(*(outs + grads for outs, grads in results)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert all(g is not None and g.abs().sum() > 0 for g in results[1][1])


def test_pixel_decoder_keeps_under_a_third_for_backward() -> None:
    """What a training forward leaves allocated for backward (the profiler's net allocations:
    saved activations + outputs): recomputation keeps under a third of keeping everything.
    bench/bench_msda_memory.py measures the real peak at B/16 sizes."""
    from torch.profiler import ProfilerActivity, profile

    from vltseg_core.models.pixel_decoder import MSDeformablePixelDecoder
    from vltseg_core.models.pyramid import FeaturePyramid

    maps = FeaturePyramid(*(torch.randn(1, 32, 128 // s, 128 // s) for s in (4, 8, 16, 32)))
    held = {}
    for recompute in (False, True):
        torch.manual_seed(0)
        decoder = MSDeformablePixelDecoder(32, conv_dim=64, mask_dim=64, num_layers=3, num_heads=4,
                                           ffn_dim=128, grad_checkpointing=recompute).train()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = decoder(maps)
        held[recompute] = sum(e.self_cpu_memory_usage for e in prof.events())
        del out
    assert held[True] < held[False] / 3, held
