"""Quality-vs-cost Pareto charts of the ablation ladders and the sampling-steps sweep, from records only.

    python -m paper_figures.ladder            # -> results/figures/ladder_t2i.png, ladder_in256.png, steps_sweep.png
    python -m paper_figures.ladder --results /tmp/r --out-dir /tmp/figs

One chart per ladder: quality of each world-scale twin (FID-world, and GenEval-world for text-to-image; the
ladder table's numbers and 95% CIs, ``ablations.quality``) against the cost of its full-size variant (CPU
latency from the architecture record, error bar = min..max of its timed runs; parameters, exact). The Pareto
front is drawn (lower FID / higher GenEval at lower cost); labels are placed so that none overlaps another.
The steps sweep plots held-out GenEval-world of the final variant against sampling steps (the sampler-sweep
record, guidance fixed) with paired CIs.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402,F401
import matplotlib.ticker  # noqa: E402,F401

from paper_figures.pareto import pareto_front  # noqa: E402
from snapgen.io import atomic_write_bytes  # noqa: E402

# label offsets tried in order (points), around the marker
_OFFSETS = [(6, 4), (6, -11), (-6, 4), (-6, -11), (6, 14), (6, -21), (-6, 14), (-6, -21), (14, -3), (-14, -3),
            (6, 26), (6, -33), (-6, 26), (-6, -33)]


def _overlap(a, b, pad: float = 1.0) -> bool:
    return not (a.x1 + pad <= b.x0 or b.x1 + pad <= a.x0 or a.y1 + pad <= b.y0 or b.y1 + pad <= a.y0)


def place_labels(ax, xs: list[float], ys: list[float], labels: list[str], fontsize: float = 7) -> list:
    """Annotate each point with its label at the first offset whose box overlaps no earlier label and no marker
    (greedy, in display space); returns the text artists."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    markers = []
    for x, y in zip(xs, ys):
        px, py = ax.transData.transform((x, y))
        markers.append(matplotlib.transforms.Bbox([[px - 3, py - 3], [px + 3, py + 3]]))
    placed, texts = [], []
    frame = ax.get_window_extent(renderer)
    import math

    rings = [(r * math.cos(a), r * math.sin(a)) for r in (24, 36, 50, 66, 84, 104)
             for a in [k * math.pi / 6 for k in range(12)]]
    for i, (x, y, label) in enumerate(zip(xs, ys, labels)):
        best = None
        for n, (dx, dy) in enumerate(_OFFSETS + rings):
            leader = {"arrowprops": {"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 2}}
            t = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                            ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top", **leader)
            t.update_positions(renderer)
            box = matplotlib.text.Text.get_window_extent(t, renderer)   # the text, not its leader line
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            clash = (not inside or any(_overlap(box, b) for b in placed)
                     or any(_overlap(box, m) for j, m in enumerate(markers) if j != i))
            if not clash:
                best = (t, box)
                break
            t.remove()
        if best is None:
            raise ValueError(f"no free place for the label {label!r}: too many labels for the figure size")
        placed.append(best[1])
        texts.append(best[0])
    return texts


def _short(twin: str) -> str:
    name = twin.removeprefix("world-")
    for p in ("t2i-", "in256-"):
        name = name.removeprefix(p)
    return name


def _cost(root: Path, full_size: str, ladder: str) -> dict | None:
    """Params and CPU ms of the full-size variant: at the deployment resolution where measured, else at the
    reference resolution (``ablations.ladder_cost``); ``ladder_points`` makes one ladder use one resolution."""
    from ablations.ladder_cost import rung_cost

    c = rung_cost(root, full_size, ladder)
    if c is None:
        return None
    return {"params_m": c["params"] / 1e6, "deploy": (c["deploy_cpu_ms"], c["deploy_cpu_range"], f"{c['deploy_px']}px"),
            "ref": (c["ref_cpu_ms"], c["ref_cpu_range"], f"{c['ref_px']}px" if c["ref_px"] else None)}


def ladder_points(root: Path, ladder: str) -> list[dict]:
    """One dict per twin of ``ladder`` with quality records and a full-size architecture record."""
    from ablations.quality import twin_quality
    from ablations.twins import TWINS, ladder_of

    quality = twin_quality(root)
    out = []
    for t in TWINS:
        full = t.paper["full_size"]
        if ladder_of(full) != ladder or t.name not in quality:
            continue
        cost = _cost(root, full, ladder)
        if cost is None:
            continue
        out.append({"twin": t.name, "label": _short(t.name), "full_size": full, **cost, "quality": quality[t.name]})
    # one latency resolution per chart: the deployment one once every point has it, else the reference one
    which = "deploy" if out and all(p["deploy"][0] is not None for p in out) else "ref"
    for p in out:
        p["cpu_ms"], p["cpu_range"], p["cpu_px"] = p.pop(which)
        p.pop("deploy" if which == "ref" else "ref")
    return out


def _metrics(points: list[dict]) -> list[str]:
    keys = sorted({k for p in points for k in p["quality"]})
    return [k for k in keys if k.startswith("fid")] + [k for k in keys if k.startswith("geneval")]


def ladder_pareto(root: Path, ladder: str) -> bytes | None:
    """The ladder's chart as PNG bytes (None without points)."""
    points = ladder_points(root, ladder)
    if not points:
        return None
    metrics = _metrics(points)
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 4.2 * len(metrics)), squeeze=False)
    for row, metric in enumerate(metrics):
        pts = [p for p in points if metric in p["quality"]]
        lower_better = metric.startswith("fid")
        y = [p["quality"][metric]["value"] for p in pts]
        ci = [p["quality"][metric]["ci95"] or (v, v) for p, v in zip(pts, y)]
        yerr = [[v - c[0] for v, c in zip(y, ci)], [c[1] - v for v, c in zip(y, ci)]]
        seeds = max(p["quality"][metric]["seeds"] for p in pts)
        for col, (xname, xlabel) in enumerate((("cpu_ms", f"full-size U-Net CPU ms ({pts[0]['cpu_px']}, fp32, 1 thread; "
                                                 "bar: min..max)"),
                                                ("params_m", "full-size U-Net parameters (M)"))):
            ax = axes[row, col]
            use = [i for i, p in enumerate(pts) if p[xname] is not None]
            xs = [pts[i][xname] for i in use]
            ys = [y[i] for i in use]
            xerr = None
            if xname == "cpu_ms":
                xerr = [[xs[k] - (pts[i]["cpu_range"][0] or xs[k]) for k, i in enumerate(use)],
                        [(pts[i]["cpu_range"][1] or xs[k]) - xs[k] for k, i in enumerate(use)]]
            ax.errorbar(xs, ys, yerr=[[yerr[0][i] for i in use], [yerr[1][i] for i in use]], xerr=xerr, fmt="o",
                        ms=4, capsize=2, lw=0.8, color="tab:blue", zorder=3, label=f"twin (95% CI, {seeds} seeds)")
            front = pareto_front([(x, v if lower_better else -v) for x, v in zip(xs, ys)])
            ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="tab:red", lw=1, label="Pareto front")
            ax.set(xlabel=xlabel, ylabel=f"{metric} ({'lower' if lower_better else 'higher'} is better)", xscale="log")
            ax.margins(x=0.15, y=0.12)
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(True, lw=0.3)
            ax.legend(fontsize=7, loc="best")
            place_labels(ax, xs, ys, [pts[i]["label"] for i in use])
    from ablations.quality import ladder_records

    budgets = sorted({r["protocol"].get("budget", {}).get("name", "?") for r in ladder_records(root, ladder).values()})
    fig.suptitle(f"Ablation ladder ({ladder}): world-scale twin quality vs full-size cost"
                 f" (budget {', '.join(budgets)}); generated from results/ablation/{ladder}",
                 fontsize=10)
    fig.tight_layout()
    return _png(fig)


