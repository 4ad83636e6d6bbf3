"""The composed VLTSeg model: ViT encoder -> simple feature pyramid -> Mask2Former head
and/or ViTDet-style detector (VLTSeg, Hümmer et al., ACCV 2024).

Images enter as normalised floats (see :meth:`VLTSeg.preprocess`) at any size; they are
padded bottom/right to a multiple of ``size_divisibility`` (32) and the outputs cropped back,
so results are at input resolution. One encoder forward feeds both heads of a joint model.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .criterion import SetCriterion
from .detection import PyramidDetector
from .detection_inference import Detections
from .encoder import ViTEncoder
from .pixel_decoder import MSDeformablePixelDecoder
from .pyramid import FeaturePyramid, SimpleFeaturePyramid
from .transformer_decoder import DecoderOutput, MaskedAttentionDecoder

# OpenAI CLIP normalisation (also used by EVA-02-CLIP), on the 0..255 scale.
CLIP_MEAN: tuple[float, float, float] = (122.7709383, 116.7460125, 104.09373615)
CLIP_STD: tuple[float, float, float] = (68.5005327, 66.6321579, 70.32316305)


SEG_UPSAMPLE = ("logits", "scores")


class ModelOutput(NamedTuple):
    """Eval output.

    ``sem_seg [B, K, H, W]`` float32: Mask2Former per-class scores (None without a seg head).
    They are sums over queries of class probability x mask probability, so non-negative but
    not normalised (a pixel's scores may sum to more or less than 1); the argmax is the class.
    ``det``: :class:`Detections`, padded ``[B, N, ...]`` tensors (None without a det head);
    ``detections`` gives them per image as ``{"boxes" [n,4] xyxy px, "scores" [n], "labels" [n]}``.
    """

    sem_seg: Tensor | None
    det: Detections | None

    @property
    def detections(self) -> list[dict[str, Tensor]] | None:
        return None if self.det is None else self.det.per_image()


def semantic_inference(logits: Tensor, masks: Tensor, size: tuple[int, int] | None = None,
                       crop: tuple[int, int] | None = None) -> Tensor:
    """Mask2Former semantic inference in float32: ``softmax(logits)[..., :-1]`` weighted sum of
    ``sigmoid(masks)``. ``logits [B, Q, K+1]``, mask logits ``[B, Q, h, w]`` -> ``[B, K, ...]``.

    With ``size`` the mask *logits* are resized (bilinear) to ``size`` and cropped to the top-left
    ``crop`` before the sigmoid, the reference order (Mask2Former ``semantic_inference`` after
    ``sem_seg_postprocess``; mmseg ``MaskFormerHead.predict``): sigmoid and resizing do not
    commute, and thin classes differ. Without, the result is at the masks' own resolution."""
    device = logits.device.type  # under autocast, the einsum would run (and return) in bf16/fp16
    autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
    fp32 = torch.autocast(device, enabled=False) if autocast else nullcontext()
    with fp32:
        probs = logits.float().softmax(-1)[..., :-1]
        if size is None:
            return torch.einsum("bqk,bqhw->bkhw", probs, masks.float().sigmoid())  # B,K,h,w
        masks = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)
        # in place, the [B, Q, H, W] full-size masks exist once (B/16 512 x 1024: 200 MB); not
        # while TorchScript traces (its ONNX exporter mistraces the in-place op)
        masks = masks.sigmoid() if torch.jit.is_tracing() else masks.sigmoid_()
        if crop is not None:
            masks = masks[..., :crop[0], :crop[1]]
        return torch.einsum("bqk,bqhw->bkhw", probs, masks)  # B,K,H,W


class Mask2FormerHead(nn.Module):
    """Pixel decoder + masked-attention decoder (+ criterion for training)."""

    def __init__(self, pixel_decoder: MSDeformablePixelDecoder, decoder: MaskedAttentionDecoder,
                 criterion: SetCriterion | None = None) -> None:
        super().__init__()
        self.pixel_decoder, self.decoder, self.criterion = pixel_decoder, decoder, criterion

    def forward(self, pyramid: FeaturePyramid) -> DecoderOutput:
        """Pyramid -> class logits ``[B, Q, K+1]`` and mask logits ``[B, Q, H/4, W/4]``."""
        pix = self.pixel_decoder(pyramid)
        return self.decoder(pix.multi_scale, pix.mask_features)

    def losses(self, outputs: DecoderOutput, sem_segs: Sequence[Tensor]) -> dict[str, Tensor]:
        if self.criterion is None:
            raise RuntimeError("this segmentation head was built without a criterion")
        return self.criterion(outputs, sem_segs)


