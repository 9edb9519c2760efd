"""LADD-style adversarial step distillation (Sauer et al., arXiv 2403.12015), adapted to snapgen.

The discriminator is the frozen teacher's features at several depths (captured by forward hooks, no
model edits) plus small trainable heads. One training step (``snapgen.training.objectives.ladd``):

  1. take real x0, draw a generator timestep t from a fixed set (default {1, 0.75, 0.5, 0.25}, the
     4-step Euler grid, so ``euler_sample(steps=4)`` visits exactly the trained timesteps), build
     x_t = (1-t) x0 + t noise and predict x0_hat = x_t - t * v_student(x_t, t) in one step;
  2. re-noise x0_hat (and, for the discriminator, the real x0) to a fresh s ~ logit-normal(m, s)
     with fresh noise: the teacher only ever sees noisy inputs, where its features are meaningful;
  3. generator update: -D(fake_s) (hinge), back-propagated through the frozen teacher and the frozen
     heads into x0_hat, plus output distillation MSE(v_student(x_t, t), v_teacher(x_t, t));
  4. then the heads' update: relu(1 - D(real_s)) + relu(1 + D(fake_s)) on the detached fake of step 2.
# PAPER-UNKNOWN: the order of the two updates; chose generator then discriminator (as the tiny
# decoder's GAN), so both adversarial objectives share the engine's one loop.

Sampling: ``snapgen.flow.euler_sample(..., steps=4)`` (the pipeline's sampler with ``--steps 4``). On the
trained grid each Euler step equals "predict x0_hat, move to the next t along the straight line to it",
i.e. deterministic re-noising with the same noise estimate; 8 steps visit untrained t in between
(t = 0.875, ...), which the student handles by interpolation. # PAPER-DEVIATION: LADD samples with fresh
noise at every step; we keep the deterministic Euler sampler so the pipeline and harness are unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from snapgen.models.layers import timestep_embedding


@dataclass(frozen=True)
class LADDConfig:
    gen_timesteps: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)  # student timesteps (the 4-step Euler grid)
    gen_probs: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)        # their sampling probabilities
    # PAPER-UNKNOWN: LADD favours t=1 for the student; chose 0.4 there, uniform elsewhere.
    disc_logit_mean: float = 1.0        # re-noising s ~ logit-normal(mean, std); LADD shifts towards noise
    disc_logit_std: float = 1.0
    taps: tuple[str, ...] = ()          # teacher feature names for the heads (() = the teacher's default_taps)
    head_hidden: int = 64               # channels inside each head
    adv_weight: float = 1.0             # generator: weight of the adversarial term
    distill_weight: float = 1.0         # generator: weight of output distillation
    disc_lr: float = 2e-4               # discriminator-head AdamW learning rate

    def __post_init__(self):
        if len(self.gen_timesteps) != len(self.gen_probs):
            raise ValueError(f"gen_timesteps {self.gen_timesteps} and gen_probs {self.gen_probs} differ in length")
        if any(not 0.0 < t <= 1.0 for t in self.gen_timesteps):
            raise ValueError(f"gen_timesteps must lie in (0, 1], got {self.gen_timesteps}")

    def to_dict(self) -> dict:
        return asdict(self)


def default_taps(teacher) -> tuple[str, ...]:
    """Three depths: first encoder-side, middle and last feature of the teacher (LADD uses several)."""
    names = [n for n in teacher.feature_names if n != "last"]
    picks = (names[len(names) // 4], names[len(names) // 2], teacher.kd_feature) if len(names) >= 4 else \
        tuple(names[-2:]) + (teacher.kd_feature,)
    return tuple(dict.fromkeys(picks))


class DiscriminatorHead(nn.Module):
    """Feature map -> per-sample logit, conditioned on the re-noising level s and the pooled text
    (projection-discriminator style). # PAPER-UNKNOWN: LADD's head design; chose norm -> conv3x3 ->
    SiLU -> conv1x1 logits map, plus an inner product of the hidden map with an (s, pooled) embedding."""

    def __init__(self, channels: int, hidden: int, cond_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, 1, 1)
        self.cond = nn.Linear(cond_dim, hidden)

    def forward(self, feat: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv(self.norm(feat.float())))                    # (N, hidden, h, w)
        logits = self.out(h).flatten(1).mean(1)                           # (N,)
        proj = (h.mean((2, 3)) * self.cond(cond)).sum(1) / h.shape[1] ** 0.5
        return logits + proj


class Discriminator(nn.Module):
    """Trainable heads on the frozen teacher's features at ``taps``; logit = mean over heads."""

    def __init__(self, teacher, taps: tuple[str, ...], hidden: int, pooled_dim: int, temb_dim: int = 64):
        super().__init__()
        self.teacher, self.taps, self.temb_dim = teacher, tuple(taps), temb_dim
        unknown = [n for n in self.taps if n not in teacher.feature_names]
        if unknown:
            raise ValueError(f"unknown teacher feature taps {unknown}; known: {list(teacher.feature_names)}")
        cond_dim = temb_dim + pooled_dim
        self.heads = nn.ModuleDict({n.replace(".", "_"): DiscriminatorHead(teacher.feature_channels[n], hidden, cond_dim)
                                    for n in self.taps})

    def head_parameters(self):
        return self.heads.parameters()

    def forward(self, x_s: torch.Tensor, s: torch.Tensor, prompts: list, pooled: torch.Tensor) -> torch.Tensor:
        _, feats = self.teacher(x_s, s, prompts, features=self.taps)
        cond = torch.cat([timestep_embedding(s, self.temb_dim).to(pooled.dtype), pooled.detach()], dim=1)
        return torch.stack([self.heads[n.replace(".", "_")](feats[n], cond) for n in self.taps]).mean(0)  # (N,)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss, per sample (N,)."""
    return F.relu(1 - real_logits) + F.relu(1 + fake_logits)


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss, per sample (N,)."""
    return -fake_logits


def sample_gen_timesteps(n: int, cfg: LADDConfig, g: torch.Generator) -> torch.Tensor:
    idx = torch.multinomial(torch.tensor(cfg.gen_probs, dtype=torch.float), n, replacement=True, generator=g)
    return torch.tensor(cfg.gen_timesteps, dtype=torch.float)[idx]


def sample_disc_timesteps(n: int, cfg: LADDConfig, g: torch.Generator) -> torch.Tensor:
    return torch.sigmoid(cfg.disc_logit_mean + cfg.disc_logit_std * torch.randn(n, generator=g)).clamp(1e-3, 1 - 1e-3)
