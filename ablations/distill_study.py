"""The distillation study (issue 17): knowledge distillation against plain training, and LADD step distillation
against an equal-compute control, in the synthetic world, from the world DiT teacher, >= 3 training seeds, scored
on held-out prompts; one record per (arm, evaluation steps, seed), tables in ``results/tables/distillation.md``.

    python -m ablations.distill_study --teacher runs/distill/teacher-dit-s/pipeline --dry-run
    python -m ablations.distill_study --teacher T --study kd --seeds 0 1 2            # resumable
    python -m ablations.distill_study --teacher T --study ladd --seeds 0 1 2          # after the kd study's plain arm
    torchrun --nproc_per_node 2 -m ablations.distill_study --teacher T --study kd     # jobs split over ranks
    python -m ablations.distill_study --teacher T --budget cpu ...                    # the 2-core budget

**KD study** (the same student ``tiny-world``, steps, batch, data order, learning-rate schedule and seeds in every
arm; the wall time of each is recorded, KD costs a teacher forward per step):

    plain                  python -m snapgen.train (rectified flow only)
    kd-output              + output distillation, fixed loss weights (kd_weighting=uniform, kd_feature_weight=0)
    kd-output-feature      + feature distillation, fixed loss weights (kd_weighting=uniform)
    kd-output-feature-ta   + timestep-aware scaling (kd_weighting=u-shape): the paper's recipe

**Step-distillation study** (per seed, from that seed's ``plain`` student):

    base @28, @8, @4       the plain student sampled with 28, 8 and 4 Euler steps (no training)
    ladd @8, @4            python -m snapgen.train_distill --stage ladd (adversarial + output distillation)
    control @8, @4         the same run with ladd_adv_weight=0: the same steps, data, teacher forwards, distillation
                           loss and critic updates, but the generator never sees the discriminator (equal compute)

Every LADD run writes ``discriminator.json`` (real / fake accuracy and logit gap over its last logged quarter) and
warns when the critic stayed at chance; the record carries it. Each job is resumable stages run as separate
processes (training, then ``python -m evals.run geneval / dpg / fid --ref world``), as in ``ablations.ladder``.
The teacher is scored once with the same protocol (``<results>/distill/teacher/<name>.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ablations.ladder import Job as LadderJob
from ablations.ladder import _run, geneval_units, score, train_wall_s
from snapgen.cli import nonnegative_float, nonnegative_int, positive_int

KD_ARMS: dict[str, dict[str, str]] = {
    "plain": {},
    "kd-output": {"kd_feature_weight": "0", "kd_weighting": "uniform"},
    "kd-output-feature": {"kd_weighting": "uniform"},
    "kd-output-feature-ta": {"kd_weighting": "u-shape"},
}
LADD_ARMS: dict[str, dict[str, str] | None] = {"base": None, "ladd": {}, "control": {"ladd_adv_weight": "0"}}
STUDIES = ("kd", "ladd")
PAPER = {"kd": {"plain": "GenEval 0.61 (no KD)", "kd-output-feature-ta": "GenEval 0.66 (multi-level KD + TA scaling)"},
         "ladd": {"base@28": "GenEval 0.66 (28 steps)", "ladd@8": "GenEval 0.63 (8 steps)",
                  "ladd@4": "GenEval 0.61 (4 steps)"}}


@dataclass(frozen=True)
class StudyBudget:
    steps: int = 1900                   # student training steps (every KD arm)
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100
    threads: int = 1                    # torch threads per job (training and scoring; recorded)
    n_per_prompt: int = 4               # GenEval / DPG images per held-out prompt
    prompts_per_tag: int = 12
    fid_n: int = 2000
    sample_steps: int = 20              # sampling steps of the KD study's evaluations
    guidance: float = 3.0
    benchmarks: tuple[str, ...] = ("geneval", "dpg", "fid")
    ladd_steps: int = 300               # LADD / control fine-tuning steps
    base_eval_steps: tuple[int, ...] = (28, 8, 4)
    ladd_eval_steps: tuple[int, ...] = (8, 4)
    name: str = "recipe"


# PAPER-UNKNOWN: the paper's KD and LADD budgets are not given; "recipe" is the world recipe per arm (1900 steps),
# "cpu" what two 1-thread jobs on a 2-core machine finish in about one session per study.
BUDGETS = {"recipe": StudyBudget(),
           "cpu": StudyBudget(steps=1000, warmup=60, fid_n=256, ladd_steps=150, name="cpu")}


@dataclass(frozen=True)
class Job:
    study: str
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}-s{self.seed}"

    def evals(self, b: StudyBudget) -> tuple[int, ...]:
        """The sampling steps this job is scored at."""
        if self.study == "kd":
            return (b.sample_steps,)
        return b.base_eval_steps if self.arm == "base" else b.ladd_eval_steps


@dataclass
class Paths:
    root: Path                          # runs/distill_study: checkpoints, images, per-benchmark records
    results: Path                       # <results>/distill

    def run(self, job: Job) -> Path:
        if job.study == "ladd" and job.arm == "base":
            return self.run(Job("kd", "plain", job.seed))         # the base student is the KD study's plain arm
        return self.root / job.study / job.name

    def eval_dir(self, job: Job, steps: int) -> Path:
        return self.root / job.study / job.name / f"eval@{steps}"

    def record(self, job: Job, steps: int) -> Path:
        tag = f"{job.arm}@{steps}" if job.study == "ladd" else job.arm
        return self.results / job.study / f"{tag}-s{job.seed}.json"

    def teacher_record(self, teacher: Path) -> Path:
        return self.results / "teacher" / f"{teacher.parent.name or teacher.name}.json"


def jobs(study: str, seeds: list[int], arms: list[str] | None = None) -> list[Job]:
    names = list(KD_ARMS if study == "kd" else LADD_ARMS)
    for flag, values in (("--seeds", seeds), ("--arms", arms or [])):
        dup = sorted({str(v) for v in values if values.count(v) > 1})
        if dup:
            raise ValueError(f"{flag}: {', '.join(dup)} given more than once; pass each value once")
    for a in arms or []:
        if a not in names:
            raise ValueError(f"--arms {a}: not an arm of the {study} study; its arms: {', '.join(names)}")
    return [Job(study, a, s) for a in names if not arms or a in arms for s in seeds]


def _common_sets(b: StudyBudget, seed: int, steps: int, sample_steps: int) -> list[str]:
    return ["data=world", f"steps={steps}", f"batch_size={b.batch_size}", f"seed={seed}", f"threads={b.threads}",
            f"sample_steps={sample_steps}", f"sample_guidance={b.guidance}", f"ckpt_every={max(1, steps // 4)}",
            "keep_ckpts=2", "cpu=true", "processes=1"]


def train(job: Job, b: StudyBudget, paths: Paths, teacher: Path) -> Path:
    """Train the job's student (skipped when its pipeline exists; the engine resumes from checkpoints)."""
    run = paths.run(job)
    if (run / "pipeline" / "pipeline.json").exists() or (job.study == "ladd" and job.arm == "base"):
        if not (run / "pipeline" / "pipeline.json").exists():
            raise FileNotFoundError(f"{run / 'pipeline'}: the ladd study starts from the kd study's plain student of "
                                    f"seed {job.seed}; run `--study kd --arms plain --seeds {job.seed}` first")
        return run
    if job.study == "kd":
        sets = _common_sets(b, job.seed, b.steps, b.sample_steps) + [f"lr={b.lr}", f"warmup={b.warmup}"]
        if job.arm == "plain":
            cmd = [sys.executable, "-m", "snapgen.train", "--out", str(run), "--no-progress", "--set", *sets]
        else:
            cmd = [sys.executable, "-m", "snapgen.train_distill", "--stage", "kd", "--teacher", str(teacher),
                   "--out", str(run), "--no-progress", "--set", *sets,
                   *[f"{k}={v}" for k, v in KD_ARMS[job.arm].items()]]
    else:
        base = paths.run(Job("ladd", "base", job.seed)) / "pipeline"
        if not (base / "pipeline.json").exists():
            raise FileNotFoundError(f"{base}: LADD starts from the kd study's plain student of seed {job.seed}; run "
                                    f"`--study kd --arms plain --seeds {job.seed}` first")
        sets = _common_sets(b, job.seed, b.ladd_steps, min(b.ladd_eval_steps))
        cmd = [sys.executable, "-m", "snapgen.train_distill", "--stage", "ladd", "--teacher", str(teacher),
               "--init", str(base), "--out", str(run), "--no-progress", "--set", *sets,
               *[f"{k}={v}" for k, v in (LADD_ARMS[job.arm] or {}).items()]]
    _run(cmd, run / "study.log", b.threads)
    return run


