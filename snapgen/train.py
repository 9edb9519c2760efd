"""Rectified-flow training of a SnapGen U-Net (text-to-image or class-conditional), on accelerate.

    python -m snapgen.train --out runs/tiny-world                      # built-in synthetic world, CPU, minutes
    python -m snapgen.train --config my.json --set steps=20000 lr=1e-4  # config file + overrides
    torchrun --nproc_per_node 2 -m snapgen.train --set cpu=true ...     # 2-process gloo on CPU
    accelerate launch -m snapgen.train --config my.json                 # multi-GPU

Exact resume: the samples, noise, timesteps and text dropout of step s are drawn from generators seeded
by (seed, s, rank), so a run resumed from a checkpoint replays exactly what an uninterrupted run does.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from snapgen.config import UNetConfig
from snapgen.flow import FlowConfig, flow_loss, loss_by_t_bins, sample_timesteps
from snapgen.io import atomic_write_json, atomic_write_text, sha256_json
from snapgen.models.unet import SnapGenUNet


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/tiny-world"            # output directory (checkpoints, log.jsonl, pipeline/, samples.png)
    unet: str = "tiny-world"                # snapgen.presets name, or path to a UNet config.json
    data: str = "world"                     # world | folder:PATH | wds:SHARD[,SHARD] | classes:PATH
    resolution: int = 32                    # training resolution in pixels
    vae: str | None = None                  # local AutoencoderKL dir: train in its latent space (else pixels)
    latent_cache: str | None = None         # where to cache VAE latents (default: OUT/latents)
    text: Literal["minilm", "snapgen"] = "minilm"  # offline MiniLM, or CLIP-L + CLIP-G + Gemma from local dirs
    clip_l: str | None = None               # local dirs for text="snapgen"
    clip_g: str | None = None
    gemma: str | None = None
    text_drop_prob: float = 0.1             # per-encoder (or class-label) dropout probability
    batch_size: int = 16                    # per process, per micro-step
    grad_accum: int = 1                     # micro-steps per optimizer step
    steps: int = 400                        # optimizer steps (default: the CPU recipe, 5-7 min on 2 cores)
    lr: float = 2e-3                        # AdamW peak learning rate
    warmup: int = 50                        # linear warm-up steps, then cosine decay to lr_min
    lr_min: float = 1e-4                    # final learning rate
    weight_decay: float = 0.0               # AdamW weight decay
    grad_clip: float = 1.0                  # max global grad norm
    ema_decay: float = 0.995                # EMA of weights (sampling uses EMA)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    timesteps: Literal["uniform", "logit_normal", "shifted_logit_normal"] = "logit_normal"
    logit_mean: float = 0.0                 # logit-normal timestep distribution (SD3 default 0, 1)
    logit_std: float = 1.0
    shift: float = 1.0                      # timestep shift
    seed: int = 0                           # training seed (samples, noise, timesteps, dropout)
    world_seed: int = 0                     # synthetic world: scene seed
    log_every: int = 25                     # JSONL log period (steps)
    ckpt_every: int = 500                   # checkpoint period (steps); the last step always checkpoints
    keep_ckpts: int = 2                     # checkpoints kept on disk
    sample_steps: int = 20                  # sampling steps for the final sample grid
    sample_guidance: float = 3.0            # guidance for the final sample grid
    stop_at: int | None = None              # stop (checkpointed, resumable) after this step: time-limited jobs
    threads: int | None = None              # torch CPU threads (None = torch default)
    cpu: bool = False                       # force CPU even when CUDA exists

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def flow(self) -> FlowConfig:
        return FlowConfig(self.timesteps, self.logit_mean, self.logit_std, self.shift)


def parse_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """``key=value`` strings -> a new config; values are parsed by the field's type."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    hints = typing.get_type_hints(TrainConfig)
    changes = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(key, fields, n=3)
            raise ValueError(f"unknown config field {key!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        changes[key] = _parse_value(value, hints[key])
    return dataclasses.replace(cfg, **changes)


def _parse_value(value: str, hint) -> object:
    """Parse ``value`` by the field's annotation (Optional[...] accepts none/null)."""
    args = typing.get_args(hint)
    if value.lower() in ("none", "null") and type(None) in args:
        return None
    base = next((a for a in args if a is not type(None)), hint) if typing.get_origin(hint) is not typing.Literal else hint
    if base is bool:
        return value.lower() in ("1", "true", "yes", "on")
    if base in (int, float):
        return base(value)
    if typing.get_origin(base) is typing.Literal and value not in typing.get_args(base):
        raise ValueError(f"{value!r} is not one of {typing.get_args(base)}")
    return value


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    cfg = TrainConfig()
    if path:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} does not exist")
        raw = json.loads(p.read_text()) if p.suffix == ".json" else __import__("yaml").safe_load(p.read_text())
        cfg = parse_overrides(cfg, [f"{k}={v}" for k, v in raw.items()])
    return parse_overrides(cfg, overrides)


