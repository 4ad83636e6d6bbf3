"""Output shapes of every preset family at several non-square sizes (same code as the
paper presets; widths reduced where a full-size CPU run would be slow) and of the real
paper presets on the meta device (no compute)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vltseg_core.models import ModelOutput, build_from_preset, build_model, get_preset, list_presets
from vltseg_core.models.build import encoder_label
from vltseg_core.models.pyramid import SimpleFeaturePyramid
from vltseg_core.models.segmentor import semantic_inference


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Same architecture classes as the paper presets, with CPU-sized widths / depths.
SMALL = dict(embed_dim=64, depth=4, num_heads=2, out_indices=(0, 1, 2, 3), pyramid_dim=32, pd_layers=1,
             pd_heads=4, pd_ffn=64, mask_dim=32, hidden_dim=32, num_queries=8, dec_layers=3, dec_heads=4,
             dec_ffn=64, box_convs=1, box_fc=32, rpn_post_nms=(64, 32))
PAPER = [p for p in list_presets() if "tiny" not in p]
SIZES = [(64, 96), (96, 64), (80, 144)]  # (H, W); 80x144 exercises padding to 32


def _check_output(out: ModelOutput, cfg, batch: int, size: tuple[int, int], num_classes: int) -> None:
    assert isinstance(out, ModelOutput)
    if cfg.seg:
        assert out.sem_seg.shape == (batch, num_classes, *size)
        assert torch.isfinite(out.sem_seg).all()
        assert out.sem_seg.min() >= 0 and out.sem_seg.max() <= cfg.num_queries
    else:
        assert out.sem_seg is None
    if cfg.det:
        assert len(out.detections) == batch
        for det in out.detections:
            n = det["boxes"].shape[0]
            assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
            if n:
                assert det["boxes"][:, 2].max() <= size[1] and det["boxes"][:, 3].max() <= size[0]
                assert det["labels"].min() >= 0 and det["labels"].max() < num_classes
    else:
        assert out.detections is None


@pytest.mark.parametrize("preset", PAPER)
def test_paper_preset_families_small_width(preset: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset, num_classes=7, **SMALL).eval()
    cfg = get_preset(preset, **SMALL)
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            _check_output(model(x), cfg, 2, size, 7)


@pytest.mark.parametrize("preset", [p for p in list_presets() if "tiny" in p])
def test_tiny_presets(preset: str) -> None:
    model = build_model(preset, num_classes=5).eval()
    for size in [(128, 256), *SIZES]:
        x = model.preprocess(torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8))
        with torch.no_grad():
            _check_output(model(x), get_preset(preset), 1, size, 5)


@pytest.mark.parametrize("preset", [p for p in PAPER if p.endswith("_m2f")])
@pytest.mark.parametrize("size", [(512, 1024), (512, 512), (1024, 2048)])
def test_paper_presets_full_width_on_meta(preset: str, size: tuple[int, int]) -> None:
    """Real widths/depths; meta tensors check every shape without computing."""
    with torch.device("meta"):
        model = build_from_preset(get_preset(preset), 19).eval()
        out = model(torch.zeros(1, 3, *size))
    assert out.sem_seg.shape == (1, 19, *size)


@pytest.mark.parametrize("preset", ["vltseg_eva02_l14_m2f", "vltseg_clip_b16_m2f"])
def test_encoder_and_pyramid_strides_full_width_on_meta(preset: str) -> None:
    cfg = get_preset(preset)
    with torch.device("meta"):
        model = build_from_preset(cfg, 19)
        feats = model.encoder(torch.zeros(1, 3, 512, 1024))
        pyr = model.pyramid(feats, (512, 1024))
    p = model.encoder.patch_size
    assert [tuple(f.shape) for f in feats] == [(1, model.encoder.embed_dim, round(512 / p), round(1024 / p))] * 4
    assert [tuple(level.shape) for level in pyr] == [(1, 256, 512 // s, 1024 // s) for s in (4, 8, 16, 32)]
    assert model.encoder.num_blocks == cfg.out_indices[-1] + 1


def test_single_map_pyramid_and_patch14_resize() -> None:
    pyramid = SimpleFeaturePyramid(48, 16, num_inputs=1)
    levels = pyramid([torch.randn(2, 48, 5, 9)], (64, 128))  # patch-14 grid of a 64x128 input
    assert [tuple(level.shape) for level in levels] == [(2, 16, 64 // s, 128 // s) for s in (4, 8, 16, 32)]


def test_patch8_encoder_gives_the_pyramid_exact_strides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's finer grid: a patch-8 tiny trunk, pyramid levels built one octave lower with
    no resize (a resize would hide a wrong scale op), and a model that runs end to end."""
    resized, real = [], F.interpolate

    def spy(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        resized.append(x.shape)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(F, "interpolate", spy)
    model = build_model("vltseg_tiny_m2f", num_classes=5, patch_size=8).eval()
    assert model.encoder.patch_size == 8
    x = model.preprocess(torch.randint(0, 256, (1, 3, 64, 128), dtype=torch.uint8))
    with torch.no_grad():
        feats = model.encoder(x)
        resized.clear()  # the encoder resamples its position embedding; the pyramid must not resize
        levels = model.pyramid(feats, (64, 128))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 16)] * 4
    assert [tuple(level.shape) for level in levels] == [(1, 32, 64 // s, 128 // s) for s in (4, 8, 16, 32)]
    assert not resized
    with torch.no_grad():
        _check_output(model(x), get_preset("vltseg_tiny_m2f", patch_size=8), 1, (64, 128), 5)
    assert encoder_label("vltseg_tiny_m2f", patch_size=8) == ("CLIP", "ViT-tiny/8")
    with pytest.raises(ValueError, match="patch_size must be 8, 14 or 16"):
        SimpleFeaturePyramid(48, 16, patch_size=32)


def test_preprocess_and_buffers() -> None:
    model = build_model("vltseg_tiny_m2f", num_classes=3)
    assert model.pixel_mean.shape == (3, 1, 1) and model.pixel_std.shape == (3, 1, 1)
    assert model.input_size == (128, 256)
    img = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    x = model.preprocess(img)
    assert x.dtype == torch.float32
    assert torch.allclose(x[0, :, 0, 0], (255 - model.pixel_mean[:, 0, 0]) / model.pixel_std[:, 0, 0])
    assert "pixel_mean" not in model.state_dict()
    with pytest.raises(ValueError):
        model.preprocess(torch.zeros(3, 4, 4))


def test_semantic_inference_formula() -> None:
    logits, masks = torch.randn(2, 5, 4), torch.randn(2, 5, 3, 6)
    expected = torch.zeros(2, 3, 3, 6)
    for q in range(5):
        expected += logits.softmax(-1)[:, q, :3, None, None] * masks[:, q, None].sigmoid()
    assert torch.allclose(semantic_inference(logits, masks), expected, atol=1e-6)


def _head_outputs(model, x: torch.Tensor):
    padded = model._pad(x, 0.0)
    return model.seg_head(model.pyramid(model.encoder(padded), tuple(padded.shape[-2:])))


def test_semantic_inference_upsamples_mask_logits_before_the_sigmoid() -> None:
    """The reference order (Mask2Former / mmseg): mask logits resized to the padded input,
    cropped to the image, then sigmoid and the einsum with softmax[..., :-1]. The cheaper
    order (scores at stride 4, then resized) is a different function and stays an option."""
    torch.manual_seed(0)
    model = build_model("vltseg_tiny_m2f", num_classes=4).eval()
    x = torch.randn(2, 3, 80, 144)  # padded to 96 x 160
    with torch.no_grad():
        scores = model(x).sem_seg
        out = _head_outputs(model, x)
        model.seg_upsample = "scores"
        cheap = model(x).sem_seg
    masks = F.interpolate(out.masks, size=(96, 160), mode="bilinear", align_corners=False)[..., :80, :144]
    expected = torch.einsum("bqk,bqhw->bkhw", out.logits.softmax(-1)[..., :-1], masks.sigmoid())
    torch.testing.assert_close(scores, expected)
    stride4 = F.interpolate(semantic_inference(out.logits, out.masks), size=(96, 160), mode="bilinear",
                            align_corners=False)[..., :80, :144]
    torch.testing.assert_close(cheap, stride4)
    assert float((scores - stride4).abs().max()) > 1e-3


def test_eval_scores_are_float32_under_autocast() -> None:
    torch.manual_seed(0)
    model = build_model("vltseg_tiny_m2f", num_classes=4).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model(torch.randn(1, 3, 64, 96)).sem_seg
    assert scores.dtype == torch.float32


def test_eval_decoder_shortcut_matches_train_path() -> None:
    """Eval derives attention masks from resized mask features; training resizes mask
    logits. Bilinear resizing is linear, so final predictions must agree."""
    torch.manual_seed(0)
    model = build_model("vltseg_tiny_m2f", num_classes=4)
    x = torch.randn(1, 3, 96, 160)
    pyr = model.pyramid(model.encoder(x), (96, 160))
    head = model.seg_head
    with torch.no_grad():
        head.train()
        a = head(pyr)
        head.eval()
        b = head(pyr)
    assert len(a.aux) == head.decoder.num_layers and b.aux == []
    assert torch.allclose(a.logits, b.logits, atol=1e-4) and torch.allclose(a.masks, b.masks, atol=1e-4)


def test_output_is_cropped_not_resized() -> None:
    """An image padded to a multiple of 32 gives the same scores as the pre-padded image."""
    torch.manual_seed(0)
    model = build_model("vltseg_tiny_m2f", num_classes=4).eval()
    x = torch.randn(1, 3, 80, 144)
    with torch.no_grad():
        small = model(x).sem_seg
        big = model(F.pad(x, (0, 16, 0, 16))).sem_seg
    assert torch.allclose(small, big[..., :80, :144], atol=1e-5)


def test_unknown_preset_and_fields() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("nope", 3)
    with pytest.raises(ValueError, match="unknown preset fields"):
        build_model("vltseg_tiny_m2f", 3, not_a_field=1)


class _Fixed(torch.nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.value


def test_attention_mask_is_an_additive_bias_per_query() -> None:
    """The next layer's mask: 0 where the predicted mask logit is >= 0, -inf elsewhere, the
    same for every head; a query whose mask is empty attends everywhere (no all -inf row)."""
    torch.manual_seed(0)
    decoder = build_model("vltseg_tiny_m2f", num_classes=4).seg_head.decoder.eval()
    dim, queries = decoder.hidden_dim, decoder.query_feat.num_embeddings
    embed = torch.randn(2, queries, dim)
    embed[:, 0], embed[:, 1] = 0, 0
    embed[:, 0, 0], embed[:, 1, 0] = -1, 1  # query 0: every logit < 0 (empty); query 1: all > 0
    mf = torch.randn(2, dim, 8, 12)
    mf[:, 0] = 1
    decoder.mask_embed = _Fixed(embed)  # type: ignore[assignment]
    output = torch.randn(2, queries, dim)
    with torch.no_grad():
        _, bias = decoder._predict(output, mf, [mf], [(8, 12)], 0, last=False)
    logits = torch.einsum("bqc,bchw->bqhw", embed, mf).flatten(2)
    assert bias.shape == (2, 1, queries, 96) and bias.dtype == output.dtype  # one copy, not per head
    per_image = bias[:, 0]
    expected = torch.where(logits.sigmoid() < 0.5, float("-inf"), 0.0)
    assert torch.isinf(expected[:, 0]).all() and not torch.isinf(expected[:, 1]).any()
    expected[:, 0] = 0  # the empty mask is dropped
    assert torch.equal(per_image, expected)
    assert torch.isinf(expected).any() and not torch.isinf(bias).all(-1).any()