class VLTSeg(nn.Module):
    """Encoder + pyramid + optional segmentation and detection heads.

    Args:
        encoder: :class:`ViTEncoder` returning ``pyramid.num_inputs`` maps.
        pyramid: :class:`SimpleFeaturePyramid`.
        seg_head / det_head: at least one of them.
        pixel_mean / pixel_std: RGB, 0..255 scale (CLIP's by default).
        input_size: the preset's default inference size ``(H, W)``.
        size_divisibility: inputs are padded to a multiple of this (32 = coarsest stride).
        seg_upsample: ``"logits"`` (default, the reference): mask logits are upsampled to the
            padded input and cropped before the sigmoid; ``"scores"``: class scores are made at
            stride 4 and upsampled, 16x less work in the last step, not the reference
            (docs/DESIGN.md gives the mIoU difference measured on the synthetic benchmark).
    """

    def __init__(self, encoder: ViTEncoder, pyramid: SimpleFeaturePyramid,
                 seg_head: Mask2FormerHead | None = None, det_head: PyramidDetector | None = None, *,
                 num_classes: int, pixel_mean: Sequence[float] = CLIP_MEAN,
                 pixel_std: Sequence[float] = CLIP_STD, input_size: tuple[int, int] = (512, 1024),
                 size_divisibility: int = 32, seg_upsample: str = "logits") -> None:
        super().__init__()
        if seg_head is None and det_head is None:
            raise ValueError("VLTSeg needs a segmentation head, a detection head, or both")
        if seg_upsample not in SEG_UPSAMPLE:
            raise ValueError(f"seg_upsample must be one of {SEG_UPSAMPLE}, got {seg_upsample!r}")
        self.seg_upsample = seg_upsample
        self.encoder, self.pyramid = encoder, pyramid
        self.seg_head, self.det_head = seg_head, det_head
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), False)

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 / float RGB ``[B, 3, H, W]`` on the 0..255 scale -> normalised float32."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected [B, 3, H, W] RGB images, got {tuple(images.shape)}")
        return (images.float() - self.pixel_mean) / self.pixel_std

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | ModelOutput:
        """
        Args:
            images: normalised ``[B, 3, H, W]`` (output of :meth:`preprocess`).
            targets: training only; per image ``sem_seg [H, W]`` (255 = ignore) and/or
                ``boxes [N, 4]`` xyxy pixels + ``labels [N]``.
        Returns:
            training: dict of weighted loss terms; eval: :class:`ModelOutput`.
        """
        h, w = int(images.shape[-2]), int(images.shape[-1])
        padded = self._pad(images, 0.0)
        hp, wp = int(padded.shape[-2]), int(padded.shape[-1])
        pyramid = self.pyramid(self.encoder(padded), (hp, wp))
        if self.training:
            if targets is None or len(targets) != images.shape[0]:
                raise ValueError("training forward needs one target dict per image")
            losses: dict[str, Tensor] = {}
            if self.seg_head is not None:
                sem = [self._pad_target(t["sem_seg"], (h, w)) for t in targets]
                losses.update(self.seg_head.losses(self.seg_head(pyramid), sem))
            if self.det_head is not None:
                losses.update(self.det_head(pyramid, padded, (h, w), targets))
            return losses
        sem_seg = self._semantic(pyramid, (hp, wp), (h, w)) if self.seg_head is not None else None
        det = self.det_head(pyramid, padded, (h, w)) if self.det_head is not None else None
        return ModelOutput(sem_seg, det)

    def _semantic(self, pyramid: FeaturePyramid, padded: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Class scores ``[B, K, H, W]`` float32 at the real input size (see ``seg_upsample``)."""
        out = self.seg_head(pyramid)
        if self.seg_upsample == "logits":
            return semantic_inference(out.logits, out.masks, padded, size)
        scores = semantic_inference(out.logits, out.masks)  # B,K,Hp/4,Wp/4
        scores = F.interpolate(scores, size=padded, mode="bilinear", align_corners=False)
        return scores[..., :size[0], :size[1]]

    def _pad_target(self, sem_seg: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(sem_seg.shape) != size:
            raise ValueError(f"sem_seg target {tuple(sem_seg.shape)} does not match the image {size}")
        return self._pad(sem_seg[None, None].float(), 255.0)[0, 0].long()

    def _pad(self, x: Tensor, value: float) -> Tensor:
        """Pad ``[..., H, W]`` bottom/right to a multiple of ``size_divisibility``."""
        d = self.size_divisibility
        ph, pw = -int(x.shape[-2]) % d, -int(x.shape[-1]) % d
        return F.pad(x, (0, pw, 0, ph), value=value) if ph or pw else x
