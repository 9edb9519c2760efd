"""Text-to-image runs (rectified flow, KD, LADD): the config, the denoiser (U-Net or world DiT) / text / dataset
builders and the deterministic batch indices. The loop is ``snapgen.training.engine``; the losses are in
``snapgen.training.objectives``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from snapgen.config import UNetConfig
from snapgen.models.dit import DiTConfig, WorldDiT, is_dit_config_dict
from snapgen.flow import FlowConfig
from snapgen.io import sha256_json
from snapgen.training.config import check_ranges, config_to_dict
from snapgen.training.engine import LoopConfig


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/tiny-world"            # output directory (checkpoints, log.jsonl, pipeline/, samples.png)
    unet: str = "tiny-world"                # snapgen.presets name, or path to a UNet config.json
    data: str = "world"                     # world | world-class | folder:PATH | wds:SHARD[,SHARD] | classes:PATH
    resolution: int = 32                    # training resolution in pixels
    vae: str | None = None                  # local AutoencoderKL dir: train in its latent space (else pixels)
    latent_cache: str | None = None         # where to cache VAE latents (default: OUT/latents)
    text: Literal["minilm", "snapgen"] = "minilm"  # offline MiniLM, or CLIP-L + CLIP-G + Gemma from local dirs
    clip_l: str | None = None               # local CLIP-L dir for text="snapgen"
    clip_g: str | None = None               # local CLIP-G dir for text="snapgen"
    gemma: str | None = None                # local Gemma-2 dir for text="snapgen"
    text_drop_prob: float = 0.1             # per-encoder (or class-label) dropout probability
    batch_size: int = 16                    # per process, per micro-step
    processes: int = 2                      # data-parallel processes (the world size; global batch = processes x
                                            # batch_size x grad_accum). `python -m snapgen.train` started alone
                                            # launches them under torch.distributed.run; under torchrun / accelerate
                                            # launch the world size must equal it
    grad_accum: int = 1                     # micro-steps per optimizer step
    steps: int = 3000                       # optimizer steps (the world recipe: <= 30 min on 2 CPU cores)
    lowres_steps: int = 0                   # progressive resolution: the first N optimizer steps train on the images
                                            # box-downsampled by lowres_factor (the U-Net is resolution-agnostic), the
                                            # rest at `resolution`, as SnapGen trains 256 -> 512 -> 1024 px. 0 = off
    lowres_factor: int = 2                  # downsampling factor of those steps (2: 32 px images train at 16 px)
    lowres_batch_size: int = 0              # batch per process during those steps (0 = batch_size): a smaller image
                                            # costs fewer FLOPs, so the same step time holds more of them
    lr: float = 2e-3                        # AdamW peak learning rate
    warmup: int = 100                       # linear warm-up steps, then cosine decay to lr_min
    lr_min: float = 1e-4                    # final learning rate
    weight_decay: float = 0.0               # AdamW weight decay
    grad_clip: float = 1.0                  # max global grad norm (0 = off)
    ema_decay: float = 0.999                # EMA of weights after warm-up (sampling uses EMA)
    optimizer: Literal["adamw", "muon"] = "adamw"  # main optimizer: AdamW, or Muon for the hidden weight matrices
                                            # (+ AdamW for the rest; same lr and schedule: snapgen.training.optim)
    muon_momentum: float = 0.95             # Muon's Nesterov momentum (optimizer=muon)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # accelerate autocast
    timesteps: Literal["uniform", "logit_normal", "shifted_logit_normal"] = "logit_normal"  # training t sampler
    logit_mean: float = 0.0                 # logit-normal timestep mean (SD3 default 0)
    logit_std: float = 1.0                  # logit-normal timestep std (SD3 default 1)
    shift: float = 1.0                      # timestep shift
    seed: int = 0                           # training seed (init, samples, noise, timesteps, dropout)
    world_seed: int = 0                     # synthetic world: scene seed
    tag_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # data=world: training mix over the GenEval tasks
                                            # (snapgen.data.world.GENEVAL_TAGS order: single_object, two_object,
                                            # counting, colors, position, color_attr); the held-out split is unchanged
    log_every: int = 25                     # JSONL log period (steps)
    ckpt_every: int = 250                   # checkpoint period (steps); the last step always checkpoints
    keep_ckpts: int = 20                    # checkpoints kept on disk (all of the recipe's: its learning curve)
    sample_steps: int = 20                  # sampling steps for the final sample grid
    sample_guidance: float = 3.0            # guidance for the final sample grid
    stop_at: int | None = None              # stop (checkpointed, resumable) after this step: time-limited jobs
    threads: int | None = 1                 # torch CPU threads per process (None = torch default); the effective
                                            # count is logged. The recipe: 2 processes x 1 thread on 2 cores
    cpu: bool = False                       # force CPU even when CUDA exists
    channels_last: bool = False             # U-Net and its inputs in channels_last memory format (a speed lever)
    split_depthwise: bool = True            # multiplier depthwise convs run split (a speed lever; same weights, outputs
                                            # to float rounding: snapgen.models.layers.set_split_depthwise)

    def __post_init__(self):
        check_ranges(self)                  # steps >= 1, lr > 0 and finite, ... (snapgen.training.config.RANGES)
        from snapgen.data.world import GENEVAL_TAGS, check_tag_weights

        check_tag_weights(self.tag_weights)              # the world's own check (WorldConfig makes it too)
        if self.data != "world" and tuple(self.tag_weights) != (1.0,) * len(GENEVAL_TAGS):
            raise ValueError(f"tag_weights is the mix of the synthetic world's tasks; data={self.data!r} has no tasks: "
                             "drop --set tag_weights or train with data=world")

    def check_world_size(self) -> "TrainConfig":
        """The run's world size (``WORLD_SIZE`` of torchrun / accelerate launch; 1 without a launcher) must equal
        ``processes``: the global batch, and so the optimisation problem, depends on it. Returns ``self``."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != self.processes:
            raise ValueError(f"processes={self.processes} but this run has {world} process(es) (WORLD_SIZE): start "
                             f"`python -m snapgen.train` alone (it launches {self.processes}), launch with "
                             f"--nproc_per_node {self.processes}, or pass --set processes={world}")
        return self

    def validate(self) -> "TrainConfig":
        """Checks across fields, made once the config is complete: the resolution must divide into the U-Net's
        levels (after the VAE's downsampling when training in a latent space). Returns ``self``."""
        ucfg = unet_config(self)
        vae = vae_factor(self.vae)
        if isinstance(ucfg, DiTConfig):                 # a DiT: the side must divide into patches
            factor = vae * ucfg.patch_size
            if self.resolution % factor:
                raise ValueError(f"resolution={self.resolution}: must be divisible by {factor} (the DiT {self.unet!r} "
                                 f"has {ucfg.patch_size}x{ucfg.patch_size} patches" +
                                 (f" after the VAE's {vae}x" if vae > 1 else "") + ")")
            return self
        factor = vae * 2 ** (len(ucfg.stages) - 1)
        if self.resolution % factor:
            raise ValueError(f"resolution={self.resolution}: must be divisible by {factor} (the U-Net {self.unet!r} "
                             f"halves the side {len(ucfg.stages) - 1} times" + (f" after the VAE's {vae}x" if vae > 1
                                                                                 else "") + ")")
        self._validate_lowres(ucfg, vae)
        return self

    def _validate_lowres(self, ucfg: UNetConfig | DiTConfig, vae: int) -> None:
        """Progressive resolution: the low-res phase's side must divide into the denoiser too; pixel space only."""
        if not self.lowres_steps:
            return
        if self.lowres_steps >= self.steps:
            raise ValueError(f"lowres_steps={self.lowres_steps}: must be below steps={self.steps} (the run ends at "
                             "the training resolution); lower lowres_steps or raise steps")
        if vae > 1:
            raise ValueError("lowres_steps with vae: progressive resolution downsamples pixels, not latents; drop "
                             "--set lowres_steps or train in pixel space")
        side, rest = divmod(self.resolution, self.lowres_factor)
        unit = ucfg.patch_size * (1 if isinstance(ucfg, DiTConfig) else 2 ** (len(ucfg.stages) - 1))
        if rest or side % unit:
            raise ValueError(f"lowres_factor={self.lowres_factor}: resolution {self.resolution} / {self.lowres_factor}"
                             f" must be a whole side divisible by {unit} (the denoiser {self.unet!r}); pick another "
                             "lowres_factor")

    def micro_batch(self, micro_step: int, world: int) -> tuple[int, int, int]:
        """(per-process batch size, dataset position of the micro-step's first sample, downsampling factor) of a
        micro-step: the low-res phase (the first ``lowres_steps`` optimizer steps) comes first, then the rest at
        ``resolution``; positions run on without a gap or overlap across the phases."""
        lo_micro = self.lowres_steps * self.grad_accum
        lo_batch = self.lowres_batch_size or self.batch_size
        if micro_step < lo_micro:
            return lo_batch, micro_step * lo_batch * world, self.lowres_factor
        return self.batch_size, lo_micro * lo_batch * world + (micro_step - lo_micro) * self.batch_size * world, 1

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @property
    def flow(self) -> FlowConfig:
        return FlowConfig(self.timesteps, self.logit_mean, self.logit_std, self.shift)

    @property
    def loop(self) -> LoopConfig:
        return LoopConfig(out=self.out, steps=self.steps, lr=self.lr, grad_accum=self.grad_accum, warmup=self.warmup,
                          lr_min=self.lr_min, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                          ema_decay=self.ema_decay, optimizer=self.optimizer, muon_momentum=self.muon_momentum,
                          mixed_precision=self.mixed_precision, seed=self.seed,
                          log_every=self.log_every, ckpt_every=self.ckpt_every, keep_ckpts=self.keep_ckpts,
                          stop_at=self.stop_at, threads=self.threads, cpu=self.cpu)


