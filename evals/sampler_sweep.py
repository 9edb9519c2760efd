"""Sampler levers of one checkpoint: held-out GenEval-world over guidance scales x sampling steps, one record.

    python -m evals.sampler_sweep --ckpt world-tiny --guidance 2 3 4.5 --steps 10 20 40     # the full grid
    python -m evals.sampler_sweep --ckpt world-tiny --cells 2:20 4.5:20 3:10 3:40          # a cross through the default
    python -m evals.sampler_sweep --ckpt world-tiny --cells 2:20 --world-split in_distribution   # choose on training
                                                                                  # compositions, report held out

Choosing a sampler setting on the held-out prompts and reporting it on the same prompts is optimistic;
``--world-split in_distribution`` sweeps the training compositions (fresh seeds and layouts: a validation split),
so a setting chosen there can be reported on the held-out split without selection bias.

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

from snapgen.cli import nonnegative_float, positive_int
from evals.benchmarks.geneval import TASKS
from evals.records import paired_difference
from snapgen.paths import display, results_dir
from snapgen.records import read_record, write_record


def checkpoint_key(ckpt: str, threads: int, n_per_prompt: int, split: str = "heldout") -> dict:
    """What a cell record must have been made from to be reused: the checkpoint's content hash (as the harness
    records it), the generation threads, the images per prompt and the prompts' split."""
    from evals.generators import SHIPPED_WORLD, checkpoint_sha256

    path = SHIPPED_WORLD / "pipeline" if ckpt == "world-tiny" else Path(ckpt)
    sha = checkpoint_sha256(path) if path.is_dir() else None
    return {"checkpoint_sha256": sha, "threads": threads, "images_per_prompt": n_per_prompt, "split": split}


def cell_key(rec: dict) -> dict:
    gen = rec["protocol"].get("generator", {})
    sha = gen.get("checkpoint_sha256") if isinstance(gen.get("checkpoint_sha256"), str) and \
        gen.get("checkpoint") not in (None, "in-memory") else None
    return {"checkpoint_sha256": sha, "threads": gen.get("threads"),
            "images_per_prompt": rec["protocol"].get("images_per_prompt"),
            "split": (rec["protocol"].get("prompts") or {}).get("split")}


def geneval_units(rec: dict, path: str | Path) -> dict:
    from evals.api import get_benchmark
    from evals.records import read_rows

    return get_benchmark("geneval").units(read_rows(rec, path))["geneval_overall"]


def paired_vs(ref: tuple[dict, str], other: tuple[dict, str]) -> dict:
    """GenEval overall of ``other`` minus ``ref`` over the same (prompt, sample) images; bootstrap over prompts
    within tasks (the overall's own stratification)."""
    return paired_difference(geneval_units(*ref), geneval_units(*other))


def sweep_record(name: str, rows: list[dict], default: tuple[float, int], default_rec: dict, protocol: dict,
                 wall_time_s: float | None, environment: dict | None = None, created: str | None = None) -> dict:
    """The sweep's record: the default and the best cell's GenEval overall as scores; every cell in details."""
    from snapgen.records import make_record, score

    best = max(rows, key=lambda r: r["overall"])
    ref = next(r for r in rows if (r["guidance"], r["steps"]) == default)
    n = default_rec["scores"]["geneval_overall"]["n"] if "geneval_overall" in default_rec["scores"] else None
    scores = {"default_geneval_overall": score(ref["overall"], ref["ci95"], n, True, "fraction"),
              "best_geneval_overall": score(best["overall"], best["ci95"], n, True, "fraction")}
    details = {"cells": rows, "best": {"guidance": best["guidance"], "steps": best["steps"]},
               "default": {"guidance": default[0], "steps": default[1]}, "wall_time_s": wall_time_s}
    rec = make_record("sweep", f"sampler_sweep-{name}", protocol, scores, details, environment)
    return {**rec, "created": created} if created else rec


def migrate_v1(old: dict, path: Path) -> dict:
    from snapgen.paths import REPO_ROOT

    d = old["scores"]["default"]
    cell = next(c for c in old["cells"] if (c["guidance"], c["steps"]) == (d["guidance"], d["steps"]))
    cell_rec = json.loads((REPO_ROOT / cell["record"]).read_text())
    n = (cell_rec["scores"]["geneval_overall"]["n"] if cell_rec.get("schema_version") == 2
         else cell_rec["scores"]["prompts"])
    return sweep_record(Path(path).stem.removeprefix("sampler_sweep-"), old["cells"], (d["guidance"], d["steps"]),
                        {"scores": {"geneval_overall": {"n": n}}}, old["protocol"], old.get("wall_time_s"),
                        old["environment"], old["created"])


