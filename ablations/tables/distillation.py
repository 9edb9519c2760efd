"""results/tables/distillation.md: the KD study and the step-distillation study (``ablations.distill_study``), the
paper's numbers beside ours.

GenEval-world (held-out prompts) is the mean over training seeds with a hierarchical bootstrap 95% CI (seeds, then
prompts within tasks) and each paired difference (the same prompts and sampling seeds, per training seed) is
resampled the same way, with a two-sided bootstrap p-value (``ablations.tables.ladder``). DPG-world and FID-world
are means over seeds with t-intervals; their paired differences are taken per seed (t-interval, one-sample t-test).
Comparisons: every KD arm against ``plain``; in the step study, LADD against its equal-compute control at the same
number of sampling steps, and each few-step student against the base student at 28 steps. The teacher row is one
model (its CI is over prompts only).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ablations.tables import load
from ablations.tables.ladder import _ci, _fmt, hierarchical_ci, paired_units, t_interval

DPG_KEY = "dpg_fixed_overall_x100"


def _fid(rec: dict) -> float | None:
    return next((v["value"] for k, v in rec["scores"].items() if k.startswith("fid")), None)


def _dpg(rec: dict) -> float | None:
    s = rec["scores"].get(DPG_KEY)
    return s["value"] if s else None


def _geneval(by_seed: dict[int, dict]):
    units = [r["details"]["units"]["geneval_overall"] for r in by_seed.values() if r["details"]["units"]]
    return hierarchical_ci(units)[:2] if units else (None, None)


def _geneval_diff(a: dict[int, dict], b: dict[int, dict]):
    shared = sorted(set(a) & set(b))
    if not shared:
        return None, None, None
    diffs = [paired_units(a[s]["details"]["units"]["geneval_overall"], b[s]["details"]["units"]["geneval_overall"])
             for s in shared]
    point, ci, draws = hierarchical_ci(diffs)
    return point, ci, float(min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))))


def _seed_stat(by_seed: dict[int, dict], get) -> tuple:
    vals = [get(r) for r in by_seed.values()]
    if not vals or any(v is None for v in vals):
        return None, None
    mean, ci, _ = t_interval(vals)
    return mean, ci


def _seed_diff(a: dict[int, dict], b: dict[int, dict], get) -> tuple:
    shared = sorted(set(a) & set(b))
    vals = [get(a[s]) - get(b[s]) for s in shared if get(a[s]) is not None and get(b[s]) is not None]
    if not vals:
        return None, None, None
    return t_interval(vals)


def _p(p) -> str:
    return "" if p is None else f" (p {p:.3f})"


def _wall(by_seed: dict[int, dict], key: str = "train_wall_s") -> str:
    vals = [r["details"].get(key) for r in by_seed.values()]
    return "—" if not vals or any(v is None for v in vals) else f"{np.mean(vals) / 60:.1f}"


def _group(recs: dict[str, dict], key) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in recs.values():
        out.setdefault(key(r), {})[r["protocol"]["seed"]] = r
    return out


def _linked(root: Path, study: str, label: str) -> str:
    """``label`` linked to its compare report when ``ablations.distill_study --reports`` wrote one."""
    page = root / "reports" / f"distill_{study}" / label / "index.html"
    return f"[{label}](../reports/distill_{study}/{label}/index.html)" if page.exists() else label


def _row(label: str, by: dict[int, dict], ref: dict[int, dict] | None, paper: str, extra: list[str]) -> str:
    g, g_ci = _geneval(by)
    d, d_ci = _seed_stat(by, _dpg)
    f, f_ci = _seed_stat(by, _fid)
    if ref is not None and ref is not by:
        gd = _geneval_diff(by, ref)
        dd = _seed_diff(by, ref, _dpg)
        fd = _seed_diff(by, ref, _fid)
        diffs = [_ci(gd[0], gd[1]) + _p(gd[2]), _ci(dd[0], dd[1], ".2f") + _p(dd[2]),
                 _ci(fd[0], fd[1], ".1f") + _p(fd[2])]
    else:
        diffs = ["—", "—", "—"]
    return (f"| {label} | {len(by)} | {_ci(g, g_ci)} | {diffs[0]} | {_ci(d, d_ci, '.2f')} | {diffs[1]} | "
            f"{_ci(f, f_ci, '.1f')} | {diffs[2]} | " + " | ".join(extra) + f" | {paper} |")


def render(root: Path, allow_dirty: bool = False) -> str:
    from ablations.distill_study import KD_ARMS, LADD_ARMS, PAPER

    where = "results/tables/distillation.md"
    kd = load(root, "distill/kd", "distillation", allow_dirty, where)
    ladd = load(root, "distill/ladd", "distillation", allow_dirty, where)
    teacher = load(root, "distill/teacher", "distillation", allow_dirty, where)
    lines = ["# Distillation at world scale (generated from results/distill/**/*.json; do not edit)", "",
             "Held-out world prompts. GenEval-world: mean over training seeds, hierarchical bootstrap 95% CI (seeds, "
             "then prompts); paired differences per seed on the same prompts and sampling seeds, bootstrap p. "
             f"DPG-world (`{DPG_KEY}`) and FID-world: mean over seeds, t-interval; paired differences per seed, "
             "t-test. A linked arm opens its compare report (seed 0) against its reference. Commands: `python -m ablations.distill_study --teacher T --study kd|ladd` "
             "(docs/distillation.md).", ""]
    if not (kd or ladd or teacher):
        return "\n".join(lines + ["No distillation record yet: train the world DiT teacher, then run "
                                  "`python -m ablations.distill_study --teacher <run>/pipeline --study kd`.", ""])
    head = ("| {first} | seeds | GenEval-world [95% CI] | ΔGenEval vs {ref} (p) | DPG-world | ΔDPG vs {ref} (p) | "
            "FID-world | ΔFID vs {ref} (p) | {extra} | paper |")
    if teacher or kd:
        lines += ["## Knowledge distillation (the same student, steps, data and seeds)", "",
                  head.format(first="arm", ref="plain", extra="train wall (min)"),
                  "|---|---:|---|---|---|---|---|---|---:|---|"]
        for r in teacher.values():
            lines.append(_row(f"teacher ({r['protocol']['teacher'].get('class') or 'DiT'})", {0: r}, None,
                              "SD3.5-Large (the paper's teacher)", [_wall({0: r})]))
        arms = _group(kd, lambda r: r["protocol"]["arm"])
        for arm in KD_ARMS:
            if arm in arms:
                lines.append(_row(_linked(root, "kd", arm), arms[arm], arms.get("plain"), PAPER["kd"].get(arm, ""),
                                  [_wall(arms[arm])]))
        lines.append("")
    if ladd:
        groups = _group(ladd, lambda r: f"{r['protocol']['arm']}@{r['protocol']['sample_steps']}")
        lines += ["## Step distillation (LADD vs an equal-compute control without the discriminator)", "",
                  head.format(first="student @ sampling steps", ref="reference", extra="reference | critic "
                              "balanced acc (gap)"),
                  "|---|---:|---|---|---|---|---|---|---|---|---|"]
        order = [f"{a}@{s}" for a in LADD_ARMS for s in sorted({int(k.split('@')[1]) for k in groups}, reverse=True)]
        base_top = max((int(k.split("@")[1]) for k in groups if k.startswith("base@")), default=None)
        for name in [o for o in order if o in groups]:
            arm, steps = name.split("@")
            ref_name = f"control@{steps}" if arm == "ladd" else (f"base@{base_top}" if name != f"base@{base_top}"
                                                                 else None)
            ref = groups.get(ref_name) if ref_name else None
            discs = [r["details"].get("discriminator") for r in groups[name].values()]
            crit = "—" if arm == "base" or not all(discs) else (
                f"{np.mean([d['balanced_acc'] for d in discs]):.3f} ({np.mean([d['logit_gap'] for d in discs]):.2f})"
                + (" AT CHANCE" if any(d["at_chance"] for d in discs) else ""))
            lines.append(_row(_linked(root, "ladd", name), groups[name], ref, PAPER["ladd"].get(name, ""),
                              [ref_name if ref is not None else "—", crit]))
        lines += ["", "A critic marked AT CHANCE never told real from fake (balanced accuracy <= 0.5 + margin over its "
                  "last logged quarter): that row's change is not adversarial.", ""]
    return "\n".join(lines)
