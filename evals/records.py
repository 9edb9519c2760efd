"""Statistics on evaluation records: bootstrap CIs (over prompts, and over images within prompts), the prompt-set
hash, paired differences between two records that share prompts and seeds, and the schema-1 converter of
evaluation records. The envelope itself is ``snapgen.records``; comparison of records is ``evals.compare``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from snapgen.io import sha256_json


def bootstrap_ci(values: list[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (one per resampled unit, e.g. per-prompt scores): the
    project's one plain bootstrap (CLIP/ImageReward call it through ``evals.metrics.clip_score.bootstrap_mean_ci``;
    GenEval's stratified, image-level CI is ``two_stage_ci``).

    Not ``scipy.stats.bootstrap``: it draws the same resamples from the same stream but takes the percentile its own
    way (the upper bound can differ in the last bit), so committed CIs would change; tests/test_bootstrap.py checks
    the two agree to 1e-12 (docs/diffusers.md).
    """
    rng = np.random.default_rng(seed)
    arr = np.asarray(values, dtype=float)
    if len(arr) == 0:
        return float("nan"), float("nan")
    stats = arr[rng.integers(0, len(arr), size=(n_boot, len(arr)))].mean(1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def two_stage_ci(tasks: dict[str, list[list[float]]], sampled: set[str] | frozenset[str] = frozenset(),
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap CIs of a GenEval-style score (the mean over tasks of each task's mean over prompts of
    the prompt's mean over its images) that resample the images of every prompt, and the prompts themselves only
    in the tasks of ``sampled``.

    ``tasks``: task -> one list of per-image outcomes (0/1) per prompt. A task whose prompts are every prompt of its
    pool (a census: the world's held-out single-object prompts are exactly two) keeps its prompts, since no other
    prompt of that task exists to draw; the variation left there is which images the sampler happened to draw. A
    task scored on a sample of a larger pool (``sampled``) resamples prompts, then images within each drawn prompt.
    The image stage scales each resampled prompt mean's deviation by sqrt(n / (n - 1)) (the bootstrap's variance of
    a mean of n is (n - 1) / n of the true one); a prompt whose images all agree still adds no width, so use enough
    images per prompt. Bounds are clipped to [0, 1]. Returns {"overall": (lo, hi), task: (lo, hi)}.
    """
    unknown = set(sampled) - set(tasks)
    if unknown:
        raise ValueError(f"sampled tasks {sorted(unknown)} have no prompts in the record")
    rng = np.random.default_rng(seed)
    arrays = {t: [np.asarray(v, dtype=float) for v in prompts if len(v)] for t, prompts in tasks.items()}
    arrays = {t: a for t, a in arrays.items() if a}
    if not arrays:
        return {"overall": (float("nan"), float("nan"))}
    per_task = {t: np.empty(n_boot) for t in arrays}
    for b in range(n_boot):
        for t, prompts in arrays.items():
            idx = rng.integers(0, len(prompts), len(prompts)) if t in sampled else range(len(prompts))
            per_task[t][b] = np.mean([_resampled_mean(prompts[i], rng) for i in idx])
    q = [(1 - level) / 2, 1 - (1 - level) / 2]

    def bounds(draws: np.ndarray) -> tuple[float, float]:
        lo, hi = np.quantile(draws, q)
        return float(max(lo, 0.0)), float(min(hi, 1.0))

    out = {"overall": bounds(np.mean(list(per_task.values()), axis=0))}
    out.update({t: bounds(v) for t, v in per_task.items()})
    return out


def _resampled_mean(a: np.ndarray, rng: np.random.Generator) -> float:
    """The mean of a resample of ``a``, its deviation from ``a``'s mean scaled by sqrt(n / (n - 1)): a bootstrap
    mean of n values varies (n - 1) / n as much as the mean of n new draws would, which matters at 4-8 images."""
    n, m = len(a), a.mean()
    if n < 2:
        return float(m)
    return float(m + (a[rng.integers(0, n, n)].mean() - m) * np.sqrt(n / (n - 1)))


def prompt_set_hash(items: list[Any]) -> str:
    return sha256_json(items)


def migrate_v1_eval(old: dict, path: Path) -> dict:
    """A schema-1 evaluation record (GenEval, DPG-Bench, FID) -> the envelope, numbers unchanged; the scores are
    built by the same ``scores_of`` the benchmark uses for new records."""
    from evals.api import get_benchmark
    from snapgen.paths import REPO_ROOT
    from snapgen.records import SCHEMA_VERSION

    bench = get_benchmark(old["benchmark"])
    s = old["scores"]
    details = {"wall_time_s": old.get("wall_time_s"), "generation": old.get("generation")}
    if old["benchmark"] == "geneval":
        rows = _read_rows(old, path, REPO_ROOT)
        prompts: dict[str, set] = {}
        for r in rows:
            prompts.setdefault(r["tag"], set()).add(r["prompt_index"])
        summary = {**s, "tasks": {t: {**v, "prompts": len(prompts.get(t, ()))} for t, v in s["tasks"].items()}}
        scores = bench.scores_of(summary)
        details.update(tasks=summary["tasks"], images=s["images"], missing_tasks=s["missing_tasks"])
    elif old["benchmark"] == "dpg":
        scores = bench.scores_of(s)
        details.update(modes={m: {k: v for k, v in x.items() if k not in ("overall_x100", "overall_ci95_x100")}
                              for m, x in s.items()}, vqa_calls=old.get("vqa_calls"))
    elif old["benchmark"] == "fid":
        scores = bench.scores_of(s, old["protocol"].get("tag"))
        details.update(raw=s, seconds=old.get("seconds"))
    else:
        raise ValueError(f"{path}: no schema-1 converter for benchmark {old['benchmark']!r}")
    if old.get("samples_jsonl"):
        details["samples_jsonl"] = old["samples_jsonl"]
    return {"schema_version": SCHEMA_VERSION, "kind": "evaluation", "name": Path(path).stem,
            "protocol": old["protocol"], "scores": scores, "details": details,
            "environment": old["environment"], "created": old["created"]}


def _read_rows(rec: dict, path: Path, repo_root: Path) -> list[dict]:
    """The per-sample rows of a record (``details.samples_jsonl`` or the schema-1 ``samples_jsonl``)."""
    ref = (rec.get("details") or {}).get("samples_jsonl") or rec.get("samples_jsonl")
    candidates = [Path(path).with_suffix(".samples.jsonl")] + ([Path(ref), repo_root / ref] if ref else [])
    for c in candidates:
        if c.is_file():
            from snapgen.records import check_samples

            data = c.read_bytes()
            check_samples(rec, c, data)
            return [json.loads(x) for x in data.decode("utf-8").splitlines() if x.strip()]
    raise FileNotFoundError(f"{path}: its per-sample file is missing (looked for {[str(c) for c in candidates]})")


def read_rows(rec: dict, path: str | Path) -> list[dict]:
    from snapgen.paths import REPO_ROOT

    return _read_rows(rec, Path(path), REPO_ROOT)


# ----------------------------------------------------------------------------- paired comparison


def paired_difference(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], n_boot: int = 1000,
                      seed: int = 0) -> dict:
    """B - A for a metric that is the mean over strata of the mean over units (``Benchmark.units``), over the
    units both runs share; 95% CI by a bootstrap resampling units within each stratum."""
    if set(a) != set(b) or any(set(a[k]) != set(b[k]) for k in a):
        raise ValueError("paired difference needs the same prompts (and seeds) in both records")
    strata = {k: np.array([b[k][u] - a[k][u] for u in a[k]]) for k in a}     # A's order: a fixed bootstrap stream
    diff = float(np.mean([d.mean() for d in strata.values()]))
    rng = np.random.default_rng(seed)
    boots = np.array([np.mean([d[rng.integers(0, len(d), len(d))].mean() for d in strata.values()])
                      for _ in range(n_boot)])
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"diff": diff, "ci95": [float(lo), float(hi)], "n_units": int(sum(len(d) for d in strata.values())),
            "p_two_sided": float(min(1.0, 2 * min(np.mean(boots <= 0), np.mean(boots >= 0))))}
