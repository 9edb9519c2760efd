"""The recipe-lever table: ``results/world/levers/<study>/*.json`` (kind "lever", ``python -m ablations.levers``)
-> Markdown. Per study, each cell against the control (the default recipe) with the same budget, data order and
seeds: held-out GenEval-world (hierarchical bootstrap over seeds and prompts) and its paired difference, FID-world
(t-interval over seeds) and its paired difference, and the training wall time."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ablations.tables import dirty_records, load
from ablations.tables.ladder import _ci, _fid, _fmt, _vs_parent, hierarchical_ci, t_interval

CONTROL = "default"


def _train_cpu(rec: dict) -> str:
    """The CPU a lever job trained on (its train_config's environment), or "a GPU (cuda)"; "unknown" if unstated."""
    env = (rec["details"].get("train_config") or {}).get("environment") or {}
    if str(env.get("device", "cpu")).startswith("cuda"):
        return "a GPU (cuda)"
    return env.get("cpu") or "unknown"


def _fid_key(rec: dict) -> str | None:
    return next((k for k in rec["scores"] if k.startswith("fid")), None)


def control_identity(protocol: dict) -> str | None:
    """What makes two controls interchangeable across studies: the recipe they were trained from (TrainConfig's
    defaults; fields added since count with their LEGACY_VALUES), the budget, ``--base``, the train device, the seed
    and the prompt split. A control is the default recipe at a budget, whichever study first trained it, so a new
    study pairs its cells with that record instead of training the same control again. ``None`` for a record that
    does not say its recipe (never shared)."""
    if "recipe_defaults" not in protocol:
        return None
    from snapgen.training.t2i import stored_recipe

    return json.dumps({"recipe": stored_recipe(protocol["recipe_defaults"]), "budget": protocol["budget"],
                       "base": list(protocol.get("base", [])), "train_device": protocol.get("train_device", "cpu"),
                       "seed": protocol["seed"], "prompts": protocol.get("prompts")}, sort_keys=True)


def shared_control(studies: dict[str, dict[str, dict]], study: str, protocol: dict) -> tuple[str, dict] | None:
    """The control record of another study (``studies``: study -> {path: record}) that ``study``'s control of
    ``protocol``'s seed would equal (``protocol``: any record of the study, or the protocol a new job would write;
    its cell is ignored): (path, record) of the first such study by name, or None."""
    want = control_identity({**protocol, "cell": CONTROL})
    if want is None:
        return None
    for other in sorted(s for s in studies if s != study):
        for path, r in sorted(studies[other].items()):
            if r["protocol"].get("cell") == CONTROL and control_identity(r["protocol"]) == want:
                return path, r
    return None


def render(root: Path, allow_dirty: bool = False) -> str:
    folder = root / "world" / "levers"
    studies = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    lines = ["# Recipe levers of the world model (generated from results/world/levers/*/*.json; do not edit)", "",
             "Each cell is the default recipe (`python -m snapgen.train`, TrainConfig) with the named change, trained",
             "with the study's budget, data order and seeds like the control (`default`), scored on held-out world",
             "prompts. GenEval-world: mean over seeds, 95% CI by a bootstrap over seeds and prompts; Δ: paired",
             "difference to the control (same seeds, prompts and sampling seeds), its CI and two-sided p. FID-world:",
             "t-interval over seeds; Δ FID paired by seed. Made by `python -m ablations.levers --study S --cell ...`.", ""]
    if not studies:
        return "\n".join(lines + ["No lever study has records yet."]) + "\n"
    every = {study: load(root, f"world/levers/{study}", "lever", allow_dirty, "results/tables/levers.md")
             for study in studies}
    for study in studies:
        recs = every[study]
        dirty = set(dirty_records(recs))
        cells: dict[str, dict[int, dict]] = {}
        for path, r in recs.items():
            r = {**r, "_dirty": path in dirty}
            cells.setdefault(r["protocol"]["cell"], {})[r["protocol"]["seed"]] = r
        borrowed = []                           # control seeds this study shares with another study's control
        for seed in sorted({s for c in cells.values() for s in c} - set(cells.get(CONTROL, {}))):
            cell_rec = next(c[seed] for c in cells.values() if seed in c)
            found = shared_control(every, study, {**cell_rec["protocol"], "seed": seed})
            if found:
                path, r = found
                cells.setdefault(CONTROL, {})[seed] = {**r, "_dirty": bool(dirty_records({path: r}))}
                borrowed.append(f"seed {seed} from `{Path(path).parent.name}/{Path(path).name}`")
        first = next(iter(recs.values()))["protocol"]
        b, base = first["budget"], dict(o.split("=", 1) for o in first.get("base", []))
        procs = int(base.get("processes", first.get("recipe_defaults", {}).get("processes", 1)))
        batch = base.get("batch_size", b["batch_size"])
        per = f"batch {batch} per process x {procs} processes" if procs != 1 else f"batch {batch}"
        device = first.get("train_device", "cpu")
        study_recipe = (f" Every cell, the control too, trained with `--base \"{' '.join(first['base'])}\"`."
                        if first.get("base") else "")
        lines += [f"## {study}", "",
                  f"Budget: {b['steps']} steps x {per} (per cell unless a cell changes it), "
                  f"{b['threads']} thread(s) per process, trained on {'a GPU (cuda)' if device == 'cuda' else 'the CPU'}"
                  f"; GenEval {b['n_per_prompt']} images x {b['prompts_per_tag']} "
                  f"held-out prompts per task; FID {b['fid_n']} images; {b['sample_steps']} sampling steps, "
                  f"guidance {b['guidance']}.{study_recipe}", "",
                  "| cell | seeds | train wall (min) | GenEval-world [95% CI] | Δ GenEval [95% CI] | p | FID-world [95% CI] "
                  "| Δ FID [95% CI] | p |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        control, unpaired = cells.get(CONTROL, {}), []
        for name in [CONTROL] + sorted(c for c in cells if c != CONTROL):
            seeds = cells.get(name, {})
            if not seeds:
                lines.append(f"| {name} | 0 | — | — | — | — | — | — | — |")
                continue
            units = [seeds[s]["details"]["units"]["geneval_overall"] for s in sorted(seeds)]
            point, ci, _ = hierarchical_ci(units)
            walls = [seeds[s]["details"].get("train_wall_s") for s in seeds]
            wall = _fmt(np.mean(walls) / 60, ".1f") if None not in walls else "—"
            fids = [_fid(seeds[s]) for s in sorted(seeds)]
            fid, fci, _ = t_interval(fids) if None not in fids else (None, None, None)
            if name == CONTROL:
                diff = [None, None, None]
                fdiff = [None, None, None]
            else:
                diff = list(_vs_parent(seeds, control))
                shared = [s for s in sorted(set(seeds) & set(control)) if _fid(seeds[s]) is not None
                          and _fid(control[s]) is not None and _fid_key(seeds[s]) == _fid_key(control[s])]
                if any(_fid_key(seeds[s]) != _fid_key(control[s]) for s in set(seeds) & set(control)):
                    unpaired.append(name)
                fdiff = list(t_interval([_fid(seeds[s]) - _fid(control[s]) for s in shared])) if shared else [None] * 3
            mark = "*" if any(r["_dirty"] for r in seeds.values()) else ""
            lines.append(f"| {name}{mark} | {len(seeds)} | {wall} | {_ci(point, ci)} | {_ci(diff[0], diff[1], '+.3f')} | "
                         f"{_fmt(diff[2], '.3f')} | {_ci(fid, fci, '.1f')} | {_ci(fdiff[0], fdiff[1], '+.1f')} | "
                         f"{_fmt(fdiff[2], '.3f')} |")
        if borrowed:
            lines += ["", f"Control shared with another study (the same recipe, budget, `--base`, device, seed and "
                          f"prompts): {', '.join(borrowed)}."]
        if unpaired:
            lines += ["", f"Δ FID not paired for {', '.join(unpaired)}: FID-world at another resolution than the "
                          "control's (renders and Inception inputs differ), so the two FIDs are not comparable."]
        cpus = {name: sorted({_train_cpu(r) for r in seeds.values()}) for name, seeds in cells.items()}
        if len({c for v in cpus.values() for c in v}) > 1:
            lines += ["", "Train wall measured on different CPUs, so those walls are not comparable with each other: "
                          + "; ".join(f"{name}: {', '.join(cpus[name])}" for name in
                                      [CONTROL] + sorted(c for c in cpus if c != CONTROL) if name in cpus) + "."]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
