"""One CLI for every benchmark and metric, one record format.

    python -m evals.run ls
    python -m evals.run geneval --ckpt world-tiny                 # trains the tiny world model on first use
    python -m evals.run geneval --images OUT --detector mask2former:DIR --clip-weights ViT-L-14.pt
    python -m evals.run dpg --ckpt PIPE --dpg-csv dpg_bench.csv --vqa DIR
    python -m evals.run fid --images GEN --ref REF
    python -m evals.run clip --ckpt PIPE --clip-weights ViT-L-14.pt --prompts captions.txt
    python -m evals.run latency --variant snapgen-t2i --target cpu
    python -m evals.run compare results/geneval/a.json results/geneval/b.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from snapgen.io import MissingWeightsError

# benchmark name -> plugin module (NAME, HELP, add_arguments, run)
PLUGINS = {
    "geneval": "evals.benchmarks.geneval",
    "dpg": "evals.benchmarks.dpg",
    "fid": "evals.benchmarks.fid",
    "fid-ref": "evals.benchmarks.fid_ref",
    "clip": "evals.benchmarks.clip",
    "imagereward": "evals.benchmarks.imagereward",
    "latency": "evals.latency",
}


def _plugins() -> dict:
    found = {}
    for name, mod in PLUGINS.items():
        try:
            found[name] = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return found


def cmd_ls(plugins: dict) -> int:
    for name, mod in plugins.items():
        print(f"{name:12s} {getattr(mod, 'HELP', '')}")
    print(f"{'compare':12s} compare two result records (refuses mismatched protocols unless --force)")
    return 0


def cmd_compare(argv: list[str]) -> int:
    from evals.records import compare

    p = argparse.ArgumentParser(prog="python -m evals.run compare")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--force", action="store_true", help="print the score differences even if protocols differ")
    a = p.parse_args(argv)
    ra, rb = (json.loads(open(x).read()) for x in (a.a, a.b))
    mismatch, rows = compare(ra, rb)
    if mismatch:
        print("PROTOCOL MISMATCH: these settings differ, so the scores are not comparable:")
        for k, x, y in mismatch:
            print(f"  {k}: {x!r} != {y!r}")
        if not a.force:
            return 3
    print(f"{'metric':40s} {'A':>10s} {'B':>10s} {'B-A':>10s}")
    for k, x, y, d in rows:
        print(f"{k:40s} {x:10.4f} {y:10.4f} {d:+10.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plugins = _plugins()
    if argv[:1] == ["compare"]:
        return cmd_compare(argv[1:])
    p = argparse.ArgumentParser(prog="python -m evals.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="{ls,compare," + ",".join(plugins) + "}")
    sub.add_parser("ls", help="list benchmarks")
    sub.add_parser("compare", help="compare two records")
    for name, mod in plugins.items():
        sp = sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
    args = p.parse_args(argv)
    if args.benchmark == "ls":
        return cmd_ls(plugins)
    try:
        return plugins[args.benchmark].run(args)
    except (MissingWeightsError, FileNotFoundError, ValueError, KeyError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
