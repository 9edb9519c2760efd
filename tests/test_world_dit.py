"""The synthetic world's DiT teacher (``snapgen.models.dit``, preset ``world-dit-s``): the flow mapping, save/load,
training through ``python -m snapgen.train``, the harness, and its use as a KD / LADD teacher (``DiTTeacher``)."""
from __future__ import annotations

import json

import pytest
import torch

from snapgen.flow import euler_sample, interpolate, velocity_target
from snapgen.models.dit import DiTConfig, WorldDiT
from snapgen.presets import DIT_PRESETS, PRESETS

MICRO_DIT = DiTConfig(num_layers=2, num_attention_heads=2)               # width 64: the fast tests
MICRO_UNET = PRESETS["tiny-world"].replace(channels=(16, 32, 32), head_dim=16, norm_groups=4, emb_mult=2)
COMMON = ["log_every=1", "warmup=1", "sample_steps=2", "sample_guidance=2.0", "threads=1", "processes=1"]


def _cond(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, 384, generator=g), torch.randn(n, 384, generator=g)


def _perturbed(cfg: DiTConfig, seed: int = 0) -> WorldDiT:
    """A DiT with every weight non-zero (a fresh adaLN-zero DiT outputs exactly 0)."""
    torch.manual_seed(seed)
    m = WorldDiT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


# ------------------------------------------------------------------------------------------------
# the flow mapping


def test_adapter_calls_sd3_with_timestep_t_times_1000_and_returns_its_output_unchanged():
    m = _perturbed(MICRO_DIT)
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([0.0, 0.37, 1.0])
    ctx, pooled = _cond(3)
    seen = []
    h = m.transformer.time_text_embed.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        v = m(x, t, ctx, pooled)
        direct = m.transformer(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                               timestep=t * 1000, return_dict=False)[0]
    h.remove()
    assert torch.equal(seen[0], t * 1000) and torch.equal(v, direct) and v.abs().sum() > 0
    with torch.no_grad():                                                # scalar / (1,) t broadcast over the batch
        assert torch.equal(m(x, torch.tensor(0.37), ctx, pooled)[1], m(x, torch.full((3,), 0.37), ctx, pooled)[1])
    with pytest.raises(ValueError, match="text-conditional"):
        m(x, t, class_labels=torch.zeros(3, dtype=torch.long))


