"""open_clip checkpoints -> timm trunks: key conversion, zero missing keys, numerical
parity with open_clip's own towers at their native size, clear wrong-architecture errors."""

from __future__ import annotations

import logging
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import save_file

from vltseg_core.models import (
    ViTEncoder,
    build_model,
    convert_open_clip_state_dict,
    create_trunk,
    load_trunk_weights,
    read_state_dict,
)
from vltseg_core.models.encoder import trunk_spec, unwrap_state_dict

logging.getLogger().setLevel(logging.ERROR)  # open_clip warns "no pretrained weights"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _open_clip(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return open_clip.create_model(name, pretrained=None).eval()


@pytest.fixture(scope="module")
def vit_b16(tmp_path_factory):
    """open_clip ViT-B-16 and its full CLIP state dict saved as a DDP-style wrapped ``.pt``."""
    model = _open_clip("ViT-B-16")
    path = tmp_path_factory.mktemp("oc") / "vit_b16.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model, path


@pytest.fixture(scope="module")
def eva02_b16(tmp_path_factory):
    """open_clip EVA02-B-16 and its visual-only state dict saved as ``.safetensors``."""
    model = _open_clip("EVA02-B-16")
    path = tmp_path_factory.mktemp("oc") / "eva02_b16.safetensors"
    save_file({k: v.contiguous() for k, v in model.visual.state_dict().items()}, str(path))
    return model, path


def _hooked_blocks(model: torch.nn.Module, family: str, indices: tuple[int, ...]) -> dict[int, torch.Tensor]:
    blocks = model.visual.transformer.resblocks if family == "clip" else model.visual.trunk.blocks
    captured: dict[int, torch.Tensor] = {}
    for i in indices:
        blocks[i].register_forward_hook(lambda _m, _a, out, i=i: captured.__setitem__(i, out))
    return captured


def _check_parity(oc_model, encoder: ViTEncoder, family: str, size: int, patch: int) -> None:
    """Every output map equals open_clip's block output (patch tokens) to 1e-4."""
    captured = _hooked_blocks(oc_model, family, encoder.out_indices)
    torch.manual_seed(1)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        oc_model.encode_image(x)
        feats = encoder.eval()(x)
    g = size // patch
    for i, feat in zip(encoder.out_indices, feats):
        ref = captured[i][:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)  # drop class token
        assert feat.shape == ref.shape
        assert (feat - ref).abs().max().item() < 1e-4, f"block {i}"


def _check_embedding(oc_model, encoder: ViTEncoder, state_dict, name: str) -> None:
    """The encoder's last block + the checkpoint's final norm and projection (converted to
    timm's ``norm``/``head``) reproduce open_clip's ``encode_image``."""
    size = trunk_spec(name).native_size
    converted = convert_open_clip_state_dict(state_dict)
    last = encoder.trunk.blocks[-1]
    captured: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, _a, out: captured.append(out))
    torch.manual_seed(2)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ref = oc_model.encode_image(x)
        encoder.eval()(x)
    handle.remove()
    cls = captured[0][:, 0]
    eps = 1e-6 if encoder.family == "eva02" else 1e-5
    cls = torch.nn.functional.layer_norm(cls, cls.shape[-1:], converted["norm.weight"], converted["norm.bias"], eps)
    out = torch.nn.functional.linear(cls, converted["head.weight"], converted["head.bias"])
    assert (out - ref).abs().max().item() < 1e-4


def test_vit_b16_open_clip_checkpoint_parity(vit_b16) -> None:
    oc_model, path = vit_b16
    # open_clip's "ViT-B-16" config uses exact GELU (the OpenAI weights need QuickGELU).
    model = build_model("vltseg_clip_b16_m2f", 19, checkpoint=path, quick_gelu=False)
    report = model.encoder.load_report
    assert report.missing == [] and report.unexpected == [] and report.resampled == []
    assert sorted(report.ignored) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    _check_parity(oc_model, model.encoder, "clip", 224, 16)
    _check_embedding(oc_model, model.encoder, read_state_dict(path), "ViT-B-16")


def test_eva02_b16_open_clip_checkpoint_parity(eva02_b16) -> None:
    oc_model, path = eva02_b16
    encoder = ViTEncoder(create_trunk("EVA02-B-16"), (3, 5, 7, 11), "eva02")
    report = encoder.load_open_clip(path)
    assert report.missing == [] and report.unexpected == []
    assert set(report.ignored) == {"head.bias", "head.weight", "norm.bias", "norm.weight"}
    _check_parity(oc_model, encoder, "eva02", 224, 16)
    _check_embedding(oc_model, encoder, read_state_dict(path), "EVA02-B-16")


