"""Named U-Net configs: the paper's final models and the tiny synthetic-world models.

The paper's models are also reached step by step by the variant registry (``ablations/variants.py``);
a test checks both routes give the same config.
"""
from __future__ import annotations

from snapgen.config import UNetConfig

# PAPER-UNKNOWN: step 5 applied to self- and cross-attention (cross_kv_heads=1), step 6 as one CA+FFN layer
# after each high-res residual block; see docs/architecture.md for why (the parameter counts).
_FINAL = dict(channels=(256, 512, 896), depth=(1, 2, 4), attention=("cross", "cross", "self_cross"),
              conv="separable", sep_expansion=2, ffn_ratio=3.0, kv_heads=1, cross_kv_heads=1, qk_norm=True, rope=True)

PRESETS: dict[str, UNetConfig] = {
    # name               config                                                              # paper
    "snapgen-t2i":       UNetConfig(**_FINAL),                                               # 379M, GenEval 0.66
    "snapgen-in256":     UNetConfig(**_FINAL, cond="class", sample_size=32),                 # 372M, FID 2.06
    # SnapGen-family models for the built-in synthetic world (pixel space, 32 px, MiniLM text 384-d).
    "tiny-world":        UNetConfig(in_channels=3, out_channels=3, sample_size=32, channels=(32, 64, 96),
                                    res_blocks=(1, 1, 1), depth=(1, 1, 2), **{k: v for k, v in _FINAL.items()
                                    if k not in ("channels", "depth")}, head_dim=32, context_dim=384,
                                    pooled_dim=384, norm_groups=8, emb_mult=4),
    # the class-conditional twin for the world's ImageNet-style mode (data=world-class: 40 shape x colour labels)
    "tiny-world-class":  UNetConfig(in_channels=3, out_channels=3, sample_size=32, channels=(32, 64, 96),
                                    res_blocks=(1, 1, 1), depth=(1, 1, 2), **{k: v for k, v in _FINAL.items()
                                    if k not in ("channels", "depth")}, head_dim=32, cond="class", num_classes=40,
                                    norm_groups=8, emb_mult=4),
    "small-world":       UNetConfig(in_channels=3, out_channels=3, sample_size=32, channels=(64, 128, 192),
                                    res_blocks=(1, 2, 2), depth=(1, 1, 2), **{k: v for k, v in _FINAL.items()
                                    if k not in ("channels", "depth")}, head_dim=32, context_dim=384,
                                    pooled_dim=384, norm_groups=16, emb_mult=4),
}


def get_preset(name: str) -> UNetConfig:
    import difflib

    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.4)
        raise KeyError(f"unknown preset {name!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                     f"; known: {', '.join(PRESETS)}"))
    return PRESETS[name]