def evaluate(job: Job, b: StudyBudget, paths: Paths, run: Path, steps: int) -> dict[str, Path]:
    """The job's evaluation records at ``steps`` sampling steps (each skipped when it exists)."""
    eb = replace(b, sample_steps=steps)
    return score(LadderJob(job.name, job.seed, "t2i"), eb, run, paths.root / "images", paths.eval_dir(job, steps))


def teacher_identity(teacher: Path) -> dict:
    from snapgen.io import sha256_file, weights_files

    files = weights_files(teacher / "unet") if (teacher / "unet").is_dir() else []
    cfg = teacher / "unet" / "config.json"
    return {"path": str(teacher), "class": json.loads(cfg.read_text()).get("_class_name") if cfg.is_file() else None,
            "weights_sha256": {f.name: sha256_file(f) for f in files}}


def job_record(job: Job, b: StudyBudget, paths: Paths, run: Path, steps: int, evals: dict[str, Path],
               teacher: dict) -> dict:
    from snapgen.records import make_record, read_record

    scores, sources = {}, {}
    for bench, path in evals.items():
        rec = read_record(path)
        sources[bench] = str(path)
        for k, s in rec["scores"].items():
            if bench == "geneval" or k.endswith("overall_x100") or k.startswith(("fid", "kid")):
                scores[k] = s
    arm_sets = KD_ARMS.get(job.arm) if job.study == "kd" else LADD_ARMS.get(job.arm)
    protocol = {"study": job.study, "arm": job.arm, "arm_settings": arm_sets, "seed": job.seed,
                "sample_steps": steps, "budget": asdict(b), "teacher": teacher, "student": "tiny-world",
                "prompts": {"split": "heldout"}}
    details = {"train_wall_s": train_wall_s(run), "run": str(run), "eval_records": sources,
               "units": {"geneval_overall": geneval_units(read_record(evals["geneval"]), evals["geneval"])}
               if "geneval" in evals else {}}
    if job.study == "ladd":
        details["base_train_wall_s"] = train_wall_s(paths.run(Job("ladd", "base", job.seed)))
        disc = run / "discriminator.json"
        details["discriminator"] = json.loads(disc.read_text()) if job.arm != "base" and disc.is_file() else None
    return make_record("distillation", f"{job.study}-{job.arm}@{steps}-s{job.seed}", protocol, scores, details)


