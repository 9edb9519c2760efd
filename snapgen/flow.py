"""Rectified flow: the convention, timestep samplers, the loss, and the Euler sampler.

Convention (pinned; every other module follows it):
    t = 0 is data, t = 1 is noise;  x_t = (1 - t) * x0 + t * noise;  velocity target v = noise - x0;
    sampling integrates dx/dt = v from t = 1 down to t = 0:  x_{t-dt} = x_t - dt * v.
So from a velocity prediction v at (x_t, t):  x0 = x_t - t * v  and  noise = x_t + (1 - t) * v.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

TimestepSampler = Literal["uniform", "logit_normal", "shifted_logit_normal"]


@dataclass(frozen=True)
class FlowConfig:
    sampler: TimestepSampler = "logit_normal"  # training timestep distribution (SD3 default)
    logit_mean: float = 0.0                    # logit-normal mean
    logit_std: float = 1.0                     # logit-normal std
    shift: float = 1.0                         # timestep shift s: t' = s t / (1 + (s - 1) t) (SD3 uses 3 at 1024 px)


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's resolution shift; shift > 1 moves mass towards noise (t -> 1). shift = 1 is the identity."""
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(n: int, cfg: FlowConfig, generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """Training timesteps in (0, 1)."""
    if cfg.sampler == "uniform":
        t = torch.rand(n, generator=generator)
    elif cfg.sampler in ("logit_normal", "shifted_logit_normal"):
        t = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(n, generator=generator))
    else:
        raise ValueError(f"unknown timestep sampler {cfg.sampler!r}: uniform | logit_normal | shifted_logit_normal")
    if cfg.sampler == "shifted_logit_normal" or cfg.shift != 1.0:
        t = shift_timesteps(t, cfg.shift)
    return t.to(device)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, with t broadcast over the non-batch dims."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def flow_loss(model: Callable[..., torch.Tensor], x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
              **cond) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MSE between the predicted and the true velocity.

    Returns (mean loss, per-sample loss (N,), prediction) so training can log the loss by t bins and
    distillation can reuse the prediction.
    """
    x_t = interpolate(x0, noise, t)
    v_pred = model(x_t, t, **cond)
    per_sample = (v_pred.float() - velocity_target(x0, noise).float()).square().flatten(1).mean(1)
    return per_sample.mean(), per_sample, v_pred


def loss_by_t_bins(t: torch.Tensor, per_sample: torch.Tensor, bins: int = 4) -> dict[str, float]:
    """Mean loss per timestep bin (a diagnostic, as in minRF): {'t0.00-0.25': ..., ...}."""
    idx = (t.detach().float().cpu() * bins).long().clamp(max=bins - 1)
    out = {}
    for b in range(bins):
        sel = per_sample.detach().float().cpu()[idx == b]
        if len(sel):
            out[f"t{b / bins:.2f}-{(b + 1) / bins:.2f}"] = float(sel.mean())
    return out


def timestep_schedule(steps: int, shift: float = 1.0, device: str | torch.device = "cpu") -> torch.Tensor:
    """steps + 1 times from 1 to 0 (uniform in t, then shifted). 28 steps is the default protocol."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)


@torch.no_grad()
def euler_sample(velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 steps: int = 28, shift: float = 1.0, timesteps: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate from t=1 (``noise``) to t=0 with Euler steps. ``velocity_fn(x_t, t (N,)) -> v``."""
    ts = timestep_schedule(steps, shift, noise.device) if timesteps is None else timesteps
    x = noise
    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        t_batch = t_cur.expand(x.shape[0])
        x = x + (t_next - t_cur) * velocity_fn(x, t_batch)
    return x


def cfg_velocity(model: Callable[..., torch.Tensor], cond: dict, uncond: dict, guidance: float
                 ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classifier-free guidance: v = v_u + w (v_c - v_u), evaluated as one batch of 2N (the 'CFG batch').

    ``cond``/``uncond`` are keyword dicts of equally shaped tensors (context, pooled or class_labels).
    guidance == 1 evaluates the conditional branch only.
    """
    if guidance == 1.0:
        return lambda x, t: model(x, t, **cond)

    def fn(x, t):
        both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
        v_u, v_c = model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        return v_u + guidance * (v_c - v_u)

    return fn


def predict_x0(x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return x_t - t.view(-1, *([1] * (x_t.dim() - 1))) * v


def logit_normal_density(t: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Density of the logit-normal distribution at t in (0, 1) (used by tests and weighting functions)."""
    logit = torch.log(t / (1 - t))
    return torch.exp(-((logit - mean) ** 2) / (2 * std ** 2)) / (std * math.sqrt(2 * math.pi) * t * (1 - t))
