"""The latency protocol: per component (text encoders, U-Net per step, decoder) and end to end.

Protocol (SPEC.md section 4, PEERS.md point 7): every component is called ``warmup`` times untimed (the
first call is timed apart as ``first_call_ms``: lazy init, kernel selection, and with ``torch.compile`` the
compilation), then ``repeats`` back-to-back timed calls; we report median and p90
(``snapgen.cost.time_first_call_apart``). Model load/build time is reported apart (``load_s``), never inside
a latency. CUDA is timed with CUDA events. The U-Net batch is ``batch x 2`` with classifier-free guidance
(one call on the doubled batch per step, as pipelines do). End to end = text encoders + ``steps`` x (U-Net +
Euler update) + decoder, timed as one call; the sum of the component medians (``estimate_ms``) is stored
beside it.

This module times callables; building them is ``evals.latency.components`` (PyTorch) and
``evals.latency.coreml`` (Core ML packages).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from evals.latency.settings import LatencySettings
from snapgen.cost import time_first_call_apart


@dataclass
class Component:
    """One thing to time: ``fn()`` runs it once on fixed inputs."""
    name: str                                    # text_encoders | unet_step | decoder
    fn: Callable[[], Any]
    info: dict[str, Any] = field(default_factory=dict)  # params, input shapes, package


def time_component(fn: Callable[[], Any], s: LatencySettings, device: str = "cpu",
                   timer: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """First call timed apart, then ``warmup - 1`` untimed calls and ``repeats`` timed ones."""
    return time_first_call_apart(fn, s.warmup, s.repeats, device, timer)


def measure(components: list[Component], s: LatencySettings, device: str = "cpu",
            end_to_end: Callable[[], Any] | None = None,
            timer: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time every component (and the end-to-end call) -> ``{"components": ..., "end_to_end": ...}``."""
    out: dict[str, Any] = {}
    with torch.inference_mode():
        for c in components:
            out[c.name] = {**time_component(c.fn, s, device, timer), **c.info}
        e2e = time_component(end_to_end, s, device, timer) if end_to_end is not None and s.end_to_end else None
    return {"components": out, "end_to_end": {"measured": e2e, "estimate_ms": estimate_end_to_end_ms(out, s.steps),
                                              "steps": s.steps}}


def estimate_end_to_end_ms(components: dict[str, Any], steps: int) -> float | None:
    """text + steps x U-Net + decoder from the component medians (what the paper's 1.4 s adds up)."""
    if "unet_step" not in components:
        return None
    total = steps * components["unet_step"]["median_ms"]
    for name in ("text_encoders", "decoder"):
        if name in components:
            total += components[name]["median_ms"]
    return total


def euler_loop(unet_call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, steps: int,
               cfg: bool, guidance: float = 4.0) -> torch.Tensor:
    """``steps`` Euler steps of the rectified-flow ODE from t=1 (noise) to t=0 (data).

    ``unet_call(x_batch, t_batch)`` gets the doubled batch under CFG (conditional half first). Not
    ``snapgen.flow.euler_sample``: the timed loop casts ``t`` and ``dt`` to the run's dtype (float16/bfloat16
    runs) and keeps the conditioning fixed inside ``unet_call``.
    """
    n = x.shape[0]
    ts = torch.linspace(1.0, 0.0, steps + 1, device=x.device)
    for i in range(steps):
        xb = torch.cat([x, x]) if cfg else x                                    # (B, C, h, w), B = n or 2n
        t = ts[i].expand(xb.shape[0]).to(x.dtype)
        v = unet_call(xb, t)
        if cfg:
            cond, uncond = v[:n], v[n:]
            v = uncond + guidance * (cond - uncond)
        x = x + (ts[i + 1] - ts[i]).to(x.dtype) * v                             # dt < 0
    return x
