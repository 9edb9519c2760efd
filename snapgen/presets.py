"""Named U-Net configs: the paper's final models and the tiny synthetic-world models; and (``DIT_PRESETS``) the
synthetic world's DiT teachers of the paper's teacher family (SD3 / SD3.5 MMDiT, ``snapgen.models.dit``).

The paper's models are also reached step by step by the variant registry (``ablations/variants.py``);
a test checks both routes give the same config. ``PRESETS`` holds U-Nets only (the latency and ablation tools list
it); ``get_denoiser_preset`` (what ``python -m snapgen.train --set unet=NAME`` uses) looks in both. ``DIT_PRESETS``
is built on first access (``snapgen.models.dit`` needs torch and diffusers; importing this module stays light).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from snapgen.config import StageSpec, UNetConfig

if TYPE_CHECKING:
    from snapgen.models.dit import DiTConfig


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
    # a width lever of the world recipe: tiny-world with its lowest (8x8, self + cross-attention) level twice as wide
    # (96 -> 192, 3 -> 6 heads; 6.26M parameters), where the layout of a scene is decided; the high-res levels unchanged
    "tiny-world-wide":   UNetConfig(stages=_stages((32, 64, 192), (1, 1, 1), (1, 1, 2)), **_WORLD, **_TEXT_384, norm_groups=8),
    # a depth lever of the world recipe: tiny-world with twice the transformer blocks (2 -> 4 self + cross-attention
    # + FFN) at the lowest (8x8) level, where prompt and layout meet; 3.49M parameters, ~1.3x the training step
    "tiny-world-deep":   UNetConfig(stages=_stages((32, 64, 96), (1, 1, 1), (1, 1, 4)), **_WORLD, **_TEXT_384, norm_groups=8),
    # a cost lever of the world recipe: tiny-world behind a 2x2 space-to-depth stem (patch_size 2: 32 px in and out,
    # its three levels at 16/8/4 instead of 32/16/8), the same blocks (2.27M parameters, +5k in stem and head),
    # forward FLOPs per image 0.137 G instead of 0.513 G; what the paper's U-Net does on an f=8 VAE latent, done
    # losslessly on pixels. Measured (lever study `cost`, docs/world.md): 3x the images in the recipe's time, worse
    # shapes; not adopted
    "tiny-world-p2":     UNetConfig(stages=_stages((32, 64, 96), (1, 1, 1), (1, 1, 2)), **_WORLD, **_TEXT_384, norm_groups=8,
                                    patch_size=2),
}


# The synthetic world's DiT teacher (the world's stand-in for SD3.5-Large): pixel space 32 px, MiniLM text (16 x 384
# tokens + 384 pooled). SD3.5-Large's own choices where they transfer: patch 2, QK RMSNorm, no MMDiT-X dual
# attention, caption projection = width, timestep = t * 1000.
# PAPER-UNKNOWN: every size (the paper only names SD3.5-Large). Chose 8 layers x 6 heads x 32 (width 192, 10.5M
# parameters, 4.6x tiny-world's 2.27M) so that one training step at batch 16 costs ~2x tiny-world's (python -m
# snapgen.train, 1 CPU thread, steps 1-4 of two runs each: 3.0-3.2 s vs 1.4-1.5 s): a bigger model than the student,
# as SD3.5-Large is to SnapGen, at a cost the CPU recipe can afford for a longer run. head_dim 32 as the world U-Nets.
_DIT_SIZES: dict[str, dict] = {   # DiTConfig fields
    "world-dit-s": dict(in_channels=3, out_channels=3, sample_size=32, patch_size=2, num_layers=8,
                        attention_head_dim=32, num_attention_heads=6, joint_attention_dim=384,
                        pooled_projection_dim=384, pos_embed_max_size=16, qk_norm="rms_norm"),
}
DIT_PRESET_NAMES = tuple(_DIT_SIZES)


def __getattr__(name: str):
    if name == "DIT_PRESETS":        # DIT_PRESETS: dict[str, DiTConfig], built on first access
        from snapgen.models.dit import DiTConfig

        return {k: DiTConfig(**v) for k, v in _DIT_SIZES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_denoiser_preset(name: str) -> "UNetConfig | DiTConfig":
    """A U-Net (``PRESETS``) or DiT (``DIT_PRESETS``) preset by name; unknown names raise with close matches."""
    import difflib

    if name in _DIT_SIZES:
        from snapgen.models.dit import DiTConfig

        return DiTConfig(**_DIT_SIZES[name])
    if name not in PRESETS:
        known = list(PRESETS) + list(DIT_PRESET_NAMES)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        raise KeyError(f"unknown preset {name!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                     f"; known: {', '.join(known)}"))
    return PRESETS[name]


def get_preset(name: str) -> UNetConfig:
    import difflib

    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.4)
        raise KeyError(f"unknown preset {name!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                     f"; known: {', '.join(PRESETS)}"))
    return PRESETS[name]
