"""results/tables/speed.md: how close the suite's CPU paths come to this machine's limit (issue 18), from the
benchmark records: the decoder benchmark (``python -m ablations.bench_decoders``), the U-Net benchmark at the
deployment resolution (``python -m ablations bench --latent 128 [--dtype bfloat16]``), CPU latency of the pipelines
(``python -m evals.run latency``) and training throughput (``python -m evals.bench_train``). Every ratio is taken
within one interleaved run (the machine is shared: absolute times move between runs, ratios much less).
"""
from __future__ import annotations

from pathlib import Path

from ablations.tables import load


def _v(rec: dict, key: str):
    s = rec["scores"].get(key)
    return None if s is None else s["value"]


def _f(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _decoders(recs: dict[str, dict]) -> list[str]:
    out = ["## Decoders: tiny vs the SD3 and SDXL VAE decoders (`python -m ablations.bench_decoders`)", "",
           "| dtype, threads | px | tiny ms (config) | SD3 ms (config) | SDXL ms | **speed-up vs SD3** | vs SDXL | "
           "FLOPs ratio vs SD3 | GFLOP/s tiny / SD3 | matmul GFLOP/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in sorted(recs.values(), key=lambda r: (r["protocol"]["dtype"], r["protocol"]["threads"])):
        p, rows, chosen = r["protocol"], r["details"]["rows"], r["details"]["chosen"]
        peak = max(m["gflops_per_s"] for m in r["details"]["matmul_reference"])
        for px in p["sizes_px"]:
            t, s, x = rows[f"tiny@{px}"], rows[f"sd3_vae@{px}"], rows[f"sdxl_vae@{px}"]
            out.append(f"| {p['dtype']}, {p['threads']} | {px} | {t['median_ms']:,.0f} ({chosen['tiny']}) | "
                       f"{s['median_ms']:,.0f} ({chosen['sd3_vae']}) | {x['median_ms']:,.0f} | "
                       f"**{_f(_v(r, f'speedup_vs_sd3_{px}'), '.1f')}x** | {_f(_v(r, f'speedup_vs_sdxl_{px}'), '.1f')}x | "
                       f"{_f(_v(r, f'flops_ratio_sd3_{px}'), '.1f')}x | {t['gflops_per_s']:.1f} / {s['gflops_per_s']:.1f} | "
                       f"{peak:.0f} |")
    out += ["", "Paper: ~54x vs the SD3 decoder on an iPhone 16 Pro Max at 1024 px. Config: the fastest of each decoder's "
            "candidate implementations (same weights), probed once at the record's `probe_px`.", ""]
    return out


def _unets(recs: dict[str, dict]) -> list[str]:
    out = ["## U-Nets: SnapGen vs SDXL (`python -m ablations bench --latent N [--dtype bfloat16]`)", "",
           "| px | dtype (memory format), threads | SnapGen ms | SDXL ms | **latency ratio** | FLOPs ratio | SnapGen GFLOP/s (of matmul peak) "
           "| SDXL GFLOP/s (of peak) | record |", "|---:|---|---:|---:|---:|---:|---|---|---|"]
    for path, r in sorted(recs.items(), key=lambda kv: (kv[1]["protocol"]["latent"], kv[1]["protocol"]["dtype"])):
        p, rows = r["protocol"], r["details"]["rows"]
        s, x = rows[r["details"]["snapgen"]], rows[r["details"]["reference"]]
        frac = [_v(r, f"fraction_of_matmul_peak_{n}") for n in (r["details"]["snapgen"], r["details"]["reference"])]
        rate = [f"{row['flops'] / row['median_ms'] / 1e6:.0f}" + (f" ({fr:.0%})" if fr is not None else "")
                for row, fr in zip((s, x), frac)]
        fmt = ((", channels_last" if p.get("channels_last") else "") + (", split depthwise" if p.get("split_depthwise")
                                                                       else "")
               + (", torch.compile (inductor, freezing)" if p.get("compile") else ""))
        out.append(f"| {p['resolution_px']} | {p['dtype']}{fmt}, {p['threads']} | {s['median_ms']:,.0f} | "
                   f"{x['median_ms']:,.0f} | **{_v(r, 'latency_ratio'):.2f}x** | {_v(r, 'flops_ratio'):.2f}x | "
                   f"{rate[0]} | {rate[1]} | `{Path(path).name}` |")
    out += ["", "FLOPs counted on the meta device (fp32 graph, 2 x MACs); 'of peak' = achieved rate / the 2048^3 matmul "
            "rate measured in the same run, dtype and thread count (records before issue 18 have none).", ""]
    return out + _profiles(recs)


KINDS = ("gemm", "attention", "convolution", "normalisation", "elementwise_and_memory")


def _profiles(recs: dict[str, dict]) -> list[str]:
    """Where each U-Net's time goes, from records made with ``--profile`` (none: no section)."""
    rows = [(path, r, name, prof) for path, r in sorted(recs.items()) for name, prof in
            r["details"].get("profile", {}).items()]
    if not rows:
        return []
    out = ["### Where the time goes (`python -m ablations bench ... --profile`)", "",
           "| record | model | profiled ms | " + " | ".join(k.replace("_", " ") for k in KINDS) + " |",
           "|---|---|---:|" + "---:|" * len(KINDS)]
    for path, r, name, prof in rows:
        cats = prof["categories"]
        out.append(f"| `{Path(path).name}` | {name} | {prof['total_ms']:,.0f} | "
                   + " | ".join(f"{cats[k]['share']:.0%}" for k in KINDS) + " |")
    out += ["", "Share of self CPU time of one profiled forward (after the timed ones; the profiler adds overhead) by "
            "kernel kind (`snapgen.cost.OP_CATEGORIES`; GEMM includes the 1x1 convolutions). Only the GEMM and "
            "attention kernels can run near the matmul peak, so their share bounds how close to the peak the "
            "model's achieved rate can come without changing its architecture.", ""]
    return out


def _latency(recs: dict[str, dict]) -> list[str]:
    out = ["## End to end on this CPU (`python -m evals.run latency`)", "",
           "| model | px | steps | dtype, threads | text ms | U-Net ms / step | decoder ms | end to end ms (measured / "
           "text + steps x U-Net + decoder) |", "|---|---:|---:|---|---:|---:|---:|---|"]
    rows = []
    for r in recs.values():
        p = r["protocol"]
        if p.get("target") != "cpu":
            continue
        name = r["name"] if "name" in r else "?"
        rows.append(((name, p["resolution"]), f"| {name} | {p['resolution']} | {p['steps']} | {p['dtype']}, "
                     f"{p['threads']} | {_f(_v(r, 'text_encoders_ms_median'), ',.1f')} | "
                     f"{_f(_v(r, 'unet_step_ms_median'), ',.1f')} | {_f(_v(r, 'decoder_ms_median'), ',.1f')} | "
                     f"{_f(_v(r, 'end_to_end_ms_median'), ',.0f')} / {_f(_v(r, 'end_to_end_estimate_ms'), ',.0f')} |"))
    out += [line for _, line in sorted(rows)] + [""]
    return out


def _training(recs: dict[str, dict]) -> list[str]:
    out = ["## Training throughput (`python -m evals.bench_train`)", "",
           "Rates compare within one record (one interleaved run on one CPU); the CPU differs between hosts.", "",
           "| preset | threads | setting | images/s | CPU | record |", "|---|---:|---|---:|---|---|"]
    for path, r in recs.items():
        p = r["protocol"]
        for k, s in sorted(r["scores"].items(), key=lambda kv: -kv[1]["value"]):
            if k.startswith("train_images_per_s_"):
                threads = p.get("threads") or "per setting"       # records made with --launch: PxT in the setting
                out.append(f"| {p.get('preset')} | {threads} | {k.removeprefix('train_images_per_s_')} | "
                           f"{s['value']:.1f} | {r['environment'].get('cpu', '—')} | `{Path(path).name}` |")
    return out + [""]


def _harness(recs: dict[str, dict]) -> list[str]:
    out = ["## Evaluation harness (`python -m evals.run geneval --ckpt ...`)", "",
           "| record | images | threads | wall s (generation + scoring) | images/s |", "|---|---:|---:|---:|---:|"]
    for path, r in sorted(recs.items()):
        d = r["details"]
        if "checkpoint" in (r["protocol"].get("generator") or {}) and d.get("wall_time_s") and d.get("images"):
            gen = (d.get("generation") or {}).get("generated")
            if gen is not None and gen < d["images"]:       # reused images: the wall time is not a generation speed
                rate = f"— ({d['images'] - gen} of {d['images']} images reused from the cache)"
            else:
                rate = f"{d['images'] / d['wall_time_s']:.2f}"
            out.append(f"| `{Path(path).name}` | {d['images']} | {r['environment'].get('threads')} | "
                       f"{d['wall_time_s']:.0f} | {rate} |")
    return out + [""]


def render(root: Path, allow_dirty: bool = False) -> str:
    where = "results/tables/speed.md"
    bench = load(root, "bench", "benchmark", allow_dirty, where)
    decoders = {p: r for p, r in bench.items() if Path(p).name.startswith("decoders_")}
    unets = {p: r for p, r in bench.items() if Path(p).name.startswith("unet_")}
    training = {p: r for p, r in bench.items() if Path(p).name.startswith("train_throughput_")}
    latency = load(root, "latency", "latency", allow_dirty, where)
    lines = ["# CPU speed (generated from results/bench and results/latency; do not edit)", "",
             "Medians of interleaved runs on this shared 2-vCPU machine, random weights (latency does not depend on "
             "them); each record states its thread count, dtype and versions.", ""]
    harness = load(root, "geneval", "evaluation", allow_dirty, where)
    return "\n".join(lines + _decoders(decoders) + _unets(unets) + _latency(latency) + _harness(harness)
                     + _training(training))
