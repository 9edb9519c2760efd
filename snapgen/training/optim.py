"""The main optimizer of the training loop: AdamW (the recipe), or Muon for the hidden weight matrices.

``optimizer="adamw"`` is ``torch.optim.AdamW`` over every trained parameter, as the loop always did.

``optimizer="muon"`` is a lever of the world recipe: the matrix-shaped hidden weights (linear layers, and
convolutions seen as (out, in x kh x kw) matrices) are updated by Muon, everything else by AdamW, in one
optimizer (:class:`MuonAdamW`) so that the loop's LR schedule, gradient clipping, checkpoints and resume
treat it like AdamW. Muon's step on a weight ``W`` with gradient ``G`` (Jordan et al. 2024, "Muon: an
optimizer for hidden layers"; Liu et al. 2025, "Muon is scalable for LLM training", for the scale):

    B <- mu B + G;   U = G + mu B (Nesterov)
    O = NewtonSchulz5(U)                 # ~ the orthogonal factor of U's polar decomposition
    W <- W (1 - lr wd) - lr * 0.2 * sqrt(max(rows, cols)) * O

The 0.2 sqrt(max(rows, cols)) factor gives the update the RMS of a typical AdamW update, so Muon takes the
recipe's AdamW learning rate and schedule unchanged. Kept on AdamW, as Muon's authors do: 1-D parameters
(biases, norm gains), embedding tables, depthwise filters (one input channel per filter: no matrix to
orthogonalise) and the denoiser's first and last layers (``conv_in``, ``conv_out``: the pixel interface).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

# Coefficients of the quintic Newton-Schulz iteration X <- a X + (b A + c A^2) X, A = X X^T, that Muon's authors
# tuned to push every singular value of a unit-norm matrix towards ~1 in five steps.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
# the denoiser's pixel-interface layers, kept on AdamW (module names, matched as a whole dotted-name component)
MUON_EXCLUDED_MODULES = ("conv_in", "conv_out")


def orthogonalise(update: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """Newton-Schulz approximation of the orthogonal polar factor of ``update`` (float32): one (rows, cols)
    matrix, or a stack (n, rows, cols) of matrices of one shape, each orthogonalised alone."""
    a, b, c = NS_COEFFICIENTS
    x = update.float()
    single = x.ndim == 2
    if single:
        x = x.unsqueeze(0)
    wide = x.shape[-2] <= x.shape[-1]
    if not wide:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)           # b A + c A^2
        x = torch.baddbmm(x, poly, x, beta=a)                             # a X + (b A + c A^2) X
    x = x if wide else x.mT
    return x[0] if single else x


def _muon_eligible(name: str, param: torch.Tensor, module: nn.Module) -> bool:
    if param.ndim < 2 or isinstance(module, nn.Embedding):
        return False
    if param.ndim > 2 and param.shape[1] == 1:          # depthwise (one input channel per filter)
        return False
    return not any(part in MUON_EXCLUDED_MODULES for part in name.split("."))


def split_muon_params(modules: dict[str, nn.Module]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(Muon's parameters, AdamW's parameters) of ``modules``, each in registration order."""
    muon, adamw, seen = [], [], set()
    for root, m in modules.items():
        for mod_name, mod in m.named_modules():
            for p_name, p in mod.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                full = ".".join(s for s in (root, mod_name, p_name) if s)
                (muon if _muon_eligible(full, p, mod) else adamw).append(p)
    return muon, adamw


class MuonAdamW(torch.optim.AdamW):
    """Muon for the param groups with ``muon=True``, ``torch.optim.AdamW`` for the others, as one optimizer (one
    state dict, one LR per group that an LR scheduler scales). Muon's matrices of one shape are orthogonalised
    together (one batched Newton-Schulz per shape)."""

    def __init__(self, groups: Iterable[dict], lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0,
                 momentum: float = 0.95, ns_steps: int = NS_STEPS):
        groups = [{"momentum": momentum, "ns_steps": ns_steps, "muon": False, **g} for g in groups]
        super().__init__(groups, lr=lr, betas=betas, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        held = []                       # Muon's gradients, hidden from AdamW's step (it skips grad-less params)
        for group in self.param_groups:
            if group["muon"]:
                params = [p for p in group["params"] if p.grad is not None]
                self._muon_step(params, group)
                held += [(p, p.grad) for p in params]
                for p in params:
                    p.grad = None
        try:
            super().step()
        finally:
            for p, grad in held:
                p.grad = grad
        return loss

    def _muon_step(self, params: list[torch.Tensor], group: dict) -> None:
        mu, by_shape = group["momentum"], {}
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
                state["step"] = torch.tensor(0.0)       # (AdamW's load_state_dict expects a step in every state)
            state["step"] += 1
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(p.grad)
            update = p.grad.add(buf, alpha=mu)                      # Nesterov
            by_shape.setdefault(tuple(p.shape), []).append((p, update.reshape(p.shape[0], -1)))
        for shape, items in by_shape.items():
            ortho = orthogonalise(torch.stack([u for _, u in items]), group["ns_steps"])
            rows, cols = items[0][1].shape
            scale = group["lr"] * 0.2 * math.sqrt(max(rows, cols))   # the RMS of an AdamW update
            for (p, _), o in zip(items, ortho):
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(o.view(shape).to(p.dtype), alpha=-scale)


def build_optimizer(kind: str, modules: dict[str, nn.Module], lr: float, betas, weight_decay: float,
                    muon_momentum: float = 0.95) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """The loop's main optimizer over every parameter of ``modules`` and that parameter list (clipped together)."""
    params = [p for m in modules.values() for p in m.parameters()]
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay), params
    if kind != "muon":
        raise ValueError(f"optimizer={kind!r}: use adamw or muon")
    muon, adamw = split_muon_params(modules)
    if len(muon) + len(adamw) != len(params):
        raise RuntimeError("optimizer=muon: the parameter split lost or repeated a parameter")
    groups = [g for g in ({"params": muon, "muon": True}, {"params": adamw, "muon": False}) if g["params"]]
    return MuonAdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, momentum=muon_momentum), params
