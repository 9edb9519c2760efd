"""The SnapGen U-Net family: every registered variant in tiny form, presets at full size, persistence."""
import json

import pytest
import torch
from torch import nn

from ablations.models import build_model, example_inputs, tiny_config
from ablations.registry import Registry, RegistryError, Variant
from ablations.variants import PRESETS, REGISTRY
from snapgen.config import UNetConfig
from snapgen.cost import count_flops, count_params, summarize_times, time_fn
from snapgen.models.layers import Attention, apply_rope, rope_2d
from snapgen.models.unet import SnapGenUNet

SNAPGEN_VARIANTS = [v for v in REGISTRY if v.family == "snapgen"]


@pytest.mark.parametrize("variant", SNAPGEN_VARIANTS, ids=lambda v: v.name)
def test_tiny_variant_forward_backward(variant):
    torch.manual_seed(0)
    cfg = tiny_config(variant.config)
    model = SnapGenUNet(cfg)
    for p in model.parameters():  # break the zero-init so gradients reach every layer
        nn.init.normal_(p, std=0.02) if p.dim() > 1 else None
    args, kwargs = example_inputs(variant, latent=16, batch=2, config=cfg)
    out = model(*args, **kwargs)
    assert out.shape == args[0].shape
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() > 0 for g in grads) > 0.9 * len(grads)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_parameter_counts_within_1_percent(preset):
    name, target = PRESETS[preset]
    params = count_params(build_model(REGISTRY.get(name), "meta"))
    assert abs(params / target - 1) < 0.01, f"{preset}: {params:,} vs paper {target:,.0f}"


def test_sdxl_reference_params_and_flops():
    v = REGISTRY.get("sdxl-unet")
    model = build_model(v, "meta")
    assert count_params(model) == 2_567_463_684
    args, kwargs = example_inputs(v, device="meta")
    assert count_flops(model, *args, **kwargs).total / 1e12 == pytest.approx(6.761, abs=0.001)


def test_paper_steps_change_what_they_say():
    t = {v.name: v for v in REGISTRY}
    assert t["t2i-s1-no-hires-sa"].config.attention[1] == "cross"
    assert t["t2i-s2-sepconv"].config.conv == "separable"
    assert t["t2i-s5-mqa"].config.kv_heads == 1
    assert t["snapgen-t2i"].config.qk_norm and t["snapgen-t2i"].config.rope
    assert [v.name for v in REGISTRY.lineage("snapgen-in256")][:2] == ["in256-sdxl-topology", "in256-baseline"]
    costs = {n: count_params(build_model(t[n], "meta")) for n in ("t2i-s1-no-hires-sa", "t2i-s2-sepconv", "t2i-s5-mqa")}
    assert costs["t2i-s2-sepconv"] < costs["t2i-s1-no-hires-sa"]  # separable convs are cheaper
    assert costs["t2i-s5-mqa"] < costs["t2i-s2-sepconv"]


# --- FLOP counter against hand formulas ------------------------------------------------------------
def test_flops_conv_linear_attention_hand_formulas():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    assert count_flops(conv, torch.empty(2, 8, 10, 12)).total == 2 * 2 * 16 * 10 * 12 * 8 * 9
    lin = nn.Linear(32, 64)
    assert count_flops(lin, torch.empty(3, 5, 32)).total == 2 * 3 * 5 * 32 * 64
    attn = Attention(dim=64, context_dim=None, head_dim=16, kv_heads=None, qk_norm=False, rope=False)
    n, length, d = 2, 10, 64
    proj = 4 * 2 * n * length * d * d                # q, k, v, out projections
    scores = 2 * 2 * n * length * length * d          # QK^T and AV over all heads
    assert count_flops(attn, torch.empty(n, length, d)).total == proj + scores
    mqa = Attention(dim=64, context_dim=None, head_dim=16, kv_heads=1, qk_norm=False, rope=False)
    assert count_flops(mqa, torch.empty(n, length, d)).total == 2 * 2 * n * length * d * d + 2 * 2 * n * length * d * 16 + scores


