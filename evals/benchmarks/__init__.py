"""Benchmark plugins of ``python -m evals.run``: each module has NAME, HELP, add_arguments(p), run(args) -> int."""
