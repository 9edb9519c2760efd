"""Latency and Core ML export records in the one envelope (``snapgen.records``), their paths, and the
converters of the schema-1 records (``python -m evals.migrate_records`` calls ``migrate_v1``/``migrate_v1_coreml``).

Latency record (kind "latency", ``results/latency/<target>/<model>_<res>px_<dtype>_<steps>steps_b<unet batch>
[_<compute unit>][_compiled].json``):

    name       the model (variant name, ``-tiny`` for tiny widths, or the checkpoint folder)
    protocol   benchmark "latency", the LatencySettings fields (target, resolution, steps, cfg, batch, dtype,
               threads, warmup, repeats, compile, end_to_end, compute_unit), latent, unet_batch, timing (text)
    scores     <component>_ms_median, <component>_ms_p90     per component (n = repeats; lower is better)
               end_to_end_ms_median, end_to_end_ms_p90       the measured end-to-end call (when timed)
               end_to_end_estimate_ms                        text + steps x U-Net + decoder medians (n null)
    details    model (variant/config hash or checkpoint sha256, decoder, text stack, params, weights statement),
               components (the other statistics of each component: every run, mean/std/min/max, first call,
               clock, input shapes), end_to_end (measured statistics, steps), load_s, compile_s, notes

Export record (kind "export", ``results/coreml/<component>_<name>_<res>px_b<batch>_<precision>[_<compression>].json``):

    name       the exported model ("snapgen-t2i", "tiny", ...)
    protocol   benchmark "coreml_export", component, format, minimum_deployment_target, the ExportSettings fields
    scores     params, n_ops, weight_bytes, package_bytes, trace_s, convert_s, compress_s, save_s, total_s,
               peak_rss_gb, rewrite_psnr_db (when rewritten), parity_psnr_db (when Core ML predictions ran)
    details    package, config, weights, attention_rewrites, op_counts, inputs, outputs, spec_version,
               weight_sha256, parity (status, gate, reason)
"""
from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evals.latency.settings import COMPONENTS, TARGETS, LatencySettings
from snapgen.paths import results_dir
from snapgen.records import RecordError, make_record, read_record, score, validate_record, write_record

LATENCY_BENCHMARK = "latency"
EXPORT_BENCHMARK = "coreml_export"
_HEADLINE = ("median_ms", "p90_ms")   # per-component statistics that become scores


# ------------------------------------------------------------------------------------------------
# Latency records


def timing_protocol(settings: dict[str, Any]) -> str:
    warm, unet_batch = settings["warmup"], settings["unet_batch"]
    return (f"first call timed apart; {max(warm - 1, 0)} more untimed warm-up call(s); median and p90 "
            f"of {settings['repeats']} back-to-back calls; load time apart; U-Net batch {unet_batch}"
            f" ({'CFG doubles it' if settings['cfg'] else 'no CFG'})")


def settings_protocol(s: LatencySettings) -> dict[str, Any]:
    """The protocol block of a record: the settings, the derived latent and U-Net batch, the timing text."""
    out = {"benchmark": LATENCY_BENCHMARK, **asdict(s), "latent": s.latent, "unet_batch": s.unet_batch}
    if s.compile:
        from evals.inference import COMPILE_PROTOCOL

        out["compile_options"] = dict(COMPILE_PROTOCOL)
    return {**out, "timing": timing_protocol(out)}


def _stat_scores(prefix: str, stats: dict[str, Any]) -> dict[str, dict]:
    return {f"{prefix}_ms_median": score(stats["median_ms"], n=stats["n"], higher_is_better=False, unit="ms"),
            f"{prefix}_ms_p90": score(stats["p90_ms"], n=stats["n"], higher_is_better=False, unit="ms")}


