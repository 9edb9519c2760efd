"""The latency protocol: per component (text encoders, U-Net per step, decoder) and end to end.

Protocol (SPEC.md section 4, PEERS.md point 7): every component is called ``warmup`` times untimed
(the first call is timed apart as ``first_call_ms``: lazy init, kernel selection, and with
``torch.compile`` the compilation), then ``repeats`` back-to-back timed calls; we report median and
p90 (``snapgen.cost.time_fn``). Model load/build time is reported apart (``load_s``), never inside a
latency. CUDA is timed with CUDA events. The U-Net batch is ``batch x 2`` with classifier-free
guidance (one call on the doubled batch per step, as pipelines do). End to end = text encoders +
``steps`` x (U-Net + Euler update) + decoder, timed as one call; the sum of the component medians
(``estimate_ms``) is stored beside it.

This module times callables; building models from the registry or a checkpoint is the caller's
job (``evals/latency.py``), so ``snapgen`` never imports ``ablations`` or ``evals``.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from snapgen.cost import LatencyStats, summarize_times, time_fn
from snapgen.env import REPO_ROOT
from snapgen.io import atomic_write_json

Target = Literal["cpu", "cuda", "mac", "iphone"]
TARGETS = ("cpu", "cuda", "mac", "iphone")
COMPONENTS = ("text_encoders", "unet_step", "decoder")
SCHEMA_VERSION = 1
RESULTS = REPO_ROOT / "results" / "latency"
PAPER_IPHONE = {  # SnapGen on an iPhone 16 Pro Max at 1024 px (SPEC.md section 1)
    "device": "iPhone 16 Pro Max", "resolution": 1024, "unet_step_ms": 274.0, "decoder_ms": 119.0,
    "end_to_end_s": 1.4, "end_to_end_range_s": (1.2, 2.3), "steps_range": (4, 8),
}


@dataclass(frozen=True)
class LatencySettings:
    target: Target = "cpu"           # where the numbers come from
    resolution: int = 1024           # output pixels (latent = resolution / 8)
    steps: int = 4                   # sampling steps in the end-to-end run (paper: 4-8 for 1.2-2.3 s)
    cfg: bool = False                # classifier-free guidance doubles the U-Net batch
    # PAPER-UNKNOWN: CFG in the on-device numbers. Chose off by default: 4 x 274 + 119 ms ~ 1.2 s matches the
    # headline only with one U-Net call of batch 1 per step (step-distilled models sample without CFG).
    batch: int = 1                   # images per prompt batch
    dtype: str = "float32"           # weights and activations (float32 | float16 | bfloat16)
    threads: int | None = None       # torch.set_num_threads (CPU); None = library default
    warmup: int = 2                  # untimed calls before timing (>= 1: the first is timed apart)
    repeats: int = 5                 # timed calls; median and p90 reported
    compile: bool = False            # torch.compile the U-Net and decoder
    end_to_end: bool = True          # also time the whole pipeline as one call
    compute_unit: str | None = None  # Core ML compute unit (mac / iphone targets)

    @property
    def latent(self) -> int:
        return self.resolution // 8

    @property
    def unet_batch(self) -> int:
        return self.batch * (2 if self.cfg else 1)


@dataclass
class Component:
    """One thing to time: ``fn()`` runs it once on fixed inputs."""
    name: str                                    # text_encoders | unet_step | decoder
    fn: Callable[[], Any]
    info: dict[str, Any] = field(default_factory=dict)  # params, input shapes, model name, load_s


# ------------------------------------------------------------------------------------------------
# Timing


def cuda_time_fn(fn: Callable[[], Any], warmup: int, repeats: int) -> LatencyStats:
    """Like ``snapgen.cost.time_fn`` but timed with CUDA events (device time, no host jitter)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return summarize_times(times, warmup)


