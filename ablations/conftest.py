"""`pytest ablations` regenerates the records, tables and figures from fresh measurements, under
``snapgen.paths.results_root()`` (``$SNAPGEN_RESULTS`` to write somewhere other than ``results/``).

SNAPGEN_TABLE_REPEATS (default 3) sets the timed runs per variant; 0 skips latency.
"""
