"""Markdown tables as pure functions of records (re-running on the same records gives identical bytes)."""
from __future__ import annotations

from pathlib import Path

from snapgen.io import atomic_write_text


def _fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def architecture_table(records: list[dict], order: list[str]) -> str:
    """One row per variant in registry order: params, GFLOPs at the reference resolution, CPU latency."""
    by_name = {r["variant"]: r for r in records}
    lines = [
        "# Architecture table (generated from results/architecture/*.json; do not edit)",
        "",
        "FLOPs per forward at the variant's reference resolution (dispatcher count on the meta device, attention",
        "included, FLOPs = 2 x MACs). CPU latency: one U-Net forward, batch 1, fp32, median (p90) over N runs",
        "after warm-up, at the latent size given in the column header; see each record for threads and CPU.",
        "",
    ]
    lat = next((r["latency_cpu"] for r in records if r.get("latency_cpu")), None)
    lat_head = f"CPU ms @{lat['resolution_px']}px" if lat else "CPU ms"
    lines += [f"| variant | parent | change | params (M) | res (px) | GFLOPs | {lat_head} | p90 ms | vs parent (latency) |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in order:
        if name not in by_name:
            continue
        r = by_name[name]
        lc = r.get("latency_cpu") or {}
        parent = by_name.get(r["parent"] or "", {}).get("latency_cpu") or {}
        ratio = lc["median_ms"] / parent["median_ms"] if lc and parent else None
        lines.append(f"| {name} | {r['parent'] or '—'} | {r['note']} | {r['params'] / 1e6:.2f} | {r['resolution']} | "
                     f"{r['gflops']:.1f} | {_fmt(lc.get('median_ms'), '.1f')} | {_fmt(lc.get('p90_ms'), '.1f')} | "
                     f"{_fmt(ratio, '.2f')} |")
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)