def test_adapter_v_convention_against_snapgen_flow_on_a_hand_made_case():
    """Hand-made case: one data point x0. SD3's exact denoiser for it, written in SD3's own terms (sigma =
    timestep / num_train_timesteps, x = sigma * noise + (1 - sigma) * x0, output = dx/dsigma = (x - x0) / sigma),
    is put in place of the transformer; through the adapter it must be snapgen's v = noise - x0 at
    x_t = interpolate(x0, noise, t), the Euler sampler must land on x0, and diffusers' scheduler stepping with the
    adapter's output must follow snapgen's straight line."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    m = WorldDiT(MICRO_DIT)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.randn(2, 3, 32, 32, generator=g)

    def sd3_oracle(hidden_states, encoder_hidden_states, pooled_projections, timestep, return_dict=False):
        sigma = (timestep / 1000).view(-1, 1, 1, 1)                      # FlowMatchEulerDiscreteScheduler's sigma
        return ((hidden_states - x0) / sigma,)                           # dx/dsigma on the line to x0

    m.transformer.forward = sd3_oracle
    ctx, pooled = _cond(2)
    t = torch.tensor([0.25, 0.9])
    v = m(interpolate(x0, noise, t), t, ctx, pooled)
    assert torch.allclose(v, velocity_target(x0, noise), atol=1e-5)
    fake_noise = torch.randn(2, 3, 32, 32, generator=g)
    sampled = euler_sample(lambda x, tt: m(x, tt, ctx, pooled), fake_noise, steps=5)
    assert torch.allclose(sampled, x0, atol=1e-4)                        # exact on a straight line
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    sched.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    x = sched.scale_noise(x0, sched.timesteps[1:2], noise)               # SD3's x at sigma = 0.75
    assert torch.allclose(x, interpolate(x0, noise, torch.tensor([0.75])), atol=1e-6)
    sched._step_index = 1
    stepped = sched.step(m(x, sched.timesteps[1:2] / 1000, ctx, pooled), sched.timesteps[1], x).prev_sample
    assert torch.allclose(stepped, interpolate(x0, noise, torch.tensor([0.5])), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# config, preset, save / load


def test_preset_sizes_and_config_round_trip():
    c = DIT_PRESETS["world-dit-s"]
    assert (c.num_layers, c.num_attention_heads, c.attention_head_dim, c.inner_dim, c.patch_size) == (8, 6, 32, 192, 2)
    assert (c.context_dim, c.pooled_dim, c.in_channels, c.cond, c.num_classes) == (384, 384, 3, "text", None)
    with torch.device("meta"):
        n = sum(p.numel() for p in WorldDiT(c).parameters())
    assert 9e6 < n < 12e6                                                # 10.5M, 4.6x tiny-world's 2.27M
    assert DiTConfig.from_dict(json.loads(c.to_json())) == c and c.hash == DiTConfig.from_dict(c.to_dict()).hash
    with pytest.raises(ValueError, match="unknown DiTConfig"):
        DiTConfig.from_dict({**c.to_dict(), "channels": [1]})
    with pytest.raises(ValueError, match="patch_size"):
        DiTConfig(sample_size=33)
    assert "world-dit-s" not in PRESETS                                  # the U-Net tools keep listing U-Nets only


def test_importing_the_presets_stays_light():
    import subprocess
    import sys

    code = "import sys, snapgen.presets as p; assert 'world-dit-s' in p.DIT_PRESET_NAMES; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_train_config_resolves_dit_presets_and_files(tmp_path):
    from snapgen.training.t2i import TrainConfig, build_denoiser, unet_config

    assert unet_config(TrainConfig(unet="world-dit-s")) == DIT_PRESETS["world-dit-s"]
    p = tmp_path / "dit.json"
    p.write_text(MICRO_DIT.to_json())
    assert unet_config(TrainConfig(unet=str(p))) == MICRO_DIT and isinstance(build_denoiser(MICRO_DIT), WorldDiT)
    assert TrainConfig(unet="world-dit-s", resolution=32).validate()
    with pytest.raises(ValueError, match="patches"):
        TrainConfig(unet="world-dit-s", resolution=31).validate()
    with pytest.raises(KeyError, match="world-dit-s"):
        unet_config(TrainConfig(unet="world-dit-m"))                      # close matches include the DiT


def test_save_load_round_trip_is_bit_identical(tmp_path):
    m = _perturbed(MICRO_DIT)
    m.save_pretrained(tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["_class_name"] == "WorldDiT" and raw["config_hash"] == MICRO_DIT.hash
    back = WorldDiT.from_pretrained(tmp_path / "m")
    a, b = m.state_dict(), back.state_dict()
    assert back.config == MICRO_DIT and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x, t, (ctx, pooled) = torch.randn(2, 3, 32, 32), torch.rand(2), _cond(2)
    with torch.no_grad():
        assert torch.equal(m(x, t, ctx, pooled), back(x, t, ctx, pooled))
    with pytest.raises(ValueError, match="another variant"):
        WorldDiT.from_pretrained(tmp_path / "m", expected=MICRO_DIT.replace(num_layers=3))


# ------------------------------------------------------------------------------------------------
# training through python -m snapgen.train, the pipeline, the harness, the teacher


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory):
    """3 steps of ``python -m snapgen.train --set unet=world-dit-s`` (in-process, as tests/test_train.py)."""
    from snapgen.train import main

    out = tmp_path_factory.mktemp("dit") / "run"
    assert main(["--out", str(out), "--no-progress", "--set", "unet=world-dit-s", "steps=3", "batch_size=4",
                 "ckpt_every=2", *COMMON]) == 0
    return out


def test_three_training_steps_give_a_loadable_pipeline_that_generates(dit_run):
    from safetensors.torch import load_file

    from snapgen.pipeline import SnapGenPipeline

    log = [json.loads(x) for x in (dit_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2] and all(r["objective"] == "flow" for r in log)
    assert all(0 < r["loss"] < 10 for r in log)
    rec = json.loads((dit_run / "train_config.json").read_text())
    assert rec["unet"] == "world-dit-s" and rec["unet_config"] == DIT_PRESETS["world-dit-s"].to_dict()
    assert rec["data"] == "world"                                        # the harness scores it on the world
    assert (dit_run / "samples.png").exists()
    index = json.loads((dit_run / "pipeline" / "model_index.json").read_text())
    assert index["unet"] == ["snapgen.models.dit", "WorldDiT"]
    pipe = SnapGenPipeline.from_pretrained(dit_run / "pipeline")
    assert isinstance(pipe.unet, WorldDiT) and pipe.unet.config == DIT_PRESETS["world-dit-s"]
    ck = dit_run / "checkpoints" / "step-0000003"                        # the pipeline holds the EMA weights
    ema = load_file(ck / "ema" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(v, ema[k]) for k, v in pipe.unet.state_dict().items())
    images = pipe.generate(["a photo of a red circle", "a photo of two squares"], [0, 1], steps=2)
    assert [im.size for im in images] == [(32, 32), (32, 32)]
    assert pipe.protocol()["unet_config_hash"] == DIT_PRESETS["world-dit-s"].hash


def test_diffusers_loads_the_dit_pipeline(dit_run):
    from diffusers import DiffusionPipeline

    import snapgen.pipeline  # noqa: F401  registers SnapGenPipeline with diffusers

    pipe = DiffusionPipeline.from_pretrained(dit_run / "pipeline")
    assert isinstance(pipe.unet, WorldDiT)
    assert pipe(["a photo of a red circle"], num_inference_steps=2, output_type="pt").images.shape == (1, 3, 32, 32)


def test_harness_scores_the_dit_pipeline(dit_run, tmp_path):
    from evals.run import main

    out = tmp_path / "rec.json"
    assert main(["geneval", "--ckpt", str(dit_run / "pipeline"), "--limit", "2", "--n-per-prompt", "1", "--steps",
                 "2", "--threads", "1", "--images-root", str(tmp_path / "img"), "--out", str(out),
                 "--no-progress"]) == 0
    rec = json.loads(out.read_text())
    gen = rec["protocol"]["generator"]
    assert gen["generator"] == "snapgen" and gen["unet_config"] == DIT_PRESETS["world-dit-s"].to_dict()
    assert gen["unet_config_hash"] == DIT_PRESETS["world-dit-s"].hash
    assert rec["protocol"]["evaluator"]["detector"] == "world-exact-reader"  # scored as a world model (train_config)
    assert rec["protocol"]["prompts"]["split"] == "heldout" and rec["details"]["images"] == 2


def test_resume_is_exact_for_the_dit(tmp_path):
    from safetensors.torch import load_file

    from snapgen.train import main

    cfg = tmp_path / "dit.json"
    cfg.write_text(MICRO_DIT.to_json())
    args = ["--no-progress", "--set", f"unet={cfg}", "steps=4", "batch_size=2", "ckpt_every=2", "sample_steps=1",
            "sample_guidance=1.0", "log_every=1", "warmup=1", "threads=1", "processes=1"]
    assert main(["--out", str(tmp_path / "full"), *args]) == 0
    assert main(["--out", str(tmp_path / "part"), *args, "stop_at=2"]) == 0
    assert not (tmp_path / "part" / "pipeline").exists()
    assert main(["--out", str(tmp_path / "part"), *args]) == 0
    for sub in ("unet", "ema"):
        a, b = (load_file(tmp_path / r / "checkpoints" / "step-0000004" / sub / "diffusion_pytorch_model.safetensors")
                for r in ("full", "part"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_load_teacher_gives_dit_features_of_the_declared_shapes(dit_run):
    from snapgen.ladd import default_taps
    from snapgen.teachers import DiTTeacher, load_teacher

    teacher = load_teacher(dit_run / "pipeline")
    c = DIT_PRESETS["world-dit-s"]
    assert isinstance(teacher, DiTTeacher) and teacher.kd_feature == "last"
    assert teacher.feature_names == tuple(f"block{i}" for i in range(c.num_layers)) + ("last",)
    assert teacher.feature_channels == {n: c.inner_dim for n in teacher.feature_names}
    assert teacher.feature_grid(32, 32) == (16, 16)
    x_t, t = torch.randn(2, 3, 32, 32), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        v, feats = teacher(x_t, t, ["a photo of a red circle", None], features=teacher.feature_names)
        v_pipe = teacher.dit(x_t, t, *teacher.text(["a photo of a red circle", None]))
    assert v.shape == x_t.shape and torch.equal(v, v_pipe)
    for name in teacher.feature_names:
        assert feats[name].shape == (2, c.inner_dim, *teacher.feature_grid(32, 32)), name
    assert torch.equal(feats["last"], feats[f"block{c.num_layers - 1}"])
    null_ctx, null_pooled = teacher.text([None])                          # None -> snapgen's zero null condition
    assert null_ctx.abs().sum() == 0 and null_pooled.abs().sum() == 0
    assert default_taps(teacher) == ("block2", "block4", "last")
    assert all(not p.requires_grad for p in teacher.dit.parameters())


def test_two_kd_steps_and_ladd_with_the_dit_teacher(dit_run, tmp_path):
    """2 KD steps (output + feature distillation onto the DiT's 16x16 token maps) through the CLI, then 2 LADD
    steps whose discriminator heads sit on the DiT's features."""
    from safetensors.torch import load_file

    from snapgen.train_distill import main

    student = tmp_path / "student.json"
    student.write_text(MICRO_UNET.to_json())
    common = ["--no-progress", "--set", f"unet={student}", "batch_size=2", "ckpt_every=1", *COMMON]
    kd = tmp_path / "kd"
    assert main(["--stage", "kd", "--teacher", str(dit_run / "pipeline"), "--out", str(kd), *common, "steps=2"]) == 0
    logs = [json.loads(x) for x in (kd / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [0, 1]
    assert all(abs(r["terms"][k]) < 1e6 and r["terms"][k] > 0 for r in logs for k in ("task", "output", "feature"))
    rec = json.loads((kd / "train_config.json").read_text())
    assert rec["teacher_features"]["last"] == DIT_PRESETS["world-dit-s"].inner_dim
    proj = load_file(kd / "checkpoints" / "step-0000002" / "projector.safetensors")
    assert proj["conv2.weight"].shape[0] == DIT_PRESETS["world-dit-s"].inner_dim
    assert (kd / "pipeline" / "model_index.json").exists()
    ladd = tmp_path / "ladd"
    assert main(["--stage", "ladd", "--teacher", str(dit_run / "pipeline"), "--init", str(kd / "pipeline"), "--out",
                 str(ladd), *common, "steps=2"]) == 0
    rec = json.loads((ladd / "log.jsonl").read_text().splitlines()[-1])
    assert all(abs(rec["terms"][k]) < 1e6 for k in ("d", "g_adv", "distill"))
    heads = load_file(ladd / "checkpoints" / "step-0000002" / "disc_heads.safetensors")
    assert {k.split(".")[0] for k in heads} == {"block2", "block4", "last"}


def test_kd_refuses_a_dit_student_with_feature_distillation(dit_run, tmp_path):
    from snapgen.training.objectives.distill import DistillConfig
    from snapgen.training.objectives.kd import KnowledgeDistillation

    cfg = DistillConfig(stage="kd", unet="world-dit-s", teacher=str(dit_run / "pipeline"), out=str(tmp_path))
    with pytest.raises(ValueError, match="kd_feature_weight=0"):
        KnowledgeDistillation(cfg).build()
