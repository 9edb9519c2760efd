"""Benchmark (a record, not a timed test): SnapGen's tiny decoder vs the SD3 and SDXL VAE decoders, decoding to
256, 512 and 1024 px on this CPU in one interleaved run, each decoder in its best configuration at one dtype.

    python -m ablations.bench_decoders                           # fp32, 1 thread, 256/512/1024 px
    python -m ablations.bench_decoders --dtype bfloat16 --threads 2
    python -m ablations.bench_decoders --sizes 256 --repeats 2 --dry-run

How it runs (all random weights; the decoders' architectures are the real ones):

1. **Configurations.** Each decoder has candidate implementations of the same weights: the VAEs run diffusers'
   modules in contiguous or channels_last memory; the tiny decoder runs its fused CPU inference path
   (``TinyDecoder._forward_fused``), or its modules in channels_last or contiguous memory. Every candidate is
   timed once (after a warm-up) at ``--probe-px``; the fastest of each decoder is "its best configuration" and is
   used at every size (the probe times are in the record).
2. **Timing.** Per output size, the three chosen decoders run round-robin (``--warmup`` untimed rounds, then
   ``--repeats`` timed rounds); medians are reported. Each input is a (1, C_z, px/8, px/8) latent in ``--dtype``
   (the VAEs' and the tiny decoder's weights in the same dtype; bf16 means bf16 weights and activations).
3. **Reference rates.** The 2048^3 matmul rate in the same dtype at the same thread count is measured before and
   after, so each decoder's achieved GFLOP/s (FLOPs counted on the meta device, module path, 2 x MACs) can be read
   against what this CPU's GEMM reaches.

The record (kind "benchmark", ``results/bench/decoders_<dtype>_t<threads>.json``):

    protocol  sizes_px, dtype, threads, warmup, repeats, probe_px, batch 1, order "interleaved", weights "random"
    scores    speedup_vs_sd3_<px> / speedup_vs_sdxl_<px> (x, median / median), flops_ratio_sd3_<px>,
              cpu_ms_median_<px>px_<decoder>, gflops_per_s_<px>px_<decoder>
    details   chosen configuration and probe times per decoder, FLOPs per size, every latency statistic, the
              matmul reference rates, the paper's claim (~54x vs the SD3 decoder on an iPhone)
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from snapgen.cli import positive_int
from snapgen.cost import count_flops, matmul_peak_gflops, time_fn, time_interleaved
from snapgen.env import environment
from snapgen.models.decoder import DECODERS
from snapgen.paths import results_dir
from snapgen.records import make_record, score, write_record

KIND = "benchmark"
NAMES = ("tiny", "sd3_vae", "sdxl_vae")
LATENT_CHANNELS = {"tiny": 16, "sd3_vae": 16, "sdxl_vae": 4}
CONFIGS = {"tiny": ("fused", "modules_channels_last", "modules"),
           "sd3_vae": ("channels_last", "contiguous"), "sdxl_vae": ("channels_last", "contiguous")}
PAPER = "tiny decoder ~54x faster than the SD3 VAE decoder (iPhone 16 Pro Max, 1024 px), ~36x fewer parameters"


@dataclass(frozen=True)
class DecoderBenchSettings:
    sizes_px: tuple[int, ...] = (256, 512, 1024)
    dtype: str = "float32"
    threads: int = 1
    warmup: int = 1
    repeats: int = 3
    probe_px: int = 512

    def __post_init__(self):
        bad = [s for s in self.sizes_px + (self.probe_px,) if s < 8 or s % 8]
        if bad:
            raise ValueError(f"--sizes / --probe-px: {bad[0]} is not a positive multiple of 8 (the decoders upsample "
                             "8x); pass e.g. 256 512 1024")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtype {self.dtype}: use float32 or bfloat16")


def bench_path(s: DecoderBenchSettings) -> Path:
    return results_dir("bench") / f"decoders_{s.dtype}_t{s.threads}.json"


def build(name: str, config: str, dtype: torch.dtype):
    """(model, memory format) of one decoder candidate; the weights are seeded, so every candidate of a decoder
    holds the same ones."""
    torch.manual_seed(0)
    model = DECODERS[name]("cpu").eval().to(dtype)
    fmt = torch.channels_last if config.endswith("channels_last") else torch.contiguous_format
    if name == "tiny":
        model.fused_cpu = config == "fused"
    return model.to(memory_format=fmt), fmt


def latent(name: str, px: int, dtype: torch.dtype, fmt) -> torch.Tensor:
    g = torch.Generator().manual_seed(px)
    return torch.randn(1, LATENT_CHANNELS[name], px // 8, px // 8, generator=g).to(dtype).contiguous(memory_format=fmt)


def run_bench(s: DecoderBenchSettings, progress=print) -> dict:
    """Probe, then time; returns the record (not written)."""
    dtype = getattr(torch, s.dtype)
    prev = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        with torch.inference_mode():
            peak_before = matmul_peak_gflops(dtype)
            chosen, probes = {}, {}
            for name in NAMES:
                probes[name] = {}
                for config in CONFIGS[name]:
                    model, fmt = build(name, config, dtype)
                    z = latent(name, s.probe_px, dtype, fmt)
                    probes[name][config] = time_fn(lambda: model(z), warmup=1, repeats=1).median_ms
                    progress(f"probe {name} {config} @{s.probe_px}px: {probes[name][config]:.0f} ms")
                    del model
                chosen[name] = min(probes[name], key=probes[name].get)
            models = {n: build(n, chosen[n], dtype) for n in NAMES}
            rows: dict[str, dict] = {}
            for px in s.sizes_px:
                inputs = {n: latent(n, px, dtype, fmt) for n, (_, fmt) in models.items()}
                fns = {n: (lambda m=m, z=inputs[n]: m(z)) for n, (m, _) in models.items()}
                stats = time_interleaved(fns, warmup=s.warmup, repeats=s.repeats)
                for n in NAMES:
                    meta = DECODERS[n]("meta")
                    flops = count_flops(meta, torch.empty(1, LATENT_CHANNELS[n], px // 8, px // 8, device="meta")).total
                    rows[f"{n}@{px}"] = {"decoder": n, "px": px, "config": chosen[n], "flops": flops,
                                         "gflops_per_s": flops / (stats[n].median_ms / 1e3) / 1e9,
                                         **stats[n].to_dict()}
                    progress(f"{n} @{px}px ({chosen[n]}): {stats[n].median_ms:.0f} ms")
                del inputs, fns
            peak_after = matmul_peak_gflops(dtype)
            env = environment("cpu")
    finally:
        torch.set_num_threads(prev)
    return envelope(s, rows, chosen, probes, [peak_before, peak_after], env)


def envelope(s: DecoderBenchSettings, rows: dict, chosen: dict, probes: dict, peaks: list[dict], env: dict) -> dict:
    protocol = {**asdict(s), "sizes_px": list(s.sizes_px), "batch": 1, "device": "cpu", "order": "interleaved",
                "weights": "random", "configs": {n: list(c) for n, c in CONFIGS.items()},
                "flop_counter": "torch.utils.flop_counter on meta, module path, FLOPs = 2 x MACs"}
    scores = {}
    for px in s.sizes_px:
        t, sd3, sdxl = rows[f"tiny@{px}"], rows[f"sd3_vae@{px}"], rows[f"sdxl_vae@{px}"]
        scores[f"speedup_vs_sd3_{px}"] = score(sd3["median_ms"] / t["median_ms"], higher_is_better=True, unit="x")
        scores[f"speedup_vs_sdxl_{px}"] = score(sdxl["median_ms"] / t["median_ms"], higher_is_better=True, unit="x")
        scores[f"flops_ratio_sd3_{px}"] = score(sd3["flops"] / t["flops"], higher_is_better=None, unit="x")
        for n in NAMES:
            r = rows[f"{n}@{px}"]
            scores[f"cpu_ms_median_{px}px_{n}"] = score(r["median_ms"], n=r["n"], higher_is_better=False, unit="ms")
            scores[f"gflops_per_s_{px}px_{n}"] = score(r["gflops_per_s"], higher_is_better=True, unit="GFLOP/s")
    details = {"chosen": chosen, "probe_ms": probes, "rows": rows, "matmul_reference": peaks, "paper": PAPER,
               "ratios": "SD3 (or SDXL) decoder median / tiny decoder median, same run, same dtype and threads"}
    return make_record(KIND, f"decoders-{s.dtype}-t{s.threads}", protocol, scores, details, env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations.bench_decoders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=positive_int, nargs="+", default=[256, 512, 1024], help="output sizes (px)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads while timing (recorded)")
    p.add_argument("--warmup", type=positive_int, default=1)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--probe-px", type=positive_int, default=512, help="output size at which configurations are chosen")
    p.add_argument("--out", type=Path, default=None, help="record path (default results/bench/decoders_<dtype>_t<N>.json)")
    p.add_argument("--dry-run", action="store_true", help="print the settings and the record path, measure nothing")
    a = p.parse_args(argv)
    try:
        s = DecoderBenchSettings(tuple(a.sizes), a.dtype, a.threads, a.warmup, a.repeats, a.probe_px)
    except ValueError as e:
        p.error(str(e))
    out = a.out or bench_path(s)
    if a.dry_run:
        print(json.dumps({"settings": asdict(s), "record": str(out)}, indent=2))
        return 0
    rec = run_bench(s)
    write_record(out, rec)
    print(json.dumps({k: round(v["value"], 2) for k, v in rec["scores"].items() if k.startswith("speedup")}, indent=2))
    print(out)
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
