"""Tiny decoder, VAE baselines, reconstruction metrics and the decoder trainer (fast, CPU)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from snapgen.cost import count_flops, count_params
from snapgen.io import MissingWeightsError
from snapgen.models.decoder import (CorruptCheckpointError, TinyDecoder, TinyDecoderConfig, sd3_vae_decoder,
                                    sdxl_vae_decoder, tiny_decoder)
from snapgen.recon_metrics import load_lpips_vgg, psnr, reconstruction_metrics, ssim, try_load_lpips
from snapgen import train_decoder as T

@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # 2 shared cores: intra-op threads oversubscribe and slow tiny models ~30x
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


SMALL = TinyDecoderConfig(stage_channels=(16, 12, 8, 8), blocks_per_stage=(1, 1, 1, 1), norm_groups=4)


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # zero-init branches would hide a broken load
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


# ---- architecture ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [TinyDecoderConfig(), SMALL, replace(SMALL, norm="every_block", upsample_mode="bilinear")])
def test_shapes_latent_to_8x_rgb(cfg):
    z = torch.randn(2, 16, 4, 6)
    assert TinyDecoder(cfg)(z).shape == (2, 3, 32, 48)


def test_param_counts_match_targets():
    n = count_params(tiny_decoder())
    assert abs(n - 1.38e6) / 1.38e6 < 0.10                    # paper: ~1.38M
    assert count_params(sd3_vae_decoder("meta")) == 49_545_475
    assert count_params(sdxl_vae_decoder("meta")) == 49_490_199
    assert 33 < 49_545_475 / n < 39                           # paper: ~36x fewer


def test_no_attention_and_flops_vs_sd3():
    tiny = tiny_decoder(device="meta")
    assert not any("attn" in name.lower() or "attention" in type(m).__name__.lower() for name, m in tiny.named_modules())
    z = torch.empty(1, 16, 128, 128, device="meta")
    sd3 = count_flops(sd3_vae_decoder("meta"), z).total
    assert sd3 == pytest.approx(10.47e12, rel=2e-3)
    assert count_flops(tiny, z).total < sd3 / 50


def test_latent_scaling_round_trip():
    m = TinyDecoder(SMALL)
    z = torch.randn(1, 16, 2, 2)
    assert torch.allclose(m.unscale_latent(m.scale_latent(z)), z, atol=1e-6)
    assert m.cfg.scaling_factor == 1.5305 and m.cfg.shift_factor == 0.0609


# ---- persistence ----------------------------------------------------------------------------------
def test_save_load_exact_round_trip(tmp_path):
    m = _perturbed(TinyDecoder(SMALL))
    m.save_pretrained(tmp_path / "dec")
    assert json.loads((tmp_path / "dec" / "config.json").read_text())["_class_name"] == "TinyDecoder"
    m2 = TinyDecoder.from_pretrained(tmp_path / "dec")
    assert m2.cfg == m.cfg
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    z = torch.randn(1, 16, 3, 3)
    assert torch.equal(m(z), m2(z))


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        TinyDecoder.from_pretrained(tmp_path / "nope")
    TinyDecoder(SMALL).save_pretrained(tmp_path / "dec")
    w = tmp_path / "dec" / "diffusion_pytorch_model.safetensors"
    data = w.read_bytes()
    w.unlink()
    with pytest.raises(MissingWeightsError, match="diffusion_pytorch_model.safetensors"):
        TinyDecoder.from_pretrained(tmp_path / "dec")
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="unreadable"):
        TinyDecoder.from_pretrained(tmp_path / "dec")
    w.write_bytes(data)
    cfg = json.loads((tmp_path / "dec" / "config.json").read_text())
    (tmp_path / "dec" / "config.json").write_text(json.dumps({**cfg, "stage_channels": [32, 12, 8, 8]}))
    with pytest.raises(CorruptCheckpointError, match="do not match"):
        TinyDecoder.from_pretrained(tmp_path / "dec")


# ---- metrics --------------------------------------------------------------------------------------
def _pair(seed=0, shape=(2, 3, 24, 28)):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g) * 2 - 1
    return a, (a + 0.2 * torch.randn(shape, generator=g)).clamp(-1, 1)


def test_psnr_ssim_match_skimage():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = _pair()
    ours_p, ours_s = psnr(a, b), ssim(a, b)
    for i in range(a.shape[0]):
        A, B = (((t[i] + 1) / 2).permute(1, 2, 0).double().numpy() for t in (a, b))
        assert ours_p[i].item() == pytest.approx(peak_signal_noise_ratio(A, B, data_range=1.0), abs=1e-4)
        ref = structural_similarity(A, B, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, channel_axis=-1)
        assert ours_s[i].item() == pytest.approx(ref, abs=1e-5)
    assert ssim(a, a).min().item() == pytest.approx(1.0, abs=1e-6)
    # batch-size independence
    assert torch.allclose(ssim(a[:1], b[:1]), ours_s[:1]) and torch.allclose(psnr(a[1:], b[1:]), ours_p[1:])


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"])  # torchvision vgg16().features, random weights
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, d / "vgg16.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))},
               d / "lpips_vgg.pth")
    return d / "vgg16.pth", d / "lpips_vgg.pth"


def test_lpips_loads_from_local_files(lpips_files):
    m = load_lpips_vgg(*lpips_files)
    a, b = _pair(1, (2, 3, 32, 32))
    d = m(a, b)
    assert d.shape == (2,) and (d > 0).all() and torch.allclose(m(a, a), torch.zeros(2))
    assert set(m.weights_sha256) == {"vgg16", "lpips_lin"}


def test_missing_lpips_weights_documented_behaviour(tmp_path, lpips_files):
    with pytest.raises(MissingWeightsError, match="vgg16"):
        load_lpips_vgg(tmp_path / "vgg16-397923af.pth", lpips_files[1])
    with pytest.raises(MissingWeightsError, match="lpips_vgg_missing.pth"):
        load_lpips_vgg(lpips_files[0], tmp_path / "lpips_vgg_missing.pth")
    model, reason = try_load_lpips(None, None)
    assert model is None and "no path given" in reason
    rec = reconstruction_metrics(*_pair(), lpips_model=None, lpips_reason=reason).to_dict()
    assert rec["lpips"] is None and rec["lpips_reason"] == reason and rec["psnr"] > 0


# ---- training -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from diffusers import AutoencoderKL

    from snapgen.experiments.decoder_world_proof import STANDIN_VAE_CONFIG

    cfg = dict(STANDIN_VAE_CONFIG, block_out_channels=(8, 8, 8, 8), norm_num_groups=4)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("vae")
    AutoencoderKL(**cfg).save_pretrained(str(d))
    return d


def _pool(n=8, side=32):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    imgs = [torch.stack([torch.sin(3 * xx + i), torch.cos(2 * yy - i), xx * yy]) for i in range(n)]
    return T.TensorImages(torch.stack(imgs).clamp(-1, 1))


def _cfg(**kw):
    base = T.TrainDecoderConfig(decoder=SMALL, crop_size=32, batch_size=4, steps=6, lr=3e-3, adv_start_step=2,
                                adv_weight=0.05, disc_channels=8, disc_layers=2, ema_decay=0.9, log_every=1,
                                ckpt_every=3, latent_sampling="sample")
    return replace(base, **kw)


def _run(cfg, out, encoder_dir, resume=True):
    return T.train(cfg, out, vae=T.load_frozen_encoder(encoder_dir), pool=_pool(), resume=resume,
                   progress=False, cpu=True)


def test_frozen_encoder_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="frozen VAE encoder"):
        T.load_frozen_encoder(tmp_path / "sd3_vae")


def test_training_reduces_loss(tmp_path, encoder_dir):
    torch.manual_seed(0)
    # posterior mode: a random-init VAE's posterior std is ~1, so samples would be mostly noise
    res = _run(_cfg(steps=60, adv_weight=0.0, ckpt_every=60, lr=1e-2, latent_sampling="mode"), tmp_path / "run",
               encoder_dir)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(60))
    first, last = np.mean([r["terms"]["mse"] for r in log[:5]]), np.mean([r["terms"]["mse"] for r in log[-5:]])
    assert last < 0.5 * first
    assert res["lpips"] is None and "no path given" in res["lpips_reason"]
    assert TinyDecoder.from_pretrained(tmp_path / "run" / "checkpoints" / "step-0000060" / "ema").cfg == SMALL


def test_resume_is_exact(tmp_path, encoder_dir):
    straight = _run(_cfg(), tmp_path / "a", encoder_dir)
    _run(_cfg(steps=3), tmp_path / "b", encoder_dir)
    resumed = _run(_cfg(), tmp_path / "b", encoder_dir)  # picks up checkpoints/latest = step 3
    assert resumed["step"] == 6 and "d_hinge" in resumed["last"]  # the discriminator ran
    for k in ("decoder", "ema"):
        for a, b in zip(straight[k].state_dict().values(), resumed[k].state_dict().values()):
            assert torch.equal(a, b)
    def log(d):  # loss lines without timings
        timing = {"step_time_s", "images_per_s", "memory_mb", "elapsed_s", "elapsed_from_step"}
        return [{k: v for k, v in json.loads(x).items() if k not in timing} for x in (d / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log(tmp_path / "b")] == [0, 1, 2, 3, 4, 5]
    assert log(tmp_path / "a") == log(tmp_path / "b")
    with pytest.raises(ValueError, match="cannot resume"):
        _run(_cfg(lr=1e-4, steps=9), tmp_path / "b", encoder_dir)


def test_lpips_term_used_when_weights_given(tmp_path, encoder_dir, lpips_files):
    res = _run(_cfg(steps=2, adv_weight=0.0, vgg16_weights=str(lpips_files[0]), lpips_weights=str(lpips_files[1])),
               tmp_path / "lp", encoder_dir, resume=False)
    assert res["lpips"] == "vgg" and res["lpips_reason"] is None and res["last"]["lpips"] > 0


def test_cli_help_and_dry_run(capsys):
    from snapgen.cli import run_cli

    with pytest.raises(SystemExit) as e:
        T.main(["--help"])
    assert e.value.code == 0 and "--world" in capsys.readouterr().out
    assert T.main(["--dry-run", "--steps", "7", "--preset", "cpu_proof"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert run_cli(T.main, ["--world", "--steps", "7"]) == 2                 # the proof is its own experiment CLI
    assert "decoder_world_proof" in capsys.readouterr().err
    assert cfg["steps"] == 7 and cfg["decoder"]["stage_channels"] == [64, 48, 32, 16]
