"""Convert schema-1 records (eight envelopes) to the one envelope of ``snapgen.records`` (schema 2).

    python -m evals.migrate_records                 # every record under results/, in place (atomic per file)
    python -m evals.migrate_records --check         # exit 1 if any record still needs converting

Every number is carried over unchanged (the converters only move fields); ``created`` and ``environment`` of
the original measurement are kept. The converter of each old ``kind`` lives beside the code that writes that
kind today, so the converted record has exactly the shape a new run would write.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from snapgen.paths import results_root
from snapgen.records import SCHEMA_VERSION, RecordError, read_record_json, validate_record, write_record

# old kind -> "module:function(old_record, path) -> new record"
CONVERTERS = {
    "eval": "evals.records:migrate_v1_eval",
    "learning_curve": "evals.learning_curve:migrate_v1",
    "sampler_sweep": "evals.sampler_sweep:migrate_v1",
    "benchmark": "evals.bench_train:migrate_v1",                      # train_throughput
    "fid_harness_overhead": "evals.metrics.bench_fid:migrate_v1",      # written before records had a kind
    "architecture": "ablations.costs:migrate_v1",
    "decoder_cost": "ablations.decoders:migrate_v1",
    "bench_unet_vs_sdxl": "ablations.bench:migrate_v1",
    "tiny_decoder_world_proof": "snapgen.experiments.decoder_world_proof:migrate_v1",
    "latency": "evals.latency.records:migrate_v1",
    "coreml_export": "evals.latency.records:migrate_v1_coreml",
}


def old_kind(rec: dict, path: Path) -> str:
    if rec.get("kind"):
        return rec["kind"]
    if path.name == "fid_harness_overhead.json":
        return "fid_harness_overhead"
    raise RecordError(f"{path}: schema-1 record without a kind; no converter knows it")


def convert(path: Path) -> dict | None:
    """The schema-2 form of the record at ``path``, or None if it already is one."""
    rec = read_record_json(path)                      # errors name the file; NaN refused
    if not isinstance(rec, dict):
        raise RecordError(f"{path}: a record is a JSON object, got {type(rec).__name__}")
    if rec.get("schema_version") == SCHEMA_VERSION:
        validate_record(rec, path)
        return None
    kind = old_kind(rec, path)
    if kind not in CONVERTERS:
        raise RecordError(f"{path}: no converter for old kind {kind!r}")
    module, _, fn = CONVERTERS[kind].partition(":")
    return validate_record(getattr(importlib.import_module(module), fn)(rec, path), path)


def record_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.json") if not p.name.endswith(".samples.json"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.migrate_records", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=None, help="results root (default: snapgen.paths.results_root())")
    p.add_argument("--check", action="store_true", help="only report records that need converting")
    a = p.parse_args(argv)
    root = a.results or results_root()
    if not Path(root).is_dir():
        raise FileNotFoundError(f"--results {root}: no such folder (the results root holding the records)")
    todo, failed = [], []
    for path in record_files(root):
        try:
            new = convert(path)
        except (RecordError, json.JSONDecodeError, KeyError, TypeError) as e:
            failed.append(f"{path}: {e}")
            continue
        if new is not None:
            todo.append(path)
            if not a.check:
                write_record(path, new)
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    verb = "need converting" if a.check else "converted"
    print(f"{len(todo)} record(s) {verb}" + "".join(f"\n  {p}" for p in todo))
    return 1 if failed or (a.check and todo) else 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
