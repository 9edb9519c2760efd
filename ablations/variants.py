"""Every registered variant. Read top to bottom: the paper's architecture evolution, in order.

Steps (SPEC.md section 2): SDXL topology -> thinner/shorter baseline -> 1 no high-res self-attention
-> 2 separable convs -> 3 separable expansion x2 -> 4 FFN ratio 3 -> 5 multi-query attention
-> 6 text/class conditioning from the first stage -> 7 QK-RMSNorm + 2-D RoPE (= final SnapGen).
Step 6 has two readings (docs/architecture.md): "add" (a CA+FFN block after each first-stage residual block;
the line the final model continues) and "replace" (the CA+FFN block takes the residual block's place).
The paper ran this ablation class-conditionally on ImageNet 256 (``in256-*``); the same steps are
registered for text-to-image at 1024 px (``t2i-*``) ending in the ``snapgen-t2i`` preset.
"""
from __future__ import annotations

from snapgen.config import StageSpec, UNetConfig
from ablations.registry import Registry, Variant

REGISTRY = Registry()
_r = REGISTRY

# SDXL's topology in our U-Net class (for the thinned baseline's lineage) and the real diffusers SDXL U-Net.
SDXL_TOPOLOGY = UNetConfig(stages=(StageSpec(320, 2, 0, "none"), StageSpec(640, 2, 2, "self_cross"),
                                   StageSpec(1280, 2, 10, "self_cross")))
_r.register(Variant("sdxl-unet", None, None, "diffusers UNet2DConditionModel, SDXL config, no weights (2,567,463,684 params)",
                    family="sdxl", resolution=1024, context_tokens=77))


def _steps(prefix: str, root: str, final: str) -> None:
    """Register the paper's steps 1-7 under ``prefix``; the last one is named ``final``."""
    d = _r.derive
    d(root, f"{prefix}-s1-no-hires-sa", "1: remove self-attention from the high-res stage (cross-attention stays)",
      attention=("none", "cross", "self_cross"))
    d(f"{prefix}-s1-no-hires-sa", f"{prefix}-s2-sepconv", "2: every 3x3 conv -> depthwise 3x3 + pointwise 1x1", conv="separable")
    d(f"{prefix}-s2-sepconv", f"{prefix}-s3-sep-expand2", "3: separable conv intermediate channels x2", sep_expansion=2)
    d(f"{prefix}-s3-sep-expand2", f"{prefix}-s4-ffn3", "4: FFN hidden ratio 4 -> 3", ffn_ratio=3.0)
    d(f"{prefix}-s4-ffn3", f"{prefix}-s5-mqa", "5: multi-head -> multi-query attention (self and cross)",
      kv_heads=1, cross_kv_heads=1)
    d(f"{prefix}-s5-mqa", f"{prefix}-s6-first-stage-ca", "6: condition from the first stage: CA+FFN block at the high-res stage",
      attention=("cross", "cross", "self_cross"), depth=(1, 2, 4))
    d(f"{prefix}-s5-mqa", f"{prefix}-s6-first-stage-ca-replace", "6, replace reading: the high-res residual blocks become CA+FFN",
      attention=("cross", "cross", "self_cross"), depth=(1, 2, 4), attn_block=("replace", "add", "add"))
    d(f"{prefix}-s6-first-stage-ca", final, "7: QK-RMSNorm + 2-D RoPE (final SnapGen)", qk_norm=True, rope=True)


# --- text-to-image, 1024 px (128x128 SD3-VAE latent) -------------------------------------------
_r.register(Variant("t2i-sdxl-topology", None, SDXL_TOPOLOGY, "SDXL's widths and depths in our U-Net class",
                    resolution=1024))
_r.derive("t2i-sdxl-topology", "t2i-baseline", "thinner and shorter: channels 256/512/896, transformer depths 0/2/4",
          channels=(256, 512, 896), depth=(0, 2, 4))
_steps("t2i", "t2i-baseline", "snapgen-t2i")

# --- class-conditional ImageNet 256 (32x32 latent): where the paper ran the ablation ----------------
_r.register(Variant("in256-sdxl-topology", None, SDXL_TOPOLOGY.replace(cond="class", sample_size=32),
                    "SDXL's widths and depths, class-conditional", resolution=256, context_tokens=0))
_r.derive("in256-sdxl-topology", "in256-baseline", "thinner and shorter: channels 256/512/896, transformer depths 0/2/4",
          channels=(256, 512, 896), depth=(0, 2, 4))
_steps("in256", "in256-baseline", "snapgen-in256")

PRESETS = {  # name -> (variant, the paper's parameter count)
    "snapgen-t2i": ("snapgen-t2i", 379e6),      # text-to-image U-Net, 1024 px; GenEval 0.66, DPG 81.1
    "snapgen-in256": ("snapgen-in256", 372e6),  # ImageNet 256 class-conditional twin; FID 2.06
}
