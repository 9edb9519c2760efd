"""snapgen-bench evaluation: ``evals.evaluate(benchmark, generator=... | images=..., **options) -> record``.

The CLI ``python -m evals.run <benchmark>`` is a thin layer over the same evaluator (``evals.api``).
"""
from __future__ import annotations


def evaluate(benchmark: str, generator=None, images=None, **options):
    """See ``evals.api.evaluate``."""
    from evals.api import evaluate as _evaluate

    return _evaluate(benchmark, generator, images, **options)


def list_benchmarks():
    """Name -> registered benchmark (with its declared metrics). (Not ``evals.benchmarks``: that name is the
    subpackage of the benchmark plugins.)"""
    from evals.api import benchmarks as _benchmarks

    return _benchmarks()
