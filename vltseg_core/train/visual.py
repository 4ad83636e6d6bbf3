"""Sample predictions during training: image | prediction | ground truth, for Tensorboard."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vltseg_core.evaluation.overlay import comparison_panel


@torch.no_grad()
def prediction_panel(model: nn.Module, batch: Any) -> np.ndarray:
    """``uint8[H, 3W + 8, 3]`` for the first image of ``batch`` (model put back in train mode).

    Runs the unwrapped model in eval mode on one image only; eval-mode forward draws no
    random numbers, so logging images does not change the training run.
    """
    images, targets = batch[0], batch[1]
    device = next(model.parameters()).device
    image = images[:1].to(device)
    was_training = model.training
    model.eval()
    try:
        out = model(model.preprocess(image))
    finally:
        model.train(was_training)
    rgb = image[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    pred = None if out.sem_seg is None else out.sem_seg[0].argmax(0).cpu().numpy().astype(np.uint8)
    gt = targets[0].get("sem_seg")
    return comparison_panel(rgb, pred, None if gt is None else gt.cpu().numpy().astype(np.uint8))
