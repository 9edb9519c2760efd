"""Score from Python: one generic evaluator behind every benchmark (GenEval, DPG-Bench, FID/KID, CLIP score,
ImageReward), the same code path as ``python -m evals.run``.

    import evals
    rec = evals.evaluate("geneval", generator="world-tiny")                   # shipped world model, held-out prompts
    rec = evals.evaluate("geneval", generator=pipe, n_per_prompt=1, limit=8)  # a SnapGenPipeline / diffusers pipeline
    rec = evals.evaluate("fid", images="runs/images/fid/x", ref="world")     # a folder in the benchmark's layout
    rec = evals.evaluate("clip", images=list_of_pil, prompts="captions.txt", clip_weights="ViT-L-14.pt")
    rec["scores"]["geneval_overall"]      # {"value", "ci95", "n", "higher_is_better", "unit"}

The evaluator runs generate -> cache -> score -> aggregate -> record: each benchmark (``evals.benchmarks``)
declares its metrics and supplies three hooks, ``plan`` (prompt set, image folder, generation jobs, the
evaluator loaded up front so a bad flag fails before any image is made), ``generate`` (default: resumable,
sharded jobs) and ``score`` (per-sample rows and aggregated scores with CIs). Keyword options are the CLI's flags
(``n_per_prompt`` for ``--n-per-prompt``); an unknown option or benchmark raises with the closest names.

``generator`` may be a ``--ckpt`` string, a ``SnapGenPipeline``, a diffusers pipeline, an
``evals.generators.Generator`` or a function ``(prompts, seeds) -> images``; ``images`` a folder or a list of
PIL images in the benchmark's job order (prompt-major, then sample index; ``evals.jobs(...)`` lists it).
"""
from __future__ import annotations

import argparse
import difflib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evals.generate import Job


@dataclass(frozen=True)
class Metric:
    key: str                         # protocol-bearing name, e.g. "geneval_overall", "fid_world32"
    higher_is_better: bool | None    # None: descriptive (a count), neither better nor worse
    unit: str                        # "fraction", "x100", "FID", "cosine x100", ...
    description: str = ""


@dataclass
class Plan:
    """What one evaluation will do; built by ``Benchmark.plan`` before anything is generated."""
    name: str                        # record name (also the default file name)
    out: Path                        # record path
    folder: Path                     # images (generated into, or read from)
    jobs: list[Job] | None           # images to generate (None: score existing images only)
    protocol: dict                   # everything that must match for two records to be comparable
    info: dict = field(default_factory=dict)    # shown by --dry-run
    state: dict = field(default_factory=dict)   # the benchmark's own (loaded evaluator, questions, ...)
    all_jobs: list[Job] | None = None  # every job when ``jobs`` skips finished ones (DPG grids); else = jobs


@dataclass
class Scored:
    scores: dict[str, dict]          # metric key -> snapgen.records.score(...)
    rows: list[dict] | None          # per-sample rows -> <record>.samples.jsonl
    details: dict = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)   # lines printed after scoring


class Benchmark:
    """Base of the benchmark plugins; subclasses set the class attributes and implement the hooks."""

    name: str = ""
    help: str = ""
    metrics: tuple[Metric, ...] = ()
    n_per_prompt: int = 1            # official images per prompt
    table: str | None = None         # ablations.tables entry refreshed after a record is written under results/
    class_labels: bool = False       # can ask a class-conditional generator for class labels (FID with --ref world)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def plan(self, args: argparse.Namespace, gen) -> Plan:
        raise NotImplementedError

    def generate(self, plan: Plan, gen, args: argparse.Namespace) -> dict:
        """Make the missing images of this process's shard; block until every shard is done."""
        from evals.generate import run_jobs, wait_for_shards

        counts = run_jobs(plan.jobs, gen.generate, args.batch_size, progress=not args.no_progress)
        wait_for_shards(plan.jobs)
        print(f"images: {counts['existing']} reused, {counts['generated']} generated -> {plan.folder}")
        return counts

    def score(self, plan: Plan, args: argparse.Namespace) -> Scored:
        raise NotImplementedError

    def units(self, rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
        """For paired comparison: metric -> stratum -> unit id -> value, such that the metric is the mean over
        strata of the mean over units (empty: the benchmark has no per-unit scores to pair)."""
        return {}

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if key == m.key or (m.key.endswith("*") and key.startswith(m.key[:-1])):
                return m
        raise KeyError(f"{self.name}: no declared metric {key!r}; declared: {[m.key for m in self.metrics]}")

    def make_score(self, key: str, value: float, ci95=None, n: int | None = None) -> dict:
        from snapgen.records import score

        m = self.metric(key)
        return score(value, ci95, n, m.higher_is_better, m.unit)


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Benchmark] = {}
_MODULES = ("evals.benchmarks.geneval", "evals.benchmarks.dpg", "evals.benchmarks.fid", "evals.benchmarks.clip",
            "evals.benchmarks.imagereward")


