"""Weight initialisations the reference implementations use, by name, so each head states its
source in one line (docs/DESIGN.md lists them).

- ``c2_xavier_fill``: detectron2 / fvcore ``weight_init.c2_xavier_fill`` (Caffe2's "XavierFill":
  ``kaiming_uniform_(a=1)``, bias 0); Mask2Former's FPN convs, mask-feature conv and decoder
  input projections; mmdet calls it ``caffe2_xavier_init``.
- ``c2_msra_fill``: fvcore ``c2_msra_fill`` (``kaiming_normal_(fan_out, relu)``, bias 0);
  detectron2's box-head convs.
- ``xavier_linears``: ``xavier_uniform_`` on every weight matrix of a module, as Mask2Former's
  ``_reset_parameters`` does for its transformer layers (biases keep PyTorch's default).
"""

from __future__ import annotations

from torch import nn


def c2_xavier_fill(module: nn.Conv2d | nn.Linear) -> None:
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def c2_msra_fill(module: nn.Conv2d | nn.Linear) -> None:
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def xavier_linears(module: nn.Module) -> None:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_uniform_(sub.weight)