# fields a resumed run must share with its checkpoint (the rest, e.g. steps or log_every, may change)
RESUME_KEYS = ("unet", "data", "resolution", "text", "batch_size", "processes", "grad_accum", "seed", "vae",
               "tag_weights", "lowres_steps", "lowres_factor", "lowres_batch_size", "optimizer")

# Fields added to TrainConfig after runs were recorded, each with the value that reproduces the code those runs were
# trained with: a stored config (a record, a shipped checkpoint) without the field meant this value, whatever the
# field's default is today. A rerun of an old run passes these explicitly (``ablations ladder --verify``).
LEGACY_VALUES: dict[str, object] = {"split_depthwise": False, "processes": 1, "tag_weights": [1.0] * 6,
                                    "lowres_steps": 0, "lowres_factor": 2, "lowres_batch_size": 0,
                                    "optimizer": "adamw", "muon_momentum": 0.95}


def stored_recipe(train_config: dict) -> dict:
    """The TrainConfig fields of a stored ``train_config.json`` (without its environment, U-Net config and output
    folder), fields added since it was written filled with their ``LEGACY_VALUES``."""
    from dataclasses import fields

    names = {f.name for f in fields(TrainConfig)} - {"out"}
    return {**LEGACY_VALUES, **{k: v for k, v in train_config.items() if k in names}}


