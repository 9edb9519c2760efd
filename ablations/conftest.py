"""`pytest ablations` regenerates every table and figure from the committed records (no measurement, well under a
minute) and checks the records themselves: every registry variant has a cost record whose config hash and
parameter count still match the registry, every ablation (quality) record matches its twin's config hash, and no
record comes from uncommitted code. Tables and figures go under ``snapgen.paths.results_root()``
(``$SNAPGEN_RESULTS`` to write somewhere other than ``results/``).

Measurements are benchmark commands that write records, never tests:
``python -m ablations table --repeats 5`` (architecture costs), ``python -m ablations bench`` (SnapGen vs SDXL),
``python -m ablations.decoders`` (decoders), ``python -m ablations ladder`` (quality of the world-scale twins).

``--require-quality`` (or ``SNAPGEN_REQUIRE_QUALITY=1``) also fails when a twin of either ladder has fewer than
3 seeds of quality records; without it that check is skipped and its reason lists the missing twins.
"""
import os


def pytest_addoption(parser):
    parser.addoption("--require-quality", action="store_true", default=os.environ.get("SNAPGEN_REQUIRE_QUALITY") == "1",
                     help="fail when a ladder twin has fewer than 3 seeds of quality records")
