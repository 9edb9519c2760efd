"""Per-variant cost measurements -> architecture records (``snapgen.records`` envelope, kind "architecture").

One record per variant under ``results/architecture/<variant>.json``:

    name       the variant
    protocol   resolution_px and context_tokens of the FLOP count, the flop counter, and the latency settings
               (device, latent, resolution_px, batch, dtype, threads, warmup, repeats; null when not timed)
    scores     params                    parameter count        (higher_is_better null, unit "params")
               gflops_<res>              FLOPs per forward / 1e9 at the reference resolution, FLOPs = 2 x MACs
               cpu_ms_median_<res>px     CPU latency, median of ``repeats`` runs (n = repeats)
               cpu_ms_p90_<res>px        its p90 (linear interpolation)
    details    parent, note, family, config, config_hash, paper, exact integer flops, FLOPs per block and
               per attention op, the remaining latency statistics (mean/std/min/max, every run, build time)
"""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import torch

from ablations.models import build_model, example_inputs
from ablations.registry import Variant
from snapgen.cost import count_flops, count_params, time_fn
from snapgen.env import environment
from snapgen.io import atomic_write_json, sha256_json
from snapgen.paths import cache_dir, results_dir
from snapgen.records import make_record, score, write_record

KIND = "architecture"
FLOP_COUNTER = "torch FlopCounterMode on meta device, attention included, FLOPs = 2 x MACs"
# keys of a measure_latency() dict that describe how it was measured (-> protocol.latency) ...
LATENCY_SETTINGS = ("device", "latent", "resolution_px", "batch", "dtype", "threads", "warmup")
# ... and the measured statistics that are not scores (-> details.latency_cpu)
LATENCY_DETAILS = ("mean_ms", "std_ms", "min_ms", "max_ms", "times_ms", "build_s", "flops_at_latent",
                   "achieved_gflops_per_s")


def gflops_key(resolution_px: int) -> str:
    return f"gflops_{resolution_px}"


def cpu_ms_key(resolution_px: int, stat: str = "median") -> str:
    return f"cpu_ms_{stat}_{resolution_px}px"


def _block_table(report, root: str) -> dict[str, int]:
    """FLOPs of each top-level block (enc/mid/dec entries, or diffusers' down/mid/up blocks)."""
    out = {}
    for name, flops in report.per_module.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == root and parts[1] in ("enc", "mid", "dec", "down_blocks", "up_blocks"):
            out[f"{parts[1]}.{parts[2]}"] = flops
        elif len(parts) == 2 and parts[0] == root and parts[1] in ("mid_block", "conv_in", "conv_out"):
            out[parts[1]] = flops
    return out


def static_costs(variant: Variant, use_cache: bool = True) -> dict:
    """Params + FLOPs (total and per block) at the reference resolution; cached by content."""
    key = sha256_json({"v": 2, "family": variant.family, "config": variant.config.to_dict() if variant.config else None,
                       "res": variant.resolution, "ctx": variant.context_tokens, "torch": torch.__version__})[:16]
    path = cache_dir("costs") / f"{key}.json"
    if use_cache and path.exists():
        return json.loads(path.read_text())
    model = build_model(variant, "meta")
    args, kwargs = example_inputs(variant, device="meta")
    report = count_flops(model, *args, **kwargs)
    out = {"params": count_params(model), "flops": report.total, "gflops": report.total / 1e9,
           "flops_per_block": _block_table(report, type(model).__name__),
           "flops_attention_ops": {k: v for k, v in report.per_op.items() if "bmm" in k}}
    atomic_write_json(path, out)
    return out


def measure_latency(variant: Variant, latent: int, warmup: int, repeats: int, threads: int | None = None) -> dict:
    """CPU fp32 batch-1 latency of one U-Net forward at ``latent`` x ``latent``."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(variant, "cpu", timing_init=True)
    build_s = time.perf_counter() - t0
    args, kwargs = example_inputs(variant, latent=latent)
    with torch.inference_mode():
        stats = time_fn(lambda: model(*args, **kwargs), warmup=warmup, repeats=repeats)
    flops = count_flops(model, *args, **kwargs).total
    del model
    gc.collect()
    return {"latent": latent, "resolution_px": latent * 8, "batch": 1, "dtype": "float32", "device": "cpu",
            "threads": torch.get_num_threads(), "build_s": build_s, "flops_at_latent": flops,
            "achieved_gflops_per_s": flops / 1e9 / (stats.median_ms / 1e3), **stats.to_dict()}


def architecture_envelope(name: str, resolution: int, context_tokens: int, costs: dict, latency: dict | None,
                          about: dict, environment_: dict, flop_counter: str = FLOP_COUNTER) -> dict:
    """The record of one variant from ``static_costs`` + ``measure_latency`` outputs (shared by a new
    measurement and by ``migrate_v1``, so both give the same shape). ``about``: parent, note, family, config,
    config_hash, paper."""
    lat_protocol = None
    scores = {"params": score(costs["params"], higher_is_better=None, unit="params"),
              gflops_key(resolution): score(costs["gflops"], higher_is_better=False, unit="GFLOPs")}
    details = {**about, "flops": costs["flops"], "flops_per_block": costs["flops_per_block"],
               "flops_attention_ops": costs["flops_attention_ops"], "latency_cpu": None}
    if latency:
        lat_protocol = {**{k: latency[k] for k in LATENCY_SETTINGS}, "repeats": latency["n"],
                        "stat": "median and p90 of the timed runs after warm-up"}
        px = latency["resolution_px"]
        for stat in ("median", "p90"):
            scores[cpu_ms_key(px, stat)] = score(latency[f"{stat}_ms"], n=latency["n"], higher_is_better=False,
                                                 unit="ms")
        details["latency_cpu"] = {k: latency[k] for k in LATENCY_DETAILS}
    protocol = {"resolution_px": resolution, "context_tokens": context_tokens, "flop_counter": flop_counter,
                "latency": lat_protocol}
    return make_record(KIND, name, protocol, scores, details, environment_)


def architecture_record(variant: Variant, latency_latent: int = 32, warmup: int = 1, repeats: int = 5,
                        out_dir: Path | None = None) -> dict:
    """Measure one variant and write ``<out_dir or results/architecture>/<variant>.json``."""
    about = {"parent": variant.parent, "note": variant.note, "family": variant.family,
             "config": variant.config.to_dict() if variant.config else None,
             "config_hash": variant.config.hash if variant.config else None, "paper": variant.paper}
    latency = measure_latency(variant, latency_latent, warmup, repeats) if repeats > 0 else None
    rec = architecture_envelope(variant.name, variant.resolution, variant.context_tokens, static_costs(variant),
                                latency, about, environment("cpu"))
    write_record((out_dir or results_dir("architecture")) / f"{variant.name}.json", rec)
    return rec


def migrate_v1(old: dict, path: Path) -> dict:
    """A schema-1 architecture record (flat: variant, params, gflops, latency_cpu, ...) in the envelope;
    every number is carried over, ``created`` and ``environment`` are kept."""
    costs = {k: old[k] for k in ("params", "flops", "gflops", "flops_per_block", "flops_attention_ops")}
    about = {k: old[k] for k in ("parent", "note", "family", "config", "config_hash", "paper")}
    env = {"versions": None, "threads": None, "git_commit": None, **old["environment"]}
    rec = architecture_envelope(old["variant"], old["resolution"], old["context_tokens"], costs, old.get("latency_cpu"),
                                about, env, old.get("protocol", {}).get("flops", FLOP_COUNTER))
    return {**rec, "created": old.get("created")}
