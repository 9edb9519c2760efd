"""Recipe levers of the world model, measured as paired studies: each cell is the default recipe with one change
(``KEY=VALUE`` fields of ``snapgen.training.t2i.TrainConfig``), trained with the same steps, data order and seeds
as the control (the default recipe), then scored on held-out world prompts; one record per (cell, seed).

    python -m ablations.levers --study lr --cell lr=1e-3 --cell lr=4e-3 --dry-run        # the jobs
    python -m ablations.levers --study lr --cell lr=1e-3 --cell lr=4e-3 --seeds 0 1 2    # run (resumable)
    python -m ablations.levers --study timesteps --cell timesteps=uniform --cell "logit_std=0.5"
    python -m ablations.levers --study width --cell unet=small-world --steps 600 --threads 1
    torchrun --nproc_per_node 2 -m ablations.levers --study lr --cell lr=4e-3            # 2 jobs at a time
    torchrun --nproc_per_node 6 -m ablations.levers --study gpu-batch --train-device cuda --train-only \
        --base "processes=1 batch_size=32" --cell batch_size=128 --seeds 0 1               # train on a GPU box ...
    python -m ablations.levers --study gpu-batch --train-device cuda --base "processes=1 batch_size=32" \
        --cell batch_size=128 --seeds 0 1                  # ... copy its run folders here, score them (no retraining)

A cell may change several fields at once (``--cell "lr=4e-3 warmup=200"``); the control cell ``default`` is always
part of a study: trained by it, or borrowed from another study whose control of that seed has the same recipe,
budget, ``--base``, device and prompts (the job is then done; the table pairs with that record and names it). The
budget is the recipe's (TrainConfig's steps and threads) unless ``--steps``/``--threads`` say otherwise; every cell
of a study gets the same budget (a study refuses to mix budgets: the control would not be paired). ``--base`` changes the recipe of every cell, the control included (e.g. one process of batch 32 on a
one-GPU box, where the recipe's two data-parallel processes cannot share the device); ``--train-device cuda`` trains
on the GPU (the default, ``cpu``, forces CPU); both are part of a study's identity like its budget. With
``--train-only`` the jobs are trained and not scored, so a GPU box without the scoring models can train a study whose
run folders are then scored elsewhere by the same command without ``--train-only`` (a finished run is not
retrained). Each job reuses the ladder's stages (``ablations.ladder``): ``python -m snapgen.train``, then
``python -m evals.run geneval`` (held-out prompts) and ``fid --ref world``, each resumable.

Records: kind ``lever``, ``<results>/world/levers/<study>/<cell>-s<seed>.json`` with the cell's overrides, the
budget, the training wall time, the GenEval-world units (task -> prompt -> accuracy) and FID-world; the table
``results/tables/levers.md`` (``ablations.tables.levers``) gives each cell's paired difference to the control with
a CI over seeds and prompts. ``docs/world.md`` lists what was tried.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ablations.ladder import Budget, _run, geneval_units, quality_scores, run_sharded, score, train_wall_s
from snapgen.cli import nonnegative_int, positive_int

CONTROL = "default"
# fields a cell may not change: they name the run or its identity, not the recipe
FIXED = ("out", "seed", "world_seed", "stop_at", "log_every", "ckpt_every", "keep_ckpts", "cpu", "data", "latent_cache")


@dataclass(frozen=True)
class LeverJob:
    study: str
    cell: str                           # "default" or the cell's name (its overrides, "key=value+key=value")
    overrides: tuple[str, ...]
    seed: int
    base: tuple[str, ...] = ()          # --base: overrides of every cell of the study (the control's recipe)
    ladder: str = "t2i"                 # what ablations.ladder.score needs: the text-to-image benchmarks

    @property
    def name(self) -> str:
        return f"{self.cell}-s{self.seed}"


def cell_name(overrides: tuple[str, ...]) -> str:
    """A file-safe name of a cell's overrides: ``lr=4e-3`` -> ``lr=4e-3``; several joined by ``+``."""
    name = "+".join(overrides)
    return re.sub(r"[^A-Za-z0-9=+._-]", "_", name)


