"""Named U-Net configs: the paper's final models and the tiny synthetic-world models.

The paper's models are also reached step by step by the variant registry (``ablations/variants.py``);
a test checks both routes give the same config.
"""
from __future__ import annotations

from snapgen.config import StageSpec, UNetConfig


def _stages(widths: tuple[int, int, int], res_blocks: tuple[int, int, int], depth: tuple[int, int, int]
            ) -> tuple[StageSpec, ...]:
    """SnapGen's three levels: cross-attention + FFN at the two high-res levels, self+cross at the lowest."""
    kinds = ("cross", "cross", "self_cross")
    return tuple(StageSpec(w, b, d, k) for w, b, d, k in zip(widths, res_blocks, depth, kinds))


# PAPER-UNKNOWN: step 5 applied to self- and cross-attention (cross_kv_heads=1), step 6 as one CA+FFN layer
# after each high-res residual block (attn_block "add"); see docs/architecture.md for why (the parameter counts).
_FINAL = dict(conv="separable", sep_expansion=2, ffn_ratio=3.0, kv_heads=1, cross_kv_heads=1, qk_norm=True, rope=True)
# SnapGen-family models for the built-in synthetic world (pixel space, 32 px, MiniLM text 384-d)
_WORLD = dict(_FINAL, in_channels=3, out_channels=3, sample_size=32, head_dim=32, emb_mult=4)
_TEXT_384 = dict(context_dim=384, pooled_dim=384)

PRESETS: dict[str, UNetConfig] = {
    # name               config                                                                            # paper
    "snapgen-t2i":       UNetConfig(stages=_stages((256, 512, 896), (2, 2, 2), (1, 2, 4)), **_FINAL),               # 379M, GenEval 0.66
    "snapgen-in256":     UNetConfig(stages=_stages((256, 512, 896), (2, 2, 2), (1, 2, 4)), **_FINAL,
                                    cond="class", sample_size=32),                                                 # 372M, FID 2.06
    "tiny-world":        UNetConfig(stages=_stages((32, 64, 96), (1, 1, 1), (1, 1, 2)), **_WORLD, **_TEXT_384, norm_groups=8),
    # the class-conditional twin for the world's ImageNet-style mode (data=world-class: 40 shape x colour labels)
    "tiny-world-class":  UNetConfig(stages=_stages((32, 64, 96), (1, 1, 1), (1, 1, 2)), **_WORLD, cond="class",
                                    num_classes=40, norm_groups=8),
    "small-world":       UNetConfig(stages=_stages((64, 128, 192), (1, 2, 2), (1, 1, 2)), **_WORLD, **_TEXT_384, norm_groups=16),
}


def get_preset(name: str) -> UNetConfig:
    import difflib

    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.4)
        raise KeyError(f"unknown preset {name!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                     f"; known: {', '.join(PRESETS)}"))
    return PRESETS[name]