def steps_sweep(record: dict) -> bytes:
    """GenEval-world (95% CI) of the final variant against sampling steps, at the sweep's default guidance."""
    cells = record["details"]["cells"]
    g = record["details"]["default"]["guidance"] if isinstance(record["details"].get("default"), dict) else 3.0
    cells = sorted((c for c in cells if c["guidance"] == g), key=lambda c: c["steps"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    s = [c["steps"] for c in cells]
    v = [c["overall"] for c in cells]
    ax.errorbar(s, v, yerr=[[x - c["ci95"][0] for x, c in zip(v, cells)], [c["ci95"][1] - x for x, c in zip(v, cells)]],
                marker="o", capsize=3, label="overall (95% CI over prompts)")
    for c in cells:
        pv = c.get("paired_vs_default")
        if pv:
            ax.annotate(f"Δ {pv['diff']:+.3f} p={pv['p_two_sided']:.2f}", (c["steps"], c["overall"]), fontsize=7,
                        xytext=(4, -12), textcoords="offset points")
    ax.set(xscale="log", xlabel="sampling steps (Euler, rectified flow)", ylabel="GenEval-world, held-out prompts",
           ylim=(0, 1), title=f"steps sweep: {record['name']} (guidance {g})")
    ax.set_xticks(s, [str(x) for x in s])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_figures(root: Path, out_dir: Path | None = None) -> list[Path]:
    """Every chart this module draws from the records under ``root``; returns the written paths."""
    from snapgen.records import read_record

    out_dir = out_dir or root / "figures"
    written = []
    for ladder in ("t2i", "in256"):
        png = ladder_pareto(root, ladder)
        if png is None:
            print(f"ladder {ladder}: no twin has quality records yet (python -m ablations ladder --ladder {ladder})")
            continue
        written.append(atomic_write_bytes(out_dir / f"ladder_{ladder}.png", png))
    sweep = root / "world" / "sampler_sweep-world-tiny.json"
    if sweep.exists():
        written.append(atomic_write_bytes(out_dir / "steps_sweep-world-tiny.png", steps_sweep(read_record(sweep))))
    return written


def main(argv=None) -> int:
    from snapgen.paths import results_root

    p = argparse.ArgumentParser(prog="python -m paper_figures.ladder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=None, help="results root (default: snapgen.paths.results_root())")
    p.add_argument("--out-dir", type=Path, default=None, help="where the PNGs go (default: <results>/figures)")
    a = p.parse_args(argv)
    if a.results is not None and not a.results.is_dir():
        raise FileNotFoundError(f"--results {a.results}: no such folder; pass the results root that holds "
                                f"ablation/ and architecture/ (default: {results_root()})")
    for path in write_figures(a.results or results_root(), a.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))

