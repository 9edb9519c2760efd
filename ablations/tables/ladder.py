"""The ablation ladder table: per rung, cost (full size) beside quality (world-scale twin, >= 3 seeds).

Quality is GenEval-world overall on held-out prompts. Its 95% CI includes seed-to-seed variance: a hierarchical
bootstrap resamples training seeds, then prompts within each task of every drawn seed (the overall is the mean
over tasks of the mean over prompts, averaged over seeds). The paired difference to the parent rung uses the
same prompts and sampling seeds: per training seed the per-prompt differences, resampled the same way; the
p-value is two-sided from the bootstrap distribution. FID-world is reported as the mean over seeds with a
bootstrap-over-seeds interval. The paper's direction of each step (SPEC.md section 7, ImageNet-256 FID) stands
beside ours with a "same direction?" column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ablations.tables import dirty_records, load

N_BOOT = 2000
# the paper's quality change of each step (ImageNet 256 FID, class-conditional; SPEC.md section 7):
# +1 = better, -1 = worse, 0 = "negligible", None = not reported
PAPER_DIRECTION = {"s1-no-hires-sa": (+1, "FID 3.76 -> 3.12"), "s2-sepconv": (-1, "FID 3.12 -> 3.38"),
                   "s3-sep-expand2": (+1, "restores quality"), "s4-ffn3": (0, "negligible loss"),
                   "s5-mqa": (None, "cost only"), "s6-first-stage-ca": (+1, "improves FID"),
                   "s6-first-stage-ca-replace": (+1, "improves FID (other reading)"),
                   "snapgen": (+1, "modest gains (QK-norm + RoPE)")}


def _step_key(full_size: str) -> str | None:
    if full_size.startswith("snapgen-"):
        return "snapgen"
    parts = full_size.split("-", 1)
    return parts[1] if len(parts) == 2 and parts[1] in PAPER_DIRECTION else None


def overall(units: dict[str, dict[str, float]]) -> float:
    return float(np.mean([np.mean(list(d.values())) for d in units.values()]))


def hierarchical_ci(per_seed: list[dict[str, dict[str, float]]], n_boot: int = N_BOOT, seed: int = 0
                    ) -> tuple[float, tuple[float, float], np.ndarray]:
    """(mean over seeds of the overall, 95% CI, bootstrap draws) resampling seeds, then prompts within tasks."""
    rng = np.random.default_rng(seed)
    arrays = [{t: np.array(list(d.values())) for t, d in s.items()} for s in per_seed]
    draws = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, len(arrays), len(arrays))
        draws[b] = np.mean([np.mean([a[rng.integers(0, len(a), len(a))].mean() for a in arrays[i].values()])
                            for i in picked])
    point = float(np.mean([overall(s) for s in per_seed]))
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return point, (float(lo), float(hi)), draws


def paired_units(child: dict, parent: dict) -> dict[str, dict[str, float]]:
    """Per task, per prompt: child - parent (the same prompts and sampling seeds by construction of the ladder)."""
    if set(child) != set(parent) or any(set(child[t]) != set(parent[t]) for t in child):
        raise ValueError("paired difference needs the same held-out prompts in both rungs")
    return {t: {k: child[t][k] - parent[t][k] for k in child[t]} for t in child}


def _fmt(x, spec=".3f") -> str:
    return "—" if x is None else format(x, spec)


def _by_twin(recs: dict[str, dict]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in recs.values():
        out.setdefault(r["protocol"]["twin"], {})[r["protocol"]["seed"]] = r
    return out


def _cost(root: Path, full_size: str) -> dict:
    p = root / "architecture" / f"{full_size}.json"
    if not p.exists():
        return {}
    from snapgen.records import read_record

    s = read_record(p)["scores"]
    lat = next((k for k in s if k.startswith("cpu_ms_median_")), None)
    return {"params": s["params"]["value"], "gflops": s.get("gflops_1024", s.get("gflops_256", {})).get("value"),
            "gflops_key": "gflops_1024" if "gflops_1024" in s else "gflops_256",
            "cpu_ms": s[lat]["value"] if lat else None, "cpu_key": lat}


def render_ladder(root: Path, ladder: str, allow_dirty: bool = False) -> str:
    from ablations.twins import TWINS, ladder_of

    recs = load(root, f"ablation/{ladder}", "ablation", allow_dirty, f"results/tables/ladder_{ladder}.md")
    dirty = {Path(p).stem for p in dirty_records(recs)}
    by_twin = _by_twin(recs)
    lines = [f"# Ablation ladder, {ladder} (generated from results/ablation/{ladder}/*.json; do not edit)", "",
             "Cost: the full-size variant (architecture records). Quality: its world-scale twin (ablations/twins.py),",
             "every twin with the same budget and seeds, GenEval-world overall on held-out prompts; 95% CI by a",
             "bootstrap over training seeds and prompts; Δ parent: paired difference (same prompts and sampling seeds)",
             "with its CI and two-sided p. Paper: the step's published quality change (ImageNet 256 FID).", "",
             "| rung | params (M) | GFLOPs | CPU ms | seeds | GenEval-world | 95% CI | Δ parent | Δ 95% CI | p | "
             "FID-world | paper | same direction? |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---|---|"]
    missing = []
    for t in TWINS:
        full = t.paper["full_size"]
        if ladder_of(full) != ladder:
            continue
        seeds = by_twin.get(t.name, {})
        cost = _cost(root, full)
        row = [f"{t.name}{'*' if any(f'{t.name}-s{s}' in dirty for s in seeds) else ''}",
               _fmt(cost.get("params") and cost["params"] / 1e6, ".1f"), _fmt(cost.get("gflops"), ".1f"),
               _fmt(cost.get("cpu_ms"), ".1f"), str(len(seeds))]
        if not seeds:
            missing.append(t.name)
            lines.append("| " + " | ".join(row + ["—"] * 8) + " |")
            continue
        units = [seeds[s]["details"]["units"]["geneval_overall"] for s in sorted(seeds)]
        point, ci, _ = hierarchical_ci(units)
        fids = [next((v["value"] for k, v in seeds[s]["scores"].items() if k.startswith("fid")), None) for s in sorted(seeds)]
        fid = float(np.mean(fids)) if all(f is not None for f in fids) else None
        diff, dci, p = _vs_parent(seeds, by_twin.get(t.parent or "", {}))
        direction, text = PAPER_DIRECTION.get(_step_key(full) or "", (None, "—"))
        same = "—" if direction is None or diff is None else (
            "yes" if (direction == 0 and dci[0] <= 0 <= dci[1]) or (direction != 0 and np.sign(diff) == direction
                                                                   and not dci[0] <= 0 <= dci[1])
            else "not significant" if dci[0] <= 0 <= dci[1] else "no")
        row += [_fmt(point), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]", _fmt(diff, "+.3f"),
                f"[{_fmt(dci[0], '+.3f')}, {_fmt(dci[1], '+.3f')}]" if dci else "—", _fmt(p, ".3f"),
                _fmt(fid, ".1f"), text, same]
        lines.append("| " + " | ".join(row) + " |")
    if missing:
        lines += ["", f"Rungs without quality records yet: {', '.join(missing)} "
                      f"(`python -m ablations ladder --ladder {ladder}`)."]
    return "\n".join(lines) + "\n"


def _vs_parent(child: dict[int, dict], parent: dict[int, dict]):
    shared = sorted(set(child) & set(parent))
    if not shared:
        return None, None, None
    diffs = [paired_units(child[s]["details"]["units"]["geneval_overall"],
                          parent[s]["details"]["units"]["geneval_overall"]) for s in shared]
    point, ci, draws = hierarchical_ci(diffs)
    p = float(min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))))
    return point, ci, p


def render_t2i(root: Path, allow_dirty: bool = False) -> str:
    return render_ladder(root, "t2i", allow_dirty)


def render_in256(root: Path, allow_dirty: bool = False) -> str:
    return render_ladder(root, "in256", allow_dirty)