def time_component(fn: Callable[[], Any], s: LatencySettings, device: str = "cpu",
                   timer: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """First call timed apart, then ``warmup - 1`` untimed calls and ``repeats`` timed ones."""
    if s.warmup < 1 or s.repeats < 1:
        raise ValueError(f"warmup ({s.warmup}) and repeats ({s.repeats}) must be >= 1")
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    t0 = timer()
    fn()
    if sync:
        sync()
    first_ms = (timer() - t0) * 1e3
    if cuda:
        stats = cuda_time_fn(fn, s.warmup - 1, s.repeats)
    else:
        stats = time_fn(fn, warmup=s.warmup - 1, repeats=s.repeats, timer=timer, sync=sync)
    stats.warmup = s.warmup
    return {**stats.to_dict(), "first_call_ms": first_ms, "clock": "cuda_events" if cuda else "perf_counter"}


def measure(components: list[Component], s: LatencySettings, device: str = "cpu",
            end_to_end: Callable[[], Any] | None = None,
            timer: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time every component (and the end-to-end call) -> the record's ``components``/``end_to_end``."""
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


# ------------------------------------------------------------------------------------------------
# End-to-end loop


def euler_loop(unet_call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, steps: int,
               cfg: bool, guidance: float = 4.0) -> torch.Tensor:
    """``steps`` Euler steps of the rectified-flow ODE from t=1 (noise) to t=0 (data).

    ``unet_call(x_batch, t_batch)`` gets the doubled batch under CFG (conditional half first).
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


# ------------------------------------------------------------------------------------------------
# Records


def latency_record(s: LatencySettings, model: dict[str, Any], timing: dict[str, Any], load_s: dict[str, float],
                   environment: dict[str, Any], notes: list[str] | None = None,
                   compile_s: dict[str, float] | None = None) -> dict[str, Any]:
    """Assemble (and validate) one latency record."""
    rec = {
        "kind": "latency", "schema_version": SCHEMA_VERSION, "target": s.target, "model": model,
        "settings": {**asdict(s), "latent": s.latent, "unet_batch": s.unet_batch},
        "protocol": (f"first call timed apart; {max(s.warmup - 1, 0)} more untimed warm-up call(s); median and p90 "
                     f"of {s.repeats} back-to-back calls; load time apart; U-Net batch {s.unet_batch}"
                     f" ({'CFG doubles it' if s.cfg else 'no CFG'})"),
        "load_s": load_s, "compile_s": compile_s, **timing, "environment": environment, "notes": notes or [],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    validate_latency_record(rec)
    return rec


_STATS_KEYS = ("median_ms", "p90_ms", "n", "times_ms")


def _check_stats(where: str, st: Any, errors: list[str]) -> None:
    if not isinstance(st, dict):
        errors.append(f"{where}: expected a stats dict, got {type(st).__name__}")
        return
    missing = [k for k in _STATS_KEYS if k not in st]
    if missing:
        errors.append(f"{where}: missing {missing}")
        return
    if not (isinstance(st["median_ms"], (int, float)) and st["median_ms"] > 0):
        errors.append(f"{where}.median_ms must be > 0, got {st['median_ms']!r}")
    elif st["p90_ms"] < st["median_ms"]:
        errors.append(f"{where}: p90_ms {st['p90_ms']} < median_ms {st['median_ms']}")
    if st["n"] != len(st["times_ms"]) or st["n"] < 1:
        errors.append(f"{where}: n={st['n']} but {len(st['times_ms'])} times")


def validate_latency_record(rec: Any) -> dict:
    """Raise ``ValueError`` listing every problem of a latency record; return it when valid."""
    errors: list[str] = []
    if not isinstance(rec, dict):
        raise ValueError(f"latency record must be a dict, got {type(rec).__name__}")
    for key in ("kind", "schema_version", "target", "model", "settings", "components", "end_to_end", "load_s",
                "environment", "created"):
        if key not in rec:
            errors.append(f"missing key {key!r}")
    if errors:
        raise ValueError("invalid latency record: " + "; ".join(errors))
    if rec["kind"] != "latency":
        errors.append(f"kind must be 'latency', got {rec['kind']!r}")
    if rec["target"] not in TARGETS:
        errors.append(f"target {rec['target']!r} not in {TARGETS}")
    s = rec["settings"]
    for key in ("resolution", "steps", "batch", "unet_batch", "dtype", "warmup", "repeats", "cfg"):
        if key not in s:
            errors.append(f"settings.{key} missing")
    if not errors:
        if s["unet_batch"] != s["batch"] * (2 if s["cfg"] else 1):
            errors.append(f"settings.unet_batch {s['unet_batch']} != batch {s['batch']} x {2 if s['cfg'] else 1}")
        if s["steps"] < 1 or s["resolution"] < 8:
            errors.append("settings.steps must be >= 1 and resolution >= 8")
    if rec["target"] in ("mac", "iphone") and not s.get("compute_unit"):
        errors.append(f"target {rec['target']} needs settings.compute_unit")
    comps = rec["components"]
    if not isinstance(comps, dict) or "unet_step" not in comps:
        errors.append("components must contain 'unet_step'")
    else:
        for name, st in comps.items():
            if name not in COMPONENTS:
                errors.append(f"unknown component {name!r}; expected {COMPONENTS}")
            _check_stats(f"components.{name}", st, errors)
    if rec["end_to_end"].get("measured") is not None:
        _check_stats("end_to_end.measured", rec["end_to_end"]["measured"], errors)
    if "weights" not in rec["model"]:
        errors.append("model.weights missing (say 'random ...' or the checkpoint hash)")
    for key in ("os", "versions"):
        if key not in rec["environment"]:
            errors.append(f"environment.{key} missing")
    if errors:
        raise ValueError("invalid latency record: " + "; ".join(errors))
    return rec


def record_path(rec: dict, root: Path = RESULTS) -> Path:
    """``results/latency/<target>/<model>_<res>px_<dtype>_<steps>steps_b<unet batch>[_<compute unit>][_compiled].json``."""
    s = rec["settings"]
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", str(rec["model"].get("name", "model")))
    parts = [name, f"{s['resolution']}px", s["dtype"], f"{s['steps']}steps", f"b{s['unet_batch']}"]
    if s.get("compute_unit"):
        parts.append(s["compute_unit"])
    if s.get("compile"):
        parts.append("compiled")
    return Path(root) / rec["target"] / ("_".join(parts) + ".json")


def write_record(rec: dict, root: Path = RESULTS) -> Path:
    validate_latency_record(rec)
    path = record_path(rec, root)
    atomic_write_json(path, rec)
    return path
