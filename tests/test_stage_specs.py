"""Typed per-stage specs (StageSpec) and the open readings they make expressible: step 6 add/replace, the
pooled-text route, where the separable expansion happens; old flat configs keep loading (and hashing) as before;
multi-query attention shares K/V without copies."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ablations.models import build_model, example_inputs, tiny_config
from ablations.variants import REGISTRY
from snapgen.config import StageSpec, UNetConfig
from snapgen.cost import count_params
from snapgen.models.layers import Attention, ResBlock, SeparableConv2d, SkipMerge, TransformerBlock, apply_rope, rope_2d
from snapgen.models.unet import SnapGenUNet

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "snapgen/weights/world-tiny/pipeline/unet/config.json"
# t2i-s5-mqa as written by the first config format (results/architecture/t2i-s5-mqa.json, hash b0802c5ab605)
FLAT_S5 = {"attention": ["none", "cross", "self_cross"], "channels": [256, 512, 896], "class_tokens": 1, "cond": "text",
           "context_dim": 2048, "conv": "separable", "cross_kv_heads": 1, "depth": [0, 2, 4], "dropout": 0.0,
           "emb_mult": 4, "ffn_ratio": 3.0, "head_dim": 128, "in_channels": 16, "kv_heads": 1, "mid_block": True,
           "norm_groups": 32, "num_classes": 1000, "out_channels": 16, "pooled_dim": 2048, "qk_norm": False,
           "res_blocks": [2, 2, 2], "rope": False, "sample_size": 128, "sep_expansion": 2}


# --- old (flat) configs ------------------------------------------------------------------------------------
def test_old_flat_config_loads_to_typed_stages_and_keeps_its_json_and_hash():
    cfg = UNetConfig.from_dict(FLAT_S5)
    assert cfg.stages == (StageSpec(256, 2, 0, "none"), StageSpec(512, 2, 2, "cross"), StageSpec(896, 2, 4, "self_cross"))
    assert cfg.to_dict() == FLAT_S5 and cfg.hash == "b0802c5ab605"
    assert cfg == REGISTRY.get("t2i-s5-mqa").config
    assert (cfg.channels, cfg.depth, cfg.attention) == ((256, 512, 896), (0, 2, 4), ("none", "cross", "self_cross"))


def test_shipped_checkpoint_config_loads_with_its_recorded_hash():
    raw = json.loads(SHIPPED_CONFIG.read_text())
    cfg = UNetConfig.from_dict(raw)
    assert cfg.hash == raw["config_hash"]
    assert cfg.to_dict() == {k: v for k, v in raw.items() if k not in ("_class_name", "config_hash", "_diffusers_version")}
    assert cfg.stages[0] == StageSpec(32, 1, 1, "cross", "add")


def test_new_fields_are_written_only_when_they_differ_from_the_default():
    base = UNetConfig()
    assert not {"attn_block", "pooled_route", "sep_expansion_at", "stages"} & set(base.to_dict())
    changed = base.replace(pooled_route="none", sep_expansion_at="pointwise").replace_stage(1, attn_block="replace")
    d = changed.to_dict()
    assert d["pooled_route"] == "none" and d["sep_expansion_at"] == "pointwise"
    assert d["attn_block"] == ["add", "replace", "add"]
    assert UNetConfig.from_dict(json.loads(changed.to_json())) == changed and changed.hash != base.hash
    assert UNetConfig.from_dict({"stages": [{"width": 8, "depth": 1, "attention": "cross"}]}).stages == (
        StageSpec(8, 2, 1, "cross"),)


# --- validation and column-wise replace -------------------------------------------------------------------
def test_stage_spec_and_config_validation():
    with pytest.raises(ValueError, match="none"):
        StageSpec(64, 2, 1, "none")
    with pytest.raises(ValueError, match="expected one of"):
        StageSpec(64, 2, 1, "global")
    with pytest.raises(ValueError, match="replace"):
        StageSpec(64, 2, 0, "none", "replace")
    with pytest.raises(ValueError, match="depth has 2 entries"):
        UNetConfig().replace(depth=(0, 2))
    with pytest.raises(ValueError, match="pooled_route"):
        UNetConfig(pooled_route="adaln")
    with pytest.raises(ValueError, match="sep_expansion_at"):
        UNetConfig(sep_expansion_at="both")
    with pytest.raises(ValueError, match="not both"):
        UNetConfig.from_dict({**FLAT_S5, "stages": []})
    with pytest.raises(ValueError, match="attn_block has 3 entries"):
        UNetConfig().replace_stage(1, depth=1, attention="cross", attn_block="replace").replace(
            channels=(8, 16), res_blocks=(1, 1), depth=(1, 1), attention=("cross", "cross"))


def test_replace_rewrites_stages_column_wise():
    cfg = UNetConfig().replace(channels=(32, 64), res_blocks=(1, 1), depth=(1, 1), attention=("cross", "self_cross"))
    assert cfg.stages == (StageSpec(32, 1, 1, "cross"), StageSpec(64, 1, 1, "self_cross"))
    assert cfg.replace(channels=(16, 32)).stages[1] == StageSpec(32, 1, 1, "self_cross")
    assert cfg.replace_stage(0, attn_block="replace").columns()["attn_block"] == ("replace", "add")


# --- step 6: both readings -----------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["t2i", "in256"])
def test_step6_both_readings_are_registered_with_their_parameter_counts(prefix):
    add, rep = REGISTRY.get(f"{prefix}-s6-first-stage-ca"), REGISTRY.get(f"{prefix}-s6-first-stage-ca-replace")
    assert add.parent == rep.parent == f"{prefix}-s5-mqa"
    assert add.config.stages[0] == StageSpec(256, 2, 1, "cross", "add")
    assert rep.config.stages[0] == StageSpec(256, 2, 1, "cross", "replace")
    assert rep.config.stages[1:] == add.config.stages[1:]
    n_add, n_rep = count_params(build_model(add, "meta")), count_params(build_model(rep, "meta"))
    assert n_add == {"t2i": 382_115_088, "in256": 370_818_320}[prefix]  # the committed architecture records
    assert n_rep == {"t2i": 378_886_672, "in256": 367_589_904}[prefix]


def test_replace_reading_builds_transformer_only_units_at_the_first_stage():
    cfg = tiny_config(REGISTRY.get("t2i-s6-first-stage-ca-replace").config)
    model = SnapGenUNet(cfg)
    r0 = cfg.sample_size
    first = {f"{p}.{k}": u for p in ("enc", "dec") for k, u in getattr(model, p).items() if k.startswith(f"{r0}x{r0}_block")}
    assert len(first) == 2 * cfg.stages[0].res_blocks + 1
    for name, unit in first.items():
        assert isinstance(unit.attn, TransformerBlock) and not isinstance(unit.res, ResBlock), name
    assert model.enc[f"{r0}x{r0}_block0"].res is None                          # same width in: nothing to merge
    assert isinstance(model.dec[f"{r0}x{r0}_block0"].res, SkipMerge)            # concatenated skip -> stage width
    r1 = r0 // 2
    assert isinstance(model.enc[f"{r1}x{r1}_block0"].res, ResBlock)              # other stages keep "add"


def test_diff_of_the_two_readings_names_attn_block():
    from ablations.registry import config_diff

    add, rep = (REGISTRY.get(f"t2i-s6-first-stage-ca{s}").config for s in ("", "-replace"))
    assert config_diff(add, rep) == {"attn_block": (["add", "add", "add"], ["replace", "add", "add"])}
    assert {"attn_block", "pooled_route", "sep_expansion_at"} <= set(add.to_dict(sparse=False))


def test_ablations_ls_shows_both_readings(capsys):
    from ablations.__main__ import main

    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "t2i-s6-first-stage-ca " in out and "t2i-s6-first-stage-ca-replace" in out
    assert "in256-s6-first-stage-ca-replace" in out


# --- pooled-text route and separable expansion ----------------------------------------------------------
def _tiny(**changes) -> tuple[SnapGenUNet, tuple, dict]:
    torch.manual_seed(0)
    v = REGISTRY.get("snapgen-t2i")
    cfg = tiny_config(v.config).replace(**changes)
    model = SnapGenUNet(cfg).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    args, kwargs = example_inputs(v, latent=8, batch=2, config=cfg)
    kwargs["context"] = kwargs["context"][:, :5]
    return model, args, kwargs


def test_pooled_routes():
    m_time, args, kw = _tiny()
    m_none, _, _ = _tiny(pooled_route="none")
    m_tok, _, _ = _tiny(pooled_route="context_token")
    c = m_time.config
    assert count_params(m_time) - count_params(m_none) == c.pooled_dim * c.emb_mult * c.channels[0] + 2 * c.emb_mult * c.channels[0] \
        + (c.emb_mult * c.channels[0]) ** 2
    assert count_params(m_tok) - count_params(m_none) == (c.pooled_dim + 1) * c.context_dim
    with torch.no_grad():
        out_none = m_none(*args, context=kw["context"])                      # pooled not needed
        assert torch.equal(out_none, m_none(*args, **kw))                    # and ignored when given
        other = {**kw, "pooled": torch.randn_like(kw["pooled"])}
        assert not torch.allclose(m_tok(*args, **kw), m_tok(*args, **other))  # the pooled token is attended to
    with pytest.raises(ValueError, match="pooled"):
        m_tok(*args, context=kw["context"])


def test_separable_expansion_placement():
    dw = SeparableConv2d(8, 12, expansion=2, expand_at="depthwise")
    pw = SeparableConv2d(8, 12, expansion=2, expand_at="pointwise")
    assert (dw.depthwise.out_channels, dw.expand, dw.pointwise.in_channels) == (16, None, 16)
    assert (pw.depthwise.out_channels, pw.expand.out_channels, pw.pointwise.in_channels) == (8, 16, 16)
    assert count_params(dw) == 16 * 9 + 16 + 16 * 12 + 12
    assert count_params(pw) == 8 * 9 + 8 + 8 * 16 + 16 + 16 * 12 + 12
    x = torch.randn(2, 8, 6, 6)
    assert dw(x).shape == pw(x).shape == (2, 12, 6, 6)
    model, args, kw = _tiny(sep_expansion_at="pointwise")
    out = model(*args, **kw)
    assert out.shape == args[0].shape
    assert all(m.expand is not None for m in model.modules() if isinstance(m, SeparableConv2d))


# --- multi-query attention without K/V copies -------------------------------------------------------------
def _copied_kv_attention(a: Attention, x, context=None, hw=None):
    """The pre-enable_gqa path: K/V expanded to one copy per query head, then plain SDPA."""
    n, length, _ = x.shape
    src = x if context is None else context
    q = a.to_q(x).view(n, length, a.heads, a.head_dim).transpose(1, 2)
    k = a.to_k(src).view(n, src.shape[1], a.kv_heads, a.head_dim).transpose(1, 2)
    v = a.to_v(src).view(n, src.shape[1], a.kv_heads, a.head_dim).transpose(1, 2)
    q, k = a.q_norm(q), a.k_norm(k)
    if a.rope and context is None:
        cos, sin = rope_2d(hw[0], hw[1], a.head_dim, a.rope_theta, x.device, q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    rep = a.heads // a.kv_heads
    k = k[:, :, None].expand(-1, -1, rep, -1, -1).reshape(n, a.heads, -1, a.head_dim)
    v = v[:, :, None].expand(-1, -1, rep, -1, -1).reshape(n, a.heads, -1, a.head_dim)
    out = F.scaled_dot_product_attention(q, k, v)
    return a.to_out(out.transpose(1, 2).reshape(n, length, -1))


@pytest.mark.parametrize("kv_heads,cross", [(1, False), (1, True), (2, False), (None, False)])
def test_shared_kv_attention_equals_the_copied_path(kv_heads, cross):
    """Tolerance atol 1e-6 / rtol 1e-5 (fp32; SDPA may pick another CPU kernel for grouped heads)."""
    torch.manual_seed(0)
    a = Attention(64, 24 if cross else None, 16, kv_heads, qk_norm=True, rope=not cross).eval()
    x, ctx = torch.randn(2, 6 * 4, 64), torch.randn(2, 7, 24)
    with torch.no_grad():
        got = a(x, ctx if cross else None, (6, 4))
        ref = _copied_kv_attention(a, x, ctx if cross else None, (6, 4))
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_shared_kv_attention_makes_no_per_head_copy(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.shape[1], k.shape[1], v.shape[1], kw.get("enable_gqa")))
        return real(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    Attention(64, None, 16, 1, qk_norm=False, rope=False)(torch.randn(1, 9, 64))
    assert seen == [(4, 1, 1, True)]
