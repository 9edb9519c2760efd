"""Build a registered variant's model (real weights or weightless on meta) and its example inputs."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ablations.registry import Variant
from snapgen.config import UNetConfig
from snapgen.models.unet import SnapGenUNet

# SDXL base U-Net config (diffusers ``UNet2DConditionModel``), written out so no hub is needed.
SDXL_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)


def build_model(variant: Variant, device: str | torch.device = "meta", config: UNetConfig | None = None,
                timing_init: bool = False, dtype: torch.dtype | None = None) -> nn.Module:
    """The variant's network with random init (``device='meta'``: no memory, for counting).

    ``timing_init``: build on meta, then fill every tensor from one tiled block of N(0, 0.02) values. Latency
    does not depend on weight values (no denormals or NaNs arise), and this takes a second instead of
    ~20 s of per-layer initialisation for a 2.5B-parameter model on a CPU. ``dtype`` (timing_init only): the
    tensors are allocated in it directly (a bf16 SDXL never exists in fp32 first).
    """
    if timing_init and torch.device(device).type != "meta":
        meta = build_model(variant, "meta", config)
        model = (meta.to(dtype) if dtype is not None else meta).to_empty(device=device)
        block = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0)).mul_(0.02).to(device)
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                flat = t.view(-1)
                for s in range(0, flat.numel(), block.numel()):
                    n = min(block.numel(), flat.numel() - s)
                    flat[s:s + n].copy_(block[:n])
        return model
    with torch.device(device):
        if variant.family == "sdxl":
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel(**SDXL_UNET_CONFIG).eval()
        return SnapGenUNet(config or variant.config).eval()


def example_inputs(variant: Variant, latent: int | None = None, batch: int = 1, device: str | torch.device = "cpu",
                   config: UNetConfig | None = None, seed: int = 0) -> tuple[tuple, dict]:
    """(args, kwargs) for one forward of the variant at ``latent`` x ``latent`` (default: its reference size)."""
    latent = latent or variant.latent_size
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    t = torch.full((batch,), 0.5, device=device)
    if variant.family == "sdxl":
        kw = {"encoder_hidden_states": rand(batch, variant.context_tokens, 2048),
              "added_cond_kwargs": {"text_embeds": rand(batch, 1280), "time_ids": rand(batch, 6)}}
        return (rand(batch, 4, latent, latent), t * 1000), kw
    c = config or variant.config
    x = rand(batch, c.in_channels, latent, latent)
    if c.cond == "class":
        return (x, t), {"class_labels": torch.zeros(batch, dtype=torch.long, device=device)}
    return (x, t), {"context": rand(batch, variant.context_tokens, c.context_dim), "pooled": rand(batch, c.pooled_dim)}


def tiny_config(config: UNetConfig) -> UNetConfig:
    """The same topology (stages, blocks, depths, attention kinds, every switch) at small widths, for tests."""
    scale = {320: 32, 640: 64, 1280: 64, 256: 32, 512: 64, 896: 64}
    return config.replace(channels=tuple(scale.get(c, 32) for c in config.channels), head_dim=16, context_dim=32,
                          pooled_dim=24, num_classes=10, norm_groups=8, sample_size=16, emb_mult=2)
