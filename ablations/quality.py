"""Quality of each world-scale twin, summarised from its ablation records (kind ``ablation``, one per seed):
the numbers ``python -m ablations ls --json`` carries and the ladder charts plot.

    {twin: {"geneval_overall": {"value", "ci95", "seeds"}, "fid_world32": {...}}}

GenEval-world: mean over seeds of the overall, 95% CI by the hierarchical bootstrap over seeds and prompts
(``ablations.tables.ladder.hierarchical_ci``). FID-world (and FID-world-class): mean over seeds with a 95%
t-interval over seeds (``t_interval``). Both are the table's numbers, computed by the same functions.
"""
from __future__ import annotations

from pathlib import Path

from ablations.tables.ladder import _by_twin, hierarchical_ci, t_interval
from ablations.registry import LADDERS


def ladder_records(root: Path, ladder: str) -> dict[str, dict]:
    from snapgen.records import read_records

    folder = Path(root) / "ablation" / ladder
    return read_records(folder, "ablation") if folder.is_dir() else {}


def twin_quality(root: Path | None = None) -> dict[str, dict[str, dict]]:
    """Twin name -> metric -> {"value", "ci95", "seeds"} for every twin with ablation records under ``root``."""
    from snapgen.paths import results_root

    root = Path(root) if root is not None else results_root()
    out: dict[str, dict[str, dict]] = {}
    for ladder in LADDERS:
        for twin, seeds in _by_twin(ladder_records(root, ladder)).items():
            recs = [seeds[s] for s in sorted(seeds)]
            q: dict[str, dict] = {}
            units = [r["details"].get("units", {}).get("geneval_overall") for r in recs]
            if all(units):
                point, ci, _ = hierarchical_ci(units)
                q["geneval_overall"] = {"value": point, "ci95": list(ci), "seeds": len(recs)}
            fid_keys = sorted({k for r in recs for k in r["scores"] if k.startswith("fid")})
            for key in fid_keys:
                vals = [r["scores"][key]["value"] for r in recs if key in r["scores"]]
                point, ci, _ = t_interval(vals)
                q[key] = {"value": point, "ci95": list(ci) if ci else None, "seeds": len(vals)}
            out[twin] = q
    return out
