"""Why the Core ML export swaps attention: coremltools (9.0) ignores SDPA's ``enable_gqa``, so grouped K/V
heads fail to convert; the export's explicit kernels (``rewrite_for_export``) convert and keep the maths."""
from __future__ import annotations

import pytest
import torch

from snapgen.models.layers import Attention

ct = pytest.importorskip("coremltools")


def _convert(module, x):
    traced = torch.jit.trace(module.eval(), (x,))
    return ct.convert(traced, inputs=[ct.TensorType(name="x", shape=x.shape)], convert_to="mlprogram",
                      minimum_deployment_target=ct.target.iOS17, compute_precision=ct.precision.FLOAT32)


def test_grouped_attention_converts_only_through_the_export_rewrite():
    from snapgen.export.coreml import ExportAttention

    torch.manual_seed(0)
    attn, x = Attention(64, None, 16, kv_heads=2, qk_norm=False, rope=False).eval(), torch.randn(1, 16, 64)
    with pytest.raises(Exception, match="(?i)incompatible|shape"):
        _convert(attn, x)                                       # enable_gqa is not read by the converter
    for kernel in ("matmul", "sdpa"):
        export = ExportAttention(attn, [], kernel)
        with torch.no_grad():
            torch.testing.assert_close(export(x), attn(x), atol=2e-5, rtol=1e-4)
        assert _convert(export, x) is not None