def test_flop_breakdown_is_keyed_by_block_names():
    cfg = tiny_config(REGISTRY.get("snapgen-t2i").config)
    args, kwargs = example_inputs(REGISTRY.get("snapgen-t2i"), latent=16, config=cfg)
    report = count_flops(SnapGenUNet(cfg), *args, **kwargs)
    assert "SnapGenUNet.enc.16x16_block0" in report.per_module
    assert "SnapGenUNet.mid.4x4_attn" in report.per_module
    assert sum(report.children_of("SnapGenUNet").values()) <= report.total


# --- attention details -----------------------------------------------------------------------------
def test_multi_query_projects_one_kv_head():
    a = Attention(dim=64, context_dim=None, head_dim=16, kv_heads=1, qk_norm=True, rope=True)
    assert a.to_k.out_features == 16 and a.to_v.out_features == 16 and a.heads == 4
    assert a(torch.randn(2, 16, 64), None, (4, 4)).shape == (2, 16, 64)


def test_rope_preserves_norm_and_encodes_relative_position():
    cos, sin = rope_2d(4, 4, 16, 10000.0, "cpu", torch.float32)
    q = torch.randn(1, 1, 16, 16)
    assert torch.allclose(apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    # the score between positions depends only on their offset: shift both by one column
    v1, v2 = torch.randn(16), torch.randn(16)
    x = torch.stack([v1, v2] + [torch.zeros(16)] * 14)[None, None]
    y = torch.stack([torch.zeros(16), v1, v2] + [torch.zeros(16)] * 13)[None, None]
    rx, ry = apply_rope(x, cos, sin)[0, 0], apply_rope(y, cos, sin)[0, 0]
    assert torch.allclose(rx[0] @ rx[1], ry[1] @ ry[2], atol=1e-4)


# --- registry -------------------------------------------------------------------------------------------
def test_registry_errors():
    r = Registry()
    r.register(Variant("base", None, UNetConfig(), "root"))
    with pytest.raises(RegistryError, match="already registered"):
        r.register(Variant("base", None, UNetConfig(), "root"))
    with pytest.raises(RegistryError, match="did you mean base"):
        r.get("bass")
    with pytest.raises(RegistryError, match="unknown parent"):
        r.derive("nope", "child", "x", ffn_ratio=3.0)
    with pytest.raises(TypeError):
        r.derive("base", "child", "x", not_a_field=1)
    with pytest.raises(RegistryError, match="snapgen-t2i"):
        REGISTRY.get("snapgen_t2i")


def test_config_validation_and_json_round_trip():
    cfg = REGISTRY.get("snapgen-t2i").config
    assert UNetConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="depth"):
        UNetConfig().replace(depth=(0, 2))
    with pytest.raises(ValueError, match="none"):
        UNetConfig().replace(attention=("none", "cross", "self_cross"), depth=(1, 2, 4))
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        UNetConfig.from_dict({**cfg.to_dict(), "chanels": [1]})


# --- persistence and determinism ------------------------------------------------------------------------
def _tiny_model(name="snapgen-t2i", seed=0):
    torch.manual_seed(seed)
    cfg = tiny_config(REGISTRY.get(name).config)
    m = SnapGenUNet(cfg).eval()
    for p in m.parameters():
        nn.init.normal_(p, std=0.05)
    return m


def test_save_load_exact_round_trip(tmp_path):
    for name in ("snapgen-t2i", "snapgen-in256"):
        m = _tiny_model(name)
        m.save_pretrained(tmp_path / name)
        assert (tmp_path / name / "config.json").exists()
        m2 = SnapGenUNet.from_pretrained(tmp_path / name)
        args, kwargs = example_inputs(REGISTRY.get(name), latent=16, config=m.config)
        with torch.no_grad():
            assert torch.equal(m(*args, **kwargs), m2(*args, **kwargs))


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SnapGenUNet.from_pretrained(tmp_path / "missing")
    m = _tiny_model()
    m.save_pretrained(tmp_path / "ck")
    other = tiny_config(REGISTRY.get("t2i-s5-mqa").config)
    with pytest.raises(ValueError, match="another variant"):
        SnapGenUNet.from_pretrained(tmp_path / "ck", expected=other)
    w = tmp_path / "ck" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupted"):
        SnapGenUNet.from_pretrained(tmp_path / "ck")


