"""Learning-curve figure from a curve record: held-out GenEval-world (95% CI) and FID-world vs training steps
and training wall time.

    python -m paper_figures.learning_curve results/world/learning_curve-world-tiny.json
    # -> results/figures/learning_curve-world-tiny.png
"""
from __future__ import annotations

import argparse
from pathlib import Path


def plot(record: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = record["points"] if "points" in record else record["details"]["points"]   # schema 1 or the envelope
    steps = [p["step"] for p in pts]
    minutes = [(p["train_wall_s"] or 0) / 60 for p in pts]
    g = [p["geneval_overall"] for p in pts]
    lo = [p["geneval_overall"] - p["geneval_ci95"][0] for p in pts]
    hi = [p["geneval_ci95"][1] - p["geneval_overall"] for p in pts]
    has_fid = all("fid" in p for p in pts)
    fig, axes = plt.subplots(1, 2 if has_fid else 1, figsize=(10 if has_fid else 5.5, 3.8), squeeze=False)
    ax = axes[0][0]
    ax.errorbar(steps, g, yerr=[lo, hi], marker="o", capsize=3, label="overall (95% CI)")
    for task in ("colors", "single_object", "two_object", "position", "color_attr", "counting"):
        ax.plot(steps, [p["geneval_tasks"].get(task) for p in pts], lw=0.8, alpha=0.6, label=task)
    tc = record["protocol"]["train_config"]
    per_step = tc["batch_size"] * tc.get("grad_accum", 1) * tc.get("processes", 1)   # images of every process
    ax.set_xlabel(f"training step (global batch {per_step})")
    ax.set_ylabel("GenEval-world, held-out prompts")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    top = ax.secondary_xaxis("top", functions=(lambda s: s * (minutes[-1] / steps[-1] if steps[-1] else 0),
                                               lambda m: m / (minutes[-1] / steps[-1]) if minutes[-1] else 0))
    top.set_xlabel("training wall time (min, from the run's log)")
    if has_fid:
        ax2 = axes[0][1]
        ax2.plot(steps, [p["fid"] for p in pts], marker="o", color="C3", label="all images")
        if all(p.get("fid_spread", {}).get("ci95") for p in pts):
            spread = [p["fid_spread"] for p in pts]
            ax2.fill_between(steps, [s["ci95"][0] for s in spread], [s["ci95"][1] for s in spread], color="C3",
                             alpha=0.2, label=f"{spread[0]['fraction']:.0%} subsets, 95% spread")
            ax2.legend(fontsize=7)
        ax2.set_xlabel("training step")
        ax2.set_ylabel(pts[0]["fid_key"] + " (lower is better)")
        ax2.grid(alpha=0.3)
    fig.suptitle(f"learning curve: {record.get('name') or record['protocol']['run']} "
                 f"({tc.get('processes', 1)} process(es) x batch {tc['batch_size']})", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m paper_figures.learning_curve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("record", help="a learning-curve record written by `python -m evals.learning_curve`")
    p.add_argument("--out", default=None, help="PNG path (default results/figures/<record name>.png)")
    a = p.parse_args(argv)
    from snapgen.paths import results_root
    from snapgen.records import read_record

    rec = read_record(a.record)                    # validated; errors name the file
    if rec["kind"] != "curve":
        raise ValueError(f"{a.record}: a record of kind {rec['kind']!r}; pass a learning-curve record (kind 'curve', "
                         "written by `python -m evals.learning_curve`, e.g. results/world/learning_curve-<run>.json)")
    out = Path(a.out) if a.out else results_root() / "figures" / (Path(a.record).stem + ".png")
    if out.suffix.lower() != ".png":                # matplotlib would add .png (or refuse .jpg) behind our back
        raise ValueError(f"--out {out}: the figure is a PNG; pass a path ending in .png, e.g. {out.with_suffix('.png')}")
    from snapgen.io import check_writable_dir

    check_writable_dir(out.parent, "--out")
    print(plot(rec, out))
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
