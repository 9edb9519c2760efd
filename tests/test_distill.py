"""Distillation: KD losses and timestep-aware scaling, teachers (tiny random SD3 + snapgen), LADD, the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from snapgen.config import UNetConfig
from snapgen.distill import (KDConfig, FeatureProjector, feature_distillation, output_distillation, teacher_weight,
                             timestep_aware_loss)
from snapgen.flow import interpolate
from snapgen.models.unet import SnapGenUNet

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------
# losses and scaling


def test_kd_losses_are_zero_when_student_matches_teacher():
    v = torch.randn(3, 4, 8, 8)
    assert torch.equal(output_distillation(v, v.clone()), torch.zeros(3))
    f = torch.randn(3, 6, 4, 4)
    assert torch.equal(feature_distillation(f, f.clone()), torch.zeros(3))
    assert output_distillation(v, v + 1).tolist() == pytest.approx([1.0] * 3)
    task = torch.rand(3) + 0.1
    total, parts = timestep_aware_loss(task, {"output": torch.zeros(3), "feature": torch.zeros(3)},
                                       torch.tensor([0.1, 0.5, 0.9]), KDConfig())
    assert torch.isfinite(total).all() and torch.isfinite(parts["output_ratio"]).all()
    assert torch.allclose(total, (1 - parts["w"]) * task)        # distillation part vanishes


def test_feature_projector_aligns_to_teacher_grid():
    proj = FeatureProjector(8, 12)
    out = proj(torch.randn(2, 8, 2, 2), (4, 4))                     # student H/4 grid -> teacher H/p grid
    assert out.shape == (2, 12, 4, 4)
    with pytest.raises(ValueError, match="projected student features"):
        feature_distillation(out, torch.randn(2, 12, 8, 8))


@pytest.mark.parametrize("ratio", ["per_sample", "batch"])
def test_scaling_ratio_is_detached_and_matches_task_magnitude(ratio):
    cfg = KDConfig(weighting="uniform", w_max=0.5, output_weight=1.0, feature_weight=1.0, ratio=ratio)
    task = torch.tensor([0.4, 0.8, 1.2], requires_grad=True)
    term = torch.tensor([2.0, 0.1, 0.6], requires_grad=True)
    total, parts = timestep_aware_loss(task, {"output": term}, torch.tensor([0.2, 0.5, 0.7]), cfg)
    assert torch.allclose(parts["output_scaled"].mean(), task.detach().mean(), rtol=1e-5)
    if ratio == "per_sample":
        assert torch.allclose(parts["output_scaled"], task.detach(), rtol=1e-5)  # each term takes the task's size
    total.sum().backward()
    # detached ratio: d total / d task = (1 - w) only; d total / d term = w * ratio (non-detached would give 0)
    assert torch.allclose(task.grad, torch.full((3,), 0.5))
    assert torch.allclose(term.grad, 0.5 * parts["output_ratio"])
    assert not parts["output_ratio"].requires_grad


def test_scaling_is_finite_and_clamped():
    cfg = KDConfig(max_ratio=10.0)
    total, parts = timestep_aware_loss(torch.ones(2), {"output": torch.tensor([0.0, 1e-30])}, torch.rand(2), cfg)
    assert torch.isfinite(total).all() and parts["output_ratio"].max() == 10.0


def test_teacher_weight_shapes():
    t = torch.linspace(0, 1, 101)
    u = teacher_weight(t, "u-shape", 0.8, 0.2)
    assert u[0] == pytest.approx(0.8) and u[-1] == pytest.approx(0.8) and u[50] == pytest.approx(0.2)
    assert torch.allclose(u, u.flip(0)) and int(u.argmin()) == 50       # symmetric, more teacher at both ends
    lin = teacher_weight(t, "linear", 0.8, 0.2)
    assert (lin.diff() > 0).all() and lin[0] == pytest.approx(0.2) and lin[-1] == pytest.approx(0.8)
    assert torch.equal(teacher_weight(t, "uniform", 0.8, 0.2), torch.full_like(t, 0.8))
    for w in (u, lin):
        assert w.min() >= 0.2 - 1e-6 and w.max() <= 0.8 + 1e-6
    with pytest.raises(ValueError, match="weighting"):
        KDConfig(weighting="cosine")


# ------------------------------------------------------------------------------------------------
# tiny SD3 teacher (random weights, saved and loaded through SD3Teacher.from_pretrained)


def _clip_tokenizer(d):
    """A real CLIPTokenizer with a byte-level vocabulary and no merges (514 tokens), saved to ``d``."""
    from transformers import CLIPTokenizer

    keep = set(range(33, 127)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        chars.append(chr(b) if b in keep else chr(256 + extra))
        extra += b not in keep
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (d / "src").mkdir(parents=True)
    (d / "src" / "vocab.json").write_text(json.dumps(vocab))
    (d / "src" / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "src" / "vocab.json"), str(d / "src" / "merges.txt"))
    tok.model_max_length = 77
    tok.save_pretrained(d)


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    d = tmp_path_factory.mktemp("sd3")
    torch.manual_seed(0)
    SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                          num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                          pooled_projection_dim=32, out_channels=16, pos_embed_max_size=16
                          ).save_pretrained(d / "transformer")
    for sub, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        cfg = CLIPTextConfig(vocab_size=514, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, projection_dim=16, max_position_embeddings=77,
                             bos_token_id=512, eos_token_id=513, pad_token_id=513)
        CLIPTextModelWithProjection(cfg).save_pretrained(d / sub)
        _clip_tokenizer(d / tok)
    # no text_encoder_3: the T5 tokens are zeros (what diffusers' SD3 pipeline does without T5)
    return d


def test_sd3_teacher_maps_the_flow_convention(sd3_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from snapgen.teachers import SD3Teacher

    teacher = SD3Teacher.from_pretrained(sd3_dir, t5_tokens=8)
    x_t, t = torch.randn(2, 16, 8, 8), torch.tensor([0.3, 0.9])
    v, feats = teacher(x_t, t, ["a red circle", None], features=("block0", "last"))
    assert v.shape == x_t.shape and feats["last"].shape == (2, 16, 4, 4) and feats["block0"].shape == (2, 16, 4, 4)
    assert teacher.text(["a red circle", None])[0].shape == (2, 77 + 8, 32)
    ctx, pooled = teacher.text(["a red circle", None])
    direct = teacher.transformer(hidden_states=x_t, encoder_hidden_states=ctx, pooled_projections=pooled,
                                 timestep=t * 1000, return_dict=False)[0]
    assert torch.allclose(v, direct)                                  # timestep = sigma * 1000 with sigma = t
    # diffusers' own maths: x = sigma noise + (1 - sigma) x0 and Euler x_next = x + (sigma_next - sigma) v
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(4)
    x0, noise = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    sigma = sched.sigmas[1]
    assert torch.allclose(sched.scale_noise(x0, sched.timesteps[1:2], noise), interpolate(x0, noise, sigma.view(1)))
    vel = noise - x0
    sched._step_index = 1
    stepped = sched.step(vel, sched.timesteps[1], interpolate(x0, noise, sigma.view(1))).prev_sample
    assert torch.allclose(stepped, interpolate(x0, noise, sched.sigmas[2].view(1)), atol=1e-5)  # exact on a line


def _tiny_student(in_channels=16, sample_size=8, context_dim=32, pooled_dim=32):
    return SnapGenUNet(UNetConfig().replace(in_channels=in_channels, out_channels=in_channels, sample_size=sample_size,
                                  channels=(8, 16, 16), res_blocks=(1, 1, 1), depth=(0, 1, 1),
                                  attention=("none", "cross", "self_cross"), head_dim=8, context_dim=context_dim,
                                  pooled_dim=pooled_dim, norm_groups=4))


class _StubText:
    """Stands in for a text stack: fixed per-caption embeddings of width ``dim``, one droppable encoder."""

    def __init__(self, dim: int, tokens: int = 5):
        from types import SimpleNamespace

        self.config = SimpleNamespace(context_dim=dim, pooled_dim=dim)
        self.proj, self.dim, self.tokens = torch.nn.ModuleDict(), dim, tokens

    def sample_drop(self, n, g):
        return {"stub": torch.rand(n, generator=g) < 0.25}

    def __call__(self, captions, drop=None, device=None):
        gens = [torch.Generator().manual_seed(sum(map(ord, c))) for c in captions]
        ctx = torch.stack([torch.randn(self.tokens, self.dim, generator=g) for g in gens])
        keep = (~drop["stub"]).float() if drop is not None else torch.ones(len(captions))
        return ctx * keep[:, None, None], ctx.mean(1) * keep[:, None]


def _objective(cls, cfg, teacher, student, text):
    """An objective with injected teacher / student / text, built, as the engine would (no data)."""
    from snapgen.training.engine import Trainable

    obj = cls(cfg, teacher=teacher, student=(student, text))
    parts = obj.build()
    obj.cached = text
    return obj, parts, Trainable(parts.trained)


def test_kd_steps_with_sd3_teacher(sd3_dir):
    from snapgen.teachers import SD3Teacher
    from snapgen.training.objectives.kd import KnowledgeDistillation
    from snapgen.train_distill import DistillConfig

    torch.manual_seed(0)
    teacher = SD3Teacher.from_pretrained(sd3_dir, t5_tokens=8)
    obj, parts, net = _objective(KnowledgeDistillation, DistillConfig(stage="kd", teacher=str(sd3_dir)), teacher,
                                 _tiny_student(), _StubText(32))
    assert list(parts.trained) == ["unet", "projector"]                 # the projector trains with the student
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    batch = {"image": torch.randn(4, 16, 8, 8), "caption": ["a red circle", "two squares", "a cat", "a cross"]}
    before = {k: p.clone() for k, p in parts.trained["projector"].named_parameters()}
    history = []
    for i in range(12):
        res = obj.loss(net, batch, torch.Generator().manual_seed(i % 2), i)
        assert torch.isfinite(res.loss) and set(res.terms) >= {"task", "output", "feature", "w", "output_ratio"}
        res.loss.backward()
        opt.step()
        opt.zero_grad()
        history.append(float(res.terms["output"].mean() + res.terms["feature"].mean()))
    assert history[-1] < history[0]                                    # the student moves towards the teacher
    assert any(not torch.equal(before[k], p) for k, p in parts.trained["projector"].named_parameters())


def test_load_teacher_errors(tmp_path):
    from snapgen.io import MissingWeightsError
    from snapgen.teachers import SD3Teacher, load_teacher

    with pytest.raises(MissingWeightsError, match="transformer"):
        SD3Teacher.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="neither"):
        load_teacher(tmp_path)


# ------------------------------------------------------------------------------------------------
# snapgen teacher, LADD, and the CLI end to end on the synthetic world


@pytest.fixture(scope="module")
def world_teacher(tmp_path_factory):
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline
    from snapgen.text import TextEncoderStack

    torch.manual_seed(1)
    unet = _tiny_student(3, 32, 384, 384)
    for p in unet.parameters():                     # non-zero output layers so the teacher is not all zeros
        p.data.add_(0.02 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("teacher") / "pipeline"
    SnapGenPipeline(unet, TextEncoderStack(), None, PipelineConfig(steps=2, guidance=1.0)).save_pretrained(d)
    return d


def test_snapgen_teacher_features_and_ladd_steps(world_teacher):
    from snapgen.ladd import LADDConfig, default_taps
    from snapgen.teachers import SnapGenTeacher
    from snapgen.training.engine import Trainable, frozen
    from snapgen.training.objectives.ladd import LADD
    from snapgen.train_distill import DistillConfig

    teacher = SnapGenTeacher.from_pretrained(world_teacher)
    v, feats = teacher(torch.randn(2, 3, 32, 32), torch.rand(2), ["a red circle", None],
                       features=("enc.32x32_block0", "dec.8x8_block1", "last"))
    assert v.shape == (2, 3, 32, 32) and feats["last"].shape == (2, 16, 8, 8)
    assert feats["enc.32x32_block0"].shape == (2, 8, 32, 32) and teacher.feature_grid(32, 32) == (8, 8)
    taps = default_taps(teacher)
    assert len(taps) == 3 and taps[-1] == "last"
    obj, parts, net = _objective(LADD, DistillConfig(stage="ladd"), teacher, _tiny_student(3, 32, 384, 384),
                                 _StubText(384, 16))
    critic = Trainable(parts.critics)
    critic_opt = obj.critic_optimizer(list(critic.parameters()))
    heads0 = [p.clone() for p in critic.parameters()]
    batch = {"image": torch.rand(3, 3, 32, 32) * 2 - 1, "caption": ["a", "b", "c"]}
    for i in range(2):
        with frozen(parts.critics):                                    # the engine's generator step
            res = obj.loss(net, batch, torch.Generator().manual_seed(i), i)
        res.loss.backward()
        assert all(p.grad is None for p in critic.parameters())        # heads take no generator gradient
        d_loss, d_terms = obj.critic_loss(critic, res.critic_inputs)   # then the heads' step
        d_loss.backward()
        critic_opt.step()
        critic_opt.zero_grad(set_to_none=True)
        assert all(torch.isfinite(t).all() for t in (*res.terms.values(), *d_terms.values()))
        assert set(res.t.tolist()) <= set(LADDConfig().gen_timesteps)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.trained["unet"].parameters())  # via teacher
    assert any(not torch.equal(a, b) for a, b in zip(heads0, critic.parameters()))                        # heads trained
    assert all(p.grad is None for p in teacher.parameters())                                              # teacher frozen


def _student_config(tmp_path):
    cfg = _tiny_student(3, 32, 384, 384).config
    p = tmp_path / "student.json"
    p.write_text(cfg.to_json())
    return p


@pytest.mark.slow
def test_cli_kd_resume_and_ladd(world_teacher, tmp_path):
    from snapgen.train_distill import main

    common = ["--set", f"unet={_student_config(tmp_path)}", "batch_size=2", "log_every=1", "ckpt_every=1",
              "sample_steps=1", "sample_guidance=1.0", "warmup=1", "threads=1"]
    kd = tmp_path / "kd"
    assert main(["--stage", "kd", "--teacher", str(world_teacher), "--out", str(kd), "--no-progress",
                 *common, "steps=3", "stop_at=2"]) == 0
    assert (kd / "checkpoints" / "step-0000002" / "projector.safetensors").exists() and not (kd / "pipeline").exists()
    assert main(["--stage", "kd", "--teacher", str(world_teacher), "--out", str(kd), "--no-progress",
                 *common, "steps=3"]) == 0                             # resumes at step 2
    logs = [json.loads(x) for x in (kd / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [0, 1, 2]
    assert {"task", "output", "feature", "w", "output_ratio"} <= set(logs[-1]["terms_by_t"])
    assert json.loads((kd / "train_config.json").read_text())["data"] == "world"
    assert (kd / "pipeline" / "pipeline.json").exists()
    ladd = tmp_path / "ladd"
    assert main(["--stage", "ladd", "--teacher", str(world_teacher), "--init", str(kd / "pipeline"), "--out",
                 str(ladd), "--no-progress", *common, "steps=2"]) == 0
    rec = json.loads((ladd / "log.jsonl").read_text().splitlines()[-1])
    assert all(abs(rec["terms"][k]) < 1e6 for k in ("d", "g_adv", "distill"))
    assert 0 <= rec["terms"]["d_real_acc"] <= 1 and 0 <= rec["terms"]["d_fake_acc"] <= 1
    assert rec["terms"]["d_logit_gap"] == pytest.approx(rec["terms"]["real_logit"] - rec["terms"]["fake_logit"],
                                                        abs=1e-5)
    disc = json.loads((ladd / "discriminator.json").read_text())
    assert disc["balanced_acc"] == pytest.approx((disc["real_acc"] + disc["fake_acc"]) / 2)
    assert disc["at_chance"] == (disc["balanced_acc"] <= 0.55) and disc["last_step"] == 1
    assert json.loads((ladd / "pipeline" / "pipeline.json").read_text())["steps"] == 1   # sample_steps override
    from snapgen.cli import run_cli

    assert run_cli(main, ["--stage", "ladd", "--teacher", str(world_teacher), "--out", str(tmp_path / "x"),
                          "--no-progress", *common]) == 2               # ladd without --init is refused


def test_discriminator_at_chance_is_flagged(tmp_path):
    """The LADD summary over the last quarter of logged steps: a critic at chance is flagged (and the run warns,
    see LADD.finalize); one that separates real from fake is not."""
    from snapgen.training.objectives.ladd import discriminator_summary

    def log(accs, gaps):
        f = tmp_path / "log.jsonl"
        f.write_text("".join(json.dumps({"step": i, "terms": {"d_real_acc": a, "d_fake_acc": a, "d_logit_gap": g}})
                             + "\n" for i, (a, g) in enumerate(zip(accs, gaps))))
        return f

    learned = discriminator_summary(log([0.5] * 6 + [0.9, 0.8], [0.0] * 6 + [2.0, 1.0]))
    assert not learned["at_chance"] and learned["window_steps"] == 2 and learned["balanced_acc"] == pytest.approx(0.85)
    assert learned["logit_gap"] == pytest.approx(1.5) and learned["first_step"] == 6
    chance = discriminator_summary(log([0.9] * 6 + [0.52, 0.5], [1.0] * 6 + [0.01, 0.0]))
    assert chance["at_chance"] and chance["balanced_acc"] == pytest.approx(0.51)
    with pytest.raises(ValueError, match="no logged critic step"):
        discriminator_summary(log([], []))