# ------------------------------------------------------------------------------------------------
# Model, text, data


def unet_config(cfg: TrainConfig) -> UNetConfig:
    from snapgen.presets import PRESETS, get_preset

    if cfg.unet in PRESETS:
        return get_preset(cfg.unet)
    p = Path(cfg.unet)
    if not p.exists():
        get_preset(cfg.unet)  # raises with close matches
    return UNetConfig.from_dict(json.loads(p.read_text()))


def build_text(cfg: TrainConfig):
    from snapgen.text import EncoderSpec, TextEncoderStack, TextStackConfig

    if cfg.text == "minilm":
        return TextEncoderStack(TextStackConfig((EncoderSpec("minilm", None, 16, cfg.text_drop_prob),), 384, 384))
    return TextEncoderStack(TextStackConfig.snapgen(cfg.clip_l, cfg.clip_g, cfg.gemma, drop_prob=cfg.text_drop_prob))


def build_dataset(cfg: TrainConfig):
    from snapgen.data import datasets as D

    kind, _, arg = cfg.data.partition(":")
    if kind == "world":
        from snapgen.data.world import WorldConfig, WorldDataset

        ds = WorldDataset(WorldConfig(resolution=cfg.resolution), seed=cfg.world_seed, length=10**9)
    elif kind == "folder":
        ds = D.CaptionFolder(arg, cfg.resolution)
    elif kind == "wds":
        ds = D.WebDatasetShards(arg.split(","), cfg.resolution)
    elif kind == "classes":
        ds = D.ClassFolder(arg, cfg.resolution)
    else:
        raise ValueError(f"data={cfg.data!r}: expected world | folder:PATH | wds:SHARDS | classes:PATH")
    if cfg.vae:
        ds = D.LatentCache(ds, cfg.vae, cfg.latent_cache or Path(cfg.out) / "latents")
    return ds


def batch_indices(micro_step: int, rank: int, world: int, batch: int, n: int, seed: int) -> list[int]:
    """Dataset indices of one micro-batch (``micro_step`` counts micro-steps from 0), sharded by rank.

    Finite datasets walk a fresh seeded permutation per epoch; the (unlimited) synthetic world is
    indexed directly, since its item i is already a deterministic random scene.
    """
    start = micro_step * batch * world + rank * batch
    if n >= 10**8:
        return list(range(start, start + batch))
    out, perm, epoch = [], None, None
    for pos in range(start, start + batch):
        if pos // n != epoch:
            epoch = pos // n
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(perm[pos % n]))
    return out


# ------------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(out: Path, step: int, unet, ema, text, opt, sched, cfg: TrainConfig, keep: int) -> Path:
    ck = out / "checkpoints" / f"step-{step:07d}"
    tmp = ck.with_name(ck.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    unet.save_pretrained(tmp / "unet")
    ema.save_pretrained(tmp / "ema")
    text.save_pretrained(tmp / "text")
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / "optimizer.pt")
    atomic_write_json(tmp / "state.json", {"step": step, "config": cfg.to_dict(), "config_hash": sha256_json(cfg.to_dict())[:12]})
    shutil.rmtree(ck, ignore_errors=True)
    os.replace(tmp, ck)
    atomic_write_text(out / "checkpoints" / "latest", ck.name + "\n")
    for old in sorted((out / "checkpoints").glob("step-*"))[:-keep]:
        if not old.name.endswith(".partial"):
            shutil.rmtree(old, ignore_errors=True)
    return ck


def latest_checkpoint(out: Path) -> Path | None:
    f = out / "checkpoints" / "latest"
    if not f.exists():
        return None
    ck = out / "checkpoints" / f.read_text().strip()
    if not (ck / "state.json").exists():
        raise FileNotFoundError(f"{f} points at {ck}, which is incomplete; delete it or the 'latest' file to restart")
    return ck


# ------------------------------------------------------------------------------------------------
# Training


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach().to(pe.dtype), 1 - decay)


def _collate(items: list[dict]) -> dict:
    out = {"image": torch.stack([it["image"] for it in items])}
    if "caption" in items[0]:
        out["caption"] = [it["caption"] for it in items]
    if "label" in items[0]:
        out["label"] = torch.tensor([it["label"] for it in items])
    return out


