"""Encoder self-attention as one fused ONNX Runtime node, for graphs exported to run there.

Why: exported plainly, `F.scaled_dot_product_attention` becomes MatMul -> Softmax -> MatMul,
which materialises the [heads, N, N] score tensor (12 x 2049 x 2049 floats per B/16 block at
1024x512) and costs ONNX Runtime CPU ~50 ms per block with the head split/merge transposes.
ONNX Runtime's contrib op `com.microsoft.MultiHeadAttention` does the same maths in one kernel
(~35 ms; 0.42 s against 0.60 s for the 12 blocks, of the B/16 segmenter's ~2.4 s).

How: while exporting, timm's `Attention` (CLIP trunks) and `EvaAttention` (EVA-02 trunks, rotary
embedding applied first) get a forward that calls the custom op `vltseg::attention` on
[B, N, heads*dim] q, k, v, and `translation_table()` tells the exporter to write that op as
`MultiHeadAttention`. Eager PyTorch never runs this code path; the export's parity check compares
the graph with the original modules.

The op is ONNX Runtime only (CPU and CUDA execution providers): TensorRT and other runtimes need a
`target="portable"` export (standard ONNX ops), which `vltseg export --format tensorrt` uses.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MSFT_DOMAIN = "com.microsoft"


@torch.library.custom_op("vltseg::attention", mutates_args=())
def fused_attention(q: Tensor, k: Tensor, v: Tensor, num_heads: int) -> Tensor:
    """Softmax attention over [B, N, heads*dim] q, k, v (scale 1/sqrt(dim), no mask)."""
    b, n, d = q.shape

    def heads(t: Tensor) -> Tensor:
        return t.reshape(b, -1, num_heads, d // num_heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
    return out.transpose(1, 2).reshape(b, n, d)


@fused_attention.register_fake
def _fused_attention_shape(q: Tensor, k: Tensor, v: Tensor, num_heads: int) -> Tensor:
    return torch.empty_like(q)


def _mha_schema() -> object:
    """The contrib op's signature (the parts used here) for the exporter, which wants one."""
    from onnx.defs import OpSchema

    floats = ["tensor(float)", "tensor(float16)"]
    return OpSchema(
        "MultiHeadAttention", MSFT_DOMAIN, 1,
        inputs=[OpSchema.FormalParameter(n, "T") for n in ("query", "key", "value")],
        outputs=[OpSchema.FormalParameter("output", "T")],
        type_constraints=[("T", floats, "float tensors")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of heads")],
    )


def translation_table() -> dict[Callable[..., object], Callable[..., object]]:
    """`torch.onnx.export(custom_translation_table=...)` entry writing the op as MultiHeadAttention."""
    from onnxscript.values import Op, Opset

    mha = Op(Opset(MSFT_DOMAIN, 1), "MultiHeadAttention", _mha_schema())

    def to_onnx(q: object, k: object, v: object, num_heads: int) -> object:
        return mha(q, k, v, num_heads=num_heads)

    return {torch.ops.vltseg.attention.default: to_onnx}


def _finish(self: nn.Module, out: Tensor, gate: Tensor | None) -> Tensor:
    """The shared tail of timm's attention forwards: norm, gate, projection."""
    out = self.norm(out)
    if gate is not None:
        out = out * gate
    return self.proj_drop(self.proj(out))


def vit_attention_forward(self: nn.Module, x: Tensor, attn_mask: Tensor | None = None,
                          is_causal: bool = False) -> Tensor:
    """timm `vision_transformer.Attention.forward` (eval, no mask) through `vltseg::attention`."""
    if attn_mask is not None or is_causal:
        raise ValueError("fused attention export supports unmasked attention only")
    b, n, _ = x.shape
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).unbind(2)  # B,N,h,d each
    q, k = self.q_norm(q), self.k_norm(k)  # per-head norms act on the last dim only
    out = fused_attention(*(t.reshape(b, n, -1) for t in (q, k, v)), self.num_heads)
    return _finish(self, out, gate)


def eva_attention_forward(self: nn.Module, x: Tensor, rope: Tensor | None = None,
                          attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    """timm `eva.EvaAttention.forward` (eval, no mask) through `vltseg::attention`; the rotary
    embedding is applied in [B, N, heads, dim] layout (it acts on the last dim only)."""
    from timm.layers import apply_rot_embed_cat

    if attn_mask is not None or is_causal:
        raise ValueError("fused attention export supports unmasked attention only")
    b, n, _ = x.shape
    h = self.num_heads
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    if self.qkv is not None:
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        q, k, v = qkv.reshape(b, n, 3, h, -1).unbind(2)
    else:
        q, k, v = (proj(x).reshape(b, n, h, -1) for proj in (self.q_proj, self.k_proj, self.v_proj))
    q, k = self.q_norm(q), self.k_norm(k)
    if rope is not None:
        npt, half, emb = self.num_prefix_tokens, getattr(self, "rotate_half", False), rope.unsqueeze(-2)
        q = torch.cat([q[:, :npt], apply_rot_embed_cat(q[:, npt:], emb, half=half)], 1).type_as(v)
        k = torch.cat([k[:, :npt], apply_rot_embed_cat(k[:, npt:], emb, half=half)], 1).type_as(v)
    out = fused_attention(*(t.reshape(b, n, -1) for t in (q, k, v)), h)
    return _finish(self, out, gate)


def _forwards() -> dict[type, Callable[..., Tensor]]:
    from timm.models.eva import EvaAttention
    from timm.models.vision_transformer import Attention

    return {Attention: vit_attention_forward, EvaAttention: eva_attention_forward}


@contextlib.contextmanager
def fused_attention_forwards(model: nn.Module) -> Iterator[int]:
    """Give every timm attention module in `model` the fused forward for the block; yields
    how many were swapped."""
    forwards = _forwards()
    swapped = []
    for module in model.modules():
        forward = forwards.get(type(module))
        if forward is not None:
            module.forward = types.MethodType(forward, module)
            swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward
