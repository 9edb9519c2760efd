"""One CLI for every benchmark and metric, one record format.

    python -m evals.run ls
    python -m evals.run geneval --ckpt world-tiny                 # trains the tiny world model on first use
    python -m evals.run geneval --images OUT --detector mask2former:DIR --clip-weights ViT-L-14.pt
    python -m evals.run dpg --ckpt PIPE --dpg-csv dpg_bench.csv --vqa DIR
    python -m evals.run fid --images GEN --ref REF
    python -m evals.run clip --ckpt PIPE --clip-weights ViT-L-14.pt --prompts captions.txt
    python -m evals.run latency --variant snapgen-t2i --target cpu
    python -m evals.run compare results/geneval/a.json results/geneval/b.json
    python -m evals.run failures results/geneval/world-tiny-geneval.json   # why images fail, per task

Every benchmark runs through the one evaluator of ``evals.api`` (also usable from Python: ``evals.evaluate``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

# commands that are not evaluations of a generator (module with NAME, HELP, add_arguments, run)
COMMANDS = {
    "failures": "evals.geneval.failures",
    "fid-ref": "evals.benchmarks.fid_ref",
    "latency": "evals.latency",
    "report": "evals.report",
}


def _commands() -> dict:
    return {name: importlib.import_module(mod) for name, mod in COMMANDS.items()}


def cmd_ls(benches: dict, commands: dict) -> int:
    for name, b in benches.items():
        print(f"{name:12s} {b.help}")
        for m in b.metrics:
            arrow = {True: "higher is better", False: "lower is better", None: "descriptive"}[m.higher_is_better]
            print(f"{'':14s}{m.key:34s} {m.unit:10s} {arrow}")
    for name, mod in commands.items():
        print(f"{name:12s} {getattr(mod, 'HELP', '')}")
    print(f"{'compare':12s} compare result records (paired differences with CIs when they share prompts and seeds)")
    return 0


def _main(argv: list[str] | None = None) -> int:
    from evals.api import benchmarks, evaluate_args

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from evals.compare import main as compare_main

        return compare_main(argv[1:])
    benches, commands = benchmarks(), _commands()
    p = argparse.ArgumentParser(prog="python -m evals.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ["ls", "compare", *benches, *commands]
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="{" + ",".join(names) + "}")
    sub.add_parser("ls", help="list benchmarks and their metrics")
    sub.add_parser("compare", help="compare records")
    for name, b in benches.items():
        b.add_arguments(sub.add_parser(name, help=b.help, description=type(b).__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter))
    for name, mod in commands.items():
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    if argv and argv[0] not in names and not argv[0].startswith("-"):
        import difflib

        close = difflib.get_close_matches(argv[0], names, n=3, cutoff=0.4)
        print(f"error: unknown benchmark {argv[0]!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
              + f" (known: {', '.join(names)})", file=sys.stderr)
        return 2
    args = p.parse_args(argv)
    if args.benchmark == "ls":
        return cmd_ls(benches, commands)
    if args.benchmark in commands:
        return commands[args.benchmark].run(args)
    evaluate_args(benches[args.benchmark], args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m evals.run``: every subcommand (``compare`` included) runs inside the one error handler."""
    from snapgen.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
