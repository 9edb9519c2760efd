"""The ablation ladder table: per rung, cost (full size) beside quality (world-scale twin, >= 3 seeds).

Quality is GenEval-world overall on held-out prompts. Its 95% CI includes seed-to-seed variance: a hierarchical
bootstrap resamples training seeds, then prompts within each task of every drawn seed (the overall is the mean
over tasks of the mean over prompts, averaged over seeds). The paired difference to the parent rung uses the
same prompts and sampling seeds: per training seed the per-prompt differences, resampled the same way; the
p-value is two-sided from the bootstrap distribution. FID-world is the mean over seeds with a t-interval over
seeds, and its paired difference is taken per training seed (t-interval, one-sample t-test); the class ladder is
scored by FID alone, as the paper's ImageNet ablation is. The paper's direction of each step (SPEC.md section 7, ImageNet-256 FID) stands
beside ours with a "same direction?" column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ablations.ladder_cost import DEPLOY_PX, rung_cost
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


def t_interval(values: list[float]) -> tuple[float, tuple[float, float] | None, float | None]:
    """(mean, 95% t-interval, two-sided one-sample t-test p against 0) of per-seed values: with 3 seeds a
    bootstrap over seeds has only 10 distinct resamples and is too narrow, the t-interval is not."""
    from scipy import stats

    x = np.asarray(values, float)
    if len(x) < 2:
        return float(x.mean()), None, None
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    p = float(stats.ttest_1samp(x, 0.0).pvalue) if x.std(ddof=1) > 0 else (0.0 if x.mean() != 0 else 1.0)
    return float(x.mean()), (float(x.mean() - half), float(x.mean() + half)), p


def _fid(rec: dict) -> float | None:
    return next((v["value"] for k, v in rec["scores"].items() if k.startswith("fid")), None)


def _ci(point, ci, spec=".3f") -> str:
    return "—" if point is None else _fmt(point, spec) + (f" [{_fmt(ci[0], spec)}, {_fmt(ci[1], spec)}]" if ci else "")


def _judge(direction: int | None, diff: float | None, ci) -> str:
    """Our paired change (signed so that + is better) against the paper's direction."""
    if direction is None or diff is None or ci is None:
        return "—"
    if ci[0] <= 0 <= ci[1]:
        return "yes" if direction == 0 else "not significant"
    return "yes" if np.sign(diff) == direction else "no"