def run_job(job: Job, b: StudyBudget, paths: Paths, teacher: Path) -> list[Path]:
    from snapgen.records import write_record

    todo = [s for s in job.evals(b) if not paths.record(job, s).exists()]
    if not todo:
        return [paths.record(job, s) for s in job.evals(b)]
    run = train(job, b, paths, teacher)
    ident = teacher_identity(teacher)
    out = []
    for steps in job.evals(b):
        path = paths.record(job, steps)
        if not path.exists():
            rec = job_record(job, b, paths, run, steps, evaluate(job, b, paths, run, steps), ident)
            write_record(path, rec)
        out.append(path)
    return out


def score_teacher(teacher: Path, b: StudyBudget, paths: Paths) -> Path:
    """The teacher's own held-out scores with the KD study's protocol (its seed-free record)."""
    from snapgen.records import make_record, read_record, write_record

    path = paths.teacher_record(teacher)
    if path.exists():
        return path
    fake_run = teacher.parent                      # score() reads <run>/pipeline: the teacher folder's parent
    if teacher.name != "pipeline":
        raise ValueError(f"--teacher {teacher}: pass a run's pipeline folder (<run>/pipeline) so its training log "
                         "and config sit beside it")
    evals = score(LadderJob("teacher", 0, "t2i"), b, fake_run, paths.root / "images", paths.root / "teacher-eval")
    scores = {k: s for bench, p in evals.items() for k, s in read_record(p)["scores"].items()
              if bench == "geneval" or k.endswith("overall_x100") or k.startswith(("fid", "kid"))}
    protocol = {"study": "teacher", "sample_steps": b.sample_steps, "budget": asdict(b),
                "teacher": teacher_identity(teacher), "prompts": {"split": "heldout"}}
    details = {"train_wall_s": train_wall_s(fake_run), "eval_records": {k: str(v) for k, v in evals.items()},
               "units": {"geneval_overall": geneval_units(read_record(evals["geneval"]), evals["geneval"])}
               if "geneval" in evals else {},
               "train_config": json.loads((fake_run / "train_config.json").read_text())
               if (fake_run / "train_config.json").is_file() else None}
    return write_record(path, make_record("distillation", "teacher", protocol, scores, details))


