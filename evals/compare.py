"""Compare result records: B - A for every shared metric, which one is better (by the metric's declared
``higher_is_better``), and a paired difference with a 95% CI when both are evaluations of the same prompts and
seeds (per-prompt units from the benchmark, bootstrap within strata).

    python -m evals.run compare results/geneval/a.json results/geneval/b.json [more.json ...]
    python -m evals.run compare A.json B.json --json          # machine-readable
    python -m evals.run compare A.json B.json --force         # show scores even if the protocols differ

The first record is the reference; each further record is compared with it. Malformed records are refused
with the file and field named (``snapgen.records``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from snapgen.records import read_record

# protocol fields that must match for two scores to be comparable (generator identity may differ)
PROTOCOL_KEYS = ("benchmark", "sampler", "images_per_prompt", "prompt_set_sha256", "seed_scheme", "base_seed",
                 "evaluator", "resolution", "scoring_mode", "prompts")
IGNORED = ("sampler.checkpoint", "evaluator.weights_path", "prompts.source")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def protocol_mismatch(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    kind = [("kind", a.get("kind"), b.get("kind"))] if a.get("kind") != b.get("kind") else []   # e.g. an evaluation
    pa = _flatten({k: a["protocol"].get(k) for k in PROTOCOL_KEYS})                         # vs a latency record
    pb = _flatten({k: b["protocol"].get(k) for k in PROTOCOL_KEYS})
    return kind + [(k, pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb))
                   if pa.get(k) != pb.get(k) and not k.startswith(IGNORED)]


def paired(a: dict, pa: str, b: dict, pb: str) -> dict[str, dict]:
    """Metric -> paired difference B - A, when both records score the same prompts and seeds."""
    if a["kind"] != "evaluation" or b["kind"] != "evaluation":
        return {}
    same = ("benchmark", "prompt_set_sha256", "base_seed", "images_per_prompt", "seed_scheme")
    if any(a["protocol"].get(k) != b["protocol"].get(k) for k in same) or not a["protocol"].get("prompt_set_sha256"):
        return {}
    from evals.api import get_benchmark
    from evals.records import paired_difference, read_rows

    bench = get_benchmark(a["protocol"]["benchmark"])
    try:
        ua, ub = bench.units(read_rows(a, pa)), bench.units(read_rows(b, pb))
    except FileNotFoundError:
        return {}
    out = {}
    for metric in sorted(set(ua) & set(ub)):
        try:
            out[metric] = paired_difference(ua[metric], ub[metric])
        except ValueError:
            continue
    return out


def compare(a: dict, pa: str, b: dict, pb: str) -> dict:
    """{"mismatch": [...], "rows": [{metric, a, b, diff, better, paired}]}."""
    pairs = paired(a, pa, b, pb)
    rows = []
    for k in sorted(set(a["scores"]) & set(b["scores"])):
        sa, sb = a["scores"][k], b["scores"][k]
        diff = sb["value"] - sa["value"]
        hib = sa["higher_is_better"] if sa["higher_is_better"] == sb["higher_is_better"] else None
        better = "—" if hib is None or diff == 0 else ("B" if (diff > 0) == hib else "A")
        rows.append({"metric": k, "a": sa["value"], "b": sb["value"], "diff": diff, "higher_is_better": hib,
                     "better": better, "unit": sa["unit"], "paired": pairs.get(k)})
    return {"mismatch": protocol_mismatch(a, b), "rows": rows}


def _print(result: dict, pa: str, pb: str) -> None:
    print(f"A = {pa}\nB = {pb}")
    print(f"{'metric':36s} {'A':>10s} {'B':>10s} {'B-A':>10s}  better  paired B-A [95% CI]")
    for r in result["rows"]:
        p = r["paired"]
        ptxt = (f"{p['diff']:+.4f} [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}] ({p['n_units']} units)" if p else "—")
        print(f"{r['metric']:36s} {r['a']:10.4f} {r['b']:10.4f} {r['diff']:+10.4f}  {r['better']:6s}  {ptxt}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.run compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="+", metavar="RECORD", help="two or more record files; the first is A")
    p.add_argument("--force", action="store_true", help="print the score differences even if protocols differ")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    a = p.parse_args(argv)
    if len(a.records) < 2:
        p.error("give at least two records (the first is the reference)")
    for path in a.records:
        if Path(path).is_dir():
            inside = sorted(Path(path).glob("*.json"))[:2]
            raise ValueError(f"RECORD {path}: is a folder; pass record files (.json)"
                             + (f", e.g. {' '.join(map(str, inside))}" if inside else ""))
    recs = [(path, read_record(path)) for path in a.records]
    (pa, ra), code, out, empty = recs[0], 0, [], False
    for pb, rb in recs[1:]:
        result = compare(ra, pa, rb, pb)
        out.append({"a": pa, "b": pb, **result})
        if result["mismatch"]:
            code = 3
            if not a.json:
                print(f"PROTOCOL MISMATCH between {pa} and {pb}: these settings differ, so the scores are not comparable:")
                for k, x, y in result["mismatch"]:
                    print(f"  {k}: {x!r} != {y!r}")
            if not a.force:
                continue
        if not result["rows"]:                       # nothing to compare: an empty table would read as "no change"
            empty = True
            if not a.json:
                print(f"NO SHARED METRIC between {pa} and {pb}: A has {sorted(ra['scores'])}, B has "
                      f"{sorted(rb['scores'])}; compare records of one benchmark and protocol")
            continue
        if not a.json:
            _print(result, pa, pb)
    if a.json:
        print(json.dumps(out, indent=2, default=str))
    return 3 if empty else 0 if a.force else code


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
