"""Regenerate the architecture records and table (what `pytest ablations` and `python -m ablations table`
run). The table is written by ``ablations.tables`` from the records; the Pareto figure is drawn from the
same records by `python -m paper_figures.pareto` (the layer above), which `pytest ablations` also runs."""
from __future__ import annotations

from pathlib import Path

from ablations.costs import architecture_record
from ablations.tables import regenerate
from ablations.variants import REGISTRY
from snapgen.paths import results_root


def build_architecture(names: list[str], latency_latent: int = 32, warmup: int = 1, repeats: int = 5,
                       dry_run: bool = False, results: Path | None = None) -> str:
    """Measure ``names`` (records under ``results/architecture``), then rewrite the table from every record."""
    if dry_run:
        return "\n".join(f"would measure {n}: params, GFLOPs @{REGISTRY.get(n).resolution}px, CPU latency "
                         f"@{latency_latent * 8}px x{repeats}" for n in names)
    from tqdm import tqdm

    results = results or results_root()
    for name in tqdm(names, desc="architecture table", unit="variant"):
        architecture_record(REGISTRY.get(name), latency_latent, warmup, repeats, out_dir=results / "architecture")
    (path,) = regenerate(["architecture"], results)
    return path.read_text()
