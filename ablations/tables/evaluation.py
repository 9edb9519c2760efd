"""GenEval and DPG-Bench tables from evaluation records, with the paper's numbers beside ours."""
from __future__ import annotations

from pathlib import Path

from ablations.tables import dirty_records, load

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
DPG_CATEGORIES = ("global", "entity", "attribute", "relation", "other")
PAPER_DPG = {"SnapGen (paper)": (88.3, 85.1, 87.0, 87.3, 87.6, 81.1), "SDXL (paper)": (83.3, 82.4, 80.9, 86.8, 80.4, 74.7),
             "SD3.5-Large (paper)": (87.4, 92.1, 90.0, 88.2, 88.1, 85.6)}


def _split(p: dict) -> str:
    return (p.get("prompts") or {}).get("split") or "—"


def _fmt(x, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def _val(scores: dict, key: str):
    return (scores.get(key) or {}).get("value")


def _ci(scores: dict, key: str, spec: str) -> str:
    ci = (scores.get(key) or {}).get("ci95")
    return f"[{_fmt(ci[0], spec)}, {_fmt(ci[1], spec)}]" if ci else "[—, —]"


def _of(recs: dict[str, dict], benchmark: str) -> list[tuple[str, str, dict]]:
    """(row name = file stem, path, record) of one benchmark, in path order."""
    return [(Path(p).stem, p, r) for p, r in sorted(recs.items()) if r["protocol"].get("benchmark") == benchmark]


def render_geneval(root: Path, allow_dirty: bool = False) -> str:
    recs = load(root, "geneval", "evaluation", allow_dirty, "results/tables/geneval.md")
    dirty = set(dirty_records(recs))
    lines = ["# GenEval (generated from results/geneval/*.json; do not edit)", "",
             "Ours are measured by `python -m evals.run geneval`; the prompt set, evaluator and sampler of each row",
             "are in its record. Synthetic-world rows use the world's prompt set and exact reader, so they are",
             "not comparable with the paper's rows, which use the official 553 prompts and Mask2Former.", "",
             "World prompt sets are held out (`heldout`: compositions never shown in training) unless the split",
             "column says `in_distribution`; rows marked * come from uncommitted code.", "",
             "| run | prompts | split | evaluator | steps | single | two | counting | colors | position | color_attr | overall | 95% CI |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, path, r in _of(recs, "geneval"):
        s, p = r["scores"], r["protocol"]
        tasks = [_val(s, f"geneval_{t}") for t in GENEVAL_TASKS]
        lines.append(f"| {name}{'*' if path in dirty else ''} | {p.get('prompt_source')} | {_split(p)} | "
                     f"{p['evaluator'].get('detector')} | {(p.get('sampler') or {}).get('steps') or '—'} | "
                     + " | ".join(_fmt(x) for x in tasks)
                     + f" | {_fmt(_val(s, 'geneval_overall'))} | {_ci(s, 'geneval_overall', '.3f')} |")
    for name, row in PAPER_GENEVAL.items():
        lines.append(f"| {name} | official-553 | official | Mask2Former (official) | — | "
                     + " | ".join(f"{x:.2f}" for x in row) + " | — |")
    return "\n".join(lines) + "\n"


def render_dpg(root: Path, allow_dirty: bool = False) -> str:
    recs = load(root, "dpg", "evaluation", allow_dirty, "results/tables/dpg.md")
    dirty = set(dirty_records(recs))
    lines = ["# DPG-Bench (generated from results/dpg/*.json; do not edit)", "",
             "| run | split | mode | VQA | " + " | ".join(DPG_CATEGORIES) + " | overall | 95% CI |",
             "|---|---|---|---|" + "---:|" * 6 + "---|"]
    for name, path, r in _of(recs, "dpg"):
        s = r["scores"]
        vqa = (r["protocol"].get("evaluator") or {}).get("vqa", "")
        vqa = vqa.get("name", vqa.get("backend", "")) if isinstance(vqa, dict) else vqa
        for mode in sorted({k.split("_")[1] for k in s if k.startswith("dpg_") and k.endswith("_overall_x100")}):
            vals = " | ".join(_fmt(_val(s, f"dpg_{mode}_{c}_x100"), ".1f") for c in DPG_CATEGORIES)
            lines.append(f"| {name}{'*' if path in dirty else ''} | {_split(r['protocol'])} | {mode} | {vqa} | "
                         f"{vals} | {_fmt(_val(s, f'dpg_{mode}_overall_x100'), '.1f')} | "
                         f"{_ci(s, f'dpg_{mode}_overall_x100', '.1f')} |")
    for name, row in PAPER_DPG.items():
        lines.append(f"| {name} | official | official | mPLUG-large | " + " | ".join(f"{x:.1f}" for x in row) + " | — |")
    return "\n".join(lines) + "\n"
