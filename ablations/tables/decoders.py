"""The decoder table: ``results/decoders/*.json`` (kind "decoder", written by ``ablations.decoders``) -> Markdown.

A pure function of the records (read through ``snapgen.records``, so malformed records are refused). Rows in
``ROWS`` order (other decoders follow, by name); ratios "vs SD3" are computed here from the records' scores.
"""
from __future__ import annotations

from pathlib import Path

from snapgen.records import read_records, value

ROWS = ("tiny", "sd3_vae", "sdxl_vae")   # table order
REFERENCE = "sd3_vae"                     # ratios are "reference / row"


def _keys(rec: dict) -> tuple[str, str]:
    """(GFLOPs score, CPU median score) of a decoder record, named after its protocol's resolutions."""
    p = rec["protocol"]
    return f"gflops_{p['flops_resolution_px']}", f"cpu_ms_median_{p['latency_resolution_px']}px"


def load(root: Path) -> dict[str, dict]:
    """Decoder records under ``root/decoders`` by decoder name."""
    return {r["name"]: r for r in read_records(Path(root) / "decoders", "decoder").values()}


def ratios(records: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per row: how many times fewer params / FLOPs and how many times faster than the reference."""
    ref = records[REFERENCE]
    gf, ms = _keys(ref)
    return {n: {"params_x": value(ref, "params") / value(r, "params"), "flops_x": value(ref, gf) / value(r, gf),
                "speed_x": value(ref, ms) / value(r, ms)}
            for n, r in records.items()}


def decoder_table(records: dict[str, dict]) -> str:
    """Markdown table; a pure function of the records."""
    ref = records[REFERENCE]
    s, gf, ms = ref["protocol"], *_keys(ref)
    rx = ratios(records)
    lines = [
        "# Decoder table (generated from results/decoders/*.json by ablations/tables/decoders.py; do not edit)", "",
        f"FLOPs: decode one {s['flops_latent']}x{s['flops_latent']} latent to {s['flops_resolution_px']} px, "
        "dispatcher count on the meta device, attention included, FLOPs = 2 x MACs.",
        f"CPU latency: {s['latency_latent']}x{s['latency_latent']} latent -> {s['latency_resolution_px']} px, "
        f"batch {s['batch']}, {s['dtype']}, {s['threads']} thread(s), median of {s['latency_repeats']} runs after "
        f"{s['latency_warmup']} warm-up; random weights. CPU: {ref['environment'].get('cpu')}.",
        "Ratios are SD3 VAE decoder / row (times fewer params or FLOPs, times faster).", "",
        f"| decoder | params | x fewer params | GFLOPs @{s['flops_resolution_px']} px | x fewer FLOPs | "
        f"CPU ms @{s['latency_resolution_px']} px | x faster (CPU) | paper |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in [r for r in ROWS if r in records] + sorted(set(records) - set(ROWS)):
        r, x = records[n], rx[n]
        lines.append(f"| {r['details']['label']} | {int(value(r, 'params')):,} | {x['params_x']:.1f} | "
                     f"{value(r, gf):,.1f} | {x['flops_x']:.1f} | {value(r, ms):,.1f} | {x['speed_x']:.1f} | "
                     f"{r['details'].get('paper') or '—'} |")
    return "\n".join(lines) + "\n"


def render(root: Path) -> str:
    """``results/tables/decoders.md`` from the records under ``root/decoders``."""
    return decoder_table(load(root))
