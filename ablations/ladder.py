"""The ablation ladder with a quality axis: every world-scale twin trained with the same budget and seeds, then
scored on held-out world prompts; one record per (twin, seed).

    python -m ablations.ladder --ladder t2i --dry-run                   # the jobs and the budget
    python -m ablations.ladder --ladder t2i --seeds 0 1 2               # run (resumable: finished steps are skipped)
    torchrun --nproc_per_node 4 -m ablations.ladder --ladder t2i        # 4 processes share the jobs (job j -> rank j % 4)
    python -m ablations.ladder --ladder t2i --variants world-t2i-s4-ffn3 world-t2i-s5-mqa --steps 20 --fid-n 64
    python -m ablations.ladder --ladder t2i --budget cpu                 # the 2-core CPU budget (see BUDGETS)

A job is three resumable stages, each a separate process (so the same command runs on a laptop, a GPU box under
``torchrun``/``accelerate launch`` or a cluster, and ``ablations`` never imports ``evals``):

1. train: ``python -m snapgen.train`` with the twin's config, the ladder's budget (steps, batch, learning rate
   schedule, data order) and the job's seed; the engine resumes from its checkpoints;
2. score: ``python -m evals.run geneval`` / ``dpg`` / ``fid --ref world`` on held-out world prompts
   (text-to-image ladder); each writes its record under the job's folder and is skipped when it exists;
3. record: kind ``ablation``, ``<results>/ablation/<ladder>/<twin>-s<seed>.json``, with the twin's config hash,
   the budget, the training wall time and every quality score with its CI.

The class-conditional ladder (``--ladder in256``) trains its twins on the world's 40 shape x colour classes and
scores them, as the paper scores ImageNet, by FID alone: FID-world-class, generated images of uniformly drawn
labels against fresh class-mode renders (``python -m evals.run fid --ref world`` with a class-conditional
checkpoint). GenEval and DPG need prompts, so they are text-to-image only.

Budgets (``--budget``): ``recipe`` is the one-process world recipe (1900 steps of batch 16, the recipe before it
became 2 processes x 3000 steps; 30 min on 2 cores per job, one process per job) scored
with 2000 FID images, for a GPU box or a cluster; ``cpu`` is what a 2-core machine finishes in about 100 minutes
per ladder with two 1-thread jobs at a time (240 steps, 256 FID images at 10 sampling steps). Any field can be
overridden by its flag; the record keeps the budget it was run with.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ablations.twins import SCALE, TWINS, ladder_of
from snapgen.cli import nonnegative_float, nonnegative_int, positive_float, positive_int

# environment variables of torchrun / accelerate that must not leak into the job's own processes
_LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                 "TORCHELASTIC_MAX_RESTARTS", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "ACCELERATE_MIXED_PRECISION")


BENCHMARKS = {"t2i": ("geneval", "dpg", "fid"), "in256": ("fid",)}


@dataclass(frozen=True)
class Budget:
    """What every twin of a ladder gets (equal compute per step is not claimed: twins differ in FLOPs; equal
    steps, batch, data order and seeds are, and each record states its wall time)."""
    steps: int = 1900                   # the one-process world recipe's steps (TrainConfig's before it became 2 x 3000)
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100
    threads: int = 2                    # torch threads per job (training and generation; recorded)
    n_per_prompt: int = 4               # GenEval / DPG images per held-out prompt
    prompts_per_tag: int = 12           # held-out world prompts per GenEval task
    fid_n: int = 2000                   # FID-world: generated images = held-out reference renders
    sample_steps: int = 20
    guidance: float = 3.0
    benchmarks: tuple[str, ...] = ("geneval", "dpg", "fid")  # the ladder's subset of BENCHMARKS[ladder] is scored
    name: str = "recipe"


# PAPER-UNKNOWN: the paper trains each ablation step on ImageNet-256 for an unstated budget; "recipe" is our world
# recipe per twin, "cpu" is sized so a 2-core machine runs one ladder (8 rungs x 3 seeds) in about 100 minutes.
BUDGETS = {"recipe": Budget(),
           "cpu": Budget(steps=240, warmup=24, threads=1, fid_n=256, sample_steps=10, benchmarks=("geneval", "fid"),
                         name="cpu")}


@dataclass(frozen=True)
class Job:
    twin: str
    seed: int
    ladder: str

    @property
    def name(self) -> str:
        return f"{self.twin}-s{self.seed}"


@dataclass
class Paths:
    root: Path                          # runs (checkpoints, images, per-benchmark records)
    results: Path                       # ablation records

    def run(self, job: Job) -> Path:
        return self.root / job.ladder / job.name

    def config(self, job: Job) -> Path:
        return self.root / job.ladder / "configs" / f"{job.twin}.json"

    def record(self, job: Job) -> Path:
        return self.results / job.ladder / f"{job.name}.json"

    def images(self, job: Job) -> Path:
        return self.root / job.ladder / "images"       # shared by the jobs of a ladder (one reference folder)


def jobs(ladder: str, seeds: list[int], variants: list[str] | None = None) -> list[Job]:
    """Every (twin, seed) of the ladder, in registry order then seed order (so a partial run covers whole rungs)."""
    names = [t.name for t in TWINS if ladder_of(t.paper["full_size"]) == ladder]
    for flag, values in (("--seeds", seeds), ("--variants", variants or [])):
        dup = sorted({str(v) for v in values if values.count(v) > 1})
        if dup:
            raise ValueError(f"{flag}: {', '.join(dup)} given more than once; each (twin, seed) is one job, "
                             f"pass each value once")
    if variants:
        for v in variants:
            if v not in TWINS.names():
                close = difflib.get_close_matches(v, names, n=3, cutoff=0.4)
                raise ValueError(f"--variants {v}: unknown twin; " + (f"did you mean {', '.join(close)}?" if close
                                 else f"the {ladder} ladder's twins: {', '.join(names)}"))
            if v not in names:
                raise ValueError(f"--variants {v}: not a twin of the {ladder} ladder")
        names = [n for n in names if n in variants]
    return [Job(n, s, ladder) for n in names for s in seeds]


def child_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_ENV}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _run(cmd: list[str], log: Path, threads: int) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env(threads)).returncode
    if rc != 0:
        raise RuntimeError(f"`{' '.join(cmd[:4])} ...` exited {rc}; see {log}")


def train(job: Job, b: Budget, paths: Paths, pinned: dict | None = None) -> Path:
    """``python -m snapgen.train`` of the twin with the budget. ``pinned`` (a rerun: ``verify``): the recipe fields
    a record was trained with, passed as a ``--config`` file so that a later change of TrainConfig's defaults does
    not change the rerun; the budget's own fields still come from ``--set``."""
    from snapgen.io import atomic_write_text

    run = paths.run(job)
    if (run / "pipeline" / "pipeline.json").exists():
        return run
    cfg = paths.config(job)
    text = TWINS.get(job.twin).config.to_json()
    if not cfg.exists() or cfg.read_text() != text:
        atomic_write_text(cfg, text)
    data = "world" if job.ladder == "t2i" else "world-class"
    sets = [f"unet={cfg}", f"data={data}", f"steps={b.steps}", f"batch_size={b.batch_size}", f"lr={b.lr}",
            f"warmup={b.warmup}", f"seed={job.seed}", f"threads={b.threads}", f"sample_steps={b.sample_steps}",
            f"sample_guidance={b.guidance}", f"ckpt_every={max(1, b.steps // 4)}", "keep_ckpts=2", "cpu=true",
            "processes=1"]                     # one process per job: the ladder runs its jobs side by side
    pin = []
    if pinned is not None:
        pin_file = run / "pinned_recipe.json"
        atomic_write_text(pin_file, json.dumps(pinned, indent=2, sort_keys=True))   # --set unet= still names the twin
        pin = ["--config", str(pin_file)]
    _run([sys.executable, "-m", "snapgen.train", "--out", str(run), "--no-progress", *pin, "--set", *sets],
         run / "ladder.log", b.threads)
    return run