def register(bench: Benchmark) -> Benchmark:
    """Add a benchmark; a duplicate name, or metrics without a protocol-bearing key, raise."""
    if not bench.name or bench.name in _REGISTRY and type(_REGISTRY[bench.name]) is not type(bench):
        raise ValueError(f"benchmark name {bench.name!r} is empty or already registered")
    if not bench.metrics or any(not m.key or m.higher_is_better not in (True, False, None) for m in bench.metrics):
        raise ValueError(f"benchmark {bench.name!r}: declare metrics with a key and higher_is_better")
    _REGISTRY[bench.name] = bench
    return bench


def benchmarks() -> dict[str, Benchmark]:
    import importlib

    names = [importlib.import_module(mod).BENCHMARK.name for mod in _MODULES]
    return {**{n: _REGISTRY[n] for n in names}, **_REGISTRY}


def get_benchmark(name: str) -> Benchmark:
    known = benchmarks()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        raise KeyError(f"unknown benchmark {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                       + f" (known: {', '.join(known)})")
    return known[name]


# ----------------------------------------------------------------------------- the evaluator


def evaluate_args(bench: Benchmark, args: argparse.Namespace, write: bool = True) -> dict | None:
    """generate -> cache -> score -> aggregate -> record. Returns the record (None for --dry-run and on
    ranks other than 0 of a sharded run)."""
    from evals.benchmarks.common import generator_from_args
    from evals.generate import shard_info
    from snapgen.records import make_record, write_record

    t0 = time.time()
    gen = getattr(args, "generator_object", None) or generator_from_args(args)
    if getattr(gen, "class_conditional", False) and not bench.class_labels:
        ckpt = getattr(args, "ckpt", None) or gen.name
        raise ValueError(f"--ckpt {ckpt}: a class-conditional pipeline (its U-Net has cond='class'), and {bench.name} "
                         "asks for images of text prompts; pass a text-to-image checkpoint, or score this one by FID "
                         f"against world renders of its classes: python -m evals.run fid --ref world --ckpt {ckpt}")
    plan = bench.plan(args, gen)
    if write:
        check_record_path(plan.out, "--out")                   # before images are generated and scored, not after
    if gen is not None and plan.jobs is not None and getattr(args, "images_root", None):
        from snapgen.io import check_writable_dir

        check_writable_dir(args.images_root, "--images-root")
    if args.dry_run:
        print(json.dumps({"images": str(plan.folder), "record": str(plan.out), **plan.info}, indent=2, default=str))
        return None
    counts = None
    if gen is not None and plan.jobs is not None:
        if hasattr(gen, "bind"):
            gen.bind(plan.all_jobs if plan.all_jobs is not None else plan.jobs)
        counts = bench.generate(plan, gen, args)
        if shard_info()[0] != 0:
            return None
    scored = bench.score(plan, args)
    details = {**scored.details, "wall_time_s": time.time() - t0, "generation": counts}
    rec = make_record("evaluation", plan.out.stem, {"benchmark": bench.name, **plan.protocol}, scored.scores, details,
                      device=getattr(args, "device", "cpu"))
    if write:
        write_record(plan.out, rec, scored.rows)
        for line in scored.summary:
            print(line)
        print(f"record: {plan.out}")
        _refresh_table(bench, plan.out)
    return rec


def check_record_path(path: Path, flag: str = "--out") -> None:
    """A record (and its ``.samples.jsonl``) can be written at ``path``: not a folder, its folder writable."""
    from snapgen.io import check_writable_dir

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path}: is a folder; pass a record file path, e.g. {path / 'record.json'}")
    check_writable_dir(path.parent, flag)


def _refresh_table(bench: Benchmark, out: Path) -> None:
    from snapgen.paths import results_root

    if not bench.table or out.resolve().parent.parent != results_root().resolve():
        return
    from ablations.tables import regenerate
    from snapgen.records import RecordError

    try:
        print(f"table: {regenerate([bench.table])[0]}")
    except (RecordError, ValueError) as e:                   # e.g. a record from uncommitted code
        print(f"table not refreshed: {e}")


def parser_for(bench: Benchmark) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m evals.run {bench.name}", description=type(bench).__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(p)
    return p


def options(bench: Benchmark, **overrides: Any) -> argparse.Namespace:
    """The CLI's defaults for ``bench`` with ``overrides`` (option names as attributes: ``n_per_prompt``)."""
    p = parser_for(bench)
    defaults = {a.dest: a.default for a in p._actions if a.dest not in ("help",)}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        hints = {u: difflib.get_close_matches(u, defaults, n=2, cutoff=0.5) for u in unknown}
        raise TypeError(f"{bench.name}: unknown option(s) " + ", ".join(
            f"{u!r}" + (f" (did you mean {' or '.join(h)}?)" if h else "") for u, h in hints.items()))
    for a in p._actions:                                      # the CLI's range checks apply to Python callers too
        v = overrides.get(a.dest)
        if v is not None and callable(a.type) and not isinstance(v, bool) and isinstance(v, (int, float, str)):
            try:
                overrides[a.dest] = a.type(str(v))
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise ValueError(f"{bench.name}: {a.dest}={v!r}: {e}") from None
    ns = argparse.Namespace(**{**defaults, **overrides})
    for a in p._actions:                                      # the same checks as the CLI's typed options
        v = getattr(ns, a.dest, None)
        if a.choices is not None and v is not None and v not in a.choices:
            raise ValueError(f"{bench.name}: {a.dest}={v!r}; choose from {list(a.choices)}")
    return ns


