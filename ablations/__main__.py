"""The variant registry's CLI.

    python -m ablations ls                 # every variant, in paper order
    python -m ablations ls --json          # with params, GFLOPs (FLOPs = 2 x MACs, attention included), resolution
    python -m ablations show snapgen-t2i   # config, lineage, costs
    python -m ablations diff t2i-baseline snapgen-t2i
    python -m ablations table --repeats 5  # records + results/tables/architecture.md (figure: paper_figures.pareto)
    python -m ablations bench --latent 32  # SnapGen vs SDXL U-Net latency in one run (record)
    python -m ablations ls --twins --json  # the world-scale twins of both ladders (parent, scale, quality records)
    python -m ablations ladder --ladder t2i --dry-run   # train + score every twin x seed (see ablations/ladder.py)
    python -m ablations levers --study lr --cell lr=4e-3 --dry-run   # paired recipe-lever study (ablations/levers.py)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ablations.registry import config_diff
from ablations.variants import REGISTRY
from snapgen.cli import nonnegative_int, positive_int


def _summary(v, with_costs: bool) -> dict:
    d = {"name": v.name, "parent": v.parent, "note": v.note, "family": v.family, "resolution": v.resolution,
         "config_hash": v.config.hash if v.config else None}
    if with_costs:
        from ablations.costs import static_costs

        c = static_costs(v)
        d.update(params=int(c["params"]), gflops=float(c["gflops"]))
    return d


def cmd_ls(a) -> int:
    if a.twins:
        from ablations.quality import twin_quality
        from ablations.twins import main as twins_main

        return twins_main(["--json"] if a.json else [], twin_quality() if a.json else None)
    rows = [_summary(v, a.json or a.costs) for v in REGISTRY]
    if a.json:                                  # full-size variants, then their world-scale twins
        from ablations.quality import twin_quality
        from ablations.twins import TWINS, summary

        quality = twin_quality()
        print(json.dumps(rows + [summary(t, quality) for t in TWINS], indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        extra = f"  {r['params'] / 1e6:8.2f}M  {r['gflops']:8.1f} GFLOPs" if a.costs else ""
        print(f"{r['name']:{width}s} <- {str(r['parent']):{width}s}{extra}  {r['note']}")
    return 0


def cmd_show(a) -> int:
    v = REGISTRY.get(a.name)
    out = _summary(v, True)
    out["lineage"] = [x.name for x in REGISTRY.lineage(v.name)]
    out["config"] = v.config.to_dict() if v.config else "diffusers SDXL UNet2DConditionModel (see ablations/models.py)"
    print(json.dumps(out, indent=2))
    return 0


def cmd_diff(a) -> int:
    va, vb = REGISTRY.get(a.a), REGISTRY.get(a.b)
    if va.config is None or vb.config is None:
        print(f"{a.a} / {a.b} is an external model: no config to diff", file=sys.stderr)
        return 2
    diff = config_diff(va.config, vb.config)
    for k, (x, y) in diff.items():
        print(f"{k:16s} {x!s:>32s} -> {y!s}")
    if not diff:                                # no output would read as a failure (or a missed diff)
        print(f"{a.a} and {a.b}: same config (hash {va.config.hash})")
    return 0


def cmd_table(a) -> int:
    from ablations.build_tables import build_architecture

    names = a.variants or REGISTRY.names()
    md = build_architecture(names, latency_latent=a.latent, warmup=a.warmup, repeats=a.repeats, dry_run=a.dry_run)
    print(md)
    if not a.dry_run:
        print("figure: python -m paper_figures.pareto  (draws results/figures/architecture_pareto.png)")
    return 0


def cmd_bench(a) -> int:
    from ablations.bench import bench_path, bench_unet_vs_sdxl
    from snapgen.records import value

    rec = bench_unet_vs_sdxl(a.snapgen, a.latent, a.warmup, a.repeats, a.dtype, a.channels_last, a.threads,
                             a.split_depthwise, a.profile, a.compile)
    shares = {n: {k: round(c["share"], 3) for k, c in p["categories"].items()}
              for n, p in rec["details"].get("profile", {}).items()}
    out = {k: value(rec, k) for k in ("latency_ratio", "flops_ratio")}
    if shares:
        out["time_share"] = shares
    if "compile" in rec["details"]:
        out["compile"] = rec["details"]["compile"]
    out["path"] = str(bench_path(a.snapgen, a.latent, a.dtype, a.channels_last, a.split_depthwise, a.compile))
    print(json.dumps(out, indent=2))
    return 0


def check_latent(latent: int, names: list[str]) -> None:
    """``--latent`` must halve evenly through every timed U-Net's levels (SDXL's too: 3 levels)."""
    levels = max([3] + [len(REGISTRY.get(n).config.stages) for n in names if REGISTRY.get(n).config is not None])
    factor = 2 ** (levels - 1)
    if latent % factor:
        raise ValueError(f"--latent {latent}: must be a multiple of {factor} (the U-Nets halve it {levels - 1} times)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ls", help="list variants")
    s.add_argument("--json", action="store_true", help="JSON list with name, parent, params, gflops, resolution; "
                   "then the world-scale twins (full_size, ladder, scale)")
    s.add_argument("--costs", action="store_true", help="also print params and GFLOPs")
    s.add_argument("--twins", action="store_true", help="the world-scale twins of both ladders instead")
    s.set_defaults(fn=cmd_ls)
    s = sub.add_parser("show", help="one variant's config, lineage and costs")
    s.add_argument("name", choices=REGISTRY.names(), metavar="NAME")
    s.set_defaults(fn=cmd_show)
    s = sub.add_parser("diff", help="config differences between two variants")
    s.add_argument("a", choices=REGISTRY.names(), metavar="A")
    s.add_argument("b", choices=REGISTRY.names(), metavar="B")
    s.set_defaults(fn=cmd_diff)
    s = sub.add_parser("table", help="measure every variant, write the records and the Markdown table")
    s.add_argument("--variants", nargs="*", choices=REGISTRY.names(), metavar="NAME")
    s.add_argument("--latent", type=positive_int, default=32, help="latent side for CPU latency (32 = 256 px)")
    s.add_argument("--warmup", type=nonnegative_int, default=1)
    s.add_argument("--repeats", type=nonnegative_int, default=5, help="timed runs (0 = skip latency)")
    s.add_argument("--dry-run", action="store_true", help="print what would be measured")
    s.set_defaults(fn=cmd_table)
    s = sub.add_parser("bench", help="SnapGen vs SDXL U-Net CPU latency at the same latent size, one run")
    s.add_argument("--snapgen", default="snapgen-t2i", choices=REGISTRY.names())
    s.add_argument("--latent", type=positive_int, default=32, help="latent side (32 = 256 px); a multiple of 4")
    s.add_argument("--warmup", type=nonnegative_int, default=1)
    s.add_argument("--repeats", type=positive_int, default=5)
    s.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="weights and activations of both U-Nets (recorded, in the record's name)")
    s.add_argument("--channels-last", action="store_true", help="channels_last memory for both (recorded)")
    s.add_argument("--split-depthwise", action="store_true",
                   help="SnapGen's channel-multiplier depthwise convs run as plain ones (same weights; recorded)")
    s.add_argument("--profile", action="store_true", help="after timing, one profiled forward per model: its CPU "
                   "time by kernel kind (GEMM, attention, convolution, ...) in the record's details")
    s.add_argument("--compile", action="store_true", help="both U-Nets through torch.compile (inductor, freezing); "
                   "compilation timed apart, outputs checked against eager first (recorded; minutes per model)")
    s.add_argument("--threads", type=positive_int, default=None, help="torch threads while timing (recorded; "
                   "default: torch's current setting)")
    s.set_defaults(fn=cmd_bench)
    sub.add_parser("ladder", help="train and score every world-scale twin x seed (python -m ablations ladder --help)",
                   add_help=False)
    sub.add_parser("levers", help="paired studies of the world recipe's levers (python -m ablations levers --help)",
                   add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ladder"]:
        from ablations.ladder import main as ladder_main

        return ladder_main(argv[1:])
    if argv[:1] == ["levers"]:
        from ablations.levers import main as levers_main

        return levers_main(argv[1:])
    a = p.parse_args(argv)
    if a.cmd == "table" and a.variants is not None:
        if not a.variants:                      # `--variants $EMPTY` would otherwise measure every variant
            raise ValueError("--variants: no name given; pass one or more variant names (python -m ablations ls), "
                             "or leave --variants out for all")
        dup = sorted({n for n in a.variants if a.variants.count(n) > 1})
        if dup:
            raise ValueError(f"--variants: {', '.join(dup)} given more than once; pass each variant once")
    if getattr(a, "latent", None) is not None:
        check_latent(a.latent, [a.snapgen] if a.cmd == "bench" else (a.variants or REGISTRY.names()))
    try:
        return a.fn(a)
    except BrokenPipeError:  # `python -m ablations ls --json | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
