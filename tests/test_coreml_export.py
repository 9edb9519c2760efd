"""Core ML export on Linux: the attention rewrite keeps the maths, packages are written with the expected
ops and weights, compression changes the weights, parity is skipped with a reason off macOS; the export is
recorded by the caller (``evals.latency``) in the one envelope."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from ablations.models import tiny_config
from ablations.variants import REGISTRY
from evals.latency import export as export_cli
from evals.latency.records import export_path, write_export
from snapgen.export import coreml as X
from snapgen.models import layers as L
from snapgen.models.decoder import tiny_decoder
from snapgen.models.unet import SnapGenUNet
from snapgen.records import read_record

pytest.importorskip("coremltools")
LINUX = platform.system() != "Darwin"


def _small_config(depth_like_paper: bool = False):
    cfg = tiny_config(REGISTRY.get("snapgen-t2i").config)
    if not depth_like_paper:  # 2 stages, 1 block each: every block kind, a fraction of the ops (fast conversion)
        cfg = cfg.replace(channels=(32, 64), res_blocks=(1, 1), depth=(1, 1), attention=("cross", "self_cross"),
                          mid_block=False)
    return cfg


def _small_unet(depth_like_paper: bool = False) -> SnapGenUNet:
    torch.manual_seed(0)
    unet = SnapGenUNet(_small_config(depth_like_paper)).eval()
    X.reinit_zero_weights(unet)
    return unet


@pytest.mark.parametrize("kernel", ["matmul", "sdpa"])
@pytest.mark.parametrize("kv_heads,rope,cross", [(1, True, False), (None, True, False), (1, False, True), (2, False, False)])
def test_export_attention_matches_original(kernel, kv_heads, rope, cross):
    torch.manual_seed(0)
    attn = L.Attention(64, 24 if cross else None, 16, kv_heads, qk_norm=True, rope=rope).eval()
    x, ctx = torch.randn(2, 6 * 4, 64), torch.randn(2, 5, 24)
    with torch.no_grad():
        ref = attn(x, ctx if cross else None, (6, 4))
        got = X.ExportAttention(attn, [(6, 4)], kernel)(x, ctx if cross else None, (6, 4))
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_export_attention_rejects_unprepared_size():
    attn = L.Attention(32, None, 16, 1, qk_norm=False, rope=True)
    with pytest.raises(ValueError, match="no RoPE table"):
        X.ExportAttention(attn, [(4, 4)])(torch.randn(1, 9, 32), None, (3, 3))


def test_rewrite_replaces_every_attention_and_keeps_output():
    unet = _small_unet()
    n_attn = sum(isinstance(m, L.Attention) for m in unet.modules())
    inputs = X.unet_inputs(unet.config, X.ExportSettings(resolution=64, context_tokens=7))
    wrapper = X.UNetForExport(unet)
    with torch.no_grad():
        ref = wrapper(*inputs.values())
        assert X.rewrite_for_export(unet, latent=8) == n_attn > 0
        got = wrapper(*inputs.values())
    assert not any(isinstance(m, L.Attention) and not isinstance(p, X.ExportAttention)
                   for p in unet.modules() for m in p.children())
    assert ref.abs().max() > 0  # zero-init output layers were re-randomised
    assert X.psnr_db(ref.numpy(), got.numpy()) > 100


def test_reinit_zero_weights_makes_fresh_unet_output_nonzero():
    torch.manual_seed(0)
    unet = SnapGenUNet(_small_config()).eval()
    inputs = X.unet_inputs(unet.config, X.ExportSettings(resolution=64, context_tokens=4))
    with torch.no_grad():
        assert X.UNetForExport(unet)(*inputs.values()).abs().max() == 0
        assert X.reinit_zero_weights(unet, seed=1) > 0
        assert X.UNetForExport(unet)(*inputs.values()).abs().max() > 0


def test_psnr():
    ref = np.linspace(-1, 1, 1000)
    assert X.psnr_db(ref, ref) == 200.0
    noisy = ref + 0.01  # rmse 0.01, peak 1 -> 40 dB
    assert X.psnr_db(ref, noisy) == pytest.approx(40.0, abs=0.01)


def _check_package(rec: dict, expect_ops: set[str]):
    pkg = Path(rec["package"])
    assert pkg.is_dir() and (pkg / X.WEIGHT_FILE).exists() and (pkg / "Manifest.json").exists()
    assert rec["weight_bytes"] > 0 and rec["package_bytes"] >= rec["weight_bytes"]
    assert expect_ops <= set(rec["op_counts"]), set(rec["op_counts"])
    assert rec["n_ops"] == sum(rec["op_counts"].values())
    assert rec["minimum_deployment_target"] == "iOS17" and rec["format"] == "mlprogram"
    if LINUX:
        assert rec["parity"]["status"] == "skipped" and "macOS" in rec["parity"]["reason"]
    else:
        assert rec["parity"]["status"] == "pass", rec["parity"]


def test_export_small_unet(tmp_path):
    unet = _small_unet()
    n_attn = sum(isinstance(m, L.Attention) for m in unet.modules())  # 3 cross (stage 0) + 3 x (self + cross)
    s = X.ExportSettings(resolution=64, context_tokens=6)
    rec = X.export_unet(unet, "small", tmp_path / "pkg", s, "random")
    _check_package(rec, {"conv", "matmul", "softmax", "linear", "layer_norm", "upsample_nearest_neighbor"})
    assert "outer" not in rec["op_counts"]  # RoPE tables are constants
    assert rec["attention_rewrites"] == n_attn == 9 and rec["rewrite_psnr_db"] > 100
    assert rec["inputs"]["latent"]["shape"] == [1, 16, 8, 8] and rec["inputs"]["context"]["shape"] == [1, 6, 32]
    assert rec["outputs"]["velocity"]["shape"] == [1, 16, 8, 8] and rec["outputs"]["velocity"]["dtype"] == "FLOAT16"
    # fp16 weights: about 2 bytes per parameter
    assert 1.5 * rec["params"] < rec["weight_bytes"] < 2.6 * rec["params"]
    assert not [f for f in tmp_path.rglob("*.json") if ".mlpackage" not in str(f)]  # the export writes no record
    path = write_export(rec, tmp_path / "rec")  # the caller records it (kind "export", the package's stem)
    assert path == tmp_path / "rec" / "unet_small_64px_b1_float16.json" == export_path(read_record(path), tmp_path / "rec")
    saved = read_record(path)
    assert saved["kind"] == "export" and saved["name"] == "small"
    assert saved["protocol"]["component"] == "unet" and saved["protocol"]["latent"] == 8
    assert saved["scores"]["n_ops"]["value"] == rec["n_ops"] and saved["scores"]["weight_bytes"]["value"] == rec["weight_bytes"]
    assert saved["details"]["op_counts"] == rec["op_counts"] and saved["details"]["parity"]["status"] == rec["parity"]["status"]


@pytest.mark.slow
def test_export_tiny_config_unet_full_topology(tmp_path):  # ~40 s: every stage and block of SnapGen at tiny widths
    unet = _small_unet(depth_like_paper=True)
    rec = X.export_unet(unet, "tiny", tmp_path, X.ExportSettings(resolution=128, context_tokens=8), "random")
    _check_package(rec, {"conv", "matmul", "softmax", "linear", "layer_norm", "gelu"})
    assert rec["attention_rewrites"] == sum(isinstance(m, X.ExportAttention) for m in unet.modules()) == 63


def test_export_decoder_and_compression(tmp_path):
    def export(compression, **changes):
        torch.manual_seed(0)
        dec = tiny_decoder("snapgen", "cpu", **changes)
        X.reinit_zero_weights(dec)
        s = X.ExportSettings(resolution=64, compression=compression, palettize_mode="uniform")
        return X.export_decoder(dec, f"tiny{len(changes)}", tmp_path, s, "random")

    full = export("none")
    _check_package(full, {"conv", "upsample_nearest_neighbor", "silu"})
    assert full["inputs"]["latent"]["shape"] == [1, 16, 8, 8] and full["outputs"]["image"]["shape"] == [1, 3, 64, 64]
    assert full["params"] == 1_388_195
    small = dict(stage_channels=(128, 64, 32, 16), blocks_per_stage=(1, 1, 1, 1))  # fewer ops: faster conversion
    plain, lut4, int8 = export("none", **small), export("palettize4", **small), export("int8", **small)
    assert "constexpr_lut_to_dense" in lut4["op_counts"]
    assert lut4["weight_bytes"] < 0.6 * plain["weight_bytes"]
    assert any(op.startswith("constexpr_") and "dequantize" in op for op in int8["op_counts"])
    assert int8["weight_bytes"] < 0.75 * plain["weight_bytes"]


@pytest.mark.skipif(not LINUX, reason="checks the Linux error path")
def test_predictions_need_macos(tmp_path):
    with pytest.raises(X.CoreMLPredictionUnavailable, match="macOS"):
        X.load_mlmodel(tmp_path / "x.mlpackage", "ALL")
    with pytest.raises(ValueError, match="compute unit"):
        X.load_mlmodel(tmp_path / "x.mlpackage", "GPU")


def test_random_feed_follows_package_inputs():
    feed = X.random_feed({"latent": {"shape": [1, 16, 4, 4], "dtype": "FLOAT32"},
                          "class_labels": {"shape": [1], "dtype": "INT32"}})
    assert feed["latent"].shape == (1, 16, 4, 4) and feed["latent"].dtype == np.float32
    assert feed["class_labels"].dtype == np.int32


def test_cli_help_and_dry_run(capsys):
    with pytest.raises(SystemExit) as e:
        export_cli.main(["--help"])
    assert e.value.code == 0
    assert "python -m evals.latency.export --variant snapgen-t2i" in capsys.readouterr().out
    assert export_cli.main(["--variant", "snapgen-t2i", "--out", "/tmp/x", "--decoder", "tiny", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["export"] == ["unet", "decoder"] and plan["settings"]["deployment_target"] == "iOS17"
