"""Pareto charts from records: cost axes against each other (params, GFLOPs, CPU latency) and, where
quality records exist, quality against cost. Pure function of ``results/``.

    python -m paper_figures.pareto                      # -> results/figures/architecture_pareto.png
    python -m paper_figures.pareto --results /tmp/r --out /tmp/pareto.png

Reads the architecture records (kind "architecture", ``snapgen.records`` envelope): scores ``params``,
``gflops_<res>`` and ``cpu_ms_median_<px>px``.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from snapgen.io import atomic_write_bytes  # noqa: E402
from snapgen.paths import results_root  # noqa: E402
from snapgen.records import RecordError, read_records, value  # noqa: E402


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when both coordinates are minimised."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _params_m(r: dict) -> float:
    return value(r, "params") / 1e6


def _gflops(r: dict) -> float:
    return value(r, f"gflops_{r['protocol']['resolution_px']}")


def _cpu_ms(r: dict) -> float:
    return value(r, f"cpu_ms_median_{r['protocol']['latency']['resolution_px']}px")


def _panel(ax, records: list[dict], xkey, ykey, xlabel: str, ylabel: str, title: str) -> None:
    pts = [(xkey(r), ykey(r)) for r in records]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color="tab:blue", zorder=3)
    for r, (x, y) in zip(records, pts):
        ax.annotate(r["name"].split("-", 1)[-1], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    front = pareto_front(pts)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="tab:red", lw=1, label="Pareto front")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale="log", yscale="log")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=6)


def architecture_pareto(records: list[dict]) -> bytes:
    groups = {"ImageNet 256 (class-cond.)": [r for r in records if r["name"].startswith(("in256", "snapgen-in256"))],
              "Text-to-image 1024 px": [r for r in records if r["name"].startswith(("t2i", "snapgen-t2i", "sdxl"))]}
    fig, axes = plt.subplots(2, 2, figsize=(11, 9))
    for row, (title, recs) in enumerate(groups.items()):
        recs = sorted(recs, key=lambda r: r["name"])
        _panel(axes[row, 0], recs, _params_m, _gflops, "params (M)",
               f"GFLOPs @{recs[0]['protocol']['resolution_px'] if recs else ''}px", title)
        timed = [r for r in recs if r["protocol"]["latency"]]
        if timed:
            lat = timed[0]["protocol"]["latency"]
            _panel(axes[row, 1], timed, _gflops, _cpu_ms,
                   "GFLOPs (reference resolution)", f"CPU ms @{lat['resolution_px']}px (fp32, b=1)", title)
    fig.suptitle("SnapGen architecture evolution: cost Pareto (generated from results/architecture)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def load(root: Path) -> list[dict]:
    """The architecture records under ``root/architecture`` (validated), in path order."""
    return list(read_records(Path(root) / "architecture", "architecture").values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m paper_figures.pareto", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=None, help="results root (default: snapgen.paths.results_root())")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: <results>/figures/architecture_pareto.png)")
    a = p.parse_args(argv)
    root = a.results or results_root()
    try:
        recs = load(root)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not recs:
        p.error(f"no records in {root / 'architecture'}: run `python -m ablations table` first")
    out = atomic_write_bytes(a.out or root / "figures" / "architecture_pareto.png", architecture_pareto(recs))
    print(out)
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
