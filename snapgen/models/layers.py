"""Building blocks of the SnapGen U-Net. Every block has the signature ``block(x, emb, context) -> x``.

Shapes: images/feature maps are (N, C, H, W); token sequences are (N, L, C); ``emb`` is the
(N, E) time(+condition) embedding; ``context`` is the (N, L_ctx, D_ctx) text-token sequence (or None).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------------------------
# Convolutions


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 + pointwise 1x1; SnapGen step 2 replaces every 3x3 conv by this and step 3 expands
    its intermediate channels by ``expansion`` (x2), at one of two places (``expand_at``):

      "depthwise": depthwise 3x3 with channel multiplier e (C -> e*C, groups=C), then pointwise e*C -> C_out
      "pointwise": depthwise 3x3 (C -> C), then pointwise C -> e*C -> SiLU -> pointwise e*C -> C_out

    # PAPER-UNKNOWN: where the expansion happens. The default ("depthwise") reads "expand the intermediate
    # channels" of a depthwise+pointwise pair as the tensor between the two; no norm/activation between them
    # (as in a plain separable conv). "pointwise" is the inverted-bottleneck reading (MobileNetV2, the tiny
    # decoder); it needs the SiLU, else the two pointwise convs collapse into one linear map. In both the
    # intermediate tensor is e x the input channels.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, expansion: int = 1, expand_at: str = "depthwise"):
        super().__init__()
        if expand_at not in ("depthwise", "pointwise"):
            raise ValueError(f"expand_at={expand_at!r}: expected 'depthwise' or 'pointwise'")
        dw_out = cin * expansion if expand_at == "depthwise" else cin
        self.depthwise = nn.Conv2d(cin, dw_out, 3, stride=stride, padding=1, groups=cin)
        self.expand = nn.Conv2d(cin, cin * expansion, 1) if expand_at == "pointwise" else None
        self.pointwise = nn.Conv2d(cin * expansion, cout, 1)
        self.split_depthwise = False    # an implementation switch (``set_split_depthwise``), not part of the weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_depthwise and self.expand is None and self.depthwise.out_channels > self.depthwise.in_channels:
            return self._forward_split(x)
        h = self.depthwise(x)                                       # (N, e*C or C, H, W)
        if self.expand is not None:
            h = F.silu(self.expand(h))                              # (N, e*C, H, W)
        return self.pointwise(h)                                    # (N, C_out, H, W)

    def _forward_split(self, x: torch.Tensor) -> torch.Tensor:
        """The same weights and the same map as ``forward`` for a depthwise conv with channel multiplier e > 1, run
        as e plain depthwise convs (C -> C) whose outputs are concatenated, with the pointwise weight's input columns
        permuted to match. PyTorch's CPU kernels for a channel multiplier are several times slower than e plain
        depthwise convs (forward and backward); outputs agree to float rounding (``tests/test_split_depthwise.py``).

        Channel o = c*e + j of the multiplier conv reads input channel c with filter o; plain conv j computes those
        for every c, so the concatenation holds original channel c*e + j at position j*C + c.

        The filter slices are made contiguous (a copy of a few KB): ``torch.compile`` with inductor's ``freezing``
        (its CPU inference mode, which prepacks conv weights) computed wrong outputs from the strided slices
        ``w[j::e]`` (torch 2.14: errors of the outputs' own size; ``tests/test_split_depthwise.py``)."""
        dw, pw = self.depthwise, self.pointwise
        e = dw.out_channels // dw.in_channels
        h = torch.cat([F.conv2d(x, dw.weight[j::e].contiguous(),
                                None if dw.bias is None else dw.bias[j::e].contiguous(), dw.stride,
                                dw.padding, dw.dilation, dw.groups) for j in range(e)], dim=1)   # (N, e*C, H', W')
        w = torch.cat([pw.weight[:, j::e] for j in range(e)], dim=1)                              # (C_out, e*C, 1, 1)
        return F.conv2d(h, w, pw.bias)                                                            # (N, C_out, H', W')


def set_split_depthwise(model: nn.Module, on: bool = True) -> int:
    """Switch every ``SeparableConv2d`` of ``model`` to (or back from) the split-depthwise implementation (a speed
    lever of training and inference on CPU: same parameters, same state dict). Returns the number of separable
    convs whose depthwise conv has a channel multiplier, i.e. that the switch changes."""
    n = 0
    for m in model.modules():
        if isinstance(m, SeparableConv2d):
            m.split_depthwise = bool(on)
            n += int(m.expand is None and m.depthwise.out_channels > m.depthwise.in_channels)
    return n


def conv3x3(cin: int, cout: int, kind: str, expansion: int = 1, stride: int = 1, expand_at: str = "depthwise"
            ) -> nn.Module:
    if kind == "full":
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    if kind == "separable":
        return SeparableConv2d(cin, cout, stride=stride, expansion=expansion, expand_at=expand_at)
    raise ValueError(f"unknown conv kind {kind!r}; expected 'full' or 'separable'")


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-5)


