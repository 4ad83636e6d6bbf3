"""Vision-only ViT weights in their native layouts -> timm trunk keys (the paper's baselines).

* ImageNet-21k ViTs: timm ``VisionTransformer`` state dicts (the ``model.safetensors`` /
  ``pytorch_model.bin`` of ``timm/vit_base_patch16_224.augreg_in21k``) already use the
  trunk's keys; the 21k-class ``head`` and final ``norm`` are not used by the encoder.
* DINOv2: the original checkpoints (``dinov2_vitb14_pretrain.pth``) use timm's names too
  (``blocks.N.ls1.gamma`` layer scales included) plus a ``mask_token`` for iBOT masking,
  which has no use here and is dropped, as timm's ``checkpoint_filter_fn`` does.

Pure functions: inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

_PREFIXES = ("encoder.trunk.", "backbone.", "trunk.")


def is_dinov2(keys: Iterable[str]) -> bool:
    """DINOv2 layout: layer scales on every block, or the iBOT ``mask_token``."""
    return any(k.endswith(("blocks.0.ls1.gamma", "mask_token")) for k in keys)


def is_plain_vit(keys: Iterable[str]) -> bool:
    """timm ``VisionTransformer`` without CLIP's pre-norm (ImageNet ViTs)."""
    keys = list(keys)
    return any(k.endswith("blocks.0.attn.qkv.weight") for k in keys) and not any(
        k.endswith("norm_pre.weight") for k in keys)


def convert_vision_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm-ViT or original-DINOv2 state dict as trunk keys: a wrapping prefix
    (``backbone.``, ``encoder.trunk.``, ``trunk.``) stripped, ``mask_token`` dropped."""
    sd = dict(state_dict)
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    return {k: v for k, v in sd.items() if k != "mask_token"}