def _overrides(flag: str, text: str) -> tuple[str, ...]:
    """``KEY=VALUE`` items of one ``--cell`` / ``--base`` value, each a recipe field (not FIXED), each once."""
    items = tuple(x for x in text.split() if x)
    keys = [i.split("=", 1)[0] for i in items]
    for item, key in zip(items, keys):
        if "=" not in item:
            raise ValueError(f"{flag} {text!r}: {item!r} is not KEY=VALUE (e.g. {flag} lr=4e-3)")
        if key in FIXED:
            raise ValueError(f"{flag} {text!r}: {key} names the run, not the recipe; a lever cannot change it "
                             f"(fixed fields: {', '.join(FIXED)})")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{flag} {text!r}: a field is given twice; give each once")
    return items


def parse_base(text: str) -> tuple[str, ...]:
    """``--base`` -> the overrides every cell starts from (checked against TrainConfig)."""
    from snapgen.training.config import apply_overrides
    from snapgen.training.t2i import TrainConfig

    items = _overrides("--base", text)
    try:
        apply_overrides(TrainConfig(), items)
    except ValueError as e:
        raise ValueError(f"--base {text!r}: {e}") from None
    return items


def parse_cells(cells: list[str], base: tuple[str, ...] = ()) -> list[tuple[str, tuple[str, ...]]]:
    """``--cell`` values -> [(name, overrides)], the control first; each override checked against TrainConfig (on
    top of ``base``, the study's ``--base`` overrides)."""
    from snapgen.training.config import apply_overrides
    from snapgen.training.t2i import TrainConfig

    recipe = apply_overrides(TrainConfig(), base)
    out = [(CONTROL, ())]
    for text in cells:
        items = _overrides("--cell", text)
        if not items:
            raise ValueError("--cell '': empty cell; pass KEY=VALUE fields of the training config, e.g. --cell lr=4e-3")
        try:
            cfg = apply_overrides(recipe, items)
        except ValueError as e:
            raise ValueError(f"--cell {text!r}: {e}") from None
        if cfg == recipe:
            raise ValueError(f"--cell {text!r}: equals the {'study' if base else 'default'} recipe (the control cell "
                             "is always run)")
        name = cell_name(items)
        if name in [n for n, _ in out]:
            raise ValueError(f"--cell {text!r} is given twice; each cell once")
        out.append((name, items))
    return out


def jobs(study: str, cells: list[tuple[str, tuple[str, ...]]], seeds: list[int],
         base: tuple[str, ...] = ()) -> list[LeverJob]:
    """Seed-major (every cell of seed 0 first), so a partial study already has paired cells."""
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ValueError(f"--seeds: {', '.join(map(str, dup))} given more than once; pass each seed once")
    return [LeverJob(study, name, ov, s, base) for s in seeds for name, ov in cells]


def recipe_budget(steps: int | None, threads: int | None, fid_n: int, sample_steps: int | None,
                  prompts_per_tag: int, n_per_prompt: int, benchmarks: tuple[str, ...] = ("geneval", "fid")) -> Budget:
    """The ladder's Budget with the recipe's training (TrainConfig) and this study's scoring."""
    from snapgen.training.t2i import TrainConfig

    d = TrainConfig()
    return Budget(steps=steps or d.steps, batch_size=d.batch_size, lr=d.lr, warmup=d.warmup,
                  threads=threads or d.threads, n_per_prompt=n_per_prompt, prompts_per_tag=prompts_per_tag,
                  fid_n=fid_n, sample_steps=sample_steps or d.sample_steps, guidance=d.sample_guidance,
                  benchmarks=tuple(benchmarks), name="recipe" if steps in (None, d.steps) else f"recipe@{steps}")


