"""``python -m evals.run latency``: time a registered variant or a trained pipeline on cpu | cuda | mac | iphone.

    python -m evals.run latency --variant snapgen-t2i --target cpu --resolution 256 --steps 1 --repeats 3
    python -m evals.run latency --ckpt runs/pipe --target cuda --resolution 1024 --steps 4 --dtype float16
    python -m evals.run latency --variant snapgen-t2i --target mac --compute-units ALL CPU_AND_NE
    python -m evals.run latency --variant snapgen-t2i --target iphone --device-name "My iPhone"

Builds the components (random weights for --variant: latency does not depend on weights), times them with
the protocol of evals.latency.measure and writes one record per run (per Core ML compute unit on mac /
iphone) under results/latency/<target>/. Core ML packages are exported with `python -m evals.latency.export`.

The package (one concept per file):
    settings.py     LatencySettings, ModelSource, CoreMLSettings, LatencyJob (parsed once by cli.py)
    measure.py      the timing protocol (snapgen.cost primitives), the end-to-end Euler loop
    components.py   PyTorch components from a variant or a pipeline (cpu, cuda)
    coreml.py       Core ML packages: export or reuse, timed predictions on a Mac
    iphone/         the Swift benchmark (SnapGenBench/) and its orchestrator (xcodebuild on a device)
    records.py      latency and export records in the snapgen.records envelope; schema-1 converters
    runner.py       a LatencyJob -> records written
    cli.py          flags -> LatencyJob
    export.py       `python -m evals.latency.export`: Core ML packages + export records
"""
from __future__ import annotations

from evals.latency.cli import HELP, NAME, add_arguments, run, settings_from_args  # noqa: F401  (plugin API)
from evals.latency.cli import main as _main


def main(argv: list[str] | None = None) -> int:
    return _main(argv, __doc__)
