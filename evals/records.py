"""Result records: one JSON per run with the full protocol card, scores with bootstrap CIs, and a
per-sample JSONL beside it. ``compare`` refuses to compare runs whose protocols differ."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from snapgen.env import environment
from snapgen.io import atomic_write_json, atomic_write_text, sha256_json

SCHEMA_VERSION = 1

# Protocol fields that must match for two scores to be comparable.
PROTOCOL_KEYS = ("benchmark", "sampler", "images_per_prompt", "prompt_set_sha256", "seed_scheme", "evaluator",
                 "resolution", "scoring_mode")


def bootstrap_ci(groups: dict[str, list[float]] | list[float], statistic: Callable[[dict], float] | None = None,
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI, resampling prompts.

    ``groups``: a list of per-prompt scores (statistic = mean), or stratum -> per-prompt scores with a
    ``statistic`` over the resampled strata (e.g. GenEval's mean of task accuracies; resampling is
    stratified by task).
    """
    rng = np.random.default_rng(seed)
    if isinstance(groups, list):
        arr = np.asarray(groups, dtype=float)
        if len(arr) == 0:
            return float("nan"), float("nan")
        idx = rng.integers(0, len(arr), size=(n_boot, len(arr)))
        stats = arr[idx].mean(1)
    else:
        arrays = {k: np.asarray(v, dtype=float) for k, v in groups.items() if len(v)}
        stats = np.empty(n_boot)
        for b in range(n_boot):
            stats[b] = statistic({k: a[rng.integers(0, len(a), len(a))] for k, a in arrays.items()})
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def prompt_set_hash(items: list[Any]) -> str:
    return sha256_json(items)


def build_record(benchmark: str, scores: dict[str, Any], protocol: dict[str, Any], generator: dict[str, Any] | None,
                 samples_path: Path | None, wall_time_s: float, device: str = "cpu",
                 higher_is_better: dict[str, bool] | None = None) -> dict:
    return {
        "schema_version": SCHEMA_VERSION, "kind": "eval", "benchmark": benchmark, "scores": scores,
        "higher_is_better": higher_is_better or {}, "protocol": {"benchmark": benchmark, **protocol},
        "generator": generator, "samples_jsonl": str(samples_path) if samples_path else None,
        "wall_time_s": wall_time_s, "environment": environment(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_record(path: Path, record: dict, rows: list[dict] | None = None) -> Path:
    path = Path(path)
    if rows is not None:
        jsonl = path.with_suffix(".samples.jsonl")
        atomic_write_text(jsonl, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
        record = {**record, "samples_jsonl": str(jsonl)}
    atomic_write_json(path, record)
    return path


def validate_record(rec: dict) -> None:
    missing = [k for k in ("schema_version", "benchmark", "scores", "protocol", "environment", "wall_time_s")
               if k not in rec]
    if missing:
        raise ValueError(f"not a snapgen-bench result record: missing {missing}")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def compare(a: dict, b: dict) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any, Any]]]:
    """(protocol mismatches [(key, a, b)], score rows [(metric, a, b, b - a)])."""
    validate_record(a)
    validate_record(b)
    pa, pb = _flatten({k: a["protocol"].get(k) for k in PROTOCOL_KEYS}), _flatten({k: b["protocol"].get(k) for k in PROTOCOL_KEYS})
    mismatch = [(k, pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb))
                if pa.get(k) != pb.get(k) and not k.startswith(("sampler.checkpoint", "evaluator.weights_path"))]
    sa, sb = _flatten(a["scores"]), _flatten(b["scores"])
    rows = []
    for k in sorted(set(sa) & set(sb)):
        if isinstance(sa[k], (int, float)) and isinstance(sb[k], (int, float)):
            rows.append((k, sa[k], sb[k], sb[k] - sa[k]))
    return mismatch, rows
