"""Mask2Former transformer decoder with masked attention (Cheng et al., CVPR 2022).

Learned queries (features + positions) pass through ``num_layers`` layers of
masked cross-attention -> self-attention -> FFN (post-norm), cycling round robin over the
three pixel-decoder scales (strides 32, 16, 8). Each layer's cross-attention is restricted
to the foreground of the mask predicted by the previous layer. A class and mask prediction
is made before the first layer and after every layer; all but the last are auxiliary
outputs for deep supervision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .init import c2_xavier_fill, xavier_linears
from .pixel_decoder import sine_position_embedding


class MaskPredictions(NamedTuple):
    """``logits [B, Q, K+1]`` (last = no object) and mask ``masks [B, Q, H/4, W/4]``."""

    logits: Tensor
    masks: Tensor


class DecoderOutput(NamedTuple):
    """Final predictions plus one :class:`MaskPredictions` per earlier layer (empty in eval)."""

    logits: Tensor
    masks: Tensor
    aux: list[MaskPredictions]


def multi_head_attention(mha: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor,
                         bias: Tensor | None = None) -> Tensor:
    """``nn.MultiheadAttention``'s maths with its weights, through ``F.scaled_dot_product_attention``
    so an additive ``bias [B, 1, Lq, Lk]`` broadcasts over the heads (the module itself wants a
    ``[B*heads, Lq, Lk]`` copy). ``q [B, Lq, C]``, ``k``/``v [B, Lk, C]`` -> ``[B, Lq, C]``."""
    b, lq, c = q.shape
    h = mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)

    def heads(x: Tensor, w: Tensor, bias_: Tensor) -> Tensor:
        return F.linear(x, w, bias_).view(b, -1, h, c // h).transpose(1, 2)  # B,h,L,C/h

    q_, k_, v_ = heads(q, w_q, b_q), heads(k, w_k, b_k), heads(v, w_v, b_v)
    out = F.scaled_dot_product_attention(q_, k_, v_, None if bias is None else bias.to(q_.dtype),
                                         dropout_p=mha.dropout if mha.training else 0.0)
    return mha.out_proj(out.transpose(1, 2).reshape(b, lq, c))  # B,Lq,C


class _AttentionLayer(nn.Module):
    """Post-norm multi-head attention block; ``q``/``k`` get positional embeddings added.

    ``attn`` only holds the weights (in the ``nn.MultiheadAttention`` layout checkpoints use);
    :func:`multi_head_attention` runs them."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        for p in self.attn.parameters():  # Mask2Former's Self/CrossAttentionLayer._reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor,
                attn_mask: Tensor | None = None) -> Tensor:
        """``tgt [B,Q,C]``, ``memory [B,S,C]``, ``attn_mask [B, 1, Q, S]`` (additive; -inf = blocked)."""
        out = multi_head_attention(self.attn, tgt + query_pos, memory + memory_pos, memory, attn_mask)
        return self.norm(tgt + self.dropout(out))