def score(job: Job, b: Budget, run: Path, images: Path | None = None, out: Path | None = None) -> dict[str, Path]:
    """The evaluation records of a twin (each skipped when it exists) in ``out`` (default ``run/eval``): the
    budget's benchmarks that apply to the ladder (GenEval/DPG/FID-world on held-out prompts for text-to-image;
    FID-world-class for the class ladder)."""
    pipe, out = run / "pipeline", out or run / "eval"
    common = ["--ckpt", str(pipe), "--threads", str(b.threads), "--steps", str(b.sample_steps), "--guidance",
              str(b.guidance), "--no-progress", "--images-root", str(images or run / "images")]
    world = ["--world-prompts-per-tag", str(b.prompts_per_tag)]
    todo = {"geneval": ["geneval", *common, *world, "--n-per-prompt", str(b.n_per_prompt)],
            "dpg": ["dpg", *common, *world, "--n-per-prompt", str(b.n_per_prompt)],
            "fid": ["fid", *common, "--ref", "world", "--n", str(b.fid_n)]}
    records = {}
    for bench in [x for x in b.benchmarks if x in BENCHMARKS[job.ladder]]:
        args = todo[bench]
        records[bench] = out / f"{bench}.json"
        if not records[bench].exists():
            _run([sys.executable, "-m", "evals.run", *args, "--out", str(records[bench])], run / "ladder.log", b.threads)
    return records


