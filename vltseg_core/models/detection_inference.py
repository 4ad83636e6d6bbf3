"""Test-time Faster R-CNN over a whole batch: torchvision's ``RegionProposalNetwork`` and
``RoIHeads`` inference with the per-image Python loops replaced by tensor ops on ``[B, ...]``.

Why: torchvision post-processes one image at a time (``for boxes, scores in zip(...)``), so an
exported graph is fixed to the batch it was traced with. Here every image keeps a fixed number
of candidates with a validity mask, non-maximum suppression runs once over the batch with the
image index folded into the NMS groups (``image * groups + level`` / ``+ class``, as
torchvision's ``batched_nms`` folds the level or class), and the per-image "first N after NMS"
becomes a top-k over masked scores. The results are torchvision's (same boxes, scores, labels
and order up to exact score ties); ``test_models_heads`` checks it against torchvision's own
per-image path. The modules' weights and settings (``pre/post_nms_top_n``, thresholds) are
torchvision's; nothing here is trained.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align
from torchvision.ops.poolers import MultiScaleRoIAlign, _setup_scales


class Detections(NamedTuple):
    """Per-image detections padded to ``N`` rows, best first: ``boxes [B,N,4]`` xyxy pixels,
    ``scores [B,N]`` (0 on padding rows), ``labels [B,N]`` train ids (0 on padding), ``count [B]``."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    count: Tensor

    def per_image(self) -> list[dict[str, Tensor]]:
        """The unpadded ``{"boxes", "scores", "labels"}`` of each image."""
        return [{"boxes": b[:n], "scores": s[:n], "labels": lab[:n]}
                for b, s, lab, n in zip(self.boxes, self.scores, self.labels, self.count.tolist())]

    def rows(self, n: int) -> Detections:
        """Exactly ``n`` rows per image: the best ``n``, or zero rows appended."""
        have = self.boxes.shape[1]
        if have >= n:
            return Detections(self.boxes[:, :n], self.scores[:, :n], self.labels[:, :n],
                              self.count.clamp(max=n))
        pad = n - have
        return Detections(torch.nn.functional.pad(self.boxes, (0, 0, 0, pad)),
                          torch.nn.functional.pad(self.scores, (0, pad)),
                          torch.nn.functional.pad(self.labels, (0, pad)), self.count)


def _not_small(boxes: Tensor, min_size: float) -> Tensor:
    """``box_ops.remove_small_boxes`` as a mask over ``[..., 4]``."""
    return (boxes[..., 2] - boxes[..., 0] >= min_size) & (boxes[..., 3] - boxes[..., 1] >= min_size)


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x [B, M, D]`` rows ``index [B, K]`` -> ``[B, K, D]``."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def nms_keep(boxes: Tensor, scores: Tensor, groups: Tensor, valid: Tensor, iou: float) -> Tensor:
    """Mask ``[B, M]`` of the candidates NMS keeps, among ``valid`` ones, per ``groups`` value.

    ``boxes [B, M, 4]``, ``scores``/``groups``/``valid [B, M]``; groups must already be distinct
    across images. ``box_ops.batched_nms`` is looked up at call time, so the export rewrite of
    it (export/rewrites.py) applies."""
    index = valid.flatten().nonzero().squeeze(1)
    kept = box_ops.batched_nms(boxes.reshape(-1, 4)[index], scores.flatten()[index],
                               groups.flatten()[index], iou)
    chosen = index[kept]
    mask = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    return mask.scatter(0, chosen, torch.ones_like(chosen, dtype=torch.bool)).view_as(valid)


