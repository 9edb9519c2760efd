"""The architecture table: ``results/architecture/*.json`` (kind "architecture") -> Markdown.

A pure function of the records (read through ``snapgen.records``, so malformed records are refused): one row
per variant in registry order (records of unregistered variants follow, by name); latency columns at the
latency resolution of the first timed record; "vs parent" divides medians taken from the records.
"""
from __future__ import annotations

from pathlib import Path

from snapgen.io import atomic_write_text
from snapgen.records import read_records

HEADER = [
    "# Architecture table (generated from results/architecture/*.json; do not edit)",
    "",
    "FLOPs per forward at the variant's reference resolution (dispatcher count on the meta device, attention",
    "included, FLOPs = 2 x MACs). CPU latency: one U-Net forward, batch 1, fp32, median (p90) over N runs",
    "after warm-up, at the latent size given in the column header; see each record for threads and CPU.",
    "",
]


def _fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _score(rec: dict, metric: str) -> float | None:
    s = rec["scores"].get(metric)
    return None if s is None else s["value"]


def architecture_table(records: list[dict], order: list[str]) -> str:
    """One row per variant (``order`` first, then the rest by name): params, GFLOPs, CPU latency."""
    by_name = {r["name"]: r for r in records}
    timed = next((r["protocol"]["latency"] for r in records if r["protocol"]["latency"]), None)
    px = timed["resolution_px"] if timed else None
    median, p90 = f"cpu_ms_median_{px}px", f"cpu_ms_p90_{px}px"
    lines = HEADER + [
        f"| variant | parent | change | params (M) | res (px) | GFLOPs | {f'CPU ms @{px}px' if timed else 'CPU ms'} | "
        "p90 ms | vs parent (latency) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in [n for n in order if n in by_name] + sorted(set(by_name) - set(order)):
        r = by_name[name]
        d, res = r["details"], r["protocol"]["resolution_px"]
        ms = _score(r, median)
        parent_ms = _score(by_name[d["parent"]], median) if d["parent"] in by_name else None
        ratio = ms / parent_ms if ms is not None and parent_ms is not None else None
        lines.append(f"| {name} | {d['parent'] or '—'} | {d['note']} | {_score(r, 'params') / 1e6:.2f} | {res} | "
                     f"{_score(r, f'gflops_{res}'):.1f} | {_fmt(ms, '.1f')} | {_fmt(_score(r, p90), '.1f')} | "
                     f"{_fmt(ratio, '.2f')} |")
    return "\n".join(lines) + "\n"


def render(root: Path) -> str:
    """``results/tables/architecture.md`` from the records under ``root/architecture``."""
    from ablations.variants import REGISTRY

    records = list(read_records(Path(root) / "architecture", "architecture").values())
    return architecture_table(records, REGISTRY.names())


def write(path: Path, text: str) -> Path:
    """Kept for ``ablations.latency_table`` (new code: ``ablations.tables.write_table``)."""
    return atomic_write_text(path, text)