def train_wall_s(run: Path) -> float | None:
    """Training wall time of the steps the run kept: the sum over its segments (a resumed run restarts its clock at
    the resumed step, ``elapsed_from_step``) of each segment's last ``elapsed_s``; None without a log."""
    log = run / "log.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    last: dict[int, float] = {}
    for r in rows:
        if r.get("elapsed_s") is not None:
            last[int(r.get("elapsed_from_step") or 0)] = float(r["elapsed_s"])
    return sum(last.values()) if last else None


def geneval_units(geneval_record: dict, path: Path) -> dict[str, dict[str, float]]:
    """Task -> prompt index -> accuracy over that prompt's images (the GenEval overall is the mean over tasks of
    the mean over prompts): kept in the ablation record so the table's bootstrap over seeds and prompts is a
    pure function of results/."""
    from snapgen.paths import REPO_ROOT

    ref = geneval_record["details"]["samples_jsonl"]
    jsonl = next(p for p in (Path(path).with_suffix(".samples.jsonl"), Path(ref), REPO_ROOT / ref) if p.is_file())
    per: dict[str, dict[str, list[float]]] = {}
    for line in jsonl.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            per.setdefault(r["tag"], {}).setdefault(str(r["prompt_index"]), []).append(float(r["correct"]))
    return {t: {k: sum(v) / len(v) for k, v in d.items()} for t, d in per.items()}


def _checkpoint_sha(evals: dict[str, Path]) -> str | None:
    """The scored pipeline's hash, as its evaluation records state it (one pipeline scored by every benchmark)."""
    from snapgen.records import read_record

    shas = {read_record(p)["protocol"].get("generator", {}).get("checkpoint_sha256") for p in evals.values()}
    return shas.pop() if len(shas) == 1 else None


def quality_scores(evals: dict[str, Path]) -> dict[str, dict]:
    """The scores a quality record keeps from its evaluation records: every GenEval score, DPG's overall, FID/KID."""
    from snapgen.records import read_record

    return {k: s for bench, path in evals.items() for k, s in read_record(path)["scores"].items()
            if bench == "geneval" or k.endswith("overall_x100") or k.startswith(("fid", "kid"))}


