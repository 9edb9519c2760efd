"""The decoder figure from the decoder records: three log-scale bar panels (params, GFLOPs to decode to the
FLOPs resolution, CPU ms at the latency resolution). Pure function of ``results/decoders``: the PNG bytes
depend only on the records.

    python -m paper_figures.decoders                    # -> results/figures/decoders.png
    python -m paper_figures.decoders --results /tmp/r --out /tmp/decoders.png
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ablations.tables.decoders import ROWS, load
from snapgen.io import atomic_write_bytes
from snapgen.paths import results_root
from snapgen.records import RecordError, value


def decoders_figure(records: dict[str, dict]) -> bytes:
    """PNG bytes of the three panels for the decoders in ``ROWS`` order."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ROWS if n in records]
    if not names:
        raise RecordError(f"no decoder record (expected one of {', '.join(ROWS)})")
    p = records[names[0]]["protocol"]
    flops_px, lat_px = p["flops_resolution_px"], p["latency_resolution_px"]
    panels = [("params (M)", [value(records[n], "params") / 1e6 for n in names]),
              (f"GFLOPs @{flops_px} px", [value(records[n], f"gflops_{flops_px}") for n in names]),
              (f"CPU ms @{lat_px} px", [value(records[n], f"cpu_ms_median_{lat_px}px") for n in names])]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (title, vals) in zip(axes, panels):
        ax.barh([records[n]["details"]["label"].replace(" (ours)", "") for n in names], vals,
                color=["#d62728", "#1f77b4", "#7f7f7f"][:len(names)])
        ax.set_xscale("log")
        ax.set_xlim(min(vals) / 3, max(vals) * 6)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(title)
        ax.invert_yaxis()
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:,.3g}", va="center", fontsize=8)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_figure(root: Path | None = None, out: Path | None = None) -> Path:
    root = root or results_root()
    return atomic_write_bytes(out or root / "figures" / "decoders.png", decoders_figure(load(root)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m paper_figures.decoders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=None, help="results root (default: snapgen.paths.results_root())")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: <results>/figures/decoders.png)")
    a = p.parse_args(argv)
    if a.results is not None and not a.results.is_dir():
        raise FileNotFoundError(f"--results {a.results}: no such folder; pass the results root that holds decoders/ "
                                f"(default: {results_root()})")
    try:
        print(write_figure(a.results, a.out))
    except (RecordError, KeyError, IndexError) as e:
        print(f"error: {e} (records: `python -m ablations.decoders`)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
