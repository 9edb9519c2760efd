"""SnapGen's tiny decoder against a frozen VAE encoder (SD3 VAE in the paper):

    L_G = mse_weight * MSE(x_hat, x) + lpips_weight * LPIPS_vgg(x_hat, x) + adv_weight * (-D(x_hat))
    L_D = relu(1 - D(x)) + relu(1 + D(x_hat.detach()))           (from adv_start_step on)

on random crops, x_hat = decoder(z) with z the encoder's *unscaled* latent (see
``snapgen.models.decoder``). The generator step comes first (discriminator frozen), then the
discriminator's step with its own AdamW. Draw order per micro-step: crop images and positions, then
the latent's posterior noise. The EMA of the decoder weights is the deliverable.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from snapgen.models.decoder import TinyDecoder, TinyDecoderConfig
from snapgen.training.config import check_ranges, config_to_dict
from snapgen.training.decoder_data import (FolderImages, TensorImages, encode, load_frozen_encoder, render_world,
                                           sample_batch)
from snapgen.training.engine import LoopConfig, Parts, StepOut


@dataclass(frozen=True)
class TrainDecoderConfig:
    decoder: TinyDecoderConfig = TinyDecoderConfig()  # architecture of the trained decoder
    encoder_dir: str | None = None      # local diffusers AutoencoderKL folder (config.json + weights); its encoder is frozen
    image_dir: str | None = None        # folder of training images (searched recursively)
    world: bool = False                 # train on the built-in synthetic world instead of image_dir
    world_length: int = 512             # number of world scenes pre-rendered as the training pool
    world_resolution: int = 64          # side of rendered world scenes
    crop_size: int = 256                # random square crops (paper: 256x256 patches)
    batch_size: int = 8                 # global batch, split over processes (paper: 256)
    steps: int = 100_000                # optimizer steps (paper: 1M)
    lr: float = 2e-4                    # AdamW learning rate of the decoder (constant)
    # PAPER-UNKNOWN: chose AdamW(2e-4, betas (0.9, 0.99), no decay, constant LR) because it is the usual VAE-decoder recipe
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW betas (decoder and discriminator)
    weight_decay: float = 0.0           # AdamW weight decay
    grad_clip: float = 1.0              # max grad norm (0 = off)
    mse_weight: float = 1.0             # weight of the pixel MSE
    lpips_weight: float = 0.1           # weight of LPIPS(VGG); the term is off when its weights are absent
    # PAPER-UNKNOWN: chose lpips 0.1 / adv 0.05 because MSE should dominate PSNR; the paper gives no weights
    adv_weight: float = 0.05            # weight of the generator's hinge loss -D(x_hat)
    adv_start_step: int = 20_000        # step at which the adversarial loss and discriminator start
    disc_lr: float = 2e-4               # AdamW learning rate of the discriminator
    disc_channels: int = 64             # width of the first discriminator conv (doubles per layer, max 8x)
    disc_layers: int = 3                # stride-2 conv layers of the patch discriminator
    ema_decay: float = 0.999            # EMA decay of the decoder weights after warm-up
    latent_sampling: Literal["sample", "mode"] = "sample"  # posterior sample (what the diffusion model saw) or mean
    seed: int = 0                       # base seed of init, batches and latent noise
    log_every: int = 50                 # steps between JSONL log lines
    ckpt_every: int = 1000              # steps between checkpoints (and at the end)
    vgg16_weights: str | None = None    # local torchvision vgg16 state dict (LPIPS trunk)
    lpips_weights: str | None = None    # local LPIPS v0.1 linear layers (vgg.pth)
    out: str = "runs/tiny_decoder"      # run folder (train_config.json, log.jsonl, checkpoints/)
    keep_ckpts: int = 2                 # checkpoints kept on disk
    stop_at: int | None = None          # stop (checkpointed, resumable) after this step
    threads: int | None = None          # torch CPU threads (None = torch default); the effective count is logged
    cpu: bool = False                   # force CPU even when CUDA exists

    def __post_init__(self):
        check_ranges(self)              # steps >= 1, lr > 0 and finite, ... (snapgen.training.config.RANGES)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainDecoderConfig":
        d = dict(d)
        d["decoder"] = TinyDecoderConfig.from_dict(d["decoder"])
        d["betas"] = tuple(d["betas"])
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    @property
    def loop(self) -> LoopConfig:
        return LoopConfig(out=self.out, steps=self.steps, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay,
                          grad_clip=self.grad_clip, ema_decay=self.ema_decay, seed=self.seed, log_every=self.log_every,
                          ckpt_every=self.ckpt_every, keep_ckpts=self.keep_ckpts, stop_at=self.stop_at,
                          threads=self.threads, cpu=self.cpu)


# fields that may change between a run and its resumption (paths, periods, length)
RESUMABLE_CHANGES = {"steps", "log_every", "ckpt_every", "encoder_dir", "image_dir", "vgg16_weights", "lpips_weights",
                     "out", "keep_ckpts", "stop_at", "threads", "cpu"}


class PatchDiscriminator(nn.Module):
    """PatchGAN-style: stride-2 4x4 convs + GroupNorm + LeakyReLU, 1-channel logit map."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers):
            c_next = channels * min(2 ** i, 8)
            mods += [nn.Conv2d(c, c_next, 4, 2, 1), nn.GroupNorm(min(32, c_next // 4), c_next), nn.LeakyReLU(0.2)]
            c = c_next
        mods += [nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 1, H/2^L, W/2^L)
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Per sample (N,): patch-mean of relu(1 - D(real)) + patch-mean of relu(1 + D(fake))."""
    return F.relu(1 - logits_real).flatten(1).mean(1) + F.relu(1 + logits_fake).flatten(1).mean(1)


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Per sample (N,): -patch-mean of D(fake)."""
    return -logits_fake.flatten(1).mean(1)


class TinyDecoderObjective:
    """``vae`` (frozen encoder) and ``pool`` (images) may be passed in; else loaded from the config."""

    name = "decoder"
    resume_keys = tuple(f.name for f in fields(TrainDecoderConfig) if f.name not in RESUMABLE_CHANGES)

    def __init__(self, cfg: TrainDecoderConfig, vae=None, pool=None):
        self.cfg, self.vae, self.pool = cfg, vae, pool
        self.device = torch.device("cpu")
        self.lpips, self.lpips_reason = None, "not loaded yet"

    def build(self) -> Parts:
        self.decoder = TinyDecoder(self.cfg.decoder)
        self.disc = PatchDiscriminator(self.cfg.disc_channels, self.cfg.disc_layers)
        ema = copy.deepcopy(self.decoder).requires_grad_(False)
        return Parts({"decoder": self.decoder}, ema, "decoder", critics={"disc": self.disc})

    def critic_optimizer(self, params):
        return torch.optim.AdamW(params, lr=self.cfg.disc_lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay)

    def setup(self, device: torch.device) -> None:
        from snapgen.recon_metrics import try_load_lpips

        cfg, self.device = self.cfg, device
        self.vae = (self.vae if self.vae is not None else load_frozen_encoder(cfg.encoder_dir)).to(device)
        if self.pool is None:
            self.pool = (TensorImages(render_world(cfg.world_length, cfg.world_resolution, cfg.seed)) if cfg.world
                         else FolderImages(cfg.image_dir))
        self.lpips, self.lpips_reason = (try_load_lpips(cfg.vgg16_weights, cfg.lpips_weights) if cfg.lpips_weight > 0
                                         else (None, "lpips_weight is 0"))
        self.lpips = self.lpips.to(device) if self.lpips is not None else None

    def batch(self, micro_step: int, rank: int, world: int, g: torch.Generator) -> dict:
        if self.cfg.batch_size % world:
            raise ValueError(f"batch_size {self.cfg.batch_size} not divisible by {world} processes")
        x = sample_batch(self.pool, self.cfg.batch_size // world, self.cfg.crop_size, g).to(self.device)
        return {"image": x, "latent": encode(self.vae, x, self.cfg.latent_sampling, g)}

    def loss(self, net, batch: dict, g: torch.Generator, step: int) -> StepOut:
        cfg, x = self.cfg, batch["image"]                                # (N, 3, H, W)
        x_hat = net(_decode, batch["latent"])                            # (N, 3, H, W)
        terms = {"mse": (x_hat.float() - x.float()).square().flatten(1).mean(1)}
        loss = cfg.mse_weight * terms["mse"]
        if self.lpips is not None and cfg.lpips_weight > 0:
            terms["lpips"] = self.lpips(x_hat, x)
            loss = loss + cfg.lpips_weight * terms["lpips"]
        adv_on = cfg.adv_weight > 0 and step >= cfg.adv_start_step
        if adv_on:  # the discriminator is frozen and unwrapped here (the engine's critic step trains it)
            terms["g_adv"] = hinge_g_loss(self.disc(x_hat))
            loss = loss + cfg.adv_weight * terms["g_adv"]
        terms["loss"] = loss
        return StepOut(loss.mean(), {k: v.detach() for k, v in terms.items()}, None,
                       (x, x_hat.detach()) if adv_on else None)

    def critic_loss(self, critic, inputs):
        x, x_hat = inputs
        logits = critic(_discriminate, torch.cat([x, x_hat]))           # one pass: real then fake
        d = hinge_d_loss(*logits.chunk(2))
        return d.mean(), {"d_hinge": d}

    def record(self) -> dict:
        return {"lpips": None if self.lpips is None else "vgg", "lpips_reason": self.lpips_reason}

    def finalize(self, parts: Parts, out: Path) -> None:
        """The EMA decoder is in every checkpoint (``ema/``); nothing else to write."""


def _decode(modules, z):
    return modules["decoder"](z)


def _discriminate(modules, x):
    return modules["disc"](x)
