"""Trainer CLI, pipeline, text stack and data loaders: exact resume, persistence, bad input."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from snapgen.config import UNetConfig
from snapgen.pipeline import SnapGenPipeline, sample_seed
from snapgen.presets import PRESETS
from snapgen.train import TrainConfig, batch_indices, load_config, main as train_main, parse_overrides, train

MICRO = PRESETS["tiny-world"].replace(channels=(16, 32, 32), head_dim=16, norm_groups=4, emb_mult=2)


@pytest.fixture(scope="module")
def micro_config(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "unet.json"
    p.write_text(MICRO.to_json())
    return str(p)


def _cfg(out, unet, **kw):
    base = dict(out=str(out), unet=unet, steps=6, batch_size=4, log_every=1, ckpt_every=3, warmup=2,
                sample_steps=2, threads=1, processes=1)
    return TrainConfig(**{**base, **kw})


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    ck = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return {**{f"u.{k}": v for k, v in load_file(ck / "unet" / "diffusion_pytorch_model.safetensors").items()},
            **{f"e.{k}": v for k, v in load_file(ck / "ema" / "diffusion_pytorch_model.safetensors").items()}}


def test_interrupted_run_resumes_exactly(tmp_path, micro_config):
    full = train(_cfg(tmp_path / "full", micro_config), progress=False)
    part = tmp_path / "part"
    train(_cfg(part, micro_config, stop_at=3), progress=False)
    assert (part / "checkpoints" / "latest").read_text().strip() == "step-0000003"
    assert not (part / "pipeline").exists()
    train(_cfg(part, micro_config), progress=False)
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(6))
    assert {"loss", "loss_by_t", "step_time_s", "images_per_s", "memory_mb"} <= set(log[0])
    assert (full / "samples.png").exists() and (full / "pipeline" / "pipeline.json").exists()


def test_learning_curve_rebuilds_a_checkpoints_pipeline_from_todays_run_layout(tmp_path, micro_config):
    """evals.learning_curve turns a checkpoint's EMA weights into a pipeline with the finished run's text stack
    (the run's pipeline is in the diffusers layout, text_encoder/; it once looked only for the legacy text/)."""
    from evals.learning_curve import checkpoint_pipeline

    run = train(_cfg(tmp_path / "r", micro_config, steps=3, ckpt_every=2), progress=False)
    assert (run / "pipeline" / "text_encoder").is_dir() and not (run / "pipeline" / "text").exists()
    ck = run / "checkpoints" / "step-0000002"
    pipe = SnapGenPipeline.from_pretrained(checkpoint_pipeline(ck, run, tmp_path / "curve" / "step-2"))
    from safetensors.torch import load_file

    ema = load_file(str(next((ck / "ema").glob("*.safetensors"))))
    assert all(torch.equal(pipe.unet.state_dict()[k], v) for k, v in ema.items())
    assert pipe.generate(["a photo of a red circle"], [0], steps=2, output="tensor").shape == (1, 3, 32, 32)


def test_resume_refuses_a_changed_config(tmp_path, micro_config):
    train(_cfg(tmp_path, micro_config, stop_at=3), progress=False)
    with pytest.raises(ValueError, match="config changed"):
        train(_cfg(tmp_path, micro_config, batch_size=2), progress=False)


def test_pipeline_round_trip_and_batch_independence(tmp_path, micro_config):
    run = train(_cfg(tmp_path / "r", micro_config, steps=2), progress=False)
    pipe = SnapGenPipeline.from_pretrained(run / "pipeline")
    prompts = ["a photo of a red circle", "a photo of two squares", "a photo of a blue cross"]
    seeds = [sample_seed(i, 0, 7) for i in range(3)]
    a = pipe.generate(prompts, seeds, steps=3, batch_size=3, output="tensor")
    b = torch.cat([pipe.generate(prompts[i:i + 1], seeds[i:i + 1], steps=3, batch_size=1, output="tensor") for i in range(3)])
    assert a.shape == (3, 3, 32, 32)
    assert torch.allclose(a, b, atol=1e-5)
    assert sample_seed(1, 0, 7) != sample_seed(0, 1, 7) and sample_seed(1, 0, 7) == sample_seed("1", 0, 7)


def test_overrides_and_config_errors(tmp_path):
    cfg = parse_overrides(TrainConfig(), ["steps=10", "lr=0.5", "cpu=true", "vae=none"])
    assert (cfg.steps, cfg.lr, cfg.cpu, cfg.vae) == (10, 0.5, True, None)
    with pytest.raises(ValueError, match="did you mean steps"):
        parse_overrides(TrainConfig(), ["stepz=1"])
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "missing.json"), [])
    from snapgen.cli import run_cli

    assert run_cli(train_main, ["--set", "unet=tiny-wrld", "--dry-run"]) == 2   # unknown preset -> exit 2
    assert train_main(["--dry-run"]) == 0


