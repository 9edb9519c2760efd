"""The tiny decoder's fused CPU inference path (``TinyDecoder._forward_fused``) equals its module path.

Tolerances: fp32 max |diff| <= 2e-6 on outputs of magnitude ~0.5 (the two paths differ only in summation order;
both are compared with a float64 run of the module path too); bf16 (fused, bf16 weights) against the fp32 module
path: mean |diff| <= 2e-2 and max <= 0.1 (bf16 keeps 8 bits of mantissa)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from snapgen.models.decoder import TINY_DECODER_PRESETS, TinyDecoder, _phase_kernels


def _decoder(cfg) -> TinyDecoder:
    torch.manual_seed(0)
    m = TinyDecoder(cfg).eval()
    for mod in m.modules():                           # non-zero residual branches (the init zeroes pw_out)
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.normal_(mod.weight, std=0.1)
            torch.nn.init.normal_(mod.bias, std=0.1)
        if isinstance(mod, torch.nn.GroupNorm):
            torch.nn.init.normal_(mod.weight, 1.0, 0.2)
            torch.nn.init.normal_(mod.bias, 0.0, 0.2)
    return m


def _both(m: TinyDecoder, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        assert m.uses_fused_path(z)
        fused = m(z)
        m.fused_cpu = False
        try:
            ref = m(z)
        finally:
            m.fused_cpu = True
    return fused, ref


SMALL = replace(TINY_DECODER_PRESETS["cpu_proof"])


@pytest.mark.parametrize("cfg", [
    SMALL,
    replace(SMALL, act="relu"),
    replace(SMALL, norm="none"),
    replace(SMALL, stage_channels=(24, 16), blocks_per_stage=(1, 2), norm_groups=4, sep_expansion=3),
], ids=["cpu_proof", "relu", "no-norm", "two-stage"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 5, 7)], ids=["8x8", "batch2-5x7"])
def test_fused_path_equals_the_modules(cfg, shape):
    m = _decoder(cfg)
    n, h, w = shape
    z = torch.randn(n, cfg.latent_channels, h, w, generator=torch.Generator().manual_seed(1))
    fused, ref = _both(m, z)
    assert fused.shape == ref.shape == (n, 3, h * m.config.upsample_factor, w * m.config.upsample_factor)
    assert fused.is_contiguous()
    assert ref.abs().max() > 0.1                      # a non-trivial output
    assert (fused - ref).abs().max() <= 2e-6
    with torch.no_grad():
        m.fused_cpu = False
        exact = m.double()(z.double())
    assert (fused.double() - exact).abs().max() <= 2e-6


def test_default_decoder_fused_at_a_real_latent():
    """The paper-size decoder (1.39M params) on a 16x16 latent (128 px)."""
    m = _decoder(TINY_DECODER_PRESETS["snapgen"])
    z = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    fused, ref = _both(m, z)
    assert (fused - ref).abs().max() <= 5e-6


def test_bf16_fused_stays_close_to_fp32():
    m = _decoder(SMALL)
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        m.fused_cpu = False
        ref = m(z)
        m.fused_cpu = True
        out = m.to(torch.bfloat16)(z.bfloat16()).float()
    d = (out - ref).abs()
    assert d.mean() <= 2e-2 and d.max() <= 0.1


def test_phase_kernels_reproduce_nearest_upsampling_then_conv():
    torch.manual_seed(4)
    c = 3
    w = torch.randn(c, 1, 3, 3, dtype=torch.float64)
    x = torch.randn(1, c, 4, 5, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"), w,
                                     padding=1, groups=c)
    ph = torch.nn.functional.conv2d(x, _phase_kernels(w), padding=1, groups=c)     # (1, 4c, 4, 5)
    assert torch.allclose(torch.nn.functional.pixel_shuffle(ph, 2), ref, atol=1e-12)


def test_module_path_where_the_fused_one_does_not_apply():
    m = _decoder(SMALL)
    z = torch.randn(1, 16, 4, 4)
    assert not m.uses_fused_path(z)                   # autograd on: training uses the modules
    with torch.no_grad():
        assert m.uses_fused_path(z)
        m.fused_cpu = False
        assert not m.uses_fused_path(z)
        m.fused_cpu = True
        for cfg in (replace(SMALL, norm="every_block"), replace(SMALL, upsample_mode="bilinear"),
                    replace(SMALL, kernel_size=5)):
            assert not TinyDecoder(cfg).eval().uses_fused_path(z)
        traced = torch.jit.trace(m, z)                # export (Core ML) traces the module path
        assert "addmm" not in str(traced.graph)
        assert torch.allclose(traced(z), m(z), atol=2e-6)


def test_fused_path_under_autocast_and_with_channels_last_weights():
    """The evaluation harness's --dtype bfloat16 (CPU autocast) and --channels-last reach the decoder this way."""
    m = _decoder(SMALL)
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = m(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused = m(z)
            m.fused_cpu = False
            modules = m(z)
            m.fused_cpu = True
        assert fused.dtype == modules.dtype == torch.bfloat16
        d_fused, d_modules = (fused.float() - ref).abs(), (modules.float() - ref).abs()
        assert d_fused.mean() <= 2 * d_modules.mean() + 1e-3 and d_fused.max() <= 0.1 * ref.abs().max()
        cl = m.to(memory_format=torch.channels_last)
        assert (cl(z.to(memory_format=torch.channels_last)) - ref).abs().max() <= 2e-6