class _FFNLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        xavier_linears(self.ffn)  # Mask2Former's FFNLayer._reset_parameters

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.ffn(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskedAttentionDecoder(nn.Module):
    """Mask2Former's multi-scale masked-attention transformer decoder.

    Args:
        num_classes: K (a no-object class is added).
        in_dim: pixel decoder width (input projections are identity when equal to hidden).
        hidden_dim / num_heads / ffn_dim: 256 / 8 / 2048.
        num_queries: 100. num_layers: 9 (three rounds over three scales).
        mask_dim: channels of the mask features (256).
    """

    def __init__(self, num_classes: int, in_dim: int = 256, hidden_dim: int = 256,
                 num_queries: int = 100, num_heads: int = 8, ffn_dim: int = 2048,
                 num_layers: int = 9, mask_dim: int = 256, num_levels: int = 3) -> None:
        super().__init__()
        self.num_heads, self.num_layers, self.num_levels = num_heads, num_layers, num_levels
        self.hidden_dim = hidden_dim
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            nn.Identity() if in_dim == hidden_dim else nn.Conv2d(in_dim, hidden_dim, 1)
            for _ in range(num_levels))
        for proj in self.input_proj:  # Mask2Former: c2_xavier_fill when a projection exists
            if isinstance(proj, nn.Conv2d):
                c2_xavier_fill(proj)
        self.cross_attn = nn.ModuleList(_AttentionLayer(hidden_dim, num_heads) for _ in range(num_layers))
        self.self_attn = nn.ModuleList(_AttentionLayer(hidden_dim, num_heads) for _ in range(num_layers))
        self.ffn = nn.ModuleList(_FFNLayer(hidden_dim, ffn_dim) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, multi_scale: Sequence[Tensor], mask_features: Tensor) -> DecoderOutput:
        """
        Args:
            multi_scale: ``num_levels`` maps ``[B, in_dim, h_l, w_l]`` (low to high res).
            mask_features: ``[B, mask_dim, H/4, W/4]``.
        Returns:
            :class:`DecoderOutput`; in eval mode intermediate full-size masks are skipped
            (attention masks come from mask features resized to each scale, which equals
            resizing the mask logits because bilinear resizing is linear).
        """
        b = mask_features.shape[0]
        sizes = [tuple(int(s) for s in x.shape[-2:]) for x in multi_scale]
        srcs, poses = [], []
        for lvl, (x, proj) in enumerate(zip(multi_scale, self.input_proj)):
            h, w = sizes[lvl]
            srcs.append((proj(x).flatten(2) + self.level_embed.weight[lvl][None, :, None]).transpose(1, 2))
            poses.append(sine_position_embedding(h, w, self.hidden_dim, x).flatten(2).transpose(1, 2))
        scaled_mf = None if self.training else [
            F.interpolate(mask_features, size=s, mode="bilinear", align_corners=False) for s in sizes]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        output = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)

        preds: list[MaskPredictions] = []
        pred, attn_mask = self._predict(output, mask_features, scaled_mf, sizes, 0, self.num_layers == 0)
        preds.append(pred)
        for i in range(self.num_layers):
            lvl = i % self.num_levels
            output = self.cross_attn[i](output, srcs[lvl], query_pos, poses[lvl], attn_mask)
            output = self.self_attn[i](output, output, query_pos, query_pos)
            output = self.ffn[i](output)
            last = i == self.num_layers - 1
            pred, attn_mask = self._predict(output, mask_features, scaled_mf, sizes,
                                            (i + 1) % self.num_levels, last)
            preds.append(pred)
        aux = preds[:-1] if self.training else []
        return DecoderOutput(preds[-1].logits, preds[-1].masks, aux)

    def _predict(self, output: Tensor, mask_features: Tensor, scaled_mf: list[Tensor] | None,
                 sizes: Sequence[tuple[int, int]], lvl: int,
                 last: bool) -> tuple[MaskPredictions, Tensor]:
        """Class logits, mask logits ``[B,Q,H/4,W/4]`` and the next layer's attention mask
        ``[B, 1, Q, h*w]`` at scale ``lvl`` (0 inside the predicted mask, -inf outside),
        broadcast over the heads by the attention (no per-head copy)."""
        decoded = self.decoder_norm(output)
        logits = self.class_embed(decoded)
        embed = self.mask_embed(decoded)
        masks = logits.new_zeros(())
        if scaled_mf is None or last:
            masks = torch.einsum("bqc,bchw->bqhw", embed, mask_features)
        if scaled_mf is None:
            small = F.interpolate(masks, size=sizes[lvl], mode="bilinear", align_corners=False)
        else:
            small = torch.einsum("bqc,bchw->bqhw", embed, scaled_mf[lvl])
        small = small.flatten(2).detach()  # B,Q,hw
        blocked = small.sigmoid() < 0.5
        blocked = blocked & ~blocked.all(-1, keepdim=True)  # a query with an empty mask sees all
        # additive -inf bias, made once: a boolean mask would be turned into this per head
        bias = torch.zeros_like(small, dtype=output.dtype).masked_fill(blocked, float("-inf"))
        return MaskPredictions(logits, masks), bias.unsqueeze(1)  # B,1,Q,hw
