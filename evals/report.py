"""Tables from records, with the paper's numbers beside ours. Pure functions of ``results/``:
re-running on the same records gives byte-identical files.

    python -m evals.report            # -> results/tables/geneval.md, results/tables/dpg.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from snapgen.io import atomic_write_text

GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# SPEC.md section 5: the paper's GenEval table (single, two, counting, colors, position, color_attr, overall).
PAPER_GENEVAL = {
    "SnapGen (paper)": (1.00, 0.84, 0.60, 0.88, 0.18, 0.45, 0.66),
    "SDXL (paper)": (0.98, 0.74, 0.39, 0.85, 0.15, 0.23, 0.55),
    "SD3-Medium (paper)": (0.98, 0.74, 0.63, 0.67, 0.34, 0.36, 0.62),
    "SD3.5-Large (paper)": (0.98, 0.89, 0.73, 0.83, 0.34, 0.47, 0.71),
    "PixArt-alpha (paper)": (0.98, 0.50, 0.44, 0.80, 0.08, 0.07, 0.48),
    "SANA-1.6B (paper)": (0.99, 0.77, 0.62, 0.88, 0.21, 0.47, 0.66),
    "IF-XL (paper)": (0.97, 0.74, 0.66, 0.81, 0.13, 0.35, 0.61),
}
# DPG-Bench (global, entity, attribute, relation, other, overall).
PAPER_DPG = {"SnapGen (paper)": (88.3, 85.1, 87.0, 87.3, 87.6, 81.1), "SDXL (paper)": (83.3, 82.4, 80.9, 86.8, 80.4, 74.7),
             "SD3.5-Large (paper)": (87.4, 92.1, 90.0, 88.2, 88.1, 85.6)}


def _load(folder: Path) -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]


def dirty_records(records: list[tuple[str, dict]]) -> list[str]:
    """Names of records made from uncommitted code (their git commit ends in "-dirty") or of no known commit."""
    return [n for n, r in records
            if not (c := (r.get("environment") or {}).get("git_commit")) or str(c).endswith("-dirty")]


def refuse_dirty(records: list[tuple[str, dict]], where: str, allow_dirty: bool) -> None:
    """Tables are built from records of committed code only, unless the caller explicitly allows it."""
    bad = dirty_records(records)
    if bad and not allow_dirty:
        raise ValueError(f"{where}: {len(bad)} record(s) come from uncommitted code or an unknown commit: "
                         f"{', '.join(bad[:5])}. Commit the code and rerun them, or pass --allow-dirty to build "
                         "the table anyway (the table then marks them).")


def _split(p: dict) -> str:
    return (p.get("prompts") or {}).get("split") or "—"


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def geneval_table(records: list[tuple[str, dict]]) -> str:
    lines = ["# GenEval (generated from results/geneval/*.json; do not edit)", "",
             "Ours are measured by `python -m evals.run geneval`; the prompt set, evaluator and sampler of each row",
             "are in its record. Synthetic-world rows use the world's prompt set and exact reader, so they are",
             "not comparable with the paper's rows, which use the official 553 prompts and Mask2Former.", "",
             "World prompt sets are held out (`heldout`: compositions never shown in training) unless the split",
             "column says `in_distribution`; rows marked * come from uncommitted code.", "",
             "| run | prompts | split | evaluator | steps | single | two | counting | colors | position | color_attr | overall | 95% CI |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    dirty = set(dirty_records(records))
    for name, r in records:
        s, p = r["scores"], r["protocol"]
        tasks = [s["tasks"].get(t, {}).get("accuracy") for t in GENEVAL_TASKS]
        lo, hi = s.get("overall_ci95", [None, None])
        lines.append(f"| {name}{'*' if name in dirty else ''} | {p.get('prompt_source')} | {_split(p)} | "
                     f"{p['evaluator'].get('detector')} | "
                     f"{(p.get('sampler') or {}).get('steps') or '—'} | " + " | ".join(_fmt(x) for x in tasks) +
                     f" | {_fmt(s['overall'])} | [{_fmt(lo)}, {_fmt(hi)}] |")
    for name, row in PAPER_GENEVAL.items():
        lines.append(f"| {name} | official-553 | official | Mask2Former (official) | — | "
                     + " | ".join(f"{x:.2f}" for x in row) + " | — |")
    return "\n".join(lines) + "\n"


def dpg_table(records: list[tuple[str, dict]]) -> str:
    cats = ("global", "entity", "attribute", "relation", "other")
    lines = ["# DPG-Bench (generated from results/dpg/*.json; do not edit)", "",
             "| run | split | mode | VQA | " + " | ".join(cats) + " | overall | 95% CI |",
             "|---|---|---|---|" + "---:|" * 6 + "---|"]
    dirty = set(dirty_records(records))
    for name, r in records:
        for mode, s in sorted(r["scores"].items()):
            if not isinstance(s, dict) or "overall_x100" not in s:
                continue
            c = s.get("categories_x100", {})
            lo, hi = s.get("overall_ci95_x100", [None, None])
            vals = " | ".join("—" if c.get(k) is None else f"{c[k]:.1f}" for k in cats)
            vqa = (r["protocol"].get("evaluator") or {}).get("vqa", "")
            vqa = vqa.get("name", vqa.get("backend", "")) if isinstance(vqa, dict) else vqa
            lines.append(f"| {name}{'*' if name in dirty else ''} | {_split(r['protocol'])} | {mode} | {vqa} | "
                         f"{vals} | {s['overall_x100']:.1f} | "
                         f"[{'—' if lo is None else f'{lo:.1f}'}, {'—' if hi is None else f'{hi:.1f}'}] |")
    for name, row in PAPER_DPG.items():
        lines.append(f"| {name} | official | official | mPLUG-large | " + " | ".join(f"{x:.1f}" for x in row) + " | — |")
    return "\n".join(lines) + "\n"


def write_tables(root: Path = Path("results"), allow_dirty: bool = False) -> list[Path]:
    out = []
    for bench, fn in (("geneval", geneval_table), ("dpg", dpg_table)):
        recs = [(n, r) for n, r in _load(root / bench) if r.get("benchmark") == bench]
        refuse_dirty(recs, f"results/tables/{bench}.md", allow_dirty)
        out.append(atomic_write_text(root / "tables" / f"{bench}.md", fn(recs)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results")
    p.add_argument("--allow-dirty", action="store_true", help="also tabulate records made from uncommitted code "
                   "(marked * in the table)")
    a = p.parse_args(argv)
    try:
        paths = write_tables(Path(a.results), a.allow_dirty)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
