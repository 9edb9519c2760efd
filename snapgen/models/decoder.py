"""SnapGen's tiny decoder: SD3-VAE latent (16 ch) -> RGB at 8x upsampling, plus the VAE baselines.

Paper facts (SPEC.md section 2): no attention, minimal GroupNorm, thin channels, separable
convolutions, ~1.38M parameters, ~36x fewer parameters and ~54x faster than the SD3 VAE decoder
(49,545,475 params, 10.47 TFLOPs for 128x128 -> 1024x1024). Everything else is decided here and
tagged ``# PAPER-UNKNOWN:``.

Latent convention (same as diffusers ``AutoencoderKL.decode``): the decoder consumes the *unscaled*
VAE latent ``z_vae``. The diffusion model works in ``z_model = (z_vae - shift) * scaling`` (SD3:
scaling 1.5305, shift 0.0609); use :meth:`TinyDecoder.unscale_latent` to go back before decoding.

Layout (latent h x w, output 8h x 8w)::

    conv_in (3x3, 16 -> C0)
    stages["0_1x"]  : B0 x SepResBlock(C0)                       # (N, C0, h, w)
    stages["1_2x"]  : Upsample(C0 -> C1), B1 x SepResBlock(C1)   # (N, C1, 2h, 2w)
    stages["2_4x"]  : Upsample(C1 -> C2), B2 x SepResBlock(C2)   # (N, C2, 4h, 4w)
    stages["3_8x"]  : Upsample(C2 -> C3), B3 x SepResBlock(C3)   # (N, C3, 8h, 8w)
    out             : GroupNorm -> SiLU -> conv 3x3 (C3 -> 3)    # (N, 3, 8h, 8w)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from snapgen.io import MissingWeightsError, sha256_json
from snapgen.models.pretrained import CorruptCheckpointError, ModelMixin, PretrainedMixin  # ModelMixin: DiffusionPipeline finds the load method in this module

SD3_SCALING_FACTOR = 1.5305  # diffusers SD3 VAE config `scaling_factor`
SD3_SHIFT_FACTOR = 0.0609    # diffusers SD3 VAE config `shift_factor`


@dataclass(frozen=True)
class TinyDecoderConfig:
    latent_channels: int = 16                        # SD3 VAE latent channels
    out_channels: int = 3                            # RGB
    stage_channels: tuple[int, ...] = (256, 128, 64, 32)  # per stage, latent res first; one 2x upsample between stages (4 stages = 8x)
    # PAPER-UNKNOWN: chose (256, 128, 64, 32) because halving channels per 2x keeps every block at the same FLOPs and thin at full res
    blocks_per_stage: tuple[int, ...] = (4, 3, 2, 1)  # SepResBlocks per stage
    # PAPER-UNKNOWN: chose (4, 3, 2, 1) because depth is cheapest at low res; lands the default at 1,388,195 params (paper ~1.38M; 35.7x fewer than SD3)
    sep_expansion: int = 2                           # pointwise hidden = expansion x channels (the U-Net's separable ratio, SPEC 2.3)
    kernel_size: int = 3                             # depthwise kernel
    norm: Literal["output_only", "every_block", "none"] = "output_only"  # where GroupNorm sits
    # PAPER-UNKNOWN: chose one GroupNorm before conv_out because the paper says "minimal GroupNorm"; GroupNorm is slow on mobile
    norm_groups: int = 8                             # GroupNorm groups (capped at channel count)
    upsample_mode: Literal["nearest", "bilinear"] = "nearest"  # interpolation before each upsample conv
    # PAPER-UNKNOWN: chose nearest because it is the cheapest, exactly exportable op (diffusers VAEs use it too)
    act: Literal["silu", "relu"] = "silu"            # activation
    scaling_factor: float = SD3_SCALING_FACTOR       # latent space: z_model = (z_vae - shift) * scaling; forward() takes z_vae
    shift_factor: float = SD3_SHIFT_FACTOR           # see scaling_factor

    def __post_init__(self):
        if len(self.stage_channels) != len(self.blocks_per_stage):
            raise ValueError("stage_channels and blocks_per_stage must have the same length")
        if len(self.stage_channels) < 1:
            raise ValueError("need at least one stage")

    @property
    def upsample_factor(self) -> int:
        return 2 ** (len(self.stage_channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        """Short content hash of the config (12 hex digits)."""
        return sha256_json(self.to_dict())[:12]

    @classmethod
    def from_dict(cls, d: dict) -> "TinyDecoderConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"_class_name", "config_hash"})
        if unknown:
            raise ValueError(f"unknown TinyDecoderConfig fields: {unknown}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)


# Presets, one line each.
TINY_DECODER_PRESETS: dict[str, TinyDecoderConfig] = {
    "snapgen": TinyDecoderConfig(),                                                        # default: 1,388,195 params, 0.106 TFLOPs @1024 (paper: ~1.38M)
    "cpu_proof": TinyDecoderConfig(stage_channels=(64, 48, 32, 16), blocks_per_stage=(2, 1, 1, 1)),  # --world proof run: 66,419 params
}


def _act(name: str) -> nn.Module:
    return nn.SiLU() if name == "silu" else nn.ReLU()


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels, eps=1e-6)


class SepResBlock(nn.Module):
    """x + pw_out(act(pw_in(dw(act(norm(x)))))): depthwise kxk, then a 1x1 expansion MLP."""

    def __init__(self, channels: int, cfg: TinyDecoderConfig):
        super().__init__()
        hidden = channels * cfg.sep_expansion
        self.norm = _norm(channels, cfg.norm_groups) if cfg.norm == "every_block" else nn.Identity()
        self.act = _act(cfg.act)
        self.dw = nn.Conv2d(channels, channels, cfg.kernel_size, padding=cfg.kernel_size // 2, groups=channels)
        self.pw_in = nn.Conv2d(channels, hidden, 1)
        self.pw_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H, W)
        h = self.dw(self.act(self.norm(x)))
        h = self.pw_out(self.act(self.pw_in(h)))           # (N, C, H, W) via (N, e*C, H, W)
        return x + h


class Upsample(nn.Module):
    """2x interpolation, then a separable conv (depthwise kxk + pointwise C_in -> C_out)."""

    def __init__(self, c_in: int, c_out: int, cfg: TinyDecoderConfig):
        super().__init__()
        self.mode = cfg.upsample_mode
        self.dw = nn.Conv2d(c_in, c_in, cfg.kernel_size, padding=cfg.kernel_size // 2, groups=c_in)
        self.pw = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, Cin, H, W) -> (N, Cout, 2H, 2W)
        x = F.interpolate(x, scale_factor=2.0, mode=self.mode)
        return self.pw(self.dw(x))


class TinyDecoder(PretrainedMixin, nn.Module):
    """Attention-free separable-conv decoder; ``forward(z_vae) -> image`` in ~[-1, 1] (not clamped).

    A diffusers model (``snapgen.models.pretrained``): ``<dir>/config.json`` + ``<dir>/diffusion_pytorch_model.safetensors``;
    folders of the older layout (``config.json`` + ``model.safetensors``) still load."""

    config_class = TinyDecoderConfig
    legacy_names = (("config.json", "model.safetensors"),)
    what = "tiny decoder checkpoint"
    how = "Create it with TinyDecoder.save_pretrained(dir) or `python -m snapgen.train_decoder`."

    def __init__(self, cfg: TinyDecoderConfig = TinyDecoderConfig()):
        super().__init__()
        self.config = cfg
        ch = cfg.stage_channels
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.stages = nn.ModuleDict()
        for i, (c, n) in enumerate(zip(ch, cfg.blocks_per_stage)):
            layers: list[nn.Module] = [Upsample(ch[i - 1], c, cfg)] if i > 0 else []
            layers += [SepResBlock(c, cfg) for _ in range(n)]
            self.stages[f"{i}_{2 ** i}x"] = nn.Sequential(*layers)
        self.norm_out = _norm(ch[-1], cfg.norm_groups) if cfg.norm != "none" else nn.Identity()
        self.act_out = _act(cfg.act)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # PAPER-UNKNOWN: chose PyTorch default conv init + zero-init of each residual branch's last
        # conv, so every SepResBlock starts as the identity (stable without per-block norms).
        for m in self.modules():
            if isinstance(m, SepResBlock):
                nn.init.zeros_(m.pw_out.weight)
                nn.init.zeros_(m.pw_out.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, 16, h, w) unscaled latent -> (N, 3, 8h, 8w)
        x = self.conv_in(z)                                  # (N, C0, h, w)
        for stage in self.stages.values():
            x = stage(x)                                     # (N, Ci, 2^i h, 2^i w)
        return self.conv_out(self.act_out(self.norm_out(x)))

    @property
    def cfg(self) -> TinyDecoderConfig:
        """The older name of ``config``."""
        return self.config

    def unscale_latent(self, z_model: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latent -> the VAE latent this decoder consumes."""
        return z_model / self.cfg.scaling_factor + self.cfg.shift_factor

    def scale_latent(self, z_vae: torch.Tensor) -> torch.Tensor:
        return (z_vae - self.cfg.shift_factor) * self.cfg.scaling_factor


