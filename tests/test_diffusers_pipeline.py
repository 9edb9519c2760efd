"""SnapGen as diffusers loads it: models through ModelMixin/ConfigMixin, the pipeline through DiffusionPipeline,
the sampler through FlowMatchEulerDiscreteScheduler (mapped onto snapgen.flow and tested here)."""
from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from snapgen.config import UNetConfig
from snapgen.convert import convert, write_index
from snapgen.flow import euler_sample, interpolate, predict_x0, timestep_schedule, velocity_target
from snapgen.models.decoder import TinyDecoder, TinyDecoderConfig
from snapgen.models.unet import SnapGenUNet
from snapgen.pipeline import SnapGenPipeline, flow_scheduler, load_legacy, set_flow_timesteps
from test_sampling_parity import one_thread  # noqa: F401  (autouse: 1 torch thread)
from test_sampling_parity import (PROMPTS, SHIPPED, WORLD, needs_pins, pixels_sha, tiny_decoder_pipeline,
                                  vae_pipeline)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert(SHIPPED, tmp_path_factory.mktemp("wt") / "world-tiny")


# --- the scheduler mapping --------------------------------------------------------------------------------
@pytest.mark.parametrize("steps,shift", [(1, 1.0), (4, 3.0), (20, 1.0), (28, 3.0), (50, 1.5)])
def test_scheduler_reproduces_the_flow_time_grid(steps, shift):
    s = flow_scheduler(shift)
    set_flow_timesteps(s, steps, torch.device("cpu"))
    assert torch.equal(s.sigmas, timestep_schedule(steps, shift))              # incl. the final step to 0
    assert len(s.timesteps) == steps and s.sigmas[-1] == 0
    t = s.timesteps / s.config.num_train_timesteps                            # what the U-Net gets
    assert torch.equal(t.float() * 1000.0, s.sigmas[:-1] * 1000.0)            # its embedding sees 1000 t exactly


