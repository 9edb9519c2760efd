"""The one record envelope: every JSON under ``results/`` (evaluations, architecture costs, latency,
decoders, training, distillation, ablations, benchmarks, exports) has this shape, checked on write and on read.

    {
      "schema_version": 2,
      "kind":        "evaluation" | "architecture" | "latency" | ...     (KINDS)
      "name":        "world-tiny-geneval",                               what was measured
      "protocol":    {...},                                              everything that must match to compare
      "scores":      {"geneval_overall": {"value": 0.33, "ci95": [0.21, 0.45], "n": 44,
                                          "higher_is_better": true, "unit": "fraction"}, ...},
      "details":     {...},                                              kind-specific payload (free form)
      "environment": {...},                                              versions, threads, git commit (snapgen.env)
      "created":     "2026-11-28T02:00:00Z"
    }

A score's ``higher_is_better`` is ``true``/``false`` for a quality or cost metric and ``null`` for a
descriptive count; ``ci95`` is a 95% interval or ``null``; ``n`` counts the units the CI resamples (prompts,
images, repeats) or is ``null``. Non-finite values are refused: a failed measurement is an error, never a
``NaN`` in a record.

The envelope sits at the bottom layer because every layer writes records (``ablations`` its cost records,
``evals`` everything else); where records go is ``snapgen.paths``. Statistics on records (bootstrap CIs,
paired differences, comparison) are in ``evals.records``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

SCHEMA_VERSION = 2
KINDS = ("evaluation", "architecture", "latency", "decoder", "training", "distillation", "ablation", "benchmark",
         "export", "curve", "sweep", "lever")
ENVELOPE_KEYS = ("schema_version", "kind", "name", "protocol", "scores", "details", "environment", "created")
SCORE_KEYS = ("value", "ci95", "n", "higher_is_better", "unit")


class RecordError(ValueError):
    """A record that does not follow the envelope; the message names the file (if any) and the field."""


def score(value: float, ci95: tuple[float, float] | list[float] | None = None, n: int | None = None,
          higher_is_better: bool | None = True, unit: str = "") -> dict:
    """One entry of ``scores`` (validated)."""
    entry = {"value": value, "ci95": None if ci95 is None else [float(ci95[0]), float(ci95[1])], "n": n,
             "higher_is_better": higher_is_better, "unit": unit}
    _check_score("score", entry)
    return {**entry, "value": float(value)}


def make_record(kind: str, name: str, protocol: Mapping[str, Any], scores: Mapping[str, dict],
                details: Mapping[str, Any] | None = None, environment: Mapping[str, Any] | None = None,
                device: str = "cpu") -> dict:
    """A validated record; ``environment`` defaults to ``snapgen.env.environment(device)``."""
    if environment is None:
        from snapgen.env import environment as env

        environment = env(device)
    rec = {"schema_version": SCHEMA_VERSION, "kind": kind, "name": name, "protocol": dict(protocol),
           "scores": {k: dict(v) for k, v in scores.items()}, "details": dict(details or {}),
           "environment": dict(environment), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    validate_record(rec)
    return rec


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_score(where: str, s: Any) -> None:
    if not isinstance(s, dict):
        raise RecordError(f"{where}: expected an object {{value, ci95, n, higher_is_better, unit}}, got {type(s).__name__}")
    missing = [k for k in SCORE_KEYS if k not in s]
    if missing:
        raise RecordError(f"{where}: missing {missing}")
    if not _finite(s["value"]):
        raise RecordError(f"{where}.value = {s['value']!r}: expected a finite number")
    ci = s["ci95"]
    if ci is not None and not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_finite(c) for c in ci)
                               and ci[0] <= ci[1]):
        raise RecordError(f"{where}.ci95 = {ci!r}: expected null or [low, high] with finite low <= high")
    if s["n"] is not None and not (isinstance(s["n"], int) and not isinstance(s["n"], bool) and s["n"] >= 0):
        raise RecordError(f"{where}.n = {s['n']!r}: expected null or a count >= 0")
    if s["higher_is_better"] not in (True, False, None):
        raise RecordError(f"{where}.higher_is_better = {s['higher_is_better']!r}: expected true, false or null")
    if not isinstance(s["unit"], str):
        raise RecordError(f"{where}.unit = {s['unit']!r}: expected a string")


def _check_json(where: str, obj: Any) -> None:
    """No NaN or infinity anywhere (they are not JSON and hide failed measurements)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise RecordError(f"{where} = {obj!r}: non-finite numbers are not allowed in records")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_json(f"{where}.{k}", v)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_json(f"{where}[{i}]", v)