# ---- VAE decoder baselines, built from the diffusers configs without weights -------------------------
SD3_VAE_CONFIG = dict(  # stabilityai/stable-diffusion-3-medium `vae/config.json` (architecture fields)
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=1024, mid_block_add_attention=True,
    use_quant_conv=False, use_post_quant_conv=False, scaling_factor=SD3_SCALING_FACTOR, shift_factor=SD3_SHIFT_FACTOR,
)
SDXL_VAE_CONFIG = dict(  # stabilityai/sdxl-vae `config.json` (architecture fields)
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=1024, mid_block_add_attention=True,
    use_quant_conv=True, use_post_quant_conv=True, scaling_factor=0.13025,
)
SD3_VAE_DECODER_PARAMS = 49_545_475  # measured with diffusers 0.42 on meta (SPEC.md section 2)


class VAEDecodePath(nn.Module):
    """What ``AutoencoderKL.decode`` runs: optional post_quant_conv, then the decoder."""

    def __init__(self, post_quant_conv: nn.Module | None, decoder: nn.Module, latent_channels: int):
        super().__init__()
        self.post_quant_conv = post_quant_conv if post_quant_conv is not None else nn.Identity()
        self.decoder = decoder
        self.latent_channels = latent_channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, Cz, h, w) -> (N, 3, 8h, 8w)
        return self.decoder(self.post_quant_conv(z))


