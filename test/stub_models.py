"""A small model honouring the DESIGN.md model contract, used to test the export wrapper on the
ops the real heads use and the exporter must handle: `F.grid_sample` with predicted offsets (as
in multi-scale deformable attention) and torchvision batched NMS with a data-dependent count."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


class StubOutput(NamedTuple):
    sem_seg: torch.Tensor | None
    detections: list[dict[str, torch.Tensor]] | None


class StubModel(nn.Module):
    """normalised images [B,3,H,W] (see preprocess) -> StubOutput; tasks from ("seg", "det")."""

    def __init__(self, num_classes: int = 5, tasks: tuple[str, ...] = ("seg",),
                 input_size: tuple[int, int] = (64, 96), top_k: int = 50) -> None:
        super().__init__()
        self.tasks = tasks
        self.num_classes = num_classes
        self.input_size = input_size
        self.top_k = top_k
        self.register_buffer("pixel_mean", torch.tensor([123.7, 116.3, 103.5]).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor([58.4, 57.1, 57.4]).view(3, 1, 1), False)
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.offsets = nn.Conv2d(16, 2, 3, padding=1)
        self.seg_head = nn.Conv2d(16, num_classes, 1)
        self.det_head = nn.Conv2d(16, 4 + num_classes, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.pixel_mean) / self.pixel_std

    def _sample(self, feats: torch.Tensor) -> torch.Tensor:
        b, _, h, w = feats.shape
        ys = torch.linspace(-1, 1, h, device=feats.device)
        xs = torch.linspace(-1, 1, w, device=feats.device)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(b, h, w, 2)
        grid = grid + 0.3 * torch.tanh(self.offsets(feats)).permute(0, 2, 3, 1)
        return F.grid_sample(feats, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, images: torch.Tensor) -> StubOutput:
        feats = torch.relu(self.stem(images))
        feats = feats + self._sample(feats)
        sem_seg = dets = None
        if "seg" in self.tasks:
            logits = F.interpolate(self.seg_head(feats), size=images.shape[-2:], mode="bilinear")
            sem_seg = logits.softmax(dim=1) * torch.sigmoid(logits.mean(dim=1, keepdim=True))
        if "det" in self.tasks:
            dets = [self._detect(f, images.shape[-2:]) for f in self.det_head(feats)]
        return StubOutput(sem_seg, dets)

    def _detect(self, raw: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        c, h, w = raw.shape
        stride_y, stride_x = size[0] / h, size[1] / w
        cy, cx = torch.meshgrid(torch.arange(h) * stride_y, torch.arange(w) * stride_x, indexing="ij")
        wh = torch.exp(raw[2:4].clamp(max=2)) * 12
        boxes = torch.stack([cx - wh[0] + raw[0], cy - wh[1] + raw[1],
                             cx + wh[0] + raw[0], cy + wh[1] + raw[1]], dim=-1).reshape(-1, 4)
        boxes = boxes.clamp(min=0).minimum(torch.tensor([size[1], size[0], size[1], size[0]]))
        probs = torch.sigmoid(raw[4:]).reshape(self.num_classes, -1).t()
        scores, labels = probs.max(dim=1)
        scores, order = scores.topk(self.top_k)
        boxes, labels = boxes[order], labels[order]
        keep = scores > 0.3
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)[:20]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