def validate_record(rec: Any, source: str | Path | None = None) -> dict:
    """Raise ``RecordError`` naming ``source`` and the offending field unless ``rec`` follows the envelope."""
    at = f"{source}: " if source else ""
    if not isinstance(rec, dict):
        raise RecordError(f"{at}a record is a JSON object, got {type(rec).__name__}")
    if rec.get("schema_version") != SCHEMA_VERSION:
        hint = (" (an older record: convert it with `python -m evals.migrate_records`)"
                if rec.get("schema_version") in (None, 1) else "")
        raise RecordError(f"{at}schema_version = {rec.get('schema_version')!r}, expected {SCHEMA_VERSION}{hint}")
    missing = [k for k in ENVELOPE_KEYS if k not in rec]
    if missing:
        raise RecordError(f"{at}missing envelope keys {missing}")
    if rec["kind"] not in KINDS:
        raise RecordError(f"{at}kind = {rec['kind']!r}, expected one of {', '.join(KINDS)}")
    if not isinstance(rec["name"], str) or not rec["name"]:
        raise RecordError(f"{at}name must be a non-empty string")
    for key in ("protocol", "scores", "details", "environment"):
        if not isinstance(rec[key], dict):
            raise RecordError(f"{at}{key} must be an object, got {type(rec[key]).__name__}")
    for metric, s in rec["scores"].items():
        _check_score(f"{at}scores.{metric}", s)
    for key in ("threads", "git_commit", "versions"):
        if key not in rec["environment"]:
            raise RecordError(f"{at}environment.{key} is missing (records say their thread count, commit and versions)")
    _check_json(f"{at}record", rec)
    return rec


def write_record(path: str | Path, rec: dict, rows: list[dict] | None = None) -> Path:
    """Validate, then write atomically; ``rows`` go to ``<path stem>.samples.jsonl`` beside it (its path is
    stored in ``details.samples_jsonl``, its sha256 in ``details.samples_sha256``).

    The two files are one unit: the JSONL is written first, the record last, and the record names the JSONL's
    hash, so a kill between them (or a JSONL from another run) is refused by :func:`check_samples` on read."""
    from snapgen.io import atomic_write_bytes, atomic_write_json, sha256_bytes
    from snapgen.paths import display

    path = Path(path)
    if rows is not None:
        jsonl = path.with_suffix(".samples.jsonl")
        data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode("utf-8")
        rec = {**rec, "details": {**rec["details"], "samples_jsonl": display(jsonl),
                                  "samples_sha256": sha256_bytes(data)}}
        validate_record(rec, path)
        atomic_write_bytes(jsonl, data)
    validate_record(rec, path)
    atomic_write_json(path, rec)
    return path


def check_samples(rec: dict, jsonl: str | Path, data: bytes) -> None:
    """The per-sample file ``jsonl`` (its bytes ``data``) must be the one its record was written with."""
    expected = (rec.get("details") or {}).get("samples_sha256")
    if expected is None:        # records written before the hash existed
        return
    from snapgen.io import sha256_bytes

    if sha256_bytes(data) != expected:
        raise RecordError(f"{jsonl}: this per-sample file is not the one record {rec.get('name')!r} was written with "
                          "(sha256 differs: a torn or mixed write); rerun the evaluation to rewrite both")


def read_record(path: str | Path) -> dict:
    """Load and validate one record; errors name the file."""
    path = Path(path)
    return validate_record(read_record_json(path), path)


def read_record_json(path: str | Path) -> Any:
    """The parsed JSON of a record file, not yet validated (an older schema may follow); errors name the file, and
    NaN / Infinity are refused."""
    path = Path(path)
    if path.name.endswith(".samples.jsonl"):
        record = path.with_name(path.name[: -len(".samples.jsonl")] + ".json")
        raise RecordError(f"{path}: the per-sample rows of a record, not a record; pass the record itself: {record}")
    try:
        return json.loads(path.read_text(), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such record") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: not valid JSON ({e}); a truncated or hand-edited file: rerun the command that "
                          "wrote it, or restore it from git") from None
    except ValueError as e:
        raise RecordError(f"{path}: {e}") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} in the file: non-finite numbers are not allowed in records")


def read_records(folder: str | Path, kind: str | None = None, pattern: str = "*.json") -> dict[str, dict]:
    """Every record under ``folder`` (recursively) by path, skipping ``*.samples.jsonl``; optionally one kind."""
    out = {}
    for p in sorted(Path(folder).rglob(pattern)):
        rec = read_record(p)
        if kind is None or rec["kind"] == kind:
            out[str(p)] = rec
    return out


def value(rec: dict, metric: str) -> float:
    """``rec["scores"][metric]["value"]`` with an error naming the record and the known metrics."""
    try:
        return rec["scores"][metric]["value"]
    except KeyError:
        raise RecordError(f"record {rec.get('name')!r} has no score {metric!r}; it has {sorted(rec.get('scores', {}))}") from None
