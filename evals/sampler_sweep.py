"""Sampler levers of one checkpoint: held-out GenEval-world over guidance scales x sampling steps, one record.

    python -m evals.sampler_sweep --ckpt world-tiny --guidance 2 3 4.5 --steps 10 20 40     # the full grid
    python -m evals.sampler_sweep --ckpt world-tiny --cells 2:20 4.5:20 3:10 3:40          # a cross through the default

Every cell is a normal ``python -m evals.run geneval`` run (same prompts and seeds, so cells are paired);
cell records go to ``results/world/sampler_sweep/``, the summary (overall + 95% CI per cell, and the paired
difference of each cell to the default cell with its bootstrap CI over prompts) to
``results/world/sampler_sweep-<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from evals.records import build_record, write_record


def paired_difference(a_rows: list[dict], b_rows: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean-of-task-accuracies difference B - A over the same (prompt, sample) images, with a bootstrap CI
    resampling prompts within each task (the GenEval overall's own stratification)."""
    key = lambda r: (r["tag"], r["prompt_index"], r["sample_index"])
    a = {key(r): float(r["correct"]) for r in a_rows}
    b = {key(r): float(r["correct"]) for r in b_rows}
    if set(a) != set(b):
        raise ValueError("paired difference needs the same prompts and samples in both runs")
    per_prompt: dict[str, dict[int, list[float]]] = {}
    for k in a:
        per_prompt.setdefault(k[0], {}).setdefault(k[1], []).append(b[k] - a[k])
    strata = {t: np.array([np.mean(v) for v in d.values()]) for t, d in per_prompt.items()}
    diff = float(np.mean([s.mean() for s in strata.values()]))
    rng = np.random.default_rng(seed)
    boots = [np.mean([s[rng.integers(0, len(s), len(s))].mean() for s in strata.values()]) for _ in range(n_boot)]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"diff": diff, "ci95": [float(lo), float(hi)],
            "p_two_sided": float(min(1.0, 2 * min(np.mean(np.array(boots) <= 0), np.mean(np.array(boots) >= 0))))}


def main(argv: list[str] | None = None) -> int:
    from evals.run import main as run_main

    p = argparse.ArgumentParser(prog="python -m evals.sampler_sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="world-tiny")
    p.add_argument("--guidance", type=float, nargs="+", default=[2.0, 3.0, 4.5])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--cells", nargs="+", default=None, metavar="GUIDANCE:STEPS",
                   help="explicit cells instead of the grid (the default cell is always added)")
    p.add_argument("--default", type=float, nargs=2, default=[3.0, 20], metavar=("GUIDANCE", "STEPS"),
                   help="the reference cell of the paired differences")
    p.add_argument("--n-per-prompt", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    name = a.name or a.ckpt.replace("/", "-")
    t0 = time.time()
    if a.cells:
        try:
            grid = [(float(c.split(":")[0]), int(c.split(":")[1])) for c in a.cells]
        except (IndexError, ValueError):
            print(f"error: --cells takes GUIDANCE:STEPS pairs such as 3:20, got {a.cells}", file=sys.stderr)
            return 2
    else:
        grid = [(g, s) for g in a.guidance for s in a.steps]
    grid = list(dict.fromkeys([(a.default[0], int(a.default[1]))] + grid))
    cells = {}
    for g, s in grid:
        out = Path("results") / "world" / "sampler_sweep" / f"{name}-g{g:g}-s{s}.json"
        if not out.exists():
            rc = run_main(["geneval", "--ckpt", a.ckpt, "--guidance", str(g), "--steps", str(s), "--threads",
                           str(a.threads), "--n-per-prompt", str(a.n_per_prompt), "--out", str(out),
                           "--no-progress"])
            if rc != 0:
                print(f"error: geneval exited {rc} for guidance {g}, steps {s}", file=sys.stderr)
                return rc
        cells[(g, s)] = json.loads(out.read_text()) | {"_path": str(out)}
    ref_key = (a.default[0], int(a.default[1]))
    load = lambda rec: [json.loads(x) for x in Path(rec["samples_jsonl"]).read_text().splitlines()]
    ref_rows = load(cells[ref_key])
    rows = []
    for (g, s), rec in cells.items():
        rows.append({"guidance": g, "steps": s, "overall": rec["scores"]["overall"],
                     "ci95": rec["scores"]["overall_ci95"],
                     "tasks": {t: v["accuracy"] for t, v in rec["scores"]["tasks"].items()},
                     "paired_vs_default": paired_difference(ref_rows, load(rec)), "record": rec["_path"]})
    best = max(rows, key=lambda r: r["overall"])
    scores = {"best": {"guidance": best["guidance"], "steps": best["steps"], "overall": best["overall"]},
              "default": {"guidance": ref_key[0], "steps": ref_key[1], "overall": cells[ref_key]["scores"]["overall"]}}
    protocol = {"ckpt": a.ckpt, "prompts": cells[ref_key]["protocol"].get("prompts"),
                "n_per_prompt": a.n_per_prompt, "threads": a.threads,
                "pairing": "same prompts and per-sample seeds in every cell; bootstrap over prompts within tasks"}
    record = build_record("sampler_sweep", scores, protocol, None, None, time.time() - t0)
    record |= {"kind": "sampler_sweep", "cells": rows}
    out = Path("results") / "world" / f"sampler_sweep-{name}.json"
    write_record(out, record)
    for r in sorted(rows, key=lambda r: (r["guidance"], r["steps"])):
        d = r["paired_vs_default"]
        print(f"guidance {r['guidance']:4g} steps {r['steps']:3d}: {r['overall']:.3f} {np.round(r['ci95'], 3)}  "
              f"vs default {d['diff']:+.3f} {np.round(d['ci95'], 3)}")
    print(f"record: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