def test_eval_mode_is_deterministic():
    m = _tiny_model()
    args, kwargs = example_inputs(REGISTRY.get("snapgen-t2i"), latent=16, config=m.config)
    with torch.no_grad():
        assert torch.equal(m(*args, **kwargs), m(*args, **kwargs))


def test_latency_statistics_on_a_fake_timer():
    ticks = iter([0.0, 0.010, 1.0, 1.030, 2.0, 2.020, 3.0, 3.040, 4.0, 4.100])
    calls = []
    stats = time_fn(lambda: calls.append(1), warmup=2, repeats=5, timer=lambda: next(ticks))
    assert len(calls) == 7 and stats.n == 5 and stats.warmup == 2
    assert stats.median_ms == pytest.approx(30.0) and stats.min_ms == pytest.approx(10.0)
    assert stats.p90_ms == pytest.approx(40.0 + 0.6 * 60.0)
    with pytest.raises(ValueError):
        summarize_times([], 0)


def test_space_to_depth_stem_is_a_lossless_patchify(tmp_path):
    """patch_size 2: the same (C, H, W) in and out, the levels at half the side (block names say so), the stem a
    pixel-unshuffle (a fixed permutation of the input: a conv over the unshuffled input sees every pixel once),
    FLOPs about a quarter; the field is written only when set, so existing configs keep their hash."""
    from snapgen.presets import PRESETS as NAMED

    base, p2 = NAMED["tiny-world"], NAMED["tiny-world-p2"]
    assert "patch_size" not in base.to_dict() and p2.to_dict()["patch_size"] == 2
    assert UNetConfig.from_dict(p2.to_dict()) == p2
    with pytest.raises(ValueError, match="patch_size=3: expected a divisor of sample_size=32"):
        UNetConfig(**{**p2.__dict__, "patch_size": 3})
    torch.manual_seed(0)
    m = SnapGenUNet(p2)
    for p in m.parameters():
        nn.init.normal_(p, std=0.02) if p.dim() > 1 else None
    assert {k.split("_")[0] for k in m.enc} == {"16x16", "8x8", "4x4"}
    assert m.conv_in.in_channels == 12 and m.conv_out.out_channels == 12
    # the same blocks: only the stem's and the output conv's extra 9 channels differ (3x3 kernels, 32 wide)
    assert count_params(m) - count_params(SnapGenUNet(base)) == 9 * 32 * 9 + 9 * (32 * 9 + 1)
    x, t, ctx, pooled = torch.randn(2, 3, 32, 32), torch.rand(2), torch.randn(2, 16, 384), torch.randn(2, 384)
    out = m(x, t, ctx, pooled)
    assert out.shape == x.shape
    # the output is the pixel-shuffle of conv_out's map: each 2x2 pixel block comes from one position of it
    h = {}
    m.conv_out.register_forward_hook(lambda mod, i, o: h.setdefault("o", o))
    m(x, t, ctx, pooled)
    assert torch.equal(out[:, :, 0::2, 0::2], h["o"][:, 0::4]) and torch.equal(out[:, 0, 1::2, 1::2], h["o"][:, 3])
    ratio = count_flops(SnapGenUNet(base), x[:1], t[:1], ctx[:1], pooled[:1]).total / \
        count_flops(m, x[:1], t[:1], ctx[:1], pooled[:1]).total
    assert 3.5 < ratio < 4.0
    m.save_pretrained(tmp_path / "u")
    back = SnapGenUNet.from_pretrained(tmp_path / "u")
    assert back.config.patch_size == 2 and torch.equal(back(x, t, ctx, pooled), out)