def run_sharded(todo: list, run_one, describe, dry_run: bool, budget: dict, done=lambda job: False) -> int:
    """This process's share of the jobs of ``todo`` not yet ``done(job)`` (pending job i -> rank i % WORLD_SIZE, so
    torchrun / accelerate launch split the work; done jobs are skipped before sharding, so a resumed or extended
    study keeps every process busy instead of leaving one rank the finished jobs): ``--dry-run`` prints them
    (``describe(job)`` -> dict) and the done ones, else ``run_one(job)`` -> record path, each timed. Shared by the
    ladder and the lever studies. Every rank must see the same records at start (torchrun starts them together)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    finished = [j for j in todo if done(j)]
    pending = [j for j in todo if not done(j)]
    mine = [j for i, j in enumerate(pending) if i % world == rank]
    if dry_run:
        print(json.dumps({"budget": budget, "rank": rank, "world": world, "jobs": [describe(j) for j in mine],
                          "done": [describe(j) for j in finished]}, indent=2))
        return 0
    t0 = time.time()
    if finished:
        print(f"[{rank}/{world}] {len(finished)} of {len(todo)} job(s) already have records; sharding the other "
              f"{len(pending)}", flush=True)
    for j in mine:
        t = time.time()
        path = run_one(j)
        print(f"[{rank}/{world}] {j.name}: {'record ' + str(path) if path else 'trained'} ({time.time() - t:.0f} s)",
              flush=True)
    print(f"[{rank}/{world}] {len(mine)} job(s) in {time.time() - t0:.0f} s")
    return 0


def job_record(job: Job, b: Budget, run: Path, evals: dict[str, Path]) -> dict:
    from snapgen.records import make_record, read_record
    from snapgen.training.t2i import stored_recipe

    twin = TWINS.get(job.twin)
    scores, sources = quality_scores(evals), {bench: str(path) for bench, path in evals.items()}
    protocol = {"ladder": job.ladder, "twin": job.twin, "full_size": twin.paper["full_size"], "parent": twin.parent,
                "config_hash": twin.config.hash, "seed": job.seed, "budget": asdict(b), "scale": SCALE,
                "prompts": {"split": "heldout"} if job.ladder == "t2i" else
                {"split": "in_distribution", "note": "class-conditional: the 40 training classes, fresh draws"}}
    units = {"geneval_overall": geneval_units(read_record(evals["geneval"]), evals["geneval"])} if "geneval" in evals else {}
    stored = json.loads((run / "train_config.json").read_text())
    details = {"train_wall_s": train_wall_s(run), "run": str(run), "eval_records": sources, "units": units,
               "checkpoint_sha256": _checkpoint_sha(evals), "train_config": stored.get("unet_config"),
               "recipe": {k: v for k, v in stored_recipe(stored).items() if k != "unet"}}
    return make_record("ablation", job.name, protocol, scores, details)


def run_job(job: Job, b: Budget, paths: Paths) -> Path | None:
    from snapgen.records import write_record

    if paths.record(job).exists():
        return paths.record(job)
    run = train(job, b, paths)
    rec = job_record(job, b, run, score(job, b, run, paths.images(job)))
    return write_record(paths.record(job), rec)


def verify(job: Job, paths: Paths, scratch: Path) -> dict:
    """Retrain and rescore ``job`` from scratch under ``scratch`` with the budget its record states, and compare
    every score (and the checkpoint hash, where the record has it) with the record. Training is deterministic at a
    fixed thread count, so a faithful record is reproduced exactly; returns {"job", "record", "equal",
    "scores": {key: {"record", "rerun", "equal"}}, ...}."""
    from snapgen.records import read_record

    path = paths.record(job)
    if not path.exists():
        raise FileNotFoundError(f"--verify {job.name}: no record {path}; run the job first (python -m ablations ladder "
                                f"--ladder {job.ladder} --variants {job.twin} --seeds {job.seed})")
    old = read_record(path)
    b = Budget(**{**old["protocol"]["budget"], "benchmarks": tuple(old["protocol"]["budget"]["benchmarks"])})
    if (scratch / job.ladder / job.name).resolve() == paths.run(job).resolve():
        raise ValueError(f"--runs {scratch}: the verification must train from scratch; pass another --runs folder "
                         "than the one the record was made in")
    from snapgen.training.t2i import LEGACY_VALUES

    vpaths = Paths(scratch, scratch / "records")
    # the recipe the record was trained with; fields added to TrainConfig since: their LEGACY_VALUES
    run = train(job, b, vpaths, pinned={**LEGACY_VALUES, **old["details"].get("recipe", {})})
    new = job_record(job, b, run, score(job, b, run, vpaths.images(job)))
    keys = sorted(set(old["scores"]) | set(new["scores"]))
    cmp = {k: {"record": (old["scores"].get(k) or {}).get("value"), "rerun": (new["scores"].get(k) or {}).get("value")}
           for k in keys}
    for c in cmp.values():
        c["equal"] = c["record"] == c["rerun"]
    out = {"job": job.name, "record": str(path), "record_commit": old["environment"].get("git_commit"),
           "rerun_commit": new["environment"].get("git_commit"), "budget": asdict(b), "rerun": str(run),
           "train_wall_s": {"record": old["details"].get("train_wall_s"), "rerun": new["details"].get("train_wall_s")},
           "scores": cmp}
    for key in ("checkpoint_sha256",):
        if key in old["details"]:
            out[key] = {"record": old["details"][key], "rerun": new["details"].get(key),
                        "equal": old["details"][key] == new["details"].get(key)}
    out["equal"] = all(c["equal"] for c in cmp.values()) and out.get("checkpoint_sha256", {}).get("equal", True)
    return out


def write_reports(ladder: str, paths: Paths, report_root: Path, seed: int = 0, thumb: int = 128) -> list[Path]:
    """Per rung, the compare report (``python -m evals.run report CHILD PARENT``) of the twin's GenEval record
    against its parent's, for training seed ``seed``: per-task paired differences and the prompts whose verdict
    flipped, with both images. Written to ``report_root/ladder_<ladder>/<twin>/index.html`` (the ladder table
    links to it); rungs whose own or parent's record is missing are skipped."""
    out = []
    for job in jobs(ladder, [seed]):
        twin = TWINS.get(job.twin)
        if not twin.parent:
            continue
        child = paths.run(job) / "eval" / "geneval.json"
        parent = paths.run(Job(twin.parent, seed, ladder)) / "eval" / "geneval.json"
        if not (child.exists() and parent.exists()):
            continue
        folder = report_root / f"ladder_{ladder}" / job.twin
        cmd = [sys.executable, "-m", "evals.run", "report", str(child), str(parent), "--out", str(folder), "--thumb",
               str(thumb), "--title", f"{job.twin} vs {twin.parent} (seed {seed}, GenEval-world, held-out)"]
        _run(cmd, paths.root / ladder / "reports.log", 1)
        out.append(folder / "index.html")
    return out