def render_ladder(root: Path, ladder: str, allow_dirty: bool = False) -> str:
    from ablations.twins import TWINS, ladder_of

    recs = load(root, f"ablation/{ladder}", "ablation", allow_dirty, f"results/tables/ladder_{ladder}.md")
    dirty = {Path(p).stem for p in dirty_records(recs)}
    by_twin = _by_twin(recs)
    t2i = ladder == "t2i"
    budgets = sorted({r["protocol"].get("budget", {}).get("name", "?") for r in recs.values()})
    lines = [f"# Ablation ladder, {ladder} (generated from results/ablation/{ladder}/*.json; do not edit)", "",
             "Cost: the full-size variant, U-Net forward, fp32, batch 1, 1 thread (ablations/ladder_cost.py): FLOPs and CPU",
             "ms at the reference resolution (architecture records) and at the deployment resolution (latency records",
             "for text-to-image at 1024 px). Quality: its",
             "world-scale twin (ablations/twins.py), every twin with the same budget, data order and seeds.",
             *(["GenEval-world: overall on held-out prompts, 95% CI by a bootstrap over training seeds and prompts;",
                "Δ GenEval: paired difference to the parent rung (same prompts and sampling seeds), its CI and p."]
               if t2i else []),
             f"FID-world{'' if t2i else '-class'}: mean over seeds with a 95% t-interval over seeds; Δ FID: paired by "
             "seed (child - parent; negative = better), t-interval and p.",
             "Paper: the step's published quality change (ImageNet 256 FID); \"same direction?\" compares it with our",
             "Δ FID (\"not significant\": our CI contains 0). A linked rung opens its compare report against the parent",
             "(seed 0: per-task paired differences and the prompts whose verdict flipped, with both images).", "",
             f"Budget(s): {', '.join(budgets) if budgets else '—'} (see each record's protocol.budget).", ""]
    deploy = DEPLOY_PX[ladder]
    costs = {t.name: rung_cost(root, t.paper["full_size"], ladder) or {} for t in TWINS
             if ladder_of(t.paper["full_size"]) == ladder}
    ref = sorted({c["ref_px"] for c in costs.values() if c.get("ref_px")}) or [256]
    two_res = any(px != deploy for px in ref)
    head = ["rung", "params (M)"]
    head += ([f"GFLOPs {px} px" for px in ref] + [f"GFLOPs {deploy} px", f"CPU ms {'/'.join(map(str, ref))} px",
              f"CPU ms {deploy} px"] if two_res else [f"GFLOPs {deploy} px", f"CPU ms {deploy} px"])
    head += ["seeds"]
    head += ["GenEval-world [95% CI]", "Δ GenEval [95% CI]", "p"] if t2i else []
    head += ["FID-world [95% CI]", "Δ FID [95% CI]", "p", "paper", "same direction?"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 3) + ["---"] * 2) + "|"]
    missing, disagree, no_deploy = [], [], []
    for t in TWINS:
        full = t.paper["full_size"]
        if ladder_of(full) != ladder:
            continue
        seeds = by_twin.get(t.name, {})
        cost = costs[t.name]
        if two_res:
            gfl_deploy = cost.get("gflops") if cost.get("gflops_px") == deploy else None
            cost_cells = [_fmt(cost.get("ref_gflops"), ".0f") if cost.get("ref_px") == px else "—" for px in ref]
            cost_cells += [_fmt(gfl_deploy, ".0f"), _fmt(cost.get("ref_cpu_ms"), ".0f"), _fmt(cost.get("deploy_cpu_ms"), ".0f")]
        else:
            cost_cells = [_fmt(cost.get("ref_gflops") if cost.get("ref_px") == deploy else
                               cost.get("gflops") if cost.get("gflops_px") == deploy else None, ".0f"),
                          _fmt(cost.get("deploy_cpu_ms"), ".0f")]
        if cost and cost.get("deploy_cpu_ms") is None:
            no_deploy.append(full)
        report = root / "reports" / f"ladder_{ladder}" / t.name / "index.html"
        label = f"[{t.name}](../reports/ladder_{ladder}/{t.name}/index.html)" if report.exists() else t.name
        row = [f"{label}{'*' if any(f'{t.name}-s{s}' in dirty for s in seeds) else ''}",
               _fmt(cost.get("params") and cost["params"] / 1e6, ".0f"), *cost_cells, str(len(seeds))]
        if not seeds:
            missing.append(t.name)
            lines.append("| " + " | ".join(row + ["—"] * (len(head) - len(row))) + " |")
            continue
        parent = by_twin.get(t.parent or "", {})
        if t2i:
            units = [seeds[s]["details"]["units"]["geneval_overall"] for s in sorted(seeds)]
            point, ci, _ = hierarchical_ci(units)
            diff, dci, p = _vs_parent(seeds, parent)
            row += [_ci(point, ci), _ci(diff, dci, "+.3f"), _fmt(p, ".3f")]
        fids = [_fid(seeds[s]) for s in sorted(seeds)]
        fid, fci, _ = t_interval(fids) if None not in fids else (None, None, None)
        shared = [s for s in sorted(set(seeds) & set(parent)) if _fid(seeds[s]) is not None and _fid(parent[s]) is not None]
        fd, fdci, fp = t_interval([_fid(seeds[s]) - _fid(parent[s]) for s in shared]) if shared else (None, None, None)
        direction, text = PAPER_DIRECTION.get(_step_key(full) or "", (None, "—"))
        same = _judge(direction, None if fd is None else -fd, None if fdci is None else (-fdci[1], -fdci[0]))
        if same == "no":
            disagree.append(t.name)
        row += [_ci(fid, fci, ".1f"), _ci(fd, fdci, "+.1f"), _fmt(fp, ".3f"), text, same]
        lines.append("| " + " | ".join(row) + " |")
    if disagree:
        lines += ["", f"Where this CPU-scale ladder disagrees with the paper (significant change in the other "
                      f"direction): {', '.join(disagree)}."]
    if no_deploy:
        lines += ["", f"Full-size variants without a CPU latency record at the deployment resolution ({deploy} px): "
                      f"{', '.join(no_deploy)} (`python -m evals.run latency --variant V --resolution {deploy} --steps 1 "
                      "--no-e2e --text none --decoder none --threads 1 --warmup 1 --repeats 3`)."]
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