@dataclass
class Paths:
    runs: Path
    results: Path

    def run(self, j: LeverJob) -> Path:
        return self.runs / j.study / j.name

    def record(self, j: LeverJob) -> Path:
        return self.results / j.study / f"{j.name}.json"

    def images(self, j: LeverJob) -> Path:
        return self.runs / j.study / "images"


def train(j: LeverJob, b: Budget, paths: Paths, device: str = "cpu") -> Path:
    """``python -m snapgen.train`` with the recipe, the study's ``--base``, the cell's overrides, the study's steps and
    the job's seed; warm-up and schedule scale with the steps only through the overrides (the recipe's warm-up is
    kept). ``device="cuda"`` leaves out ``cpu=true`` (the run trains on the GPU when one exists)."""
    run = paths.run(j)
    keys = {o.split("=", 1)[0] for o in j.overrides}
    base = [f"steps={b.steps}", f"threads={b.threads}", f"seed={j.seed}", "keep_ckpts=2",
            f"ckpt_every={max(1, b.steps // 4)}"] + (["cpu=true"] if device == "cpu" else [])
    if b.warmup > b.steps and "warmup" not in keys | {o.split("=", 1)[0] for o in j.base}:
        base.append(f"warmup={b.steps}")
    study = [o for o in j.base if o.split("=", 1)[0] not in keys]
    study_keys = keys | {o.split("=", 1)[0] for o in study}
    sets = [s for s in base if s.split("=", 1)[0] not in study_keys] + study + list(j.overrides)
    check_run_recipe(run, {s.split("=", 1)[0] for s in sets})
    if (run / "pipeline" / "pipeline.json").exists():
        return run
    _run([sys.executable, "-m", "snapgen.train", "--out", str(run), "--no-progress", "--set", *sets],
         run / "levers.log", b.threads)
    return run


def check_run_recipe(run: Path, set_keys: set[str]) -> None:
    """A run folder from an earlier session (finished, or to be resumed) must have been trained from today's
    TrainConfig defaults in every field the study does not set, else its record would claim a recipe it was not
    trained with (``recipe_defaults`` is written with the record)."""
    from snapgen.training.t2i import stored_recipe

    cfg = run / "train_config.json"
    if not cfg.is_file():
        return
    saved, now = stored_recipe(json.loads(cfg.read_text())), recipe_defaults()
    diff = sorted(k for k in now if k not in set_keys and saved.get(k) != now[k])
    if diff:
        raise ValueError(f"{run} was trained from other TrainConfig defaults ({', '.join(diff)}); delete that folder "
                         "to retrain it, or start another --study name")


def job_record(j: LeverJob, b: Budget, run: Path, evals: dict[str, Path], device: str = "cpu") -> dict:
    from snapgen.records import make_record, read_record

    scores = quality_scores(evals)
    protocol = {"study": j.study, "cell": j.cell, "overrides": list(j.overrides), "control": CONTROL, "seed": j.seed,
                "budget": asdict(b), "recipe_defaults": recipe_defaults(), "prompts": {"split": "heldout"},
                "base": list(j.base), "train_device": device}
    stored = json.loads((run / "train_config.json").read_text())
    details = {"train_wall_s": train_wall_s(run), "run": str(run),
               "eval_records": {k: str(v) for k, v in evals.items()},
               "units": {"geneval_overall": geneval_units(read_record(evals["geneval"]), evals["geneval"])},
               "train_config": stored}
    return make_record("lever", f"{j.study}-{j.name}", protocol, scores, details)


def recipe_defaults() -> dict:
    """TrainConfig's defaults (the recipe every cell starts from), as a record holds them."""
    from snapgen.training.t2i import TrainConfig, stored_recipe

    return json.loads(json.dumps(stored_recipe(TrainConfig().to_dict())))