def evaluate(benchmark: str, generator: Any = None, images: Any = None, *, out: str | Path | None = None,
             write: bool = True, **opts: Any) -> dict:
    """Score ``generator`` (or ``images``) on ``benchmark``; returns the record (written under results/ unless
    ``write=False`` or ``out`` says elsewhere). See the module docstring for what each argument accepts."""
    bench = get_benchmark(benchmark)
    if (generator is None) == (images is None):
        raise ValueError("pass exactly one of generator= or images=")
    ns = options(bench, **opts)
    ns.out, ns.dry_run = (str(out) if out else None), False
    ns.no_progress = opts.get("no_progress", True)
    ns.ckpt, ns.images, ns.generator_object = None, None, None
    if isinstance(images, (str, Path)):
        ns.images = str(images)
    elif images is not None:
        ns.generator_object = ReplayGenerator(list(images), resolution=opts.get("resolution"))
    elif isinstance(generator, (str, Path)):
        ns.ckpt = str(generator)
    else:
        ns.generator_object = as_generator(generator, ns)
    if ns.generator_object is not None and ns.threads:
        import torch

        torch.set_num_threads(ns.threads)
        ns.generator_object.threads = torch.get_num_threads()
    if ns.generator_object is not None:
        from evals.benchmarks.common import apply_inference_options

        apply_inference_options(ns.generator_object, ns)
    return evaluate_args(bench, ns, write=write)


# ----------------------------------------------------------------------------- in-memory generators


def as_generator(obj: Any, ns: argparse.Namespace):
    """A pipeline object or function -> ``evals.generators.Generator``."""
    from evals.generators import Generator, SnapGenGenerator

    if isinstance(obj, Generator):
        return obj
    from snapgen.pipeline import SnapGenPipeline

    if isinstance(obj, SnapGenPipeline):
        return SnapGenGenerator.from_pipeline(obj, ns.steps, ns.guidance, ns.batch_size)
    if hasattr(obj, "components") and callable(obj):         # a diffusers DiffusionPipeline
        from evals.generators import DiffusersGenerator

        return DiffusersGenerator.from_pipeline(obj, ns.steps, ns.guidance, ns.resolution, ns.negative_prompt,
                                                ns.batch_size, ns.device)
    if callable(obj):
        return FunctionGenerator(obj, resolution=ns.resolution)
    raise TypeError(f"generator={type(obj).__name__}: expected a --ckpt string, a SnapGenPipeline, a diffusers "
                    "pipeline, an evals.generators.Generator or a function (prompts, seeds) -> images")


class FunctionGenerator:
    """``fn(prompts, seeds) -> list[PIL]`` as a generator (its identity is the function's qualified name)."""

    domain = "generic"
    threads = None

    def __init__(self, fn: Callable, resolution: int | None = None, name: str | None = None):
        self.fn, self.resolution = fn, resolution
        self.name = name or f"function:{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"

    def generate(self, prompts, seeds, metadata=None):
        return list(self.fn(list(prompts), list(seeds)))

    def protocol(self) -> dict:
        return {"generator": self.name, "resolution": self.resolution, "threads": self.threads}


class ReplayGenerator(FunctionGenerator):
    """In-memory images in job order (prompt-major, then sample): ``images=[...]`` of ``evaluate``. The evaluator
    binds image k to job k's seed, so resuming from a partly filled cache hands out the right images. Its identity
    is the sha256 of the pixels, so the image cache never mixes two different lists."""

    def __init__(self, images: list, resolution: int | None = None):
        import hashlib

        import numpy as np

        if not images:
            raise ValueError("images=[]: nothing to score")
        h = hashlib.sha256()
        for im in images:
            h.update(np.asarray(im.convert("RGB")).tobytes())
        self.images, self.by_seed, self.digest = images, None, h.hexdigest()
        super().__init__(self._lookup, resolution or images[0].size[0], name=f"in-memory-{self.digest[:12]}")

    def bind(self, jobs: list[Job]) -> None:
        if len(jobs) != len(self.images):
            raise ValueError(f"images=: {len(self.images)} images given, the benchmark has {len(jobs)} jobs; pass "
                             "exactly one image per job, in job order (evals.api.options + Benchmark.plan list them)")
        self.by_seed = {j.seed: im for j, im in zip(jobs, self.images)}
        if len(self.by_seed) != len(jobs):
            raise ValueError("images=: the benchmark's jobs share seeds; in-memory images cannot be matched to them")

    def _lookup(self, prompts, seeds):
        if self.by_seed is None:
            raise RuntimeError("ReplayGenerator used before bind(jobs)")
        return [self.by_seed[s] for s in seeds]

    def protocol(self) -> dict:
        return {"generator": "in-memory images", "images_sha256": self.digest, "n_images": len(self.images),
                "resolution": self.resolution}