def vae_factor(vae: str | None) -> int:
    """Pixels per latent side of a local AutoencoderKL folder (1 without a VAE; 8 when its config is unreadable)."""
    if vae is None:
        return 1
    try:
        return 2 ** (len(json.loads((Path(vae) / "config.json").read_text())["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return 8


def unet_config(cfg: TrainConfig) -> UNetConfig | DiTConfig:
    """The denoiser's config: a preset name (``snapgen.presets``: a U-Net, or a DiT such as ``world-dit-s``) or a
    config.json path (a DiT's is recognised by ``_class_name: WorldDiT`` / ``patch_size``)."""
    from snapgen.presets import DIT_PRESET_NAMES, PRESETS, get_denoiser_preset, get_preset

    if cfg.unet in PRESETS:
        return get_preset(cfg.unet)
    if cfg.unet in DIT_PRESET_NAMES:
        return get_denoiser_preset(cfg.unet)
    p = Path(cfg.unet)
    if not p.exists():
        get_denoiser_preset(cfg.unet)  # raises with close matches
    raw = json.loads(p.read_text())
    return DiTConfig.from_dict(raw) if is_dit_config_dict(raw) else UNetConfig.from_dict(raw)


def build_denoiser(ucfg: UNetConfig | DiTConfig):
    """A fresh denoiser for ``ucfg``: ``SnapGenUNet`` or ``WorldDiT`` (``snapgen.models.dit``)."""
    from snapgen.models.unet import SnapGenUNet

    return WorldDiT(ucfg) if isinstance(ucfg, DiTConfig) else SnapGenUNet(ucfg)


def build_text(cfg: TrainConfig):
    from snapgen.text import EncoderSpec, TextEncoderStack, TextStackConfig

    if cfg.text == "minilm":
        return TextEncoderStack(TextStackConfig((EncoderSpec("minilm", None, 16, cfg.text_drop_prob),), 384, 384))
    return TextEncoderStack(TextStackConfig.snapgen(cfg.clip_l, cfg.clip_g, cfg.gemma, drop_prob=cfg.text_drop_prob))


def check_text_fits(text, ucfg: UNetConfig) -> None:
    if text.config.context_dim != ucfg.context_dim or text.config.pooled_dim != ucfg.pooled_dim:
        raise ValueError(f"text stack gives context {text.config.context_dim}/pooled {text.config.pooled_dim}, "
                         f"U-Net expects {ucfg.context_dim}/{ucfg.pooled_dim}")


def build_dataset(cfg: TrainConfig):
    from snapgen.data import datasets as D

    kind, _, arg = cfg.data.partition(":")
    if kind == "world":
        from snapgen.data.world import WorldConfig, WorldDataset

        ds = WorldDataset(WorldConfig(resolution=cfg.resolution, tag_weights=cfg.tag_weights), seed=cfg.world_seed,
                          length=10**9)
    elif kind == "world-class":                 # the world's ImageNet: 40 shape x colour labels (unet cond="class")
        from snapgen.data.world import WorldConfig, WorldDataset

        ds = WorldDataset(WorldConfig(resolution=cfg.resolution), seed=cfg.world_seed, length=10**9, mode="class")
    elif kind == "folder":
        ds = D.CaptionFolder(arg, cfg.resolution)
    elif kind == "wds":
        ds = D.WebDatasetShards(arg.split(","), cfg.resolution)
    elif kind == "classes":
        ds = D.ClassFolder(arg, cfg.resolution)
    else:
        raise ValueError(f"data={cfg.data!r}: expected world | world-class | folder:PATH | wds:SHARDS | classes:PATH")
    if cfg.vae:
        ds = D.LatentCache(ds, cfg.vae, cfg.latent_cache or Path(cfg.out) / "latents")
    return ds


def batch_indices(micro_step: int, rank: int, world: int, batch: int, n: int, seed: int,
                  first: int | None = None) -> list[int]:
    """Dataset indices of one micro-batch (``micro_step`` counts micro-steps from 0), sharded by rank.

    ``first`` is the position of the micro-step's first sample (all ranks); by default ``micro_step * batch *
    world`` (one batch size all run long; ``TrainConfig.micro_batch`` gives it under progressive resolution).
    Finite datasets walk a fresh seeded permutation per epoch; the (unlimited) synthetic world is
    indexed directly, since its item i is already a deterministic random scene.
    """
    start = (micro_step * batch * world if first is None else first) + rank * batch
    if n >= 10**8:
        return list(range(start, start + batch))
    out, perm, epoch = [], None, None
    for pos in range(start, start + batch):
        if pos // n != epoch:
            epoch = pos // n
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(perm[pos % n]))
    return out


def collate(items: list[dict]) -> dict:
    out = {"image": torch.stack([it["image"] for it in items])}
    if "caption" in items[0]:
        out["caption"] = [it["caption"] for it in items]
    if "label" in items[0]:
        out["label"] = torch.tensor([it["label"] for it in items])
    return out


def world_training_prompts(resolution: int) -> list[str]:
    """The captions the world's training split can emit (``snapgen.data.world.training_prompts`` when the
    world has a held-out split; before that, every caption of every GenEval tag), sorted, plus ""."""
    from snapgen.data import world as W

    wcfg = W.WorldConfig(resolution=resolution)
    training_prompts = getattr(W, "training_prompts", None)
    if training_prompts is not None:
        prompts = set(training_prompts(wcfg))
    else:
        prompts = {m["prompt"] for tag in W.GENEVAL_TAGS for m in W.all_metadata(tag, wcfg)}
    return sorted(prompts) + [""]


def prefill_world_prompts(cached, cfg: TrainConfig) -> None:
    """The world's captions form a finite vocabulary: encode it once, cached on disk by content."""
    prompts = world_training_prompts(cfg.resolution)
    key = sha256_json({"text": cached.stack.config.to_dict(), "prompts": prompts})[:16]
    cache_dir = Path(os.environ.get("SNAPGEN_CACHE", Path.home() / ".cache" / "snapgen-bench")) / "text"
    cached.prefill(prompts, cache_dir / f"world-{key}.safetensors")