def write_reports(study: str, b: StudyBudget, paths: Paths, report_root: Path, seed: int = 0,
                  thumb: int = 128) -> list[Path]:
    """Compare reports (``python -m evals.run report A B``) of seed ``seed``'s GenEval records: every KD arm against
    ``plain``; LADD against its control at each sampling-step count. Written to
    ``report_root/distill_<study>/<arm>[@steps]/index.html`` (the distillation table links them)."""
    out = []
    if study == "kd":
        pairs = [(Job("kd", a, seed), Job("kd", "plain", seed), b.sample_steps, a) for a in KD_ARMS if a != "plain"]
    else:
        pairs = [(Job("ladd", "ladd", seed), Job("ladd", "control", seed), s, f"ladd@{s}") for s in b.ladd_eval_steps]
    for job, ref, steps, label in pairs:
        a, r = paths.eval_dir(job, steps) / "geneval.json", paths.eval_dir(ref, steps) / "geneval.json"
        if not (a.exists() and r.exists()):
            continue
        folder = report_root / f"distill_{study}" / label
        _run([sys.executable, "-m", "evals.run", "report", str(a), str(r), "--out", str(folder), "--thumb", str(thumb),
              "--title", f"{label} vs {ref.arm} (seed {seed}, GenEval-world, held-out)"],
             paths.root / study / "reports.log", 1)
        out.append(folder / "index.html")
    return out


def budget_from_args(a) -> StudyBudget:
    base = BUDGETS[a.budget]
    fields = {"steps": a.steps, "ladd_steps": a.ladd_steps, "batch_size": a.batch_size, "threads": a.threads, "fid_n": a.fid_n,
              "sample_steps": a.sample_steps, "prompts_per_tag": a.prompts_per_tag, "n_per_prompt": a.n_per_prompt,
              "guidance": a.guidance, "benchmarks": tuple(a.benchmarks) if a.benchmarks else None,
              "base_eval_steps": tuple(a.base_eval_steps) if a.base_eval_steps else None,
              "ladd_eval_steps": tuple(a.ladd_eval_steps) if a.ladd_eval_steps else None}
    changed = {k: v for k, v in fields.items() if v is not None and v != getattr(base, k)}
    return replace(base, **changed, name=base.name + ("*" if changed else ""))


