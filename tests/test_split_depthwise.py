"""The split-depthwise implementation of SeparableConv2d (``snapgen.models.layers.set_split_depthwise``): the same
parameters and state dict, the same outputs and gradients to float rounding, training steps of the world preset
that land on the same weights to float rounding, and a real change of path (the switch is not a no-op).

Tolerances, measured here (1 thread): forward outputs of the module agree to ~4e-6 absolute on unit-scale inputs
(the 1x1 conv sums its inputs in another order); parameters after 3 steps of tiny-world (batch 4) differ by at most
1.5e-8 under SGD (lr 0.1) and 6e-6 under AdamW (lr 1e-3: Adam's normalisation magnifies the rounding of tiny
gradients; a step moves a weight by up to 1e-3). It is a speed lever, not a bit-identical one: a run trained with it
is reproducible with it, not with the reference path.
"""
import copy

import pytest
import torch

from snapgen.models.layers import SeparableConv2d, set_split_depthwise
from snapgen.models.unet import SnapGenUNet
from snapgen.presets import PRESETS


@pytest.mark.parametrize("expansion,stride,channels_last", [(2, 1, False), (2, 2, False), (3, 1, True), (2, 2, True)])
def test_module_forward_and_gradients_match(expansion, stride, channels_last):
    torch.manual_seed(0)
    ref = SeparableConv2d(8, 12, stride=stride, expansion=expansion)
    fast = copy.deepcopy(ref)
    set_split_depthwise(fast)
    x = torch.randn(2, 8, 10, 10)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        ref, fast = ref.to(memory_format=torch.channels_last), fast.to(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), fast(xb)
    assert ya.shape == yb.shape == (2, 12, 10 // stride, 10 // stride)
    torch.testing.assert_close(yb, ya, rtol=0, atol=1e-5)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=1e-5)
    for (name, pa), pb in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-5, atol=1e-5, msg=name)
    assert fast.state_dict().keys() == ref.state_dict().keys()


def test_switch_changes_the_path_and_back(monkeypatch):
    m = SeparableConv2d(4, 4, expansion=2)
    calls = []
    orig = SeparableConv2d._forward_split
    monkeypatch.setattr(SeparableConv2d, "_forward_split", lambda self, x: calls.append(1) or orig(self, x))
    x = torch.randn(1, 4, 6, 6)
    m(x)
    assert calls == []
    assert set_split_depthwise(m) == 1
    m(x)
    assert calls == [1]
    set_split_depthwise(m, False)
    m(x)
    assert calls == [1]
    # no channel multiplier (expansion 1, or the inverted-bottleneck reading): nothing to split
    assert set_split_depthwise(SeparableConv2d(4, 4, expansion=1)) == 0
    assert set_split_depthwise(SeparableConv2d(4, 4, expansion=2, expand_at="pointwise")) == 0


@pytest.mark.parametrize("optimizer,atol", [("sgd", 1e-7), ("adamw", 2e-5)])
def test_world_preset_training_steps_agree(optimizer, atol):
    torch.manual_seed(0)
    base = SnapGenUNet(PRESETS["tiny-world"])
    n = set_split_depthwise(copy.deepcopy(base))
    assert n > 0                                    # the world preset (SnapGen's final config) has multiplier convs
    x, t = torch.randn(4, 3, 32, 32), torch.rand(4)
    ctx, pooled = torch.randn(4, 16, 384), torch.randn(4, 384)
    out = {}
    for split in (False, True):
        m = copy.deepcopy(base)
        set_split_depthwise(m, split)
        opt = torch.optim.SGD(m.parameters(), 0.1) if optimizer == "sgd" else torch.optim.AdamW(m.parameters(), 1e-3)
        for _ in range(3):
            (m(x, t, ctx, pooled) - x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        out[split] = m
    for (name, a), b in zip(out[False].named_parameters(), out[True].parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_with_freezing_matches_module_path(channels_last):
    """inductor's freezing (CPU inference: conv weights prepacked as constants) computed wrong outputs from the
    split path's strided filter slices (max error 0.64 on outputs of max 1.56 before the slices were made
    contiguous); the compiled split path must match the eager module path to float rounding."""
    torch.manual_seed(0)
    m = SeparableConv2d(16, 16, expansion=2).eval()
    x = torch.randn(1, 16, 12, 12)
    if channels_last:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    import torch._inductor.config as inductor_config
    with torch.inference_mode():
        ref = m(x)
        set_split_depthwise(m)
        torch._dynamo.reset()
        with inductor_config.patch(freezing=True):
            out = torch.compile(m)(x)
        torch._dynamo.reset()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
