"""Per-variant cost measurements -> JSON records under ``results/``.

One record per (variant, measurement): parameters, FLOPs per forward at the variant's reference
resolution (dispatcher count on the meta device, attention included, FLOPs = 2 x MACs) with a
per-block breakdown, and CPU latency (median/p90 of N runs after warm-up) at a stated latent size.
"""
from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

import torch

from ablations.models import build_model, example_inputs
from ablations.registry import Variant
from snapgen.cost import count_flops, count_params, time_fn
from snapgen.env import environment
from snapgen.io import atomic_write_json, sha256_json

RESULTS = Path(os.environ.get("SNAPGEN_RESULTS", Path(__file__).resolve().parents[1] / "results"))
CACHE = Path(os.environ.get("SNAPGEN_CACHE", Path.home() / ".cache" / "snapgen-bench"))


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
    path = CACHE / "costs" / f"{key}.json"
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


def architecture_record(variant: Variant, latency_latent: int = 32, warmup: int = 1, repeats: int = 5,
                        out_dir: Path | None = None) -> dict:
    rec = {
        "kind": "architecture", "variant": variant.name, "parent": variant.parent, "note": variant.note,
        "family": variant.family, "config": variant.config.to_dict() if variant.config else None,
        "config_hash": variant.config.hash if variant.config else None,
        "resolution": variant.resolution, "context_tokens": variant.context_tokens, "paper": variant.paper,
        "protocol": {"flops": "torch FlopCounterMode on meta device, attention included, FLOPs = 2 x MACs",
                     "latency": f"median of {repeats} after {warmup} warm-up, batch 1, fp32, CPU"},
        **static_costs(variant),
        "latency_cpu": measure_latency(variant, latency_latent, warmup, repeats) if repeats > 0 else None,
        "environment": environment("cpu"), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json((out_dir or RESULTS / "architecture") / f"{variant.name}.json", rec)
    return rec


def load_records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