def test_wrong_family_fails_clearly(vit_b16, eva02_b16) -> None:
    with pytest.raises(ValueError, match="wrong architecture") as err:
        build_model("vltseg_eva02_b16_m2f", 19, checkpoint=vit_b16[1])
    assert "\n" not in str(err.value) and "OpenAI-CLIP" in str(err.value)
    encoder = ViTEncoder(create_trunk("ViT-B-16", depth=4), (3,), "clip")
    with pytest.raises(ValueError, match="wrong architecture"):
        encoder.load_open_clip(eva02_b16[1])


def test_wrong_size_fails_clearly(vit_b16) -> None:
    sd = read_state_dict(vit_b16[1])
    with torch.device("meta"):  # a real-size ViT-L-14 encoder without allocating it
        large = ViTEncoder(create_trunk("ViT-L-14"), (9, 14, 19, 23), "clip")
        large_sd = open_clip.create_model("ViT-L-14", pretrained=None, device="meta").state_dict()
    with pytest.raises(ValueError, match=r"shape .*wrong architecture") as err:
        large.load_open_clip(sd)  # B file into L
    assert "\n" not in str(err.value)
    base = ViTEncoder(create_trunk("ViT-B-16", depth=4), (3,), "clip")
    with pytest.raises(ValueError, match=r"shape .*wrong architecture"):
        base.load_open_clip(large_sd)  # L file into B
    with pytest.raises(ValueError, match="no CLIP / EVA-02 visual tower"):
        base.load_open_clip({"foo.weight": torch.zeros(2)})


def _tiny_open_clip() -> CLIP:
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=3, width=64, head_width=32, patch_size=16, image_size=224)
    text = CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1)
    return CLIP(embed_dim=24, vision_cfg=vision, text_cfg=text).eval()


def test_conversion_is_pure_and_layout_independent() -> None:
    model = _tiny_open_clip()
    full = model.state_dict()
    before = {k: v.clone() for k, v in full.items()}
    converted = convert_open_clip_state_dict(full)
    assert all(torch.equal(before[k], full[k]) for k in full)  # input untouched
    visual_only = convert_open_clip_state_dict(model.visual.state_dict())
    wrapped = convert_open_clip_state_dict(
        unwrap_state_dict({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in full.items()}}))
    assert converted.keys() == visual_only.keys()
    assert all(torch.equal(converted[k], visual_only[k]) for k in converted)
    assert not any(k.startswith(("transformer.", "token_embedding", "logit")) for k in converted)
    assert converted["cls_token"].shape == (1, 1, 64) and converted["pos_embed"].shape == (1, 197, 64)
    assert converted["head.weight"].shape == (24, 64)
    assert wrapped.keys() == converted.keys()


def test_tiny_open_clip_tower_parity_and_strictness() -> None:
    model = _tiny_open_clip()
    encoder = ViTEncoder(create_trunk("ViT-B-16", embed_dim=64, depth=3, num_heads=2), (0, 2), "clip")
    report = encoder.load_open_clip(model.state_dict())
    assert report.missing == [] and report.unexpected == []
    _check_parity(model, encoder, "clip", 224, 16)
    partial = {k: v for k, v in model.state_dict().items() if "resblocks.2." not in k}
    with pytest.raises(ValueError, match="missing"):
        encoder.load_open_clip(partial)
    report = load_trunk_weights(encoder.trunk, partial, "clip", strict=False)
    assert report.missing and all(k.startswith("blocks.2.") for k in report.missing)


def _bicubic_grid(pos: torch.Tensor, old: int, new: tuple[int, int]) -> torch.Tensor:
    """mmpretrain / mmseg ``resize_pos_embed``: plain bicubic, align_corners False, no antialias."""
    grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], -1)], 1)


@pytest.mark.parametrize("old", [21, 10])  # 336 / 16 into a 224 trunk (down), 160 / 16 (up)
def test_pos_embed_resampled_for_other_native_size(old: int) -> None:
    """A checkpoint trained at another resolution is resampled to the trunk's 14 x 14 grid by
    plain bicubic (timm's default would antialias: another kernel, also when upsampling)."""
    trunk = create_trunk("ViT-B-16", embed_dim=64, depth=1, num_heads=2)
    sd = {k: v.clone() for k, v in trunk.state_dict().items()}
    sd["pos_embed"] = torch.randn(1, 1 + old * old, 64)
    encoder = ViTEncoder(trunk, (0,), "clip")
    report = encoder.load_open_clip(sd)
    assert report.resampled == ["pos_embed"] and report.missing == []
    torch.testing.assert_close(trunk.pos_embed.data, _bicubic_grid(sd["pos_embed"], old, (14, 14)))


def test_pos_embed_resized_to_the_input_grid_without_antialias() -> None:
    encoder = ViTEncoder(create_trunk("ViT-B-16", embed_dim=64, depth=1, num_heads=2), (0,), "clip")
    pos = encoder.trunk.pos_embed.data
    for grid in ((8, 12), (20, 30)):
        torch.testing.assert_close(encoder._pos_embed(*grid), _bicubic_grid(pos, 14, grid))