def check_budget(paths: Paths, study: str, b: Budget, base: tuple[str, ...] = (), device: str = "cpu") -> None:
    """Every record of a study has one budget and one recipe: refuse to add jobs paired against the control of another
    budget, of another recipe (TrainConfig's defaults changed since the study's first records), of another
    ``--base`` or trained on another device."""
    from snapgen.records import read_record

    folder = paths.results / study
    now = json.loads(json.dumps(asdict(b)))            # as a record holds it (tuples are lists)
    recipe = recipe_defaults()
    from snapgen.training.t2i import stored_recipe

    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        protocol = read_record(p)["protocol"]
        if "recipe_defaults" not in protocol:
            raise ValueError(f"--study {study}: {p} does not say which TrainConfig defaults it was trained from, so "
                             "no new cell can be paired with it; start another --study name")
        # fields added to TrainConfig since the record was written count with their LEGACY_VALUES
        other, other_recipe = protocol["budget"], stored_recipe(protocol["recipe_defaults"])
        if other_recipe != recipe:
            diff = sorted(k for k in set(other_recipe) | set(recipe) if other_recipe.get(k) != recipe.get(k))
            raise ValueError(f"--study {study}: {p} was trained from another recipe (TrainConfig defaults differ in "
                             f"{', '.join(diff)}); a cell is paired only with a control of the same recipe: start "
                             "another --study name")
        if list(protocol.get("base", [])) != list(base):
            raise ValueError(f"--base: {p} was trained with --base {' '.join(protocol.get('base', [])) or '(none)'!r}, "
                             f"not {' '.join(base) or '(none)'!r}; pass the study's --base or another --study name")
        if protocol.get("train_device", "cpu") != device:
            raise ValueError(f"--train-device {device}: {p} was trained on {protocol.get('train_device', 'cpu')}; a "
                             "study's cells are paired only when trained alike: pass that device or another --study name")
        if other != now:
            diff = {k: (other.get(k), v) for k, v in now.items() if other.get(k) != v}
            raise ValueError(f"--study {study}: {p} was run with another budget ({', '.join(f'{k}: {o} there, {n} now' for k, (o, n) in diff.items())}); "
                             "pass the same --steps/--threads/... or another --study name")


def borrowed_control(j: LeverJob, b: Budget, paths: Paths, device: str = "cpu") -> Path | None:
    """Another study's control record that this control job would equal (``ablations.tables.levers.control_identity``:
    the same recipe, budget, ``--base``, device, seed and prompts): the job is then done without training, and the
    table pairs the study's cells with that record. None for a cell, or when no study has such a control."""
    from ablations.tables.levers import shared_control
    from snapgen.records import read_records

    if j.cell != CONTROL or paths.record(j).exists() or not paths.results.is_dir():
        return None
    protocol = {"cell": CONTROL, "seed": j.seed, "budget": json.loads(json.dumps(asdict(b))),
                "recipe_defaults": recipe_defaults(), "prompts": {"split": "heldout"}, "base": list(j.base),
                "train_device": device}
    studies = {p.name: read_records(p) for p in sorted(paths.results.iterdir())
               if p.is_dir() and p.name != j.study and (p / f"{j.name}.json").is_file()}
    found = shared_control(studies, j.study, protocol)
    return Path(found[0]) if found else None


def run_job(j: LeverJob, b: Budget, paths: Paths, device: str = "cpu", train_only: bool = False) -> Path | None:
    from snapgen.records import write_record

    if paths.record(j).exists():
        return paths.record(j)
    if (shared := borrowed_control(j, b, paths, device)) is not None:
        return shared
    run = train(j, b, paths, device)
    if train_only:
        return None
    check_trained_on(run, device)
    return write_record(paths.record(j), job_record(j, b, run, score(j, b, run, paths.images(j)), device))