def test_scheduler_convention_is_ours():
    """x_sigma = (1 - sigma) x0 + sigma noise, output = velocity noise - x0, Euler step to the next sigma."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    s = flow_scheduler()
    set_flow_timesteps(s, 5, torch.device("cpu"))
    sigma = s.sigmas[2]
    x_t = interpolate(x0, noise, sigma.expand(2))
    assert torch.allclose(s.scale_noise(x0, s.timesteps[2:3], noise), x_t, atol=1e-6)
    v = velocity_target(x0, noise)
    s._step_index = 2
    nxt = s.step(v, s.timesteps[2], x_t, return_dict=False)[0]
    assert torch.allclose(nxt, interpolate(x0, noise, s.sigmas[3].expand(2)), atol=1e-6)
    assert torch.allclose(predict_x0(x_t, sigma.expand(2), v), x0, atol=1e-5)


def test_pipeline_call_equals_euler_sample():
    pipe = tiny_decoder_pipeline()
    gens = [torch.Generator().manual_seed(k) for k in (1, 2)]
    z = pipe(class_labels=[0, 3], num_inference_steps=4, guidance_scale=1.0, generator=gens, output_type="latent").images
    noise = torch.stack([torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(k)) for k in (1, 2)])
    labels = torch.tensor([0, 3])
    ref = euler_sample(lambda x, t: pipe.unet(x, t, class_labels=labels), noise, steps=4,
                       shift=pipe.scheduler.config.shift)
    assert torch.equal(z, ref)


# --- loading as diffusers users do ---------------------------------------------------------------------
@needs_pins
def test_fresh_interpreter_loads_with_diffusion_pipeline_and_generates(converted):
    code = ("import torch, hashlib, numpy as np; torch.set_num_threads(1)\n"
            "import snapgen.pipeline\n"
            "from diffusers import DiffusionPipeline\n"
            f"pipe = DiffusionPipeline.from_pretrained({str(converted)!r})\n"
            "print(type(pipe).__name__, type(pipe.scheduler).__name__)\n"
            "imgs = [pipe(p, generator=torch.Generator().manual_seed(s)).images[0] "
            f"for p, s in zip({PROMPTS!r}, [0, 1, 12345])]\n"
            "print(hashlib.sha256(b''.join(np.asarray(i).tobytes() for i in imgs)).hexdigest()[:16])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[:2] == ["SnapGenPipeline", "FlowMatchEulerDiscreteScheduler"]
    assert lines[2] == WORLD["default"][0]        # the images the shipped scores were computed from


@needs_pins
def test_shipped_folder_loads_with_diffusion_pipeline_in_a_fresh_interpreter(tmp_path):
    """Issue 15's acceptance check on the committed folder itself (not a converted copy), run from outside the
    repository: DiffusionPipeline's images equal SnapGenPipeline.from_pretrained's bit for bit (sha256 of the uint8
    pixels), and the pinned ones the shipped scores come from. (The folder is written in the diffusers layout by
    today's engine; the older loader is checked on a legacy copy in the next test.)"""
    code = ("import torch, hashlib, numpy as np; torch.set_num_threads(1)\n"
            "import snapgen.pipeline\n"
            "from diffusers import DiffusionPipeline\n"
            f"pipe = DiffusionPipeline.from_pretrained({str(SHIPPED)!r})\n"
            "print(type(pipe).__name__, type(pipe.unet).__name__, type(pipe.text_encoder).__name__, "
            "type(pipe.scheduler).__name__)\n"
            "imgs = [pipe(p, generator=torch.Generator().manual_seed(s)).images[0] "
            f"for p, s in zip({PROMPTS!r}, [0, 1, 12345])]\n"
            "print(imgs[0].size[0], hashlib.sha256(b''.join(np.asarray(i).tobytes() for i in imgs)).hexdigest()[:16])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[:4] == ["SnapGenPipeline", "SnapGenUNet", "TextEncoderStack", "FlowMatchEulerDiscreteScheduler"]
    ours = pixels_sha(SnapGenPipeline.from_pretrained(SHIPPED).generate(PROMPTS, seeds=[0, 1, 12345]))
    assert lines[4:] == ["32", ours] and ours == WORLD["default"][0]


@needs_pins
def test_index_only_writes_the_committed_index_files_and_changes_no_file(tmp_path):
    """The shipped folder in the layout before diffusers (pipeline.json, unet/, text/, no index files):
    ``write_index`` reproduces the committed index files byte for byte, leaves every other file as it was, is a
    no-op the second time, never overwrites; the older loader gives the pinned images."""
    import shutil

    index = ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json"]
    old = tmp_path / "pipeline"
    shutil.copytree(SHIPPED, old, ignore=shutil.ignore_patterns("model_index.json", "scheduler", "text_encoder"))
    SnapGenPipeline.from_pretrained(SHIPPED).text_encoder.save_pretrained(old / "text")
    assert pixels_sha(load_legacy(old).generate(PROMPTS, seeds=[0, 1, 12345])) == WORLD["default"][0]
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    assert not (old / "model_index.json").exists() and "unet/diffusion_pytorch_model.safetensors" in \
        {str(p.relative_to(old)) for p in before}
    written = write_index(old)
    assert sorted(str(p.relative_to(old)) for p in written) == index
    assert all((old / r).read_bytes() == (SHIPPED / r).read_bytes() for r in index)
    assert all(p.read_bytes() == b for p, b in before.items())
    assert write_index(old) == []
    (old / "model_index.json").write_text((old / "model_index.json").read_text().replace('"steps": 20', '"steps": 21'))
    with pytest.raises(FileExistsError, match="model_index.json"):
        write_index(old)


def test_index_only_on_an_older_tiny_decoder_folder(tmp_path):
    """decoder/ (config.json + model.safetensors) of the older layout: vae/ is added beside it, images unchanged."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from snapgen.io import atomic_write_json
    pipe = tiny_decoder_pipeline()
    d = tmp_path / "old"
    pipe.unet.save_pretrained(d / "unet")
    (d / "decoder").mkdir()
    dec = pipe.vae
    atomic_write_json(d / "decoder" / "config.json", {"_class_name": "TinyDecoder", **dec.config.to_dict(),
                                                      "config_hash": dec.config.hash})
    save_file(dec.state_dict(), str(d / "decoder" / "model.safetensors"), metadata={"format": "pt"})
    atomic_write_json(d / "pipeline.json", {"_class_name": "SnapGenPipeline", **asdict(pipe.pipeline_config)})
    kw = dict(class_labels=[0, 3], seeds=[5, 6], output="tensor")
    before = load_legacy(d).generate(**kw)
    assert torch.equal(before, pipe.generate(**kw))
    unet_bytes = (d / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    write_index(d)
    assert (d / "vae" / "diffusion_pytorch_model.safetensors").exists() and (d / "decoder" / "model.safetensors").exists()
    assert (d / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == unet_bytes
    again = DiffusionPipeline.from_pretrained(d)
    assert isinstance(again.vae, TinyDecoder) and again.pipeline_config == pipe.pipeline_config
    assert torch.equal(again.generate(**kw), before)


@needs_pins
def test_converted_copy_generates_the_same_images(converted):
    pipe = DiffusionPipeline.from_pretrained(converted)
    assert isinstance(pipe, SnapGenPipeline) and pipe.pipeline_config == SnapGenPipeline.from_pretrained(SHIPPED).pipeline_config
    assert pixels_sha(pipe.generate(PROMPTS, seeds=[3, 4, 5], steps=6, guidance=1.0)) == WORLD["steps6_guidance1"][0]
    assert pixels_sha(pipe.generate(PROMPTS, seeds=[7, 8, 9], steps=5, guidance=5.0, shift=3.0, batch_size=2)) == \
        WORLD["steps5_guidance5_shift3"][0]


@pytest.mark.parametrize("make", [tiny_decoder_pipeline, vae_pipeline])
def test_save_load_round_trip_keeps_images(tmp_path, make):
    pipe = make()
    labels, seeds = [0, 1], [5, 6]
    before = pipe.generate(class_labels=labels, seeds=seeds, output="tensor")
    pipe.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "model_index.json").exists() and (tmp_path / "p" / "pipeline.json").exists()
    again = DiffusionPipeline.from_pretrained(tmp_path / "p")
    assert type(again.vae) is type(pipe.vae) and again.pipeline_config == pipe.pipeline_config
    assert torch.equal(again.generate(class_labels=labels, seeds=seeds, output="tensor"), before)


def test_call_like_diffusers_users_do():
    pipe = tiny_decoder_pipeline()
    seen = []

    def callback(p, i, t, kw):
        seen.append((i, float(t), kw["latents"].shape))
        return kw

    out = pipe(class_labels=[1, 2], num_inference_steps=3, guidance_scale=2.0, num_images_per_prompt=2,
               generator=torch.Generator().manual_seed(0), callback_on_step_end=callback, output_type="pt")
    assert out.images.shape == (4, 3, 64, 64) and 0 <= out.images.min() and out.images.max() <= 1
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][2] == (4, 16, 8, 8)
    np_out = pipe(class_labels=1, num_inference_steps=2, output_type="np").images
    assert np_out.shape == (1, 64, 64, 3)


def test_another_flow_scheduler_swaps_in():
    pipe = tiny_decoder_pipeline()
    heun = FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler = heun
    out = pipe(class_labels=[0], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (1, 3, 64, 64) and torch.isfinite(out.images).all()
    euler = FlowMatchEulerDiscreteScheduler.from_config(heun.config, shift=2.0)
    pipe.scheduler = euler
    assert pipe.pipeline_config.shift == 2.0


# --- models through diffusers ------------------------------------------------------------------------------
def test_models_round_trip_typed_configs_through_diffusers(tmp_path):
    cfg = UNetConfig.from_dict(dict(in_channels=4, out_channels=4, sample_size=8, channels=[32, 32], res_blocks=[1, 1],
                                    depth=[1, 1], attention=["cross", "self_cross"], head_dim=16, cond="class",
                                    num_classes=4, norm_groups=8)).replace_stage(0, attn_block="replace")
    unet = SnapGenUNet(cfg)
    unet.save_pretrained(tmp_path / "u")
    again = SnapGenUNet.from_pretrained(tmp_path / "u")
    assert again.config == cfg and again.config.stages[0].attn_block == "replace"
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), again.state_dict().values()))
    from diffusers import ModelMixin
    assert isinstance(again, ModelMixin) and again.config_dict["config_hash"] == cfg.hash
    dec = TinyDecoder(TinyDecoderConfig(stage_channels=(8, 8), blocks_per_stage=(1, 1)))
    dec.save_pretrained(tmp_path / "d")
    assert (tmp_path / "d" / "diffusion_pytorch_model.safetensors").exists()
    assert TinyDecoder.from_pretrained(tmp_path / "d").config == dec.config
    half = SnapGenUNet.from_pretrained(tmp_path / "u", torch_dtype=torch.float16)
    assert half.conv_in.weight.dtype == torch.float16


def test_tiny_decoder_of_the_older_layout_still_loads(tmp_path):
    from safetensors.torch import save_file

    from snapgen.io import atomic_write_json
    dec = TinyDecoder(TinyDecoderConfig(stage_channels=(8, 8), blocks_per_stage=(1, 1)))
    with torch.no_grad():
        for p in dec.parameters():
            p.add_(1.0)
    d = tmp_path / "old"
    d.mkdir()
    atomic_write_json(d / "config.json", {"_class_name": "TinyDecoder", **dec.config.to_dict(), "config_hash": dec.config.hash})
    save_file(dec.state_dict(), str(d / "model.safetensors"), metadata={"format": "pt"})
    again = TinyDecoder.from_pretrained(d)
    assert all(torch.equal(a, b) for a, b in zip(dec.state_dict().values(), again.state_dict().values()))