def main(argv: list[str] | None = None) -> int:
    from snapgen.io import require_path
    from snapgen.paths import results_dir

    p = argparse.ArgumentParser(prog="python -m ablations.distill_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="the world DiT teacher's pipeline folder "
                   "(<run>/pipeline of `python -m snapgen.train --set unet=world-dit-s ...`)")
    p.add_argument("--study", choices=STUDIES, default="kd")
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0, 1, 2], help="training seeds (>= 3)")
    p.add_argument("--arms", nargs="+", default=None, help="only these arms (default: every arm of the study)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="recipe")
    p.add_argument("--steps", type=positive_int, default=None, help="student training steps (kd study)")
    p.add_argument("--ladd-steps", type=positive_int, default=None, help="LADD / control fine-tuning steps")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--fid-n", type=positive_int, default=None)
    p.add_argument("--sample-steps", type=positive_int, default=None, help="sampling steps of the kd study's scores")
    p.add_argument("--prompts-per-tag", type=positive_int, default=None)
    p.add_argument("--n-per-prompt", type=positive_int, default=None)
    p.add_argument("--guidance", type=nonnegative_float, default=None)
    p.add_argument("--benchmarks", nargs="+", choices=("geneval", "dpg", "fid"), default=None)
    p.add_argument("--base-eval-steps", type=positive_int, nargs="+", default=None,
                   help="sampling steps the base student is scored at (ladd study; default 28 8 4)")
    p.add_argument("--ladd-eval-steps", type=positive_int, nargs="+", default=None,
                   help="sampling steps the LADD and control students are scored at (default 8 4)")
    p.add_argument("--no-teacher-score", action="store_true", help="do not score the teacher (rank 0 does by default)")
    p.add_argument("--teacher-only", action="store_true", help="score the teacher (its record) and exit")
    p.add_argument("--reports", action="store_true", help="write the study's compare reports (seed --report-seed) "
                   "under <results>/reports/distill_<study>/ and exit")
    p.add_argument("--report-seed", type=nonnegative_int, default=0)
    p.add_argument("--runs", type=Path, default=Path("runs/distill_study"))
    p.add_argument("--results", type=Path, default=None, help="records root (default <results>/distill)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and the budget, run nothing")
    a = p.parse_args(argv)
    b = budget_from_args(a)
    if "geneval" not in b.benchmarks:
        raise ValueError("--benchmarks: the study's tables need geneval among them")
    teacher = require_path(a.teacher, "teacher pipeline", "Train it first: python -m snapgen.train --out "
                           "runs/distill/teacher-dit-s --set unet=world-dit-s ... (docs/distillation.md)",
                           ("unet",))
    paths = Paths(a.runs, a.results or results_dir("distill"))
    todo = jobs(a.study, a.seeds, a.arms)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    mine = [j for i, j in enumerate(todo) if i % world == rank]
    if a.dry_run:
        print(json.dumps({"budget": asdict(b), "rank": rank, "world": world, "teacher": str(teacher), "jobs": [
            {"job": f"{j.study}/{j.name}", "evals": list(j.evals(b)),
             "records": [str(paths.record(j, s)) for s in j.evals(b)]} for j in mine]}, indent=2))
        return 0
    t0 = time.time()
    if a.reports:
        from snapgen.paths import results_root

        written = write_reports(a.study, b, paths, results_root() / "reports", a.report_seed)
        print("\n".join(str(w) for w in written) or "no arm has both its and its reference's GenEval record yet")
        return 0
    if a.teacher_only:
        print(score_teacher(teacher, b, paths))
        return 0
    if rank == 0 and not a.no_teacher_score:
        print(f"[{rank}/{world}] teacher: {score_teacher(teacher, b, paths)}", flush=True)
    for j in mine:
        t = time.time()
        recs = run_job(j, b, paths, teacher)
        print(f"[{rank}/{world}] {j.study}/{j.name}: {', '.join(str(r) for r in recs)} ({time.time() - t:.0f} s)",
              flush=True)
    print(f"[{rank}/{world}] {len(mine)} job(s) in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