def _condition(batch: dict, unet_cfg: UNetConfig, text, g: torch.Generator, p_drop: float, device):
    n = batch["image"].shape[0]
    if unet_cfg.cond == "class":
        labels = batch["label"].clone()
        labels[torch.rand(n, generator=g) < p_drop] = unet_cfg.num_classes  # null class
        return {"class_labels": labels.to(device)}
    ctx, pooled = text(batch["caption"], drop=text.stack.sample_drop(n, g))
    return {"context": ctx.to(device), "pooled": pooled.to(device)}


def _prefill_world_prompts(cached, cfg: TrainConfig) -> None:
    """The world's captions form a finite vocabulary: encode it once, cached on disk by content."""
    from snapgen.data.world import GENEVAL_TAGS, WorldConfig, all_metadata

    prompts = sorted({m["prompt"] for tag in GENEVAL_TAGS for m in all_metadata(tag, WorldConfig(resolution=cfg.resolution))})
    prompts.append("")
    key = sha256_json({"text": cached.stack.config.to_dict(), "prompts": prompts})[:16]
    cache_dir = Path(os.environ.get("SNAPGEN_CACHE", Path.home() / ".cache" / "snapgen-bench")) / "text"
    cached.prefill(prompts, cache_dir / f"world-{key}.safetensors")


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_accelerator(cfg: TrainConfig):
    """The accelerate ``Accelerator`` for a run (CPU when asked or when no CUDA device exists)."""
    from accelerate import Accelerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return Accelerator(cpu=cfg.cpu or not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                       gradient_accumulation_steps=cfg.grad_accum)


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Run (or resume) training; returns the output directory (with ``pipeline/`` when finished)."""
    from tqdm import tqdm

    from snapgen.text import CachedText

    acc = make_accelerator(cfg)
    out = Path(cfg.out)
    ucfg = unet_config(cfg)
    torch.manual_seed(cfg.seed)
    unet = SnapGenUNet(ucfg)
    ema = SnapGenUNet(ucfg).requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    text = build_text(cfg) if ucfg.cond == "text" else None
    if text is not None and (text.config.context_dim != ucfg.context_dim or text.config.pooled_dim != ucfg.pooled_dim):
        raise ValueError(f"text stack gives context {text.config.context_dim}/pooled {text.config.pooled_dim}, "
                         f"U-Net expects {ucfg.context_dim}/{ucfg.pooled_dim}")
    params = list(unet.parameters()) + (list(text.trainable_parameters()) if text is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / cfg.lr)
    start = 0
    ck = latest_checkpoint(out)
    if ck is not None:
        start = _resume(ck, cfg, unet, ema, text, opt, sched)
        acc.print(f"resumed from {ck} at step {start}")
    unet, opt = acc.prepare(unet, opt)
    ema.to(acc.device)
    dataset = build_dataset(cfg)
    cached = CachedText(text) if text is not None else None
    if cached is not None and cfg.data == "world":
        _prefill_world_prompts(cached, cfg)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "train_config.json", {**cfg.to_dict(), "unet_config": ucfg.to_dict()})
    log_path = out / "log.jsonl"
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not (progress and acc.is_main_process),
               desc="train", unit="step")
    for step in bar:
        t0 = time.perf_counter()
        losses, ts = [], []
        for micro in range(cfg.grad_accum):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + (step * cfg.grad_accum + micro) * 7919 + acc.process_index)
            idx = batch_indices(step * cfg.grad_accum + micro, acc.process_index, acc.num_processes, cfg.batch_size,
                                len(dataset), cfg.seed)
            batch = _collate([dataset[i] for i in idx])
            x0 = batch["image"].to(acc.device)
            t = sample_timesteps(x0.shape[0], cfg.flow, g).to(acc.device)
            noise = torch.randn(x0.shape, generator=g).to(acc.device)
            cond = _condition(batch, ucfg, cached, g, cfg.text_drop_prob, acc.device)
            with acc.accumulate(unet):
                loss, per_sample, _ = flow_loss(unet, x0, t, noise, **cond)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
            losses.append(per_sample.detach())
            ts.append(t)
        sched.step()
        ema_update(ema, acc.unwrap_model(unet), min(cfg.ema_decay, (1 + step) / (10 + step)))  # EMA warm-up
        dt = time.perf_counter() - t0
        if acc.is_main_process and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            per = torch.cat(losses).float()
            rec = {"step": step, "loss": float(per.mean()), "loss_by_t": loss_by_t_bins(torch.cat(ts), per),
                   "lr": sched.get_last_lr()[0], "step_time_s": dt,
                   "images_per_s": cfg.batch_size * cfg.grad_accum * acc.num_processes / dt,
                   "memory_mb": _memory_mb(acc.device), "processes": acc.num_processes}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        last = step == cfg.steps - 1
        stopping = cfg.stop_at is not None and step + 1 >= cfg.stop_at and not last
        if (step + 1) % cfg.ckpt_every == 0 or last or stopping:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(out, step + 1, acc.unwrap_model(unet), ema, text or _NoText(), opt, sched, cfg, cfg.keep_ckpts)
        if stopping:
            acc.print(f"stopped at step {step + 1} (stop_at); rerun without stop_at to resume")
            return out
    acc.wait_for_everyone()
    if acc.is_main_process:
        finalize(cfg, ema, text, out)
    acc.end_training() if hasattr(acc, "end_training") else None
    return out


class _NoText:
    def save_pretrained(self, _):
        pass


def _resume(ck: Path, cfg: TrainConfig, unet, ema, text, opt, sched) -> int:
    state = json.loads((ck / "state.json").read_text())
    saved = state["config"]
    critical = ("unet", "data", "resolution", "text", "batch_size", "grad_accum", "seed", "vae")
    changed = {k: (saved.get(k), getattr(cfg, k)) for k in critical if saved.get(k) != getattr(cfg, k)}
    if changed:
        raise ValueError(f"cannot resume {ck}: the config changed in {changed} (saved, now); use another --out")
    expected = unet.config
    unet.load_state_dict(SnapGenUNet.from_pretrained(ck / "unet", expected=expected).state_dict())
    ema.load_state_dict(SnapGenUNet.from_pretrained(ck / "ema", expected=expected).state_dict())
    if text is not None and len(text.proj):
        from snapgen.text import TextEncoderStack

        text.proj.load_state_dict(TextEncoderStack.from_pretrained(ck / "text").proj.state_dict())
    blob = torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=False)
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    return int(state["step"])


def finalize(cfg: TrainConfig, ema: SnapGenUNet, text, out: Path) -> Path:
    """Write the EMA pipeline and a sample grid for a fixed set of captions."""
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline, image_grid, sample_seed

    pcfg = PipelineConfig(decoder="vae" if cfg.vae else "pixel", resolution=cfg.resolution, steps=cfg.sample_steps,
                          guidance=cfg.sample_guidance, null_class=ema.config.num_classes if ema.config.cond == "class" else None)
    decoder = None
    if cfg.vae:
        from diffusers import AutoencoderKL

        decoder = AutoencoderKL.from_pretrained(cfg.vae)
        pcfg = dataclasses.replace(pcfg, latent_scaling=decoder.config.scaling_factor,
                                   latent_shift=decoder.config.shift_factor or 0.0)
    ema_cpu = SnapGenUNet(ema.config)
    ema_cpu.load_state_dict({k: v.detach().cpu() for k, v in ema.state_dict().items()})
    pipe = SnapGenPipeline(ema_cpu, text.cpu() if text is not None else None, decoder, pcfg)
    tmp = out / "pipeline.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    shutil.rmtree(out / "pipeline", ignore_errors=True)
    os.replace(tmp, out / "pipeline")
    if ema.config.cond == "text" and cfg.data == "world":
        captions = SAMPLE_CAPTIONS
        images = pipe.generate(captions, [sample_seed(i, 0, 0) for i in range(len(captions))])
        from snapgen.io import atomic_save_image

        atomic_save_image(out / "samples.png", image_grid(images, cols=4, captions=captions))
    return out / "pipeline"


SAMPLE_CAPTIONS = ["a photo of a red circle", "a photo of a blue square", "a photo of a green triangle",
                   "a photo of a yellow cross", "a photo of two circles", "a photo of three squares",
                   "a photo of a circle and a square", "a photo of a triangle left of a cross",
                   "a photo of a white circle and a purple square", "a photo of a square above a circle",
                   "a photo of an orange triangle", "a photo of four crosses"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snapgen.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON or YAML file of TrainConfig fields")
    p.add_argument("--out", help="output directory (shortcut for --set out=...)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and model size, then exit")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config, a.set + ([f"out={a.out}"] if a.out else []))
        if a.dry_run:
            ucfg = unet_config(cfg)
            with torch.device("meta"):
                n = sum(q.numel() for q in SnapGenUNet(ucfg).parameters())
            print(json.dumps({"config": cfg.to_dict(), "unet": ucfg.to_dict(), "unet_params": n}, indent=2))
            return 0
        out = train(cfg, progress=not a.no_progress)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {out / 'pipeline'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
