"""The vision-only baselines (ImageNet-21k ViT-B/16, L/16; DINOv2 ViT-B/14, L/14): each loads a
state dict written by its own library (timm; DINOv2's original layout = timm's + mask_token)
with zero missing keys, matches timm's own forward, gives strides 4/8/16/32 for non-square
inputs, and a file of another architecture fails with one clear line."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from safetensors.torch import save_file

from vltseg_core.models import ViTEncoder, build_model, create_trunk
from vltseg_core.models.build import encoder_label, get_preset
from vltseg_core.models.encoder import trunk_spec

logging.getLogger().setLevel(logging.ERROR)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(embed_dim=64, depth=4, num_heads=2)
ENCODERS = {  # tiny preset -> encoder name
    "vltseg_tiny_in21k_m2f": "ViT-B-16-IN21k",
    "vltseg_tiny_dinov2_m2f": "DINOv2-B-14",
}


def _timm_model(encoder: str, **kwargs) -> torch.nn.Module:
    """The model timm itself builds for this encoder (IN-21k: with its 21843-class head)."""
    spec = trunk_spec(encoder)
    classes = 21843 if spec.family == "vit" else 0
    torch.manual_seed(0)
    return timm.create_model(spec.timm_name, pretrained=False, num_classes=classes, **kwargs).eval()


def _native_file(encoder: str, model: torch.nn.Module, folder) -> str:
    """The weights as their source ships them: timm's safetensors for IN-21k ViTs, an
    original-DINOv2 ``.pth`` (timm's keys plus the iBOT mask token) for DINOv2."""
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if trunk_spec(encoder).family == "vit":
        path = folder / "model.safetensors"
        save_file(sd, str(path))
    else:
        sd["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
        path = folder / "dinov2_pretrain.pth"
        torch.save(sd, path)
    return str(path)


@pytest.mark.parametrize("preset", sorted(ENCODERS))
def test_native_weights_load_with_zero_missing_keys_and_match_timm(preset, tmp_path) -> None:
    encoder_name = ENCODERS[preset]
    reference = _timm_model(encoder_name, **TINY)
    path = _native_file(encoder_name, reference, tmp_path)
    model = build_model(preset, 19, checkpoint=path).eval()
    report = model.encoder.load_report
    assert report.missing == [] and report.unexpected == []
    assert set(report.ignored) <= {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    spec = trunk_spec(encoder_name)
    size = spec.native_size  # no position-embedding resampling: timm and ours must agree
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ours = model.encoder(x)
        theirs = reference.forward_intermediates(x, indices=list(model.encoder.out_indices),
                                                 intermediates_only=True)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("preset", sorted(ENCODERS))
def test_pyramid_strides_for_non_square_inputs(preset) -> None:
    model = build_model(preset, 19).eval()
    with torch.no_grad():
        for h, w in ((96, 160), (128, 64)):
            x = model.preprocess(torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8))
            feats = model.encoder(x)
            pyramid = model.pyramid(feats, (h, w))
            assert [tuple(p.shape[-2:]) for p in pyramid] == [(h // s, w // s) for s in (4, 8, 16, 32)]
            assert model(x).sem_seg.shape == (1, 19, h, w)


@pytest.mark.parametrize(("preset", "timm_name", "encoder_params_m"), [
    ("vltseg_in21k_b16_m2f", "vit_base_patch16_224", 85.8),
    ("vltseg_in21k_l16_m2f", "vit_large_patch16_224", 303.3),
    ("vltseg_dinov2_b14_m2f", "vit_base_patch14_dinov2", 86.6),
    ("vltseg_dinov2_l14_m2f", "vit_large_patch14_dinov2", 304.4),
])
def test_paper_size_presets_take_their_libraries_full_state_dict(preset, timm_name, encoder_params_m) -> None:
    """Full-size architectures on the meta device: timm's state dict of the named model fills
    the encoder with zero missing keys (no weights allocated)."""
    with torch.device("meta"):
        model = build_model(preset, 19)
        sd = timm.create_model(timm_name, pretrained=False).state_dict()
    report = model.encoder.load_open_clip(sd, source=timm_name)
    assert report.missing == [] and report.unexpected == []
    params = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    assert params == pytest.approx(encoder_params_m, abs=0.1)
    assert model.encoder.out_indices == get_preset(preset).out_indices


def test_normalisation_follows_the_pretraining_and_is_a_key() -> None:
    mean = {p: build_model(p, 19).pixel_mean.flatten().tolist() for p in
            ("vltseg_tiny_m2f", "vltseg_tiny_in21k_m2f", "vltseg_tiny_dinov2_m2f")}
    assert mean["vltseg_tiny_m2f"] == pytest.approx([122.77, 116.75, 104.09], abs=0.01)  # CLIP
    assert mean["vltseg_tiny_in21k_m2f"] == pytest.approx([127.5] * 3)  # augreg: 0.5 / 0.5
    assert mean["vltseg_tiny_dinov2_m2f"] == pytest.approx([123.675, 116.28, 103.53])  # ImageNet
    imagenet = build_model("vltseg_tiny_m2f", 19, normalization="imagenet")
    assert imagenet.pixel_std.flatten().tolist() == pytest.approx([58.395, 57.12, 57.375])
    with pytest.raises(ValueError, match="unknown normalization"):
        build_model("vltseg_tiny_m2f", 19, normalization="imagenett")
    assert encoder_label("vltseg_dinov2_l14_m2f") == ("DINOv2", "ViT-L/14")
    assert encoder_label("vltseg_in21k_b16_m2f") == ("ImageNet-21k", "ViT-B/16")


def _tiny_encoder(name: str, **dims) -> ViTEncoder:
    return ViTEncoder(create_trunk(name, **{**TINY, **dims}), (0, 1, 2, 3), trunk_spec(name).family)


def test_wrong_architecture_fails_clearly() -> None:
    vit_sd = _timm_model("ViT-B-16-IN21k", **TINY).state_dict()
    dino_sd = _timm_model("DINOv2-B-14", **TINY).state_dict()
    for encoder, sd, family in ((_tiny_encoder("ViT-B-16-IN21k"), dino_sd, "DINOv2"),
                                (_tiny_encoder("DINOv2-B-14"), vit_sd, "ImageNet ViT"),
                                (_tiny_encoder("EVA02-B-16"), vit_sd, "ImageNet ViT"),
                                (_tiny_encoder("ViT-B-16"), dino_sd, "DINOv2")):
        with pytest.raises(ValueError, match="wrong architecture") as err:
            encoder.load_open_clip(sd)
        assert family in str(err.value) and "\n" not in str(err.value)
    wide = _tiny_encoder("ViT-B-16-IN21k", embed_dim=96, num_heads=2)
    with pytest.raises(ValueError, match=r"shape .*wrong architecture"):
        wide.load_open_clip(vit_sd)  # width
    p14 = _tiny_encoder("DINOv2-B-14")
    p16_dino = _timm_model("DINOv2-B-14", patch_size=16, **TINY).state_dict()
    with pytest.raises(ValueError, match=r"patch_embed.proj.weight has shape"):
        p14.load_open_clip(p16_dino)  # patch size
    deeper = ViTEncoder(create_trunk("DINOv2-B-14", **{**TINY, "depth": 6}), (1, 3, 4, 5), "dinov2")
    with pytest.raises(ValueError, match=r"missing.*wrong architecture"):
        deeper.load_open_clip(dino_sd)  # depth: blocks 4 and 5 missing


def test_wrapped_prefixes_and_missing_key_report() -> None:
    sd = _timm_model("DINOv2-B-14", **TINY).state_dict()
    wrapped = {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}}
    encoder = _tiny_encoder("DINOv2-B-14")
    assert encoder.load_open_clip(wrapped).missing == []
    partial = {k: v for k, v in sd.items() if not k.startswith("blocks.3.")}
    with pytest.raises(ValueError, match="4 encoder tensors missing|missing"):
        encoder.load_open_clip(partial)
    report = encoder.load_open_clip(partial, strict=False)
    assert report.missing and all(k.startswith("blocks.3.") for k in report.missing)


def test_freezing_ablation_settings() -> None:
    """freeze_blocks=k fixes the embeddings and blocks 0..k-1 (stochastic depth still runs in
    them); frozen_encoder fixes every encoder weight and keeps the trunk in eval mode."""
    from vltseg_core.models import param_groups

    def encoder_outputs_twice(model):
        model.train()
        x = torch.randn(1, 3, 64, 64)
        torch.manual_seed(0)
        a = model.encoder(x)[-1]
        torch.manual_seed(1)
        return a, model.encoder(x)[-1]

    partial = build_model("vltseg_tiny_eva02_m2f", 19, freeze_blocks=2)
    trainable = {n for n, p in partial.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("trunk.blocks.2.", "trunk.blocks.3.")) for n in trainable)
    all_blocks = build_model("vltseg_tiny_eva02_m2f", 19, freeze_blocks=4, drop_path_rate=0.5)
    frozen = build_model("vltseg_tiny_eva02_m2f", 19, frozen_encoder=True, drop_path_rate=0.5)
    for model in (all_blocks, frozen):
        assert not any(p.requires_grad for p in model.encoder.parameters())
        groups = param_groups(model, 1e-4, 0.05)
        ids = {id(p) for g in groups for p in g["params"]}
        assert not ids & {id(p) for p in model.encoder.parameters()}
        assert ids == {id(p) for p in model.parameters() if p.requires_grad}
    a, b = encoder_outputs_twice(all_blocks)
    assert not torch.equal(a, b)  # drop path active in the frozen blocks
    a, b = encoder_outputs_twice(frozen)
    assert torch.equal(a, b) and not frozen.encoder.trunk.training and frozen.pyramid.training
