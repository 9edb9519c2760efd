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

    # ``forward`` takes the fused CPU inference path (``_forward_fused``: same weights, same arithmetic up to float
    # rounding, checked by tests/test_decoder_fused.py) when it applies; set ``fused_cpu = False`` for the module path.
    fused_cpu: bool = True

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, 16, h, w) unscaled latent -> (N, 3, 8h, 8w)
        if self.uses_fused_path(z):
            return self._forward_fused(z)
        x = self.conv_in(z)                                  # (N, C0, h, w)
        for stage in self.stages.values():
            x = stage(x)                                     # (N, Ci, 2^i h, 2^i w)
        return self.conv_out(self.act_out(self.norm_out(x)))

    def uses_fused_path(self, z: torch.Tensor) -> bool:
        """Inference on CPU (no autograd, not traced / scripted / compiled / exported) with the default block
        options; everything else (training, Core ML export, GPUs, ``norm="every_block"``, bilinear) runs the
        modules."""
        return (self.fused_cpu and z.device.type == "cpu" and not torch.is_grad_enabled() and z.dim() == 4
                and self.config.norm != "every_block" and self.config.upsample_mode == "nearest"
                and self.config.kernel_size == 3                and z.dtype in (torch.float32, torch.bfloat16) and not torch.jit.is_tracing()
                and not torch.jit.is_scripting() and not torch.compiler.is_compiling())

    def _forward_fused(self, z: torch.Tensor) -> torch.Tensor:
        """The module path computed in NHWC with fewer passes over memory (``_fused`` helpers):

        * each SepResBlock's pointwise MLP (1x1 -> act -> 1x1, + residual) runs on blocks of pixels that stay in
          cache, never writing the 2C-channel hidden map or the bias-initialised conv outputs to memory;
        * each Upsample (nearest 2x, depthwise kxk, 1x1) runs the depthwise conv on the low-resolution map as
          four phase kernels (nearest upsampling followed by a zero-padded 3x3 conv equals, at output pixel
          (2i + a, 2j + b), a 3x3 conv of the input whose taps are the original ones summed per source pixel), so
          the upsampled map is never materialised; the phases are interleaved straight into the output.
        Only CPU inference takes it (``uses_fused_path``); the arithmetic differs from the modules' by rounding.
        Under CPU autocast it computes in the autocast dtype (weights cast to it, as autocast would)."""
        dt = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else z.dtype
        with torch.autocast("cpu", enabled=False):
            z = z.to(dt)
            x = _nhwc(F.conv2d(z, _as(self.conv_in.weight, z), _as(self.conv_in.bias, z), padding=1))  # (N, h, w, C0)
            for stage in self.stages.values():
                for layer in stage:
                    x = _fused_upsample(layer, x) if isinstance(layer, Upsample) else _fused_sep_block(layer, x)
            return _fused_tail(self, x)

    @property
    def cfg(self) -> TinyDecoderConfig:
        """The older name of ``config``."""
        return self.config

    def unscale_latent(self, z_model: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latent -> the VAE latent this decoder consumes."""
        return z_model / self.cfg.scaling_factor + self.cfg.shift_factor

    def scale_latent(self, z_vae: torch.Tensor) -> torch.Tensor:
        return (z_vae - self.cfg.shift_factor) * self.cfg.scaling_factor


# ---- the fused CPU inference path (TinyDecoder._forward_fused) --------------------------------------------
# Every layer runs on bands of image rows whose working set stays in cache (~1 MiB; L2 is 2 MiB here): a band of
# input rows plus a one-row halo above and below is read once, every op of the layer runs on it, and its output rows
# are written once. SepResBlocks write their output in place (the halo row a later band needs is kept aside), so
# the only full-size tensors created are the upsampled maps; fresh large tensors cost page faults on first touch,
# which cost more than the arithmetic of these thin layers.
_BAND_BYTES = 1 << 20


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) of any memory format -> a contiguous (N, H, W, C) tensor."""
    return x.permute(0, 2, 3, 1).contiguous()


def _band_rows(width: int, channels: int, itemsize: int) -> int:
    """Image rows per band so that one (rows, width, channels) slab is about ``_BAND_BYTES``."""
    return max(1, _BAND_BYTES // (width * channels * itemsize))


def _as(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A weight or bias in the activations' dtype (a no-op when they match)."""
    return None if t is None else t.to(x.dtype)


def _act_(name: str, x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=True) if name == "silu" else F.relu_(x)


def _act_name(module: nn.Module) -> str:
    return "silu" if isinstance(module, nn.SiLU) else "relu"


def _with_halo(x: torch.Tensor, i0: int, i1: int, top: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """Rows i0-1 .. i1 of NHWC image ``x`` (one sample: (H, W, C)) into ``out`` (i1 - i0 + 2, W, C), zeros outside
    the image; row i0-1 comes from ``top`` when given (its original value, ``x`` having been overwritten there)."""
    hgt = x.shape[0]
    rows = out[: i1 - i0 + 2]
    if i0 == 0:
        rows[0].zero_()
    else:
        rows[0].copy_(top if top is not None else x[i0 - 1])
    rows[1: i1 - i0 + 1].copy_(x[i0:i1])
    if i1 == hgt:
        rows[-1].zero_()
    else:
        rows[-1].copy_(x[i1])
    return rows


def _dw_rows(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise conv (k = 3 rows, padding 1 along the width only) of a (R + 2, W, C) slab -> (R, W, C)."""
    # (1, C, R + 2, W) in channels_last strides (the batch stride must be R W C for oneDNN to keep NHWC, no copy)
    y = F.conv2d(rows.unsqueeze(0).permute(0, 3, 1, 2), weight, bias, padding=(0, weight.shape[-1] // 2),
                 groups=rows.shape[-1])
    return y[0].permute(1, 2, 0)                                  # channels_last output: a contiguous (R, W, C)


def _fused_sep_block(block: SepResBlock, x: torch.Tensor) -> torch.Tensor:
    """SepResBlock (no norm: ``norm="every_block"`` takes the module path) on NHWC ``x``, in place."""
    act = _act_name(block.act)
    n, hgt, wid, c = x.shape
    hidden = block.pw_in.weight.shape[0]
    w_in, b_in = _as(block.pw_in.weight, x).view(hidden, c).t(), _as(block.pw_in.bias, x)
    w_out, b_out = _as(block.pw_out.weight, x).view(c, hidden).t(), _as(block.pw_out.bias, x)
    dw_w, dw_b = _as(block.dw.weight, x), _as(block.dw.bias, x)
    band = _band_rows(wid, hidden, x.element_size())
    slab = x.new_empty(band + 2, wid, c)
    mid = x.new_empty(band * wid, hidden)
    res = x.new_empty(band * wid, c)
    for b in range(n):
        xb, top = x[b], None
        for i0 in range(0, hgt, band):
            i1 = min(i0 + band, hgt)
            m = (i1 - i0) * wid
            rows = _act_(act, _with_halo(xb, i0, i1, top, slab))             # act(x) on the band and its halo
            top = xb[i1 - 1].clone()                                          # the next band's halo, before overwrite
            h = _dw_rows(rows, dw_w, dw_b).reshape(m, c)
            t = torch.addmm(b_in, h, w_in, out=mid[:m])
            _act_(act, t)
            y = torch.addmm(b_out, t, w_out, out=res[:m])
            xb[i0:i1].view(m, c).add_(y)                                      # residual, in place
    return x


def _group_stats(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-group mean and (biased) variance of NHWC ``x``, in float32, by two passes: the mean from
    channel sums, then the squared deviations from it summed over bands (exact where a one-pass E[x^2] - E[x]^2
    would cancel; ``torch.var_mean`` over these strided dims is ~30x slower)."""
    n, c = x.shape[0], x.shape[-1]
    cg = c // groups
    flat = x.reshape(n, -1, c)
    count = flat.shape[1] * cg
    mean = flat.sum(1, dtype=torch.float32).view(n, groups, cg).sum(-1) / count                # (N, G)
    centre = mean.repeat_interleave(cg, dim=1)                                                # (N, C)
    m2 = torch.zeros(n, c, dtype=torch.float32)
    rows = max(256, _BAND_BYTES // (c * 4))
    for b in range(n):
        for i in range(0, flat.shape[1], rows):
            m2[b] += (flat[b, i:i + rows].float() - centre[b]).square_().sum(0)                  # column sums
    return mean, m2.view(n, groups, cg).sum(-1) / count


def _group_norm_affine(norm: nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm of NHWC ``x`` as a per-sample, per-channel affine map y = x * scale + shift: (N, C) each."""
    n, g, c = x.shape[0], norm.num_groups, x.shape[-1]
    mean, var = _group_stats(x, g)                                                             # (N, G) float32
    weight = norm.weight if norm.weight is not None else x.new_ones(c, dtype=torch.float32)
    bias = norm.bias if norm.bias is not None else x.new_zeros(c, dtype=torch.float32)
    scale = weight.float().view(g, c // g) * (var + norm.eps).rsqrt()[:, :, None]              # (N, G, C/G)
    shift = bias.float().view(g, c // g) - mean[:, :, None] * scale
    return scale.reshape(n, c).to(x.dtype), shift.reshape(n, c).to(x.dtype)


def _fused_tail(dec: "TinyDecoder", x: torch.Tensor) -> torch.Tensor:
    """norm_out -> act -> conv_out (3x3, few output channels) of NHWC ``x`` -> contiguous NCHW image. Per band: the
    normalised, activated rows (and halo) are formed in cache, one GEMM gives every tap's contribution
    (C_in -> 9 C_out), nine shifted adds sum them (oneDNN's direct conv runs 3-channel outputs at a few GFLOP/s)."""
    n, hgt, wid, c = x.shape
    conv = dec.conv_out
    c_out = conv.weight.shape[0]
    if isinstance(dec.norm_out, nn.GroupNorm):     # torch's channels_last GroupNorm kernel is ~100x less exact
        scale, shift = _group_norm_affine(dec.norm_out, x)
    else:
        scale = shift = None
    act = _act_name(dec.act_out)
    w = _as(conv.weight, x).permute(1, 2, 3, 0).reshape(c, 9 * c_out)          # (C_in, ky, kx, C_out)
    out = x.new_empty(n, hgt, wid, c_out)
    band = _band_rows(wid, max(c, 9 * c_out), x.element_size())
    slab = x.new_empty(band + 2, wid, c)
    for b in range(n):
        for i0 in range(0, hgt, band):
            i1 = min(i0 + band, hgt)
            rows = _with_halo(x[b], i0, i1, None, slab)
            if scale is not None:
                rows.mul_(scale[b]).add_(shift[b])
            _act_(act, rows)
            if i0 == 0:
                rows[0].zero_()                    # zero padding is applied after norm and act
            if i1 == hgt:
                rows[-1].zero_()
            y = (rows.reshape(-1, c) @ w).view(i1 - i0 + 2, wid, 3, 3, c_out)
            o = out[b, i0:i1]
            o.copy_((_as(conv.bias, x) if conv.bias is not None else o.new_zeros(c_out)).view(1, 1, c_out).expand_as(o))
            for ky in range(3):
                for kx in range(3):
                    dx = kx - 1
                    ca, cb = max(0, -dx), min(wid, wid - dx)
                    o[:, ca:cb] += y[ky:ky + i1 - i0, ca + dx:cb + dx, ky, kx]
    return out.permute(0, 3, 1, 2).contiguous()


def _phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """Depthwise (C, 1, k, k) kernel applied after nearest 2x upsampling -> (4C, 1, 3, 3) kernels on the input:
    output channel 4c + 2a + b is phase (a, b) of channel c (k = 3, zero padding 1)."""
    # source offset (-1, 0, +1) each tap of phase a reads: a = 0 -> taps (-1, 0, +1) read (-1, 0, 0); a = 1 -> (0, 0, +1)
    m = weight.new_zeros(2, 3, 3)                                                # [phase, source offset, tap]
    m[0, 0, 0] = m[0, 1, 1] = m[0, 1, 2] = 1
    m[1, 1, 0] = m[1, 1, 1] = m[1, 2, 2] = 1
    k = torch.einsum("arp,bsq,cpq->cabrs", m, m, weight[:, 0])                 # (C, 2, 2, 3, 3)
    return k.reshape(-1, 1, 3, 3)


def _fused_upsample(up: Upsample, x: torch.Tensor) -> torch.Tensor:
    """Upsample (nearest 2x -> depthwise 3x3 -> 1x1) on NHWC ``x`` -> NHWC (N, 2H, 2W, C_out). Per band of input
    rows and phase (a, b): the phase's depthwise conv at the input's resolution, the 1x1, and a strided write into
    the phase's output pixels; the upsampled map is never formed."""
    n, hgt, wid, c = x.shape
    c_out = up.pw.weight.shape[0]
    k = _phase_kernels(up.dw.weight).view(c, 2, 2, 1, 3, 3).permute(1, 2, 0, 3, 4, 5).contiguous().to(x.dtype)
    dw_b = _as(up.dw.bias, x)
    out = x.new_empty(n, hgt, 2, wid, 2, c_out)                                   # = (N, 2H, 2W, C_out)
    w, bias = _as(up.pw.weight, x).view(c_out, c).t(), _as(up.pw.bias, x)
    band = _band_rows(wid, 2 * max(c, c_out), x.element_size())
    slab = x.new_empty(band + 2, wid, c)
    res = x.new_empty(band * wid, c_out)
    for b in range(n):
        for i0 in range(0, hgt, band):
            i1 = min(i0 + band, hgt)
            m = (i1 - i0) * wid
            rows = _with_halo(x[b], i0, i1, None, slab)
            for a in range(2):
                for bb in range(2):
                    h = _dw_rows(rows, k[a, bb], dw_b).reshape(m, c)
                    y = torch.addmm(bias, h, w, out=res[:m])
                    out[b, i0:i1, a, :, bb].copy_(y.view(i1 - i0, wid, c_out))
    return out.view(n, 2 * hgt, 2 * wid, c_out)


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