def _rest(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if stats is None else {k: v for k, v in stats.items() if k not in _HEADLINE}


def latency_envelope(protocol: dict[str, Any], model: dict[str, Any], timing: dict[str, Any],
                     load_s: dict[str, float], environment: dict[str, Any], notes: list[str] | None = None,
                     compile_s: dict[str, float] | None = None) -> dict[str, Any]:
    """One validated latency record from the protocol block, the model description and ``measure()``'s output
    (shared by new measurements and by :func:`migrate_v1`, so both have the same shape)."""
    scores: dict[str, dict] = {}
    for name, stats in timing["components"].items():
        scores.update(_stat_scores(name, stats))
    e2e = timing["end_to_end"]
    if e2e.get("measured") is not None:
        scores.update(_stat_scores("end_to_end", e2e["measured"]))
    if e2e.get("estimate_ms") is not None:
        scores["end_to_end_estimate_ms"] = score(e2e["estimate_ms"], higher_is_better=False, unit="ms")
    details = {"model": model, "components": {k: _rest(v) for k, v in timing["components"].items()},
               "end_to_end": {"measured": _rest(e2e.get("measured")), "steps": e2e["steps"]},
               "load_s": load_s, "compile_s": compile_s, "notes": list(notes or [])}
    rec = make_record("latency", str(model.get("name", "model")), protocol, scores, details, environment)
    return validate_latency(rec)


def latency_record(s: LatencySettings, model: dict[str, Any], timing: dict[str, Any], load_s: dict[str, float],
                   environment: dict[str, Any], notes: list[str] | None = None,
                   compile_s: dict[str, float] | None = None) -> dict[str, Any]:
    """Assemble (and validate) one latency record of a run with settings ``s``."""
    return latency_envelope(settings_protocol(s), model, timing, load_s, environment, notes, compile_s)


def stats(rec: dict, part: str) -> dict[str, Any] | None:
    """The full statistics of a component (or ``"end_to_end"``): scores' median/p90 merged with details."""
    if f"{part}_ms_median" not in rec["scores"]:
        return None
    rest = rec["details"]["end_to_end"]["measured"] if part == "end_to_end" else rec["details"]["components"][part]
    return {"median_ms": rec["scores"][f"{part}_ms_median"]["value"], "p90_ms": rec["scores"][f"{part}_ms_p90"]["value"],
            **(rest or {})}


def _check_stats(where: str, st: dict[str, Any] | None, errors: list[str]) -> None:
    if st is None:
        errors.append(f"{where}: no median/p90 scores")
        return
    if "times_ms" not in st or "n" not in st:
        errors.append(f"{where}: missing n or times_ms")
        return
    if not st["median_ms"] > 0:
        errors.append(f"{where}.median_ms must be > 0, got {st['median_ms']!r}")
    elif st["p90_ms"] < st["median_ms"]:
        errors.append(f"{where}: p90_ms {st['p90_ms']} < median_ms {st['median_ms']}")
    if st["n"] != len(st["times_ms"]) or st["n"] < 1:
        errors.append(f"{where}: n={st['n']} but {len(st['times_ms'])} times")


def validate_latency(rec: Any, source: str | Path | None = None) -> dict:
    """The envelope (``snapgen.records.validate_record``) plus the latency rules; raises ``RecordError``
    listing every problem."""
    validate_record(rec, source)
    at = f"{source}: " if source else ""
    errors: list[str] = []
    if rec["kind"] != "latency":
        errors.append(f"kind must be 'latency', got {rec['kind']!r}")
    p = rec["protocol"]
    missing = [k for k in ("target", "resolution", "steps", "batch", "unet_batch", "dtype", "warmup", "repeats", "cfg")
               if k not in p]
    if missing:
        raise RecordError(f"{at}invalid latency record: protocol lacks {missing}")
    if p["target"] not in TARGETS:
        errors.append(f"target {p['target']!r} not in {TARGETS}")
    if p["unet_batch"] != p["batch"] * (2 if p["cfg"] else 1):
        errors.append(f"protocol.unet_batch {p['unet_batch']} != batch {p['batch']} x {2 if p['cfg'] else 1}")
    if p["steps"] < 1 or p["resolution"] < 8:
        errors.append("protocol.steps must be >= 1 and resolution >= 8")
    if p["target"] in ("mac", "iphone") and not p.get("compute_unit"):
        errors.append(f"target {p['target']} needs protocol.compute_unit")
    d = rec["details"]
    comps = d.get("components")
    if not isinstance(comps, dict) or "unet_step" not in comps:
        errors.append("details.components must contain 'unet_step'")
    else:
        for name in comps:
            if name not in COMPONENTS:
                errors.append(f"unknown component {name!r}; expected {COMPONENTS}")
            _check_stats(f"components.{name}", stats(rec, name), errors)
    if d.get("end_to_end", {}).get("measured") is not None:
        _check_stats("end_to_end.measured", stats(rec, "end_to_end"), errors)
    if "weights" not in d.get("model", {}):
        errors.append("details.model.weights missing (say 'random ...' or the checkpoint hash)")
    if "os" not in rec["environment"]:
        errors.append("environment.os missing")
    if errors:
        raise RecordError(f"{at}invalid latency record: " + "; ".join(errors))
    return rec


def record_path(rec: dict, root: Path | None = None) -> Path:
    """``<root>/<target>/<model>_<res>px_<dtype>_<steps>steps_b<unet batch>[_<compute unit>][_cl][_compiled].json``;
    ``root`` defaults to ``results/latency``."""
    p = rec["protocol"]
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", rec["name"])
    parts = [name, f"{p['resolution']}px", p["dtype"], f"{p['steps']}steps", f"b{p['unet_batch']}"]
    if p.get("compute_unit"):
        parts.append(p["compute_unit"])
    if p.get("channels_last"):
        parts.append("cl")
    if p.get("compile"):
        parts.append("compiled")
    return Path(root or results_dir("latency")) / p["target"] / ("_".join(parts) + ".json")


def write_latency(rec: dict, root: Path | None = None) -> Path:
    validate_latency(rec)
    return write_record(record_path(rec, root), rec)


def read_latency(path: str | Path) -> dict:
    return validate_latency(read_record(path), path)


def summary_line(path: Path, rec: dict) -> str:
    """What the CLI prints per record."""
    medians = {c: round(rec["scores"][f"{c}_ms_median"]["value"], 2) for c in rec["details"]["components"]}
    e2e = rec["scores"].get("end_to_end_ms_median")
    est = rec["scores"].get("end_to_end_estimate_ms")
    return (f"{path}: median ms {medians}; end to end ({rec['protocol']['steps']} steps) "
            f"{'%.1f' % e2e['value'] if e2e else '—'} ms measured, "
            f"{'%.1f' % est['value'] if est else '—'} ms from components")


# ------------------------------------------------------------------------------------------------
# Core ML export records

_EXPORT_SCORES = {  # result key -> (higher_is_better, unit)
    "params": (None, "params"), "n_ops": (None, "ops"), "weight_bytes": (False, "bytes"),
    "package_bytes": (False, "bytes"), "peak_rss_gb": (False, "GB"), "rewrite_psnr_db": (True, "dB"),
}
_EXPORT_PROTOCOL = ("component", "format", "minimum_deployment_target")


def export_envelope(result: dict[str, Any], environment: dict[str, Any] | None = None) -> dict[str, Any]:
    """One export record from what ``snapgen.export.coreml.export_unet``/``export_decoder`` return (also the
    body of a schema-1 ``coreml_export`` record, see :func:`migrate_v1_coreml`)."""
    protocol = {"benchmark": EXPORT_BENCHMARK, **{k: result[k] for k in _EXPORT_PROTOCOL}, **result["settings"]}
    scores = {k: score(result[k], higher_is_better=hib, unit=unit) for k, (hib, unit) in _EXPORT_SCORES.items()
              if result.get(k) is not None}
    for k, v in result["timings"].items():
        scores[k] = score(v, higher_is_better=False, unit="s")
    parity = dict(result["parity"])
    if parity.get("psnr_db") is not None:
        scores["parity_psnr_db"] = score(parity["psnr_db"], higher_is_better=True, unit="dB")
    parity.pop("psnr_db", None)
    skip = {*_EXPORT_SCORES, *_EXPORT_PROTOCOL, "settings", "timings", "parity", "name"}
    details = {**{k: v for k, v in result.items() if k not in skip}, "parity": parity}
    if result.get("rewrite_psnr_db") is None:
        details["rewrite_psnr_db"] = None      # no rewrite (decoders): said, not left out
    return make_record("export", result["name"], protocol, scores, details, environment)


def export_path(rec: dict, root: Path | None = None) -> Path:
    """``<root>/<component>_<name>_<res>px_b<batch>_<precision>[_<compression>].json`` (the package's stem,
    ``snapgen.export.coreml.record_name``); ``root`` defaults to ``results/coreml``."""
    p = rec["protocol"]
    comp = "" if p["compression"] == "none" else f"_{p['compression']}"
    stem = f"{p['component']}_{rec['name']}_{p['resolution']}px_b{p['batch']}_{p['precision']}{comp}"
    return Path(root or results_dir("coreml")) / f"{stem}.json"


def write_export(result: dict[str, Any], root: Path | None = None, environment: dict | None = None) -> Path:
    rec = export_envelope(result, environment)
    return write_record(export_path(rec, root), rec)


# ------------------------------------------------------------------------------------------------
# Schema-1 -> envelope (every number carried over; created and environment kept)


def migrate_v1(old: dict, path: Path) -> dict:
    """A schema-1 latency record (flat: target, model, settings, components, end_to_end, ...) in the envelope."""
    if old.get("kind") != "latency" or old.get("schema_version") != 1:
        raise RecordError(f"{path}: not a schema-1 latency record")
    protocol = {"benchmark": LATENCY_BENCHMARK, **old["settings"], "target": old["target"],
                "timing": old.get("protocol") or timing_protocol(old["settings"])}
    timing = {"components": old["components"], "end_to_end": old["end_to_end"]}
    rec = latency_envelope(protocol, old["model"], timing, old["load_s"], old["environment"], old.get("notes"),
                           old.get("compile_s"))
    return validate_latency({**rec, "created": old["created"]}, path)


def migrate_v1_coreml(old: dict, path: Path) -> dict:
    """A schema-1 ``coreml_export`` record in the envelope (kind "export")."""
    if old.get("kind") != "coreml_export" or old.get("schema_version") != 1:
        raise RecordError(f"{path}: not a schema-1 coreml_export record")
    result = {k: v for k, v in old.items() if k not in ("kind", "schema_version", "environment", "created")}
    rec = export_envelope(result, old["environment"])
    return validate_record({**rec, "created": old["created"]}, path)
