"""Exponential moving average of weights, with warm-up, for every objective.

    decay(step) = min(ema_decay, (1 + step) / (10 + step))       step = optimizer steps done before this one

so the average follows the fast-moving early weights (decay 0.1 at step 0, 0.5 at step 8) and settles at
``ema_decay``. Update: ``ema <- lerp(ema, model, 1 - decay)``, parameters only (the models keep no
running statistics).

Why not diffusers ``EMAModel``: its warm-up starts one step later (decay 0 on the first update) and it
updates with ``ema -= (1 - decay) * (ema - model)``; both change the weights bit for bit against the
trainer's published runs, which this project reproduces exactly.
"""
from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(step: int, ema_decay: float) -> float:
    """The warm-up schedule above; ``step`` counts from 0."""
    return min(ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema`` <- ``decay * ema + (1 - decay) * model``, parameter by parameter (in ema's dtype)."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach().to(pe.dtype), 1 - decay)
