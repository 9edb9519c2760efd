"""`pytest ablations` regenerates the tables from fresh measurements.

SNAPGEN_TABLE_REPEATS (default 3) sets the timed runs per variant; 0 skips latency.
"""