def test_repeated_set_flags_accumulate(capsys):
    # `--set a=1 --set b=2` must apply both (argparse's default "store" would keep only the last)
    assert train_main(["--set", "steps=60", "--set", "log_every=10", "lr=0.01", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert (cfg["steps"], cfg["log_every"], cfg["lr"]) == (60, 10, 0.01)


def test_batch_indices_are_disjoint_across_ranks_and_cover_epochs():
    a = batch_indices(0, 0, 2, 4, 20, seed=0)
    b = batch_indices(0, 1, 2, 4, 20, seed=0)
    assert not set(a) & set(b)
    seen = [i for s in range(5) for r in range(2) for i in batch_indices(s, r, 2, 2, 20, seed=0)]
    assert sorted(seen) == list(range(20))                               # one epoch = every sample once
    assert batch_indices(3, 0, 1, 4, 10**9, 0) == [12, 13, 14, 15]        # unlimited world: direct index


def test_progressive_resolution_phases_walk_the_data_without_gap_or_overlap():
    cfg = TrainConfig(steps=10, lowres_steps=4, lowres_batch_size=6, batch_size=2, grad_accum=2, processes=2)
    seen = []
    for micro in range(cfg.steps * cfg.grad_accum):
        size, first, factor = cfg.micro_batch(micro, world=2)
        assert (size, factor) == ((6, 2) if micro < 8 else (2, 1))      # 4 optimizer steps x 2 micro-steps at low res
        seen += [i for r in range(2) for i in batch_indices(micro, r, 2, size, 10**9, 0, first)]
    assert seen == list(range(8 * 6 * 2 + 12 * 2 * 2))                  # every world scene once, in order
    assert TrainConfig().micro_batch(5, world=2) == (16, 5 * 16 * 2, 1)   # off: the recipe's positions, unchanged
    assert TrainConfig(lowres_steps=3).micro_batch(0, world=2) == (16, 0, 2)  # lowres_batch_size 0: batch_size


def test_progressive_resolution_trains_the_low_res_steps_on_downsampled_images(tmp_path, micro_config):
    """The first lowres_steps steps see the images box-downsampled (a U-Net is resolution-agnostic), the rest the
    full side; the phase is a resume key, and a run stopped inside the low-res phase resumes exactly."""
    from snapgen.training.objectives.flow import RectifiedFlow

    cfg = _cfg(tmp_path / "lr", micro_config, lowres_steps=3, lowres_batch_size=8)
    obj = RectifiedFlow(cfg)
    obj.build()
    obj.setup(torch.device("cpu"))
    g = torch.Generator()
    low, high = obj.batch(0, 0, 1, g)["image"], obj.batch(3, 0, 1, g)["image"]
    assert low.shape == (8, 3, 16, 16) and high.shape == (4, 3, 32, 32)
    full = obj.dataset[0]["image"]                                      # scene 0, the low-res batch's first
    assert torch.allclose(low[0], torch.nn.functional.avg_pool2d(full[None], 2)[0])
    assert obj.batch(3, 0, 1, g)["caption"][0] == obj.dataset[3 * 8]["caption"]  # full res: after the 3 x 8 low-res
    done = train(cfg, progress=False)
    part = tmp_path / "part"
    train(_cfg(part, micro_config, lowres_steps=3, lowres_batch_size=8, stop_at=2), progress=False)
    with pytest.raises(ValueError, match="lowres_steps"):
        train(_cfg(part, micro_config, lowres_steps=2, lowres_batch_size=8), progress=False)
    train(_cfg(part, micro_config, lowres_steps=3, lowres_batch_size=8), progress=False)
    a, b = _weights(done), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (done / "log.jsonl").read_text().splitlines()]
    assert [round(r["images_per_s"] * r["step_time_s"]) for r in log] == [8, 8, 8, 4, 4, 4]


def test_corrupted_checkpoint_and_empty_dataset_errors(tmp_path, micro_config):
    from snapgen.data.datasets import CaptionFolder, ClassFolder

    train(_cfg(tmp_path / "c", micro_config, stop_at=3), progress=False)
    w = next((tmp_path / "c" / "checkpoints").glob("step-*/unet/*.safetensors"))
    w.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupted"):
        train(_cfg(tmp_path / "c", micro_config), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty dataset"):
        CaptionFolder(tmp_path / "empty", 32)
    with pytest.raises(FileNotFoundError):
        ClassFolder(tmp_path / "nope", 32)


def test_data_loaders(tmp_path):
    import tarfile

    from snapgen.data.datasets import CaptionFolder, ClassFolder, WebDatasetShards

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"caption {i}")
    ds = CaptionFolder(tmp_path, 32)
    item = ds[1]
    assert item["image"].shape == (3, 32, 32) and item["caption"] == "caption 1"
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    (tmp_path / "cls" / "dog").mkdir(parents=True)
    (tmp_path / "cls" / "cat").mkdir()
    Image.open(tmp_path / "0.png").save(tmp_path / "cls" / "dog" / "a.png")
    Image.open(tmp_path / "1.png").save(tmp_path / "cls" / "cat" / "b.png")
    cf = ClassFolder(tmp_path / "cls", 32)
    assert cf.classes == ["cat", "dog"] and cf[1]["label"] == 1
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for i in range(2):
            tar.add(tmp_path / f"{i}.png", arcname=f"s{i}.png")
            tar.add(tmp_path / f"{i}.txt", arcname=f"s{i}.txt")
    wds = WebDatasetShards([tmp_path / "shard.tar"], 16)
    assert len(wds) == 2 and wds[0]["image"].shape == (3, 16, 16) and wds[0]["caption"].startswith("caption")


def test_text_stack_user_path_with_tiny_random_clip_and_gemma(tmp_path):
    import transformers as tf

    from snapgen.io import MissingWeightsError
    from snapgen.text import TextEncoderStack, TextStackConfig, EncoderSpec

    vocab = {w: i for i, w in enumerate(["<|startoftext|>", "<|endoftext|>", "a</w>", "photo</w>", "of</w>", "cat</w>"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    for name, width, proj in (("clip_l", 24, 16), ("clip_g", 40, 24)):
        d = tmp_path / name
        cfg = tf.CLIPTextConfig(vocab_size=len(vocab), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                                num_attention_heads=2, max_position_embeddings=77, projection_dim=proj)
        tf.CLIPTextModelWithProjection(cfg).save_pretrained(d)
        tf.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(d)
    gemma = tmp_path / "gemma"
    gcfg = tf.Gemma2Config(vocab_size=len(vocab) + 4, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    tf.Gemma2Model(gcfg).save_pretrained(gemma)
    tf.PreTrainedTokenizerFast(tokenizer_object=tf.CLIPTokenizerFast(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
                               .backend_tokenizer, pad_token="<|endoftext|>").save_pretrained(gemma)
    cfg = TextStackConfig((EncoderSpec("clip_l", str(tmp_path / "clip_l"), 77, 0.5), EncoderSpec("clip_g", str(tmp_path / "clip_g"), 77, 0.5),
                           EncoderSpec("gemma", str(gemma), 8, 0.5)), context_dim=64, pooled_dim=40)
    stack = TextEncoderStack(cfg)
    ctx, pooled = stack(["a photo of a cat", "a cat"])
    assert ctx.shape == (2, 77 + 8, 64) and pooled.shape == (2, 40)
    drop = {"clip_l": torch.tensor([True, False]), "clip_g": torch.tensor([False, False]), "gemma": torch.tensor([False, True])}
    dctx, dpooled = stack(["a photo of a cat", "a cat"], drop=drop)
    assert dctx[0, :77, :24].abs().sum() == 0 and dctx[0, :77, 24:].abs().sum() > 0   # CLIP-L dropped for sample 0
    assert torch.equal(dctx[1, 77:], stack.proj["gemma"](torch.zeros(8, 32)))       # Gemma dropped for sample 1
    stack.save_pretrained(tmp_path / "stack")
    again = TextEncoderStack.from_pretrained(tmp_path / "stack")
    assert torch.allclose(again(["a cat"])[0], stack(["a cat"])[0])
    with pytest.raises(MissingWeightsError, match="gemma"):
        TextEncoderStack(TextStackConfig((EncoderSpec("gemma", str(tmp_path / "nope"), 8),), 64, 40))


# The 2-process gloo test of every objective (flow included) is in tests/test_training_engine.py.


def test_class_conditional_world_mode_trains_and_samples(tmp_path):
    """data=world-class: the world's ImageNet-style mode (40 shape x colour labels) trains a class U-Net."""
    from snapgen.data.world import NUM_WORLD_LABELS

    unet = tmp_path / "unet.json"
    unet.write_text(MICRO.replace(cond="class", num_classes=NUM_WORLD_LABELS, context_dim=64, pooled_dim=64).to_json())
    out = train(_cfg(tmp_path / "run", str(unet), data="world-class", steps=2), progress=False)
    pipe = SnapGenPipeline.from_pretrained(out / "pipeline")
    assert pipe.unet.config.num_classes == NUM_WORLD_LABELS and pipe.config.null_class == NUM_WORLD_LABELS
    images = pipe.generate(class_labels=[0, NUM_WORLD_LABELS - 1], seeds=[0, 1], steps=2)
    assert [im.size for im in images] == [(32, 32), (32, 32)]
    with pytest.raises(ValueError, match="world-class"):
        train(_cfg(tmp_path / "bad", str(unet), data="world-klass", steps=1), progress=False)


def test_the_recipe_launches_its_processes_and_a_launcher_must_match_them(monkeypatch):
    from snapgen.train import launch_command

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = TrainConfig(cpu=True)                                   # the recipe: 2 processes x 1 thread
    assert (cfg.processes, cfg.threads) == (2, 1)
    cmd = launch_command(cfg, ["--out", "x"])
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    assert cmd[7:] == ["snapgen.train", "--out", "x"]
    assert launch_command(TrainConfig(processes=1), []) is None
    with pytest.raises(ValueError, match="processes=2 but this run has 1 process"):
        cfg.check_world_size()
    monkeypatch.setenv("WORLD_SIZE", "3")                         # started by torchrun --nproc_per_node 3
    assert launch_command(cfg, []) is None
    with pytest.raises(ValueError, match="--set processes=3"):
        cfg.check_world_size()
    assert TrainConfig(processes=3).check_world_size().processes == 3
    with pytest.raises(ValueError, match="processes=0"):
        TrainConfig(processes=0)


def test_learning_curve_counts_the_images_of_every_process():
    from evals.learning_curve import images_seen

    assert images_seen({"batch_size": 16, "processes": 2}, 3000) == 96_000
    assert images_seen({"batch_size": 16, "grad_accum": 2}, 10) == 320            # runs recorded before processes
    progressive = {"batch_size": 16, "processes": 2, "lowres_steps": 1500, "lowres_batch_size": 48}
    assert images_seen(progressive, 3000) == (1500 * 48 + 1500 * 16) * 2
    assert images_seen({"batch_size": 16, "processes": 2, "lowres_steps": 1500}, 1000) == 32_000   # low-res batch 0: 16


@pytest.mark.slow
def test_learning_curve_of_a_run_written_by_todays_engine(tmp_path, micro_config, monkeypatch):
    """`python -m evals.learning_curve` end to end on a 2-process-recipe-shaped run: every checkpoint scored, images
    seen counted over every process, and a rerun reuses the scored points and says so."""
    from evals.learning_curve import main as curve_main
    from snapgen.records import read_record

    monkeypatch.setenv("SNAPGEN_CACHE", str(tmp_path / "cache"))
    run = train(_cfg(tmp_path / "r", micro_config, steps=2, ckpt_every=1), progress=False)
    args = [str(run), "--no-fid", "--steps", "1", "--n-per-prompt", "1", "--threads", "1", "--out",
            str(tmp_path / "curve.json")]
    assert curve_main(args) == 0
    points = read_record(tmp_path / "curve.json")["details"]["points"]
    assert [p["step"] for p in points] == [1, 2] and [p["images_seen"] for p in points] == [4, 8]
    assert not any(p["reused"] for p in points)
    assert curve_main(args) == 0
    assert all(p["reused"] for p in read_record(tmp_path / "curve.json")["details"]["points"])