def check_trained_on(run: Path, device: str) -> None:
    """A run folder scored under ``--train-device D`` must have been trained on D (a GPU study's folders are copied
    from the GPU box; a CPU run must not be recorded as a GPU one, nor the reverse)."""
    env = json.loads((run / "train_config.json").read_text()).get("environment") or {}
    trained = "cuda" if str(env.get("device", "cpu")).startswith("cuda") else "cpu"
    if trained != device:
        raise ValueError(f"{run} was trained on {trained} (its train_config.json), not on --train-device {device}; "
                         "pass the device it was trained on, or delete the folder to retrain it")


def main(argv: list[str] | None = None) -> int:
    from snapgen.paths import results_dir

    p = argparse.ArgumentParser(prog="python -m ablations.levers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, help="name of the study (a folder of records): e.g. lr, timesteps")
    p.add_argument("--cell", action="append", default=[], metavar="'KEY=VALUE [KEY=VALUE ...]'",
                   help="one changed recipe (TrainConfig fields); repeat for more cells; the default is the control")
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0, 1, 2], help="training seeds (>= 3 for the table)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps of every cell (default: the recipe's)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads per job (default: the recipe's)")
    p.add_argument("--fid-n", type=positive_int, default=512, help="FID-world generated images = held-out renders")
    p.add_argument("--sample-steps", type=positive_int, default=None, help="sampling steps (default: the recipe's)")
    p.add_argument("--prompts-per-tag", type=positive_int, default=12, help="held-out prompts per GenEval task")
    p.add_argument("--n-per-prompt", type=positive_int, default=8,
                   help="GenEval images per prompt (default 8, the world's default; studies begun before it used 4: "
                        "pass --n-per-prompt 4 to add to them)")
    p.add_argument("--benchmarks", nargs="+", choices=("geneval", "fid"), default=["geneval", "fid"],
                   help="held-out GenEval-world is always scored (the paired table reads it); FID-world is optional")
    p.add_argument("--runs", type=Path, default=Path("runs/levers"), help="checkpoints, images, per-benchmark records")
    p.add_argument("--results", type=Path, default=None, help="lever records (default <results>/world/levers)")
    p.add_argument("--base", default="", metavar="'KEY=VALUE [KEY=VALUE ...]'",
                   help="recipe changes of every cell, the control too (e.g. 'processes=1 batch_size=32' on one GPU)")
    p.add_argument("--train-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the jobs train (default cpu: forced even on a GPU box); scoring runs on the CPU")
    p.add_argument("--train-only", action="store_true",
                   help="train the jobs, score nothing (a GPU box without the scoring models; score elsewhere later)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and the budget, run nothing")
    a = p.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", a.study):
        raise ValueError(f"--study {a.study!r}: use letters, digits, '.', '_' or '-' (it names a folder)")
    if not a.cell:
        raise ValueError("--cell: give at least one changed recipe, e.g. --cell lr=4e-3 (the default is the control)")
    base = parse_base(a.base)
    cells = parse_cells(a.cell, base)
    if "geneval" not in a.benchmarks:
        raise ValueError("--benchmarks: must include geneval (the table pairs cells with the control on GenEval-world)")
    b = recipe_budget(a.steps, a.threads, a.fid_n, a.sample_steps, a.prompts_per_tag, a.n_per_prompt,
                      tuple(dict.fromkeys(a.benchmarks)))
    paths = Paths(a.runs, a.results or results_dir("world") / "levers")
    check_budget(paths, a.study, b, base, a.train_device)

    def done(j: LeverJob) -> bool:
        return paths.record(j).exists() or borrowed_control(j, b, paths, a.train_device) is not None

    return run_sharded(jobs(a.study, cells, a.seeds, base),
                       lambda j: run_job(j, b, paths, a.train_device, a.train_only),
                       lambda j: {"job": j.name, "overrides": list(j.overrides),
                                  "record": str(borrowed_control(j, b, paths, a.train_device) or paths.record(j)),
                                  "done": done(j)}, a.dry_run,
                       {**asdict(b), "base": list(base), "train_device": a.train_device}, done=done)


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
