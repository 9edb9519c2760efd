"""Pinned outputs of the models (diffusers style): refactors must not change the numbers.

Each case builds a small model from a config written in the flat (pre-StageSpec) JSON form, fills every
tensor from a generator seeded by the tensor's name (so the values do not depend on module creation
order), runs it on seeded inputs and compares a slice of the output, its sum and its mean |value| with
numbers recorded from the code before the typed-stage refactor. Tolerance: rtol 1e-4 / atol 1e-5 on
the slice and rtol 1e-4 on the sums (fp32 on CPU; covers thread-count and kernel-choice differences,
e.g. multi-query attention through SDPA's ``enable_gqa`` instead of copied K/V).
"""
from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import torch
from torch import nn

from snapgen.config import UNetConfig
from snapgen.models.decoder import TinyDecoder, TinyDecoderConfig
from snapgen.models.unet import SnapGenUNet

SHIPPED_UNET = Path(__file__).resolve().parents[1] / "snapgen/weights/world-tiny/pipeline/unet"
RTOL, ATOL = 1e-4, 1e-5

# Old-format (flat) configs: also a check that such configs keep loading.
_TINY = dict(in_channels=3, out_channels=3, sample_size=16, channels=[32, 64, 96], res_blocks=[1, 1, 1],
             depth=[1, 1, 2], attention=["cross", "cross", "self_cross"], mid_block=True, conv="separable",
             sep_expansion=2, ffn_ratio=3.0, head_dim=32, kv_heads=1, cross_kv_heads=1, qk_norm=True, rope=True,
             cond="text", context_dim=48, pooled_dim=40, num_classes=10, class_tokens=1, emb_mult=4, norm_groups=8,
             dropout=0.0)
CONFIGS = {
    "tiny-world-text": _TINY,
    "tiny-world-class": {**_TINY, "cond": "class", "class_tokens": 2},
    "full-conv-multi-head": {**_TINY, "channels": [32, 64, 64], "res_blocks": [1, 2, 1], "depth": [0, 1, 2],
                             "attention": ["none", "self_cross", "self_cross"], "conv": "full", "sep_expansion": 1,
                             "ffn_ratio": 4.0, "head_dim": 16, "kv_heads": None, "cross_kv_heads": None,
                             "qk_norm": False, "rope": False},
    "mqa-full-conv": {**_TINY, "channels": [32, 64, 64], "depth": [0, 1, 1], "attention": ["none", "cross", "self_cross"],
                      "conv": "full", "head_dim": 16, "qk_norm": False, "rope": False},
    "gqa-no-mid": {**_TINY, "channels": [32, 64], "res_blocks": [2, 1], "depth": [1, 2],
                   "attention": ["self", "self_cross"], "head_dim": 16, "kv_heads": 2, "cross_kv_heads": 4,
                   "mid_block": False},
}

# name -> (parameter count, out.flatten()[:8], out.sum(), out.abs().mean()) recorded before the refactor
EXPECTED = {
    "full-conv-multi-head": (2407139, [0.15526359, 0.0078404024, 0.21625382, 0.18938704, 0.47880122, 0.51242822, 0.66127968, 0.6281504], 131.91676, 0.42084731),
    "gqa-no-mid": (724195, [-0.19506335, -0.047779977, 0.2465454, 0.28702796, -0.11038592, 0.093128517, -0.37477767, -0.16270675], 883.33559, 0.67280642),
    "mqa-full-conv": (1501027, [0.24403094, 0.34871092, 0.31231767, 0.41838929, 0.60460436, 0.64937413, 0.5038783, 0.76174939], 488.92155, 0.46729412),
    "tiny-world-class": (2008259, [0.30374956, 0.034809142, 0.68127042, 0.64430082, 0.20698661, 0.16835323, -0.23748516, 0.06437093], 273.18519, 0.4658986),
    "tiny-world-text": (1923907, [0.19728091, 0.55027974, 1.2543573, 1.3953937, 1.1349442, 1.0737135, 0.17450702, 0.77072859], 259.48136, 0.5193736),
}
EXPECTED_DECODER = (20379, [-0.26453352, -0.16399281, -0.15842515, -0.057824142, 0.051663499, 0.014130797, -0.048771948, 0.03320301], -358.27675, 0.36897902)
EXPECTED_SHIPPED = ([-0.053339034, -0.6633144, -0.016842663, -1.1150954, 0.29329735, 0.88805139, -0.10033973, -0.57378149], -115.76286, 0.90904346)  # the re-shipped world-tiny


def randomize(model: nn.Module) -> nn.Module:
    """Every parameter and buffer from a generator seeded by its name (order-independent)."""
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            r = torch.randn(t.shape, generator=g)
            if t.dim() > 1:
                t.copy_(r * t[0].numel() ** -0.5)           # fan-in scaled
            elif name.endswith("weight"):
                t.copy_(1 + 0.1 * r)                        # norm scales around 1
            else:
                t.copy_(0.1 * r)
    return model.eval()


def unet_inputs(cfg: UNetConfig, latent: int = 16, batch: int = 2, tokens: int = 5) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(batch, cfg.in_channels, latent, latent, generator=g)
    t = torch.rand(batch, generator=g)
    if cfg.cond == "class":
        return (x, t), {"class_labels": torch.arange(batch) % (cfg.num_classes + 1)}
    return (x, t), {"context": torch.randn(batch, tokens, cfg.context_dim, generator=g),
                    "pooled": torch.randn(batch, cfg.pooled_dim, generator=g)}


def summary(out: torch.Tensor) -> tuple[list[float], float, float]:
    out = out.detach().double()
    return out.flatten()[:8].tolist(), out.sum().item(), out.abs().mean().item()


def check(got, expected):
    (s, total, mean_abs), (es, etotal, emean_abs) = got, expected
    torch.testing.assert_close(torch.tensor(s, dtype=torch.float64), torch.tensor(es, dtype=torch.float64), rtol=RTOL, atol=ATOL)
    assert total == pytest.approx(etotal, rel=RTOL, abs=1e-3)
    assert mean_abs == pytest.approx(emean_abs, rel=RTOL)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unet_output_is_pinned(name):
    cfg = UNetConfig.from_dict(CONFIGS[name])
    model = randomize(SnapGenUNet(cfg))
    args, kwargs = unet_inputs(cfg)
    with torch.no_grad():
        out = model(*args, **kwargs)
    params = sum(p.numel() for p in model.parameters())
    n, *expected = EXPECTED[name]
    assert params == n
    check(summary(out), expected)


def test_tiny_decoder_output_is_pinned():
    cfg = TinyDecoderConfig(stage_channels=(32, 24, 16, 8), blocks_per_stage=(2, 1, 1, 1), norm="every_block")
    model = randomize(TinyDecoder(cfg))
    z = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = model(z)
    params = sum(p.numel() for p in model.parameters())
    n, *expected = EXPECTED_DECODER
    assert params == n
    check(summary(out), expected)


def test_shipped_world_tiny_unet_output_is_pinned():
    model = SnapGenUNet.from_pretrained(SHIPPED_UNET).eval()
    args, kwargs = unet_inputs(model.config, latent=32, batch=2, tokens=16)
    with torch.no_grad():
        out = model(*args, **kwargs)
    check(summary(out), EXPECTED_SHIPPED)