def parse_cell(text: str, flag: str) -> tuple[float, int]:
    """``GUIDANCE:STEPS`` -> (guidance >= 0 and finite, steps >= 1), else an error naming ``flag``."""
    import argparse as _a

    try:
        g, s = text.split(":")
        return nonnegative_float(g), positive_int(s)
    except (ValueError, _a.ArgumentTypeError) as e:
        raise ValueError(f"{flag}: {text!r} is not GUIDANCE:STEPS with guidance >= 0 and steps >= 1 such as 3:20 "
                         f"({e})") from None


def main(argv: list[str] | None = None) -> int:
    from evals.run import main as run_main

    p = argparse.ArgumentParser(prog="python -m evals.sampler_sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="world-tiny")
    p.add_argument("--guidance", type=nonnegative_float, nargs="+", default=None, help="grid (default 2 3 4.5)")
    p.add_argument("--steps", type=positive_int, nargs="+", default=None, help="grid (default 10 20 40)")
    p.add_argument("--cells", nargs="+", default=None, metavar="GUIDANCE:STEPS",
                   help="explicit cells instead of the grid (the default cell is always added)")
    p.add_argument("--default", nargs=2, default=["3.0", "20"], metavar=("GUIDANCE", "STEPS"),
                   help="the reference cell of the paired differences")
    p.add_argument("--n-per-prompt", type=positive_int, default=4)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--world-split", choices=("heldout", "in_distribution"), default="heldout",
                   help="the prompts swept: held-out compositions (default) or training compositions (a validation "
                        "split for choosing a setting without looking at the held-out prompts)")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    if a.cells and (a.guidance or a.steps):        # the grid would be silently replaced by the cells
        flags = " and ".join(f for f, v in (("--guidance", a.guidance), ("--steps", a.steps)) if v)
        raise ValueError(f"{flags}: ignored with --cells (explicit cells replace the grid); pass either --cells or "
                         "the grid's --guidance/--steps")
    if not a.ckpt.strip():
        raise ValueError("--ckpt '': empty checkpoint; pass a pipeline folder or world-tiny (the default)")
    guidance, steps = a.guidance or [2.0, 3.0, 4.5], a.steps or [10, 20, 40]
    name = (a.name or a.ckpt.replace("/", "-")) + ("" if a.world_split == "heldout" else f"-{a.world_split}")
    t0 = time.time()
    grid = [parse_cell(c, "--cells") for c in a.cells] if a.cells else [(g, s) for g in guidance for s in steps]
    ref_key = parse_cell(f"{a.default[0]}:{a.default[1]}", "--default")
    grid = list(dict.fromkeys([ref_key] + grid))
    cells = {}
    want = checkpoint_key(a.ckpt, a.threads, a.n_per_prompt, a.world_split)
    for g, s in grid:
        out = results_dir("world", "sampler_sweep") / f"{name}-g{g:g}-s{s}.json"
        if out.exists() and cell_key(read_record(out)) != want:   # another checkpoint's (or setting's) cell
            print(f"{display(out)}: made from other weights or settings ({cell_key(read_record(out))} vs {want}); "
                  "rescoring it", file=sys.stderr)
            out.unlink()
        if not out.exists():
            rc = run_main(["geneval", "--ckpt", a.ckpt, "--guidance", str(g), "--steps", str(s), "--threads",
                           str(a.threads), "--n-per-prompt", str(a.n_per_prompt), "--world-split", a.world_split,
                           "--out", str(out), "--no-progress"])
            if rc != 0:
                print(f"error: geneval exited {rc} for guidance {g}, steps {s}", file=sys.stderr)
                return rc
        cells[(g, s)] = (read_record(out), str(out))
    rows = []
    for (g, s), (rec, path) in cells.items():
        sc = rec["scores"]
        rows.append({"guidance": g, "steps": s, "overall": sc["geneval_overall"]["value"],
                     "ci95": sc["geneval_overall"]["ci95"],
                     "tasks": {k.removeprefix("geneval_"): v["value"] for k, v in sc.items()
                               if k.removeprefix("geneval_") in TASKS},
                     "paired_vs_default": paired_vs(cells[ref_key], (rec, path)), "record": display(path)})
    protocol = {"ckpt": a.ckpt, "prompts": cells[ref_key][0]["protocol"].get("prompts"),
                "n_per_prompt": a.n_per_prompt, "threads": a.threads,
                "pairing": "same prompts and per-sample seeds in every cell; bootstrap over prompts within tasks"}
    record = sweep_record(name, rows, ref_key, cells[ref_key][0], protocol, time.time() - t0)
    out = results_dir("world") / f"sampler_sweep-{name}.json"
    write_record(out, record)
    for r in sorted(rows, key=lambda r: (r["guidance"], r["steps"])):
        d = r["paired_vs_default"]
        print(f"guidance {r['guidance']:4g} steps {r['steps']:3d}: {r['overall']:.3f} {np.round(r['ci95'], 3)}  "
              f"vs default {d['diff']:+.3f} {np.round(d['ci95'], 3)}")
    print(f"record: {out}")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