class ResBlock(nn.Module):
    """SDXL-style residual block: GN-SiLU-conv, + projected embedding, GN-SiLU-dropout-conv, + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, conv: str, expansion: int, groups: int, dropout: float,
                 expand_at: str = "depthwise"):
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = conv3x3(cin, cout, conv, expansion, expand_at=expand_at)
        self.emb_proj = nn.Linear(emb_dim, cout)
        self.norm2 = group_norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(cout, cout, conv, expansion, expand_at=expand_at)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb, context=None):
        h = self.conv1(F.silu(self.norm1(x)))                      # (N, Cout, H, W)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SkipMerge(nn.Module):
    """1x1 conv C_in -> C_out: where a transformer block replaces a decoder unit's residual block
    (``StageSpec.attn_block="replace"``), it merges the concatenated skip to the stage width.
    # PAPER-UNKNOWN: the paper does not say how; chose the residual block's own skip projection (1x1 conv)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb=None, context=None):
        return self.proj(x)                                         # (N, Cout, H, W)


class Downsample(nn.Module):
    def __init__(self, channels: int, conv: str, expansion: int, expand_at: str = "depthwise"):
        super().__init__()
        self.conv = conv3x3(channels, channels, conv, expansion, stride=2, expand_at=expand_at)

    def forward(self, x, emb=None, context=None):
        return self.conv(x)                                         # (N, C, H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, channels: int, conv: str, expansion: int, expand_at: str = "depthwise"):
        super().__init__()
        self.conv = conv3x3(channels, channels, conv, expansion, expand_at=expand_at)

    def forward(self, x, emb=None, context=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (N, C, 2H, 2W)


# ----------------------------------------------------------------------------------------------
# Attention


def rope_2d(h: int, w: int, head_dim: int, theta: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (H*W, head_dim/2) for axial 2-D RoPE: half the pairs rotate with y, half with x.

    # PAPER-UNKNOWN: RoPE variant. Chose axial 2-D RoPE on integer pixel positions with base
    # ``theta`` (10000), the common choice for image tokens (e.g. FiT, Lumina), applied to
    # self-attention queries and keys only.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = 1.0 / theta ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    ang_y = torch.outer(ys, freqs)[:, None, :].expand(h, w, quarter)
    ang_x = torch.outer(xs, freqs)[None, :, :].expand(h, w, quarter)
    ang = torch.cat([ang_y, ang_x], dim=-1).reshape(h * w, 2 * quarter)   # (L, head_dim/2)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of ``x`` (N, heads, L, head_dim) by the angles in cos/sin (L, head_dim/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    """Multi-head / grouped / multi-query attention with optional QK-RMSNorm and 2-D RoPE.

    ``kv_heads == heads`` is multi-head, ``kv_heads == 1`` is multi-query (SnapGen step 5): the key
    and value projections produce one head shared by all query heads. Shared K/V heads go to SDPA as they
    are (``enable_gqa``: query head i reads K/V head i // (heads / kv_heads)), never copied per query head.
    Core ML export swaps this module for ``snapgen.export.coreml.ExportAttention`` (explicit kernels).
    """

    def __init__(self, dim: int, context_dim: int | None, head_dim: int, kv_heads: int | None,
                 qk_norm: bool, rope: bool, rope_theta: float = 10000.0):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"channels {dim} not divisible by head_dim {head_dim}")
        self.heads = dim // head_dim
        self.kv_heads = self.heads if kv_heads is None else kv_heads
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} not divisible by kv_heads {self.kv_heads}")
        self.head_dim, self.rope, self.rope_theta = head_dim, rope, rope_theta
        kv_in = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(kv_in, self.kv_heads * head_dim, bias=False)
        self.to_v = nn.Linear(kv_in, self.kv_heads * head_dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, hw: tuple[int, int] | None = None):
        n, length, _ = x.shape                                      # (N, L, C)
        src = x if context is None else context
        q = self.to_q(x).view(n, length, self.heads, self.head_dim).transpose(1, 2)        # (N, h, L, d)
        k = self.to_k(src).view(n, src.shape[1], self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.to_v(src).view(n, src.shape[1], self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope and context is None:
            cos, sin = rope_2d(hw[0], hw[1], self.head_dim, self.rope_theta, x.device, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # k, v: (N, h_kv, S, d); MQA/GQA (h_kv < h) share them across query heads without a copy
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.kv_heads != self.heads)  # (N, h, L, d)
        return self.to_out(out.transpose(1, 2).reshape(n, length, -1))


class GEGLU(nn.Module):
    """Feed-forward with a GELU-gated linear unit (SDXL's FFN); hidden width = ``ratio * dim``."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.proj_in = nn.Linear(dim, 2 * hidden)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x):
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(a * F.gelu(gate))


class TransformerLayer(nn.Module):
    """Pre-LN layer: [self-attention] -> [cross-attention] -> FFN, each with a residual."""

    def __init__(self, dim: int, context_dim: int | None, self_attn: bool, cross_attn: bool, head_dim: int,
                 kv_heads: int | None, cross_kv_heads: int | None, qk_norm: bool, rope: bool, ffn_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim) if self_attn else None
        self.attn1 = Attention(dim, None, head_dim, kv_heads, qk_norm, rope) if self_attn else None
        self.norm2 = nn.LayerNorm(dim) if cross_attn else None
        self.attn2 = Attention(dim, context_dim, head_dim, cross_kv_heads, qk_norm, False) if cross_attn else None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GEGLU(dim, ffn_ratio)

    def forward(self, x, context, hw):
        if self.attn1 is not None:
            x = x + self.attn1(self.norm1(x), None, hw)
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class TransformerBlock(nn.Module):
    """SDXL's Transformer2DModel (linear projections): GN -> proj_in -> layers -> proj_out -> + x."""

    def __init__(self, channels: int, depth: int, context_dim: int | None, self_attn: bool, cross_attn: bool,
                 head_dim: int, kv_heads: int | None, cross_kv_heads: int | None, qk_norm: bool, rope: bool,
                 ffn_ratio: float, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.proj_in = nn.Linear(channels, channels)
        self.layers = nn.ModuleList(
            TransformerLayer(channels, context_dim, self_attn, cross_attn, head_dim, kv_heads, cross_kv_heads,
                             qk_norm, rope, ffn_ratio) for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x, emb=None, context=None):
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))     # (N, H*W, C)
        for layer in self.layers:
            tokens = layer(tokens, context, (h, w))
        return x + self.proj_out(tokens).transpose(1, 2).reshape(n, c, h, w)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (N,) -> (N, dim) of t in [0, 1], scaled by 1000 as in SD3's trainer."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
