"""Reconstruction metrics for decoders: PSNR, SSIM, LPIPS(VGG).

Conventions (recorded with every number):
- Images are ``(N, 3, H, W)`` float tensors in **[-1, 1]** (the VAE convention). PSNR and SSIM map
  them to [0, 1] and clamp, so ``data_range = 1.0``; LPIPS takes [-1, 1] directly.
- PSNR: ``10 log10(1 / MSE)`` per image over all pixels and channels, then the mean over images.
- SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  population (not sample) covariances, per channel, averaged over the valid (unpadded) region,
  channels and images. Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)`` (tested to 1e-5).
- LPIPS(VGG) v0.1 (Zhang et al. 2018): torchvision VGG16 ``features`` up to relu5_3, taps at
  relu1_2/relu2_2/relu3_3/relu4_3/relu5_3, the LPIPS input scaling layer, unit-normalisation along
  channels, squared difference, the learned 1x1 "lin" layers, spatial mean, sum over taps. Both
  weight files come from local paths the user gives; nothing is downloaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from snapgen.io import MissingWeightsError, require_path, sha256_file

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips_vgg": False}
SSIM_SETTINGS = {"window": "gaussian", "win_size": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03, "data_range": 1.0,
                 "covariance": "population", "border": "valid"}


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, images in [-1, 1] (data range 1 after mapping to [0, 1]). -> (N,)"""
    mse = (_to01(pred) - _to01(target)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(win_size: int, sigma: float) -> torch.Tensor:
    ax = torch.arange(win_size, dtype=torch.float64) - (win_size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    return g / g.sum()  # (win,)


def ssim(pred: torch.Tensor, target: torch.Tensor, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image SSIM (see module doc), images in [-1, 1]. -> (N,). Needs H, W >= win_size."""
    x, y = _to01(pred).double(), _to01(target).double()   # (N, C, H, W)
    n, c, h, w = x.shape
    if min(h, w) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}, got {h}x{w}")
    g = _gaussian_window(win_size, sigma).to(x.device)
    wx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):  # separable Gaussian, 'valid' border: (N, C, H, W) -> (N, C, H-win+1, W-win+1)
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


# ---- LPIPS(VGG) ------------------------------------------------------------------------------------
LPIPS_TAPS = (4, 9, 16, 23, 30)            # end indices of vgg16.features slices: relu1_2 ... relu5_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_HOW = ("Give local files: --vgg16-weights = torchvision's vgg16 ImageNet state dict "
             "(vgg16-397923af.pth from download.pytorch.org/models) and --lpips-weights = the LPIPS v0.1 "
             "linear layers (lpips/weights/v0.1/vgg.pth from github.com/richzhang/PerceptualSimilarity).")


class LPIPSVGG(nn.Module):
    """LPIPS v0.1 with a VGG16 trunk; ``forward(a, b) -> (N,)`` distances, inputs in [-1, 1]."""

    def __init__(self):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        feats = make_layers(cfgs["D"], batch_norm=False)[: LPIPS_TAPS[-1]]  # = vgg16().features, no classifier
        self.slices = nn.ModuleList(feats[a:b] for a, b in zip((0,) + LPIPS_TAPS[:-1], LPIPS_TAPS))
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.shift) / self.scale, []
        for s in self.slices:
            h = s(h)
            out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))  # unit norm along channels
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (N,3,H,W) x2 -> (N,)
        fa, fb = self._features(a), self._features(b)
        return sum(lin((x - y).pow(2)).mean((2, 3)) for lin, x, y in zip(self.lins, fa, fb)).flatten()

    def train(self, mode: bool = True):  # always eval: no dropout, frozen
        return super().train(False)


def _vgg_features_state(sd: dict) -> dict:
    """Accept a full torchvision vgg16 state dict ('features.N.*') or a features-only one ('N.*')."""
    if any(k.startswith("features.") for k in sd):
        sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    return {k: v for k, v in sd.items() if int(k.split(".")[0]) < LPIPS_TAPS[-1]}


def _lin_state(sd: dict) -> dict:
    """Accept the official 'lin{i}.model.1.weight' keys or plain 'lin{i}.weight'."""
    out = {}
    for k, v in sd.items():
        m = re.fullmatch(r"lin(\d)\.(?:model\.1\.)?weight", k)
        if m:
            out[f"{m.group(1)}.weight"] = v
    return out


def _load_into(module: nn.Module, state: dict, path: Path, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what} '{path}' does not match the expected architecture: {e}") from e


def load_lpips_vgg(vgg16_weights: str | Path | None, lpips_weights: str | Path | None) -> LPIPSVGG:
    """Build LPIPS(VGG) from two local files; raises MissingWeightsError naming any absent one."""
    p_vgg = require_path(vgg16_weights, "LPIPS VGG16 trunk weights", LPIPS_HOW)
    p_lin = require_path(lpips_weights, "LPIPS v0.1 linear-layer weights", LPIPS_HOW)
    model = LPIPSVGG()
    vgg_sd = _vgg_features_state(torch.load(p_vgg, map_location="cpu", weights_only=True))
    flat = nn.Sequential(*[m for s in model.slices for m in s])  # indices 0..29 like vgg16.features
    _load_into(flat, vgg_sd, p_vgg, "VGG16 weights")
    _load_into(model.lins, _lin_state(torch.load(p_lin, map_location="cpu", weights_only=True)), p_lin, "LPIPS weights")
    model.weights_sha256 = {"vgg16": sha256_file(p_vgg), "lpips_lin": sha256_file(p_lin)}
    return model


def try_load_lpips(vgg16_weights, lpips_weights) -> tuple[LPIPSVGG | None, str | None]:
    """(model, None) when both files load, else (None, reason): the LPIPS term/metric is then off."""
    try:
        return load_lpips_vgg(vgg16_weights, lpips_weights), None
    except MissingWeightsError as e:
        return None, str(e)


@dataclass
class ReconReport:
    psnr: float
    ssim: float
    lpips_vgg: float | None
    lpips_reason: str | None
    n_images: int

    def to_dict(self) -> dict:
        return {"psnr": self.psnr, "ssim": self.ssim, "lpips": self.lpips_vgg, "lpips_reason": self.lpips_reason,
                "n_images": self.n_images, "ssim_settings": SSIM_SETTINGS, "image_range": "[-1,1] -> [0,1]",
                "higher_is_better": HIGHER_IS_BETTER}


@torch.no_grad()
def reconstruction_metrics(pred: torch.Tensor, target: torch.Tensor, lpips_model: LPIPSVGG | None = None,
                           lpips_reason: str | None = "no LPIPS weights given") -> ReconReport:
    """Means over images of PSNR, SSIM and (when a model is given) LPIPS(VGG)."""
    p = psnr(pred, target)
    s = ssim(pred, target)
    lp = lpips_model(pred.clamp(-1, 1), target.clamp(-1, 1)).mean().item() if lpips_model is not None else None
    return ReconReport(psnr=p.mean().item(), ssim=s.mean().item(), lpips_vgg=lp,
                       lpips_reason=None if lpips_model is not None else lpips_reason, n_images=pred.shape[0])


__all__ = ["psnr", "ssim", "LPIPSVGG", "load_lpips_vgg", "try_load_lpips", "reconstruction_metrics", "ReconReport",
           "MissingWeightsError", "HIGHER_IS_BETTER", "SSIM_SETTINGS"]