def test_quick_gelu_and_arbitrary_sizes() -> None:
    trunk = create_trunk("ViT-B-16", embed_dim=64, depth=2, num_heads=2, quick_gelu=True)
    assert "QuickGELU" in type(trunk.blocks[0].mlp.act).__name__
    with pytest.raises(ValueError, match="quick_gelu"):
        create_trunk("EVA02-B-16", quick_gelu=True)
    for name, patch in (("EVA02-L-14", 14), ("ViT-L-14", 14), ("EVA02-B-16", 16)):
        encoder = ViTEncoder(create_trunk(name, embed_dim=64, depth=2, num_heads=2), (0, 1), trunk_spec(name).family)
        for h, w in ((64, 128), (100, 60), (224, 224)):
            with torch.no_grad():
                feats = encoder(torch.randn(1, 3, h, w))
            assert [f.shape for f in feats] == [(1, 64, round(h / patch), round(w / patch))] * 2


def test_read_state_dict_formats(tmp_path) -> None:
    linear = torch.nn.Linear(2, 3)
    torch.save({"model": linear.state_dict()}, tmp_path / "wrapped.bin")
    assert set(read_state_dict(tmp_path / "wrapped.bin")) == {"weight", "bias"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        try:
            torch.jit.script(linear).save(str(tmp_path / "openai_style.pt"))
        except Exception:  # pragma: no cover - TorchScript removed from this torch
            pytest.skip("torch.jit.script unavailable")
        assert set(read_state_dict(tmp_path / "openai_style.pt")) == {"weight", "bias"}
    torch.save({"epoch": 1}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        read_state_dict(tmp_path / "junk.pt")


def _windowed_encoder(window_size: int, global_blocks: tuple[int, ...] = ()) -> ViTEncoder:
    torch.manual_seed(0)
    trunk = create_trunk("ViT-B-16", embed_dim=32, depth=2, num_heads=2, patch_size=8)
    return ViTEncoder(trunk, (0, 1), "clip", window_size=window_size, global_blocks=global_blocks).eval()


def test_window_attention_runs_the_block_on_each_window() -> None:
    """A windowed block equals the plain block run on each ``w x w`` window by hand (and on
    the class token alone)."""
    enc = _windowed_encoder(2)
    block, tokens = enc.trunk.blocks[0], torch.randn(2, 1 + 4 * 6, 32)
    with torch.no_grad():
        out = enc._windowed(block, tokens, 4, 6)
        grid = out[:, 1:].reshape(2, 4, 6, 32)
        torch.testing.assert_close(out[:, :1], block(tokens[:, :1]))
        for r in (0, 2):
            for c in (0, 2, 4):
                window = tokens[:, 1:].reshape(2, 4, 6, 32)[:, r:r + 2, c:c + 2].reshape(2, 4, 32)
                torch.testing.assert_close(grid[:, r:r + 2, c:c + 2].reshape(2, 4, 32), block(window))
        # a window larger than the grid is the whole grid (no padding tokens to attend to)
        whole = _windowed_encoder(8)._windowed(block, tokens, 4, 6)
        torch.testing.assert_close(whole[:, 1:], block(tokens[:, 1:]))


def test_window_attention_keeps_windows_apart_until_a_global_block() -> None:
    x = torch.randn(1, 3, 32, 48)  # 4 x 6 tokens: 2 x 3 windows of 2 x 2
    y = x.clone()
    y[..., 16:, 32:] += 1  # the pixels of the last window only
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[2:, 4:] = True
    with torch.no_grad():
        windowed, mixed = _windowed_encoder(2), _windowed_encoder(2, global_blocks=(1,))
        changed = (windowed(x)[1] - windowed(y)[1]).abs().amax(1)[0] > 1e-6
        assert torch.equal(changed, expected)
        assert ((mixed(x)[1] - mixed(y)[1]).abs().amax(1)[0] > 1e-6).all()
        # a grid that is no multiple of the window is padded and cropped back: 5 x 7 tokens
        assert [tuple(o.shape) for o in windowed(torch.randn(1, 3, 40, 56))] == [(1, 32, 5, 7)] * 2
        assert [tuple(o.shape) for o in _windowed_encoder(4)(torch.randn(2, 3, 24, 56))] == [(2, 32, 3, 7)] * 2


def test_window_attention_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="window_size -1"):
        _windowed_encoder(-1)
    with pytest.raises(ValueError, match="global_blocks"):
        _windowed_encoder(2, global_blocks=(2,))
    eva = create_trunk("EVA02-B-16", embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="rotary"):
        ViTEncoder(eva, (0,), "eva02", window_size=2)
