"""The decoder table: SnapGen's tiny decoder vs the SD3 and SDXL VAE decoders.

One JSON record per decoder under ``results/decoders/`` (params, FLOPs to decode to 1024 px counted
on the meta device with attention included, CPU latency at a smaller stated size, settings and
environment). ``results/tables/decoders.md`` and ``results/figures/decoders.png`` are pure functions
of those records; ratios "vs SD3" are computed from the records at table time.

    python -m ablations.decoders            # measure, then write table + figure
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from snapgen.cost import count_flops, count_params, time_fn
from snapgen.env import environment
from snapgen.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_json
from snapgen.models.decoder import DECODERS, SD3_VAE_CONFIG, SDXL_VAE_CONFIG, TinyDecoder

RESULTS = Path(os.environ.get("SNAPGEN_RESULTS", Path(__file__).resolve().parents[1] / "results"))
ROWS = ("tiny", "sd3_vae", "sdxl_vae")   # table order
REFERENCE = "sd3_vae"                     # ratios are "reference / row"
LABELS = {"tiny": "SnapGen tiny decoder (ours)", "sd3_vae": "SD3 VAE decoder", "sdxl_vae": "SDXL VAE decoder"}
PAPER = {"tiny": "~1.38M params, ~36x fewer params, ~54x faster (iPhone)",  # SPEC.md section 1-2
         "sd3_vae": "baseline", "sdxl_vae": "—"}


@dataclass(frozen=True)
class DecoderTableSettings:
    flops_latent: int = 128      # latent side for FLOPs: 128 -> 1024 px (the paper's resolution)
    latency_latent: int = 16     # latent side for CPU latency: 16 -> 128 px, so `pytest ablations` stays < 60 s
    # (an SD3-decoder run at 32 -> 256 px took 17-21 s on 1 shared thread here; use --latent 32 by hand)
    latency_warmup: int = 1      # untimed runs before timing
    latency_repeats: int = 3     # timed runs; the median is reported
    batch: int = 1               # images per call
    dtype: str = "float32"       # weights and activations
    threads: int = 1             # torch.set_num_threads during timing (the machine is shared)


def _latent_channels(name: str) -> int:
    return 4 if name == "sdxl_vae" else 16


def _config_of(name: str, model) -> dict:
    if isinstance(model, TinyDecoder):
        return model.cfg.to_dict()
    return json.loads(json.dumps(SD3_VAE_CONFIG if name == "sd3_vae" else SDXL_VAE_CONFIG))


def measure_decoder(name: str, s: DecoderTableSettings = DecoderTableSettings()) -> dict:
    """Params + FLOPs (meta) + CPU latency of one decoder -> a record dict."""
    cz = _latent_channels(name)
    meta = DECODERS[name]("meta")
    flops = count_flops(meta, torch.empty(s.batch, cz, s.flops_latent, s.flops_latent, device="meta"))
    lat_flops = count_flops(meta, torch.empty(s.batch, cz, s.latency_latent, s.latency_latent, device="meta")).total
    prev = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        torch.manual_seed(0)
        model = DECODERS[name]("cpu").eval().to(getattr(torch, s.dtype))
        z = torch.randn(s.batch, cz, s.latency_latent, s.latency_latent, dtype=getattr(torch, s.dtype))
        with torch.inference_mode():
            lat = time_fn(lambda: model(z), warmup=s.latency_warmup, repeats=s.latency_repeats)
        env = environment("cpu")
    finally:
        torch.set_num_threads(prev)
    return {
        "kind": "decoder_cost", "decoder": name, "label": LABELS[name], "params": count_params(meta),
        "flops_1024": flops.total, "flops_unit": "FLOPs (2 x MACs), meta-device dispatcher count, attention included",
        "flops_per_op": flops.per_op, "latency_cpu": lat.to_dict(), "latency_flops": lat_flops,
        "latency_resolution_px": s.latency_latent * 8, "flops_resolution_px": s.flops_latent * 8,
        "settings": asdict(s), "config": _config_of(name, meta), "env": env,
    }


def write_records(root: Path = RESULTS, s: DecoderTableSettings = DecoderTableSettings(),
                  names: tuple[str, ...] = ROWS) -> list[Path]:
    return [atomic_write_json(root / "decoders" / f"{n}.json", measure_decoder(n, s)) for n in names]


def load_records(root: Path = RESULTS) -> dict[str, dict]:
    recs = {}
    for p in sorted((root / "decoders").glob("*.json")):
        r = json.loads(p.read_text())
        recs[r["decoder"]] = r
    return recs


def ratios(records: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per row: how many times fewer params / FLOPs and how many times faster than the reference."""
    ref = records[REFERENCE]
    return {n: {"params_x": ref["params"] / r["params"], "flops_x": ref["flops_1024"] / r["flops_1024"],
                "speed_x": ref["latency_cpu"]["median_ms"] / r["latency_cpu"]["median_ms"]}
            for n, r in records.items()}


