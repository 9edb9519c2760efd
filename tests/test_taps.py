"""One feature-tap mechanism (snapgen.models.taps): named block outputs during one call, hooks gone afterwards."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ablations.models import example_inputs, tiny_config
from ablations.variants import REGISTRY
from snapgen.models.taps import tap
from snapgen.models.unet import SnapGenUNet


def _model(name="snapgen-t2i", **changes):
    torch.manual_seed(0)
    v = REGISTRY.get(name)
    cfg = tiny_config(v.config).replace(**changes)
    model = SnapGenUNet(cfg).eval()
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    return model, *example_inputs(v, latent=16, batch=2, config=cfg)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("mid_block", [True, False])
def test_last_tap_is_the_feature_map_after_the_mid_block(mid_block):
    model, args, kwargs = _model(mid_block=mid_block)
    with torch.no_grad(), tap(model.tap_points(), ("last", "enc.16x16_block0")) as feats:
        out = model(*args, **kwargs)
    with torch.no_grad():                                        # the forward pass by hand, up to the mid block
        emb, context = model.embed(args[1], kwargs["pooled"], None, kwargs["context"])
        h = model.conv_in(args[0])
        for block in list(model.enc.values()) + list(model.mid.values()):
            h = block(h, emb, context)
        assert torch.equal(out, model(*args, **kwargs))          # taps do not change the output
    assert torch.equal(feats["last"], h) and feats["last"].shape[-1] == 16 // 4
    assert feats["enc.16x16_block0"].shape == (2, model.config.channels[0], 16, 16)
    assert _hooks(model) == 0


def test_tap_points_are_named_by_block_keys_in_forward_order():
    model, _, _ = _model()
    names = list(model.tap_points())
    assert names[0] == "enc.16x16_block0" and names[-1] == "last"
    assert names.index("mid.4x4_res1") < names.index("dec.4x4_block0")
    assert set(names[:-1]) == {f"{p}.{k}" for p in ("enc", "mid", "dec") for k in getattr(model, p)}


def test_unknown_tap_and_exceptions_leave_no_hooks():
    model, args, kwargs = _model()
    with pytest.raises(KeyError, match="did you mean enc.16x16_block0"):
        with tap(model.tap_points(), ("enc.16x16_blok0",)):
            pass
    with pytest.raises(RuntimeError):
        with tap(model.tap_points(), ("last",)):
            raise RuntimeError("inside")
    assert _hooks(model) == 0


def test_gradients_flow_through_tapped_features():
    model, args, kwargs = _model()
    with tap(model.tap_points(), ("last",)) as feats:
        model(*args, **kwargs)
    feats["last"].square().mean().backward()
    assert model.conv_in.weight.grad is not None and model.conv_in.weight.grad.abs().sum() > 0
    assert model.conv_out.weight.grad is None                   # after the tap: untouched by this loss
