"""Benchmark (a record, not a timed test): SnapGen vs the SDXL U-Net, CPU latency at the same latent
size measured in one run (interleaved, so machine noise hits both), with the FLOPs ratio beside it."""
from __future__ import annotations

import time

import torch

from ablations.costs import RESULTS
from ablations.models import build_model, example_inputs
from ablations.variants import REGISTRY
from snapgen.cost import count_flops, count_params, summarize_times
from snapgen.env import environment
from snapgen.io import atomic_write_json


def bench_unet_vs_sdxl(snapgen: str = "snapgen-t2i", latent: int = 32, warmup: int = 1, repeats: int = 5) -> dict:
    torch.manual_seed(0)
    variants = [REGISTRY.get(snapgen), REGISTRY.get("sdxl-unet")]
    models = [build_model(v, "cpu", timing_init=True) for v in variants]
    inputs = [example_inputs(v, latent=latent) for v in variants]
    times: list[list[float]] = [[], []]
    with torch.inference_mode():
        for _ in range(warmup):
            for m, (a, k) in zip(models, inputs):
                m(*a, **k)
        for _ in range(repeats):  # interleaved A, B, A, B ...
            for i, (m, (a, k)) in enumerate(zip(models, inputs)):
                t0 = time.perf_counter()
                m(*a, **k)
                times[i].append(time.perf_counter() - t0)
    flops = [count_flops(m, *a, **k).total for m, (a, k) in zip(models, inputs)]
    rows = {v.name: {"params": count_params(m), "flops": f, **summarize_times(t, warmup).to_dict()}
            for v, m, f, t in zip(variants, models, flops, times)}
    s, x = rows[variants[0].name], rows["sdxl-unet"]
    rec = {"kind": "bench_unet_vs_sdxl", "latent": latent, "resolution_px": latent * 8, "batch": 1,
           "dtype": "float32", "device": "cpu", "threads": torch.get_num_threads(), "warmup": warmup,
           "repeats": repeats, "order": "interleaved", "rows": rows,
           "latency_ratio": x["median_ms"] / s["median_ms"], "flops_ratio": x["flops"] / s["flops"],
           "params_ratio": x["params"] / s["params"], "environment": environment("cpu"),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = RESULTS / "bench" / f"unet_{snapgen}_vs_sdxl_latent{latent}.json"
    rec["path"] = str(path)
    atomic_write_json(path, rec)
    return rec
