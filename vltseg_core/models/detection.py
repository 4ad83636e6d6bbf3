"""ViTDet-style detection head: torchvision Faster R-CNN on the simple feature pyramid.

ViTDet (Li et al., ECCV 2022) attaches a standard two-stage detector to the simple feature
pyramid of a plain ViT. Here the RPN (anchors, box coding, NMS, sampling, losses) and the
RoI heads (MultiScaleRoIAlign, box head, post-processing) are torchvision's
``RegionProposalNetwork`` / ``RoIHeads``; the box head is ViTDet's 4 conv + 1 fc with
LayerNorm after each conv (ViTDet's ``conv_norm="LN"``). Training runs torchvision's forward;
test time runs the same modules over the whole batch at once (:mod:`.detection_inference`), so
an exported graph takes any batch size. No resizing happens here: the segmentor already
normalised and padded the images, so boxes are in input pixels, clipped to the real image.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from .detection_inference import Detections, detect, propose
from .init import c2_msra_fill, c2_xavier_fill
from .pyramid import FeaturePyramid, LayerNorm2d

LEVEL_NAMES = ("0", "1", "2", "3")


def _box_head(in_dim: int, convs: int, fc: int) -> FastRCNNConvFCHead:
    """ViTDet's box head: ``convs`` 3x3 convs with LN + ReLU, one fc; detectron2's
    ``FastRCNNConvFCHead`` init (convs c2_msra_fill, fc c2_xavier_fill)."""
    head = FastRCNNConvFCHead((in_dim, 7, 7), [in_dim] * convs, [fc], norm_layer=LayerNorm2d)
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            c2_msra_fill(module)
        elif isinstance(module, nn.Linear):
            c2_xavier_fill(module)
    return head


class PyramidDetector(nn.Module):
    """Faster R-CNN heads over pyramid levels s4..s32 plus a max-pooled s64 level (RPN only).

    Args:
        num_classes: K foreground classes (labels are train ids ``0..K-1``; torchvision's
            background 0 is handled internally).
        in_dim: pyramid channels.
        anchor_sizes: one anchor size per level (s4, s8, s16, s32, s64), three aspect ratios.
        box_convs / box_fc: ViTDet box head (4 convs of ``in_dim``, one 1024-d fc).
        rpn_pre_nms / rpn_post_nms: proposals kept (train, test): per level before NMS, per
            image after it (ViTDet: 2000/1000 and 1000/1000).
        score_thresh / nms_thresh / detections_per_img: test-time post-processing.
    """

    def __init__(self, num_classes: int, in_dim: int = 256,
                 anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512), box_convs: int = 4,
                 box_fc: int = 1024, rpn_pre_nms: tuple[int, int] = (2000, 1000),
                 rpn_post_nms: tuple[int, int] = (1000, 1000), rpn_batch: int = 256,
                 roi_batch: int = 512, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_img: int = 100) -> None:
        super().__init__()
        self.num_classes = num_classes
        anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(in_dim, anchors.num_anchors_per_location()[0], conv_depth=2),
            fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=rpn_batch, positive_fraction=0.5,
            pre_nms_top_n=dict(training=rpn_pre_nms[0], testing=rpn_pre_nms[1]),
            post_nms_top_n=dict(training=rpn_post_nms[0], testing=rpn_post_nms[1]), nms_thresh=0.7)
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(list(LEVEL_NAMES), output_size=7, sampling_ratio=2),
            _box_head(in_dim, box_convs, box_fc), FastRCNNPredictor(box_fc, num_classes + 1),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=roi_batch, positive_fraction=0.25,
            bbox_reg_weights=None, score_thresh=score_thresh, nms_thresh=nms_thresh,
            detections_per_img=detections_per_img)

    def forward(self, pyramid: FeaturePyramid, images: Tensor, image_size: tuple[int, int],
                targets: Sequence[dict[str, Tensor]] | None = None) -> dict[str, Tensor] | Detections:
        """
        Args:
            pyramid: levels ``[B, C, Hp/s, Wp/s]`` of the padded batch.
            images: the padded batch ``[B, 3, Hp, Wp]`` (only its shape/device are used).
            image_size: the real ``(H, W)`` of every image (boxes are clipped to it).
            targets: training only; per image ``boxes [N, 4]`` xyxy pixels, ``labels [N]``.
        Returns:
            training: ``det_loss_*`` terms; eval: :class:`Detections` (``detections_per_img``
            rows per image, train-id labels).
        """
        features = OrderedDict(zip(LEVEL_NAMES, pyramid))
        features["pool"] = F.max_pool2d(pyramid.s32, kernel_size=1, stride=2)
        size = (int(image_size[0]), int(image_size[1]))
        if not self.training:
            proposals, valid = propose(self.rpn, list(features.values()), images, size)
            return detect(self.roi_heads, features, proposals, valid, size)
        if targets is None:
            raise ValueError("training the detector needs targets with boxes and labels")
        image_list = ImageList(images, [size] * len(targets))
        tv_targets = [_to_torchvision_target(t) for t in targets]
        proposals, rpn_losses = self.rpn(image_list, features, tv_targets)
        _, roi_losses = self.roi_heads(features, proposals, image_list.image_sizes, tv_targets)
        return {f"det_{k}": v for k, v in {**rpn_losses, **roi_losses}.items()}


def _to_torchvision_target(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Train ids -> torchvision labels (+1, 0 = background); drop degenerate boxes."""
    boxes = target["boxes"].float().reshape(-1, 4)
    labels = target["labels"].long().reshape(-1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {"boxes": boxes[keep], "labels": labels[keep] + 1}