def propose(rpn: RegionProposalNetwork, features: list[Tensor], images: Tensor,
            image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """RPN proposals ``[B, P, 4]`` and their validity ``[B, P]`` (P = ``post_nms_top_n``, fewer
    valid rows where NMS left fewer) for the padded ``images [B, 3, Hp, Wp]`` whose real size
    is ``image_size`` for every image."""
    b = images.shape[0]
    objectness, deltas = rpn.head(features)
    per_level = [int(o.shape[1] * o.shape[2] * o.shape[3]) for o in objectness]
    anchors = rpn.anchor_generator(ImageList(images[:1], [image_size]), [f[:1] for f in features])[0]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)  # B*A,1 / B*A,4
    boxes = rpn.box_coder.decode_single(deltas.detach(), anchors.repeat(b, 1)).view(b, -1, 4)
    objectness = objectness.detach().view(b, -1)
    top = rpn._get_top_n_idx(objectness, per_level)  # B,M: pre-NMS top-k of every level
    levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=top.device)
                        for i, n in enumerate(per_level)])[top]
    scores = objectness.gather(1, top).sigmoid()
    boxes = box_ops.clip_boxes_to_image(_gather_rows(boxes, top), image_size)
    valid = _not_small(boxes, rpn.min_size) & (scores >= rpn.score_thresh)
    groups = torch.arange(b, device=top.device).unsqueeze(1) * len(per_level) + levels
    keep = nms_keep(boxes, scores, groups, valid, rpn.nms_thresh)
    ranked = torch.where(keep, scores, torch.full_like(scores, -1.0))
    best, order = ranked.topk(min(rpn.post_nms_top_n(), ranked.shape[1]), dim=1)
    return _gather_rows(boxes, order), best >= 0


def _roi_features(pool: MultiScaleRoIAlign, features: OrderedDict[str, Tensor], boxes: Tensor,
                  image_size: tuple[int, int]) -> Tensor:
    """``MultiScaleRoIAlign`` of ``boxes [B, P, 4]`` -> ``[B*P, C, s, s]`` (its per-level loop;
    the image index of each RoI comes from its row instead of a per-image list)."""
    maps = [features[name] for name in pool.featmap_names]
    if pool.scales is None or pool.map_levels is None:
        pool.scales, pool.map_levels = _setup_scales(maps, [image_size], pool.canonical_scale,
                                                     pool.canonical_level)
    b, p = boxes.shape[:2]
    flat = boxes.reshape(-1, 4)
    image = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(p)
    rois = torch.cat([image.unsqueeze(1), flat], 1)  # B*P,5
    levels = pool.map_levels([flat])
    out = flat.new_zeros((flat.shape[0], maps[0].shape[1], *pool.output_size))
    for level, (feature, scale) in enumerate(zip(maps, pool.scales)):
        idx = torch.where(levels == level)[0]
        out[idx] = roi_align(feature, rois[idx], pool.output_size, scale, pool.sampling_ratio).to(out.dtype)
    return out


def detect(heads: RoIHeads, features: OrderedDict[str, Tensor], proposals: Tensor, valid: Tensor,
           image_size: tuple[int, int]) -> Detections:
    """RoI heads on ``proposals [B, P, 4]`` (``valid [B, P]``) -> :class:`Detections` with
    ``heads.detections_per_img`` rows; labels are torchvision's minus one (train ids)."""
    b, p = proposals.shape[:2]
    pooled = _roi_features(heads.box_roi_pool, features, proposals, image_size)
    logits, regression = heads.box_predictor(heads.box_head(pooled))
    k = logits.shape[-1]  # classes + background
    boxes = heads.box_coder.decode_single(regression, proposals.reshape(-1, 4)).view(b, p, k, 4)
    boxes = box_ops.clip_boxes_to_image(boxes, image_size)[:, :, 1:].reshape(b, -1, 4)
    scores = logits.softmax(-1).view(b, p, k)[:, :, 1:].reshape(b, -1)  # B,P*(K-1): no background
    labels = torch.arange(1, k, device=scores.device).repeat(p).expand(b, -1)
    ok = (scores > heads.score_thresh) & _not_small(boxes, 1e-2)
    ok = ok & valid.repeat_interleave(k - 1, dim=1)
    groups = torch.arange(b, device=scores.device).unsqueeze(1) * k + labels
    keep = nms_keep(boxes, scores, groups, ok, heads.nms_thresh)
    ranked = torch.where(keep, scores, torch.zeros_like(scores))
    best, order = ranked.topk(min(heads.detections_per_img, ranked.shape[1]), dim=1)
    real = best > 0
    out_boxes = _gather_rows(boxes, order) * real.unsqueeze(-1).to(boxes.dtype)
    out_labels = (labels.gather(1, order) - 1) * real.to(labels.dtype)
    return Detections(out_boxes, best, out_labels, real.sum(1))
