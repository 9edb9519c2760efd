from evals.latency import main
from snapgen.cli import run_cli

raise SystemExit(run_cli(main))