def budget_from_args(a) -> Budget:
    """The named budget with every flag that was given applied (a changed budget keeps the preset's name + "*")."""
    from dataclasses import replace

    base = BUDGETS[a.budget]
    fields = {"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "warmup": a.warmup, "threads": a.threads,
              "n_per_prompt": a.n_per_prompt, "prompts_per_tag": a.prompts_per_tag, "fid_n": a.fid_n,
              "sample_steps": a.sample_steps, "guidance": a.guidance,
              "benchmarks": tuple(a.benchmarks) if a.benchmarks else None}
    changed = {k: v for k, v in fields.items() if v is not None and v != getattr(base, k)}
    b = replace(base, **changed, name=base.name + ("*" if changed else ""))
    if not [x for x in b.benchmarks if x in BENCHMARKS[a.ladder]]:
        raise ValueError(f"--benchmarks {' '.join(b.benchmarks)}: none applies to the {a.ladder} ladder "
                         f"(it is scored by {', '.join(BENCHMARKS[a.ladder])})")
    return replace(b, warmup=min(b.warmup, b.steps))


def main(argv: list[str] | None = None) -> int:
    from snapgen.paths import results_dir

    p = argparse.ArgumentParser(prog="python -m ablations.ladder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ladder", choices=("t2i", "in256"), default="t2i")
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0, 1, 2], help="training seeds (>= 3 for tables)")
    p.add_argument("--variants", nargs="+", default=None, help="only these twins (default: every rung)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="recipe", help="named budget (the flags below "
                   "override its fields): recipe = the world recipe per twin (GPU / cluster), cpu = 2-core machine")
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--warmup", type=nonnegative_int, default=None)
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads per job")
    p.add_argument("--n-per-prompt", type=positive_int, default=None, help="GenEval / DPG images per prompt")
    p.add_argument("--prompts-per-tag", type=positive_int, default=None)
    p.add_argument("--fid-n", type=positive_int, default=None, help="FID generated images = reference renders")
    p.add_argument("--sample-steps", type=positive_int, default=None, help="sampling steps of every evaluation")
    p.add_argument("--guidance", type=nonnegative_float, default=None, help="classifier-free guidance scale")
    p.add_argument("--benchmarks", nargs="+", choices=("geneval", "dpg", "fid"), default=None,
                   help="which evaluations score each twin (those that apply to the ladder)")
    p.add_argument("--runs", type=Path, default=Path("runs/ladder"), help="checkpoints, images, per-benchmark records")
    p.add_argument("--results", type=Path, default=None, help="ablation records (default <results>/ablation)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and the budget, run nothing")
    p.add_argument("--reports", action="store_true", help="write the compare report of every rung against its parent "
                   "(GenEval, seed of --report-seed) under <results>/reports/ladder_<ladder>/ and exit")
    p.add_argument("--report-seed", type=nonnegative_int, default=0)
    p.add_argument("--verify", metavar="JOB", default=None, help="retrain and rescore one job (e.g. "
                   "world-t2i-s5-mqa-s0) from scratch under --runs with its record's budget, compare every score with "
                   "the record; exit 1 when any differs (--runs must not be the folder the record was made in)")
    a = p.parse_args(argv)
    b = budget_from_args(a)
    paths = Paths(a.runs, a.results or results_dir("ablation"))
    if a.reports:
        from snapgen.paths import results_root

        written = write_reports(a.ladder, paths, results_root() / "reports", a.report_seed)
        print("\n".join(str(w) for w in written) or "no rung has both its and its parent's GenEval record yet")
        return 0
    if a.verify:
        m = re.fullmatch(r"(.+)-s(\d+)", a.verify)
        names = [t.name for t in TWINS if ladder_of(t.paper["full_size"]) == a.ladder]
        if not m or m.group(1) not in names:
            raise ValueError(f"--verify {a.verify}: not a job of the {a.ladder} ladder; a job is TWIN-sSEED, e.g. "
                             f"{names[-1]}-s0 (twins: python -m ablations ls --twins)")
        if a.runs == Path("runs/ladder"):
            a.runs = Path("runs/ladder-verify")
        result = verify(Job(m.group(1), int(m.group(2)), a.ladder), Paths(Path("runs/ladder"), paths.results), a.runs)
        print(json.dumps(result, indent=2))
        return 0 if result["equal"] else 1
    return run_sharded(jobs(a.ladder, a.seeds, a.variants), lambda j: run_job(j, b, paths),
                       lambda j: {"job": j.name, "record": str(paths.record(j)), "done": paths.record(j).exists()},
                       a.dry_run, asdict(b), done=lambda j: paths.record(j).exists())


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