def decoder_table(records: dict[str, dict]) -> str:
    """Markdown table; a pure function of the records."""
    ref = records[REFERENCE]
    s = ref["settings"]
    rx = ratios(records)
    lines = [
        "# Decoder table (generated from results/decoders/*.json by ablations/decoders.py; do not edit)", "",
        f"FLOPs: decode one {s['flops_latent']}x{s['flops_latent']} latent to {ref['flops_resolution_px']} px, "
        "dispatcher count on the meta device, attention included, FLOPs = 2 x MACs.",
        f"CPU latency: {s['latency_latent']}x{s['latency_latent']} latent -> {ref['latency_resolution_px']} px, "
        f"batch {s['batch']}, {s['dtype']}, {s['threads']} thread(s), median of {s['latency_repeats']} runs after "
        f"{s['latency_warmup']} warm-up; random weights. CPU: {ref['env'].get('cpu')}.",
        "Ratios are SD3 VAE decoder / row (times fewer params or FLOPs, times faster).", "",
        f"| decoder | params | x fewer params | GFLOPs @{ref['flops_resolution_px']} px | x fewer FLOPs | "
        f"CPU ms @{ref['latency_resolution_px']} px | x faster (CPU) | paper |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in [r for r in ROWS if r in records] + sorted(set(records) - set(ROWS)):
        r, x = records[n], rx[n]
        lines.append(f"| {r['label']} | {r['params']:,} | {x['params_x']:.1f} | {r['flops_1024'] / 1e9:,.1f} | "
                     f"{x['flops_x']:.1f} | {r['latency_cpu']['median_ms']:,.1f} | {x['speed_x']:.1f} | "
                     f"{PAPER.get(n, '—')} |")
    return "\n".join(lines) + "\n"


def draw_figure(records: dict[str, dict], path: Path) -> Path:
    """Three log-scale bar panels (params, GFLOPs @1024, CPU ms); PNG bytes depend only on the records."""
    import io

    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ROWS if n in records]
    panels = [("params (M)", [records[n]["params"] / 1e6 for n in names]),
              ("GFLOPs @1024 px", [records[n]["flops_1024"] / 1e9 for n in names]),
              (f"CPU ms @{records[names[0]]['latency_resolution_px']} px",
               [records[n]["latency_cpu"]["median_ms"] for n in names])]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (title, vals) in zip(axes, panels):
        ax.barh([LABELS[n].replace(" (ours)", "") for n in names], vals, color=["#d62728", "#1f77b4", "#7f7f7f"][:len(names)])
        ax.set_xscale("log")
        ax.set_xlim(min(vals) / 3, max(vals) * 6)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(title)
        ax.invert_yaxis()
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:,.3g}", va="center", fontsize=8)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def regenerate(root: Path = RESULTS, s: DecoderTableSettings = DecoderTableSettings(), measure: bool = True) -> dict:
    """Measure (optional), then write the table and figure from whatever records exist."""
    if measure:
        write_records(root, s)
    records = load_records(root)
    table = atomic_write_text(root / "tables" / "decoders.md", decoder_table(records))
    fig = draw_figure(records, root / "figures" / "decoders.png")
    return {"records": records, "table": table, "figure": fig, "table_sha256": sha256_json(decoder_table(records))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations.decoders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS, help="results root (records, tables/, figures/)")
    p.add_argument("--no-measure", action="store_true", help="only rebuild table + figure from existing records")
    p.add_argument("--repeats", type=int, default=DecoderTableSettings.latency_repeats, help="timed runs")
    p.add_argument("--latent", type=int, default=DecoderTableSettings.latency_latent, help="latency latent side")
    p.add_argument("--threads", type=int, default=DecoderTableSettings.threads, help="torch threads while timing")
    a = p.parse_args(argv)
    out = regenerate(a.results, DecoderTableSettings(latency_latent=a.latent, latency_repeats=a.repeats, threads=a.threads), not a.no_measure)
    print(out["table"].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