def build_autoencoder_kl(config: dict, device: str | torch.device = "cpu"):
    from diffusers import AutoencoderKL

    with torch.device(device):
        return AutoencoderKL(**config)


def _decode_path(config: dict, device: str | torch.device) -> VAEDecodePath:
    vae = build_autoencoder_kl(config, device)
    return VAEDecodePath(vae.post_quant_conv, vae.decoder, config["latent_channels"])


def sd3_vae_decoder(device: str | torch.device = "cpu") -> VAEDecodePath:
    """SD3 VAE decode path (no post_quant_conv): 49,545,475 params; random weights, no hub."""
    return _decode_path(SD3_VAE_CONFIG, device)


def sdxl_vae_decoder(device: str | torch.device = "cpu") -> VAEDecodePath:
    """SDXL VAE decode path: post_quant_conv (4->4, 20 params) + decoder; random weights, no hub."""
    return _decode_path(SDXL_VAE_CONFIG, device)


def tiny_decoder(preset: str = "snapgen", device: str | torch.device = "cpu", **changes) -> TinyDecoder:
    if preset not in TINY_DECODER_PRESETS:
        raise KeyError(f"unknown tiny decoder preset '{preset}'; choices: {sorted(TINY_DECODER_PRESETS)}")
    with torch.device(device):
        return TinyDecoder(replace(TINY_DECODER_PRESETS[preset], **changes))


DECODERS = {  # name -> builder(device) ; the decoder table's rows
    "tiny": lambda device="cpu": tiny_decoder("snapgen", device),
    "sd3_vae": sd3_vae_decoder,
    "sdxl_vae": sdxl_vae_decoder,
}

__all__ = ["TinyDecoderConfig", "TinyDecoder", "TINY_DECODER_PRESETS", "CorruptCheckpointError", "MissingWeightsError",
           "sd3_vae_decoder", "sdxl_vae_decoder", "tiny_decoder", "VAEDecodePath", "DECODERS",
           "SD3_VAE_CONFIG", "SDXL_VAE_CONFIG", "SD3_VAE_DECODER_PARAMS", "build_autoencoder_kl"]
