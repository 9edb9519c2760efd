"""Configuration of the SnapGen U-Net family: one frozen dataclass covers the SDXL-like thinned
baseline, every step of the paper's architecture ablation, and the final SnapGen model.

Saved as JSON (with a short hash) beside every checkpoint and inside every result record.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from snapgen.io import sha256_json

AttentionKind = Literal["none", "cross", "self", "self_cross"]


# PAPER-UNKNOWN (reasons in docs/architecture.md): residual blocks per stage (SDXL's 2 down / 3 up), the mid
# block, head_dim (128: puts both presets within 1% of 379M / 372M), multi-query attention also in
# cross-attention, the first-stage CA+FFN block kept beside the residual blocks, the text merge width
# (context_dim 2048), pooled-text route, class-token conditioning of the ImageNet twin, time-embedding
# width, GroupNorm groups. Each is a field below so it can be changed.
@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 16                       # latent channels (16 for the SD3 VAE)
    out_channels: int = 16                      # predicted velocity channels (= latent channels)
    sample_size: int = 128                      # reference latent side (128 -> 1024 px); names blocks
    channels: tuple[int, ...] = (256, 512, 896)  # per-stage widths (SDXL: 320, 640, 1280)
    res_blocks: tuple[int, ...] = (2, 2, 2)     # encoder residual blocks per stage; decoder has one more
    depth: tuple[int, ...] = (0, 2, 4)          # transformer layers after each residual block (SDXL: 0, 2, 10)
    attention: tuple[AttentionKind, ...] = ("none", "self_cross", "self_cross")  # attention per stage
    mid_block: bool = True                      # res -> transformer(depth[-1]) -> res at the lowest resolution
    conv: Literal["full", "separable"] = "full"  # 3x3 convs: full, or depthwise 3x3 + pointwise 1x1
    sep_expansion: int = 1                      # depthwise channel multiplier of separable convs (paper: 2)
    ffn_ratio: float = 4.0                      # GEGLU hidden width / channels (paper: 4 -> 3)
    head_dim: int = 128                         # channels per attention head (see docs/architecture.md)
    kv_heads: int | None = None                 # self-attention K/V heads: None = multi-head, 1 = multi-query
    cross_kv_heads: int | None = None           # cross-attention K/V heads (None = multi-head)
    qk_norm: bool = False                       # RMSNorm on queries and keys (per head)
    rope: bool = False                          # 2-D rotary position embedding in self-attention
    cond: Literal["text", "class"] = "text"     # text tokens + pooled embedding, or ImageNet class labels
    context_dim: int = 2048                     # width of the merged text tokens (cross-attention K/V input)
    pooled_dim: int = 2048                      # width of the pooled text embedding (CLIP-L 768 + CLIP-G 1280)
    num_classes: int = 1000                     # class-conditional mode: classes (+1 null class for CFG)
    class_tokens: int = 1                       # class mode: cross-attention attends to this many class tokens
    emb_mult: int = 4                           # time-embedding width = emb_mult * channels[0]
    norm_groups: int = 32                       # GroupNorm groups
    dropout: float = 0.0                        # dropout inside residual blocks

    def __post_init__(self):
        n = len(self.channels)
        for field in ("res_blocks", "depth", "attention"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"UNetConfig.{field} has {len(getattr(self, field))} entries, channels has {n}")
        for i, (kind, d) in enumerate(zip(self.attention, self.depth)):
            if kind not in ("none", "cross", "self", "self_cross"):
                raise ValueError(f"attention[{i}]={kind!r}: expected none|cross|self|self_cross")
            if (kind == "none") != (d == 0):
                raise ValueError(f"stage {i}: attention={kind!r} with depth={d}; 'none' iff depth 0")
        if self.conv not in ("full", "separable"):
            raise ValueError(f"conv={self.conv!r}: expected 'full' or 'separable'")
        if self.cond not in ("text", "class"):
            raise ValueError(f"cond={self.cond!r}: expected 'text' or 'class'")

    # --- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known) - {"_class_name", "_snapgen_version", "config_hash"})
        if unknown:
            raise ValueError(f"unknown UNetConfig fields {unknown}; known: {sorted(known)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @property
    def hash(self) -> str:
        """Short content hash of the config (12 hex digits)."""
        return sha256_json(self.to_dict())[:12]

    def replace(self, **changes) -> "UNetConfig":
        return dataclasses.replace(self, **changes)

    @property
    def latent_downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)
