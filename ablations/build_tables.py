"""Regenerate the architecture records and table (what `pytest ablations` and `python -m ablations table`
run). The Pareto figure is drawn from the same records by `python -m paper_figures.pareto` (the layer
above), which `pytest ablations` also runs."""
from __future__ import annotations

from ablations.costs import RESULTS, architecture_record, load_records
from ablations.tables.architecture import architecture_table, write
from ablations.variants import REGISTRY


def build_architecture(names: list[str], latency_latent: int = 32, warmup: int = 1, repeats: int = 5,
                       dry_run: bool = False, results=RESULTS) -> str:
    if dry_run:
        return "\n".join(f"would measure {n}: params, GFLOPs @{REGISTRY.get(n).resolution}px, CPU latency "
                         f"@{latency_latent * 8}px x{repeats}" for n in names)
    from tqdm import tqdm

    for name in tqdm(names, desc="architecture table", unit="variant"):
        architecture_record(REGISTRY.get(name), latency_latent, warmup, repeats, out_dir=results / "architecture")
    records = load_records(results / "architecture")
    md = architecture_table(records, REGISTRY.names())
    write(results / "tables" / "architecture.md", md)
    return md
