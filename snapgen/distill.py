"""Multi-level knowledge distillation: output and feature losses, the feature projector, and the
timestep-aware scaling that mixes them with the task (rectified-flow) loss.

Losses are small callables kept apart from the networks (as in EDM's ``training/loss.py``); each
returns a per-sample loss (N,) so the trainer can log every term by timestep bins.

Convention (``snapgen.flow``): t=0 data, t=1 noise, x_t = (1-t) x0 + t noise, v = noise - x0. Every
teacher is mapped to this convention by ``snapgen.teachers`` before it reaches these losses.

Timestep-aware scaling (SPEC section 3; the paper gives no formula)::

    # PAPER-UNKNOWN: chose the formula below because it implements both stated properties
    # ("distillation terms rescaled per timestep to the magnitude of the task loss", "the mix between
    # task and teacher supervision depends on t") with one bounded weight and no extra tuning.
    L_i = (1 - w(t_i)) * L_task,i + w(t_i) * sum_k lambda_k * L_k,i * sg(min(L_task,i / (L_k,i + eps), r_max))

per sample i, with sg = stop-gradient (the ratio is a detached number, so each KD term keeps its own
gradient direction but carries the task loss's magnitude), lambda_k the per-term weights
(``output_weight``, ``feature_weight``), r_max = ``max_ratio`` (bounds the gradient when a term is
already ~0) and the teacher weight w(t) in [0, 1] chosen by name:

    "uniform":  w(t) = w_max
    "u-shape":  w(t) = w_min + (w_max - w_min) * (2t - 1)^2     (teacher dominates near t=0 and t=1)
    "linear":   w(t) = w_min + (w_max - w_min) * t              (more teacher weight towards noise)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Weighting = Literal["uniform", "u-shape", "linear"]
WEIGHTINGS = ("uniform", "u-shape", "linear")


@dataclass(frozen=True)
class KDConfig:
    output_weight: float = 1.0          # lambda of the output-distillation term (student v vs teacher v)
    feature_weight: float = 1.0         # lambda of the feature-distillation term (projector vs teacher features)
    weighting: Weighting = "u-shape"    # teacher-weight shape w(t): uniform | u-shape | linear
    w_max: float = 0.75                 # w(t) at its peak (t=0 and t=1 for u-shape)
    w_min: float = 0.25                 # w(t) at its trough (t=0.5 for u-shape, t=0 for linear)
    max_ratio: float = 100.0            # clamp of the detached ratio L_task / L_k (finite gradients near L_k=0)
    ratio: Literal["per_sample", "batch"] = "per_sample"  # ratio per sample, or of the batch means
    eps: float = 1e-8                   # added to L_k in the ratio's denominator

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={self.weighting!r}: expected one of {WEIGHTINGS}")
        if not (0.0 <= self.w_min <= 1.0 and 0.0 <= self.w_max <= 1.0):
            raise ValueError(f"w_min={self.w_min}, w_max={self.w_max} must lie in [0, 1] (a convex mix)")
        if self.ratio not in ("per_sample", "batch"):
            raise ValueError(f"ratio={self.ratio!r}: expected per_sample | batch")

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------
# Loss terms: each (student, teacher) -> per-sample loss (N,)


def output_distillation(v_student: torch.Tensor, v_teacher: torch.Tensor) -> torch.Tensor:
    """MSE between student and teacher velocities (both in snapgen's convention), per sample (N,)."""
    return (v_student.float() - v_teacher.detach().float()).square().flatten(1).mean(1)


def feature_distillation(student_proj: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """MSE between projected student features and teacher features on the teacher's grid, per sample (N,).

    Both are (N, C_t, h_t, w_t); ``FeatureProjector`` produces ``student_proj`` already on that grid.
    """
    if student_proj.shape != teacher_feat.shape:
        raise ValueError(f"projected student features {tuple(student_proj.shape)} != teacher features "
                         f"{tuple(teacher_feat.shape)}; build the projector with the teacher's channels")
    return (student_proj.float() - teacher_feat.detach().float()).square().flatten(1).mean(1)


class FeatureProjector(nn.Module):
    """Student last-stage features -> teacher last-layer feature space: conv3x3 -> SiLU -> conv3x3 (the
    paper's "two convolutions"), then bilinear resize to the teacher's grid.

    Alignment, explicitly: a DiT teacher's tokens (N, L, C_t) are first reshaped to maps
    (N, C_t, H/p, W/p) by the teacher wrapper (row-major token order, as the patch embedding flattens);
    the student's tap is (N, C_s, H/4, W/4) (after the U-Net's mid block). The convolutions run at the
    student's resolution (cheap) and the result is resized to (H/p, W/p) with bilinear interpolation
    (align_corners=False); the loss is taken on the teacher's grid so the teacher is never resampled.
    # PAPER-UNKNOWN: kernel sizes, hidden width and where the resize happens; chose 3x3 convs, hidden
    # width = teacher channels, resize after the convolutions.
    """

    def __init__(self, student_channels: int, teacher_channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or teacher_channels
        self.conv1 = nn.Conv2d(student_channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, teacher_channels, 3, padding=1)

    def forward(self, student_feat: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h = self.conv2(F.silu(self.conv1(student_feat)))            # (N, C_t, H/4, W/4)
        if tuple(h.shape[-2:]) != tuple(grid):
            h = F.interpolate(h, size=tuple(grid), mode="bilinear", align_corners=False)
        return h                                                     # (N, C_t, h_t, w_t)


# ------------------------------------------------------------------------------------------------
# Timestep-aware scaling


def teacher_weight(t: torch.Tensor, weighting: Weighting, w_max: float, w_min: float) -> torch.Tensor:
    """w(t) in [w_min, w_max] for t in [0, 1]; see the module docstring for the shapes."""
    t = t.float()
    if weighting == "uniform":
        return torch.full_like(t, w_max)
    if weighting == "u-shape":
        return w_min + (w_max - w_min) * (2 * t - 1).square()
    if weighting == "linear":
        return w_min + (w_max - w_min) * t
    raise ValueError(f"weighting={weighting!r}: expected one of {WEIGHTINGS}")


def timestep_aware_loss(task: torch.Tensor, terms: dict[str, torch.Tensor], t: torch.Tensor,
                        cfg: KDConfig, weights: dict[str, float] | None = None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Combine the task loss with distillation terms (all per-sample (N,)) by the module's formula.

    Returns (total per-sample loss (N,), parts) where parts holds, per sample: ``w`` = w(t), and for
    each term k ``{k}_ratio`` (detached) and ``{k}_scaled`` = L_k * ratio (what enters the mix).
    """
    weights = weights or {"output": cfg.output_weight, "feature": cfg.feature_weight}
    w = teacher_weight(t, cfg.weighting, cfg.w_max, cfg.w_min).to(task.device)
    kd = torch.zeros_like(task)
    parts: dict[str, torch.Tensor] = {"w": w.detach()}
    for name, term in terms.items():
        if cfg.ratio == "batch":
            ratio = (task.mean() / (term.mean() + cfg.eps)).expand_as(term)
        else:
            ratio = task / (term + cfg.eps)
        ratio = ratio.detach().clamp(max=cfg.max_ratio)
        scaled = term * ratio
        kd = kd + weights.get(name, 1.0) * scaled
        parts[f"{name}_ratio"], parts[f"{name}_scaled"] = ratio, scaled.detach()
    return (1 - w) * task + w * kd, parts
