"""python -m ablations.tables [NAME ...] [--results DIR]: regenerate tables from records."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablations.tables import TABLES, regenerate, renderer
from snapgen.cli import describe
from snapgen.records import RecordError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations.tables", description=__doc__)
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"tables to write (default: all): {', '.join(TABLES)}")
    p.add_argument("--results", type=Path, default=None, help="results root (default: snapgen.paths.results_root())")
    p.add_argument("--allow-dirty", action="store_true", help="also tabulate records made from uncommitted code "
                   "(marked * in the table)")
    a = p.parse_args(argv)
    try:
        if a.results is not None and not a.results.is_dir():     # a typo would write empty tables into a new folder
            raise FileNotFoundError(f"--results {a.results}: no such folder; pass the results root that holds the "
                                    "records (geneval/, ablation/, ...), or leave it out for the default")
        for name in a.names:                                      # every name checked before any table is written
            renderer(name)
        for path in regenerate(a.names or None, a.results, a.allow_dirty):
            print(path)
    except (KeyError, ValueError, RecordError, OSError) as e:
        print(f"error: {describe(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
