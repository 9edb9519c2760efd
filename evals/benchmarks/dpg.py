"""DPG-Bench: 1065 dense prompts x 4 images tiled 2x2, yes/no VQA questions with a dependency graph.

    python -m evals.run dpg --ckpt world-tiny                                   # world questions, exact VQA, CPU
    python -m evals.run dpg --ckpt PIPE --dpg-csv dpg_bench.csv --vqa /models/blip-vqa-base
    python -m evals.run dpg --images GRIDS --dpg-csv dpg_bench.csv --vqa mplug:/models/mplug_large --mode official

Layout (official): one ``<item_id>.png`` 2x2 grid per prompt in ``<run>/grids/``; the four tiles are
kept in ``<run>/tiles/<item_id>/<k>.png`` (tile k = row-major TL, TR, BL, BR), seed
``sample_seed(item_id, k, base_seed)``. Resumable: an existing grid is not regenerated, tiles are
written atomically before their grid. World generators get a DPG question set built from the world's
GenEval-style prompt set (``evals.dpg.world.make_world_dpg``), written to ``<run>/dpg_bench.csv``.
``--mode both`` (default) scores the same VQA answers under the official rules (with their bugs)
and the fixed rules; every score is labelled with its mode.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

from snapgen.cli import positive_int
from evals.api import Benchmark, Metric, Plan, Scored, register
from evals.benchmarks.common import (add_generation_args, add_world_prompt_args, domain_of, generation_key,
                                     prompts_card, record_path, slug, split_protocol, split_suffix,
                                     world_prompt_set)
from evals.records import bootstrap_ci, prompt_set_hash
from snapgen.paths import display

NAME = "dpg"
HELP = "DPG-Bench (dense prompts, VQA questions with dependencies; official + fixed rules)"
L1 = ("entity", "attribute", "relation", "global", "other")      # = evals.dpg.scoring.L1_CATEGORIES
OFFICIAL_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "dpg_bench" / "prompts"


def add_arguments(p) -> None:
    add_generation_args(p, n_per_prompt=4)
    e = p.add_argument_group("evaluator")
    e.add_argument("--dpg-csv", default=None, help="DPG-Bench question file dpg_bench.csv (ELLA repo, not shipped; "
                   "default for world generators: the world question set written next to the images)")
    e.add_argument("--vqa", default=None, help="world | DIR (local transformers VQA folder: BLIP/ViLT) | "
                   "mplug:DIR (official mPLUG-large, needs modelscope); default: world for world generators")
    e.add_argument("--mode", choices=("official", "fixed", "both"), default="both",
                   help="official: the ELLA scorer with its bugs; fixed: corrected rules; both: report both")
    e.add_argument("--prompts-dir", default=None, help="folder of <item_id>.txt prompts (default: the official 1065)")
    e.add_argument("--tile-size", type=positive_int, default=None, help="--images: expected tile side (checked); "
                   "default: the generator's resolution, unchecked for --images")
    add_world_prompt_args(e)


# ----------------------------------------------------------------------------- prompts and questions


def _natural(item_id: str):
    return (0, int(item_id), "") if item_id.isdigit() else (1, 0, item_id)


def official_items(prompts_dir: str | Path | None = None) -> list[tuple[str, str, None]]:
    """``[(item_id, prompt, None)]`` from ``<item_id>.txt`` files, numeric ids first in numeric order."""
    root = Path(prompts_dir) if prompts_dir else OFFICIAL_PROMPTS
    files = sorted(root.glob("*.txt"), key=lambda f: _natural(f.stem))
    if not files:
        raise FileNotFoundError(f"no DPG-Bench prompt files (<item_id>.txt) in '{root}'")
    return [(f.stem, f.read_text(encoding="utf-8").strip(), None) for f in files]


def world_items(args) -> tuple[list[tuple[str, str, dict]], list[dict], str]:
    """World prompt set of the options -> ``([(item_id, prompt, metadata)], DPG CSV rows, source)``."""
    from evals.dpg.world import make_world_dpg

    metadata, source = world_prompt_set(args)
    prompts, rows = make_world_dpg(metadata)
    return [(item_id, prompt, m) for (item_id, prompt), m in zip(prompts.items(), metadata)], rows, source


def _check_coverage(questions: dict, item_ids: list[str], limited: bool) -> dict:
    """Restrict questions to the generated items; an item of the CSV without a prompt is an error
    unless --limit cut it. Returns the restricted questions."""
    wanted = set(item_ids)
    missing = sorted(set(questions) - wanted)
    if missing and not limited:
        raise ValueError(f"{len(missing)} question items have no prompt file, e.g. {missing[:5]}: the question "
                         "CSV and the prompts folder are from different DPG-Bench versions")
    return {k: v for k, v in questions.items() if k in wanted}


# ----------------------------------------------------------------------------- generation


def grid_side(n_per_prompt: int) -> int:
    side = math.isqrt(n_per_prompt)
    if side * side != n_per_prompt:
        raise ValueError(f"DPG-Bench tiles images into a square grid; --n-per-prompt {n_per_prompt} is not a square")
    return side


def dpg_jobs(items: list[tuple[str, str, dict | None]], run_dir: Path, n_per_prompt: int, base_seed: int,
             skip_done: bool = True):
    """Tile jobs of the items whose grid does not exist yet (every item's with ``skip_done=False``)."""
    from evals.generate import Job
    from snapgen.pipeline import sample_seed

    jobs = []
    for index, (item_id, prompt, meta) in enumerate(items):
        if skip_done and (run_dir / "grids" / f"{item_id}.png").exists():
            continue
        for k in range(n_per_prompt):
            jobs.append(Job(index, k, prompt, sample_seed(item_id, k, base_seed),
                            run_dir / "tiles" / item_id / f"{k}.png", meta))
    return jobs


def compose_grids(items: list[tuple[str, str, dict | None]], run_dir: Path, n_per_prompt: int) -> int:
    """Tile each missing grid from its tiles (row-major); returns how many grids were written."""
    from PIL import Image

    from snapgen.io import atomic_save_image

    side, written = grid_side(n_per_prompt), 0
    for item_id, _, _ in items:
        grid_path = run_dir / "grids" / f"{item_id}.png"
        if grid_path.exists():
            continue
        tiles = [Image.open(run_dir / "tiles" / item_id / f"{k}.png").convert("RGB") for k in range(n_per_prompt)]
        w, h = tiles[0].size
        if any(t.size != (w, h) for t in tiles):
            raise ValueError(f"item {item_id}: tiles of different sizes {[t.size for t in tiles]}")
        grid = Image.new("RGB", (side * w, side * h))
        for k, tile in enumerate(tiles):
            grid.paste(tile, ((k % side) * w, (k // side) * h))
        atomic_save_image(grid_path, grid)
        written += 1
    return written


def generate_grids(gen, items, run_dir: Path, args, jobs=None) -> dict:
    from evals.generate import run_jobs, shard_info, wait_for_shards

    jobs = dpg_jobs(items, run_dir, args.n_per_prompt, args.seed) if jobs is None else jobs
    counts = run_jobs(jobs, gen.generate, args.batch_size, progress=not args.no_progress)
    wait_for_shards(jobs)
    counts["grids_written"] = compose_grids(items, run_dir, args.n_per_prompt) if shard_info()[0] == 0 else 0
    counts["grids_reused"] = len(items) - len(jobs) // max(args.n_per_prompt, 1)
    print(f"images: {counts['grids_reused']} grids reused, {counts['generated']} tiles generated, "
          f"{counts['grids_written']} grids written -> {run_dir / 'grids'}")
    return counts


# ----------------------------------------------------------------------------- scoring


class AnswerMemo:
    """Asks the VQA model each (tile, question) once, so both modes score the very same answers."""

    def __init__(self, vqa):
        self.vqa, self.memo, self.calls = vqa, {}, 0

    def answer(self, image, question: str) -> str:
        key = (hashlib.sha256(image.tobytes()).hexdigest(), image.size, image.mode, question)
        if key not in self.memo:
            self.memo[key] = self.vqa.answer(image, question)
            self.calls += 1
        return self.memo[key]

    def info(self) -> dict:
        return self.vqa.info() if hasattr(self.vqa, "info") else {"name": type(self.vqa).__name__}


def load_vqa(spec: str | None, domain: str, device: str = "cpu"):
    spec = spec or ("world" if domain == "world" else None)
    if spec is None:
        raise ValueError("--vqa is required for non-world images: DIR (a local transformers VQA folder saved with "
                         "save_pretrained, e.g. Salesforce/blip-vqa-base) or mplug:DIR (the official mPLUG-large, "
                         "needs modelscope)")
    if spec == "world":
        from evals.dpg.world import WorldVQA

        return WorldVQA()
    if spec.startswith("mplug:"):
        from evals.dpg.vqa import MPlugVQA

        return MPlugVQA(spec.split(":", 1)[1], device=device)
    from evals.dpg.vqa import TransformersVQA

    return TransformersVQA.from_pretrained(spec, device=device)


def mode_scores(rows: list[dict], summary: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """One mode's summary + a bootstrap 95% CI (x100) of the overall score over scored prompts."""
    ok = [r["prompt_score"] for r in rows if r["status"] == "ok"]
    lo, hi = bootstrap_ci(ok, n_boot=n_boot, seed=seed)
    out = {k: v for k, v in summary.items() if k not in ("images_dir", "vqa")}
    out["overall_ci95_x100"] = [lo * 100, hi * 100]
    out["prompt_scores_x100"] = {r["item_id"]: (r["prompt_score"] * 100 if r["status"] == "ok" else None)
                                 for r in rows}
    return out


def score_modes(folder: Path, questions: dict, vqa, modes: tuple[str, ...], tile_size: int | None,
                grid: int, progress: bool) -> tuple[list[dict], dict]:
    from evals.dpg.scoring import score_folder

    all_rows, scores = [], {}
    for mode in modes:
        rows, summary = score_folder(folder, questions[mode], vqa, mode, grid=grid, tile_size=tile_size,
                                     progress=progress)
        scores[mode] = mode_scores(rows, summary)
        all_rows.extend(rows)
    return all_rows, scores


# ----------------------------------------------------------------------------- run


def _setup(args, gen):
    """(items or None, prompt source, run dir, grids folder, csv path, world CSV rows or None)."""
    domain = domain_of(gen, args, "vqa")
    if args.images:
        return None, None, None, Path(args.images), args.dpg_csv, None
    world_rows = None
    if domain == "world" and not args.dpg_csv:
        items, world_rows, source = world_items(args)
    else:
        items, source = official_items(args.prompts_dir), str(args.prompts_dir or "official-1065")
    items = items[: args.limit] if args.limit else items
    key = generation_key(gen.protocol(), prompt_set_hash([list(i[:2]) for i in items]), args.n_per_prompt, args.seed)
    run_dir = Path(args.images_root) / "dpg" / f"{slug(gen.name)}-{key}"
    csv_path = args.dpg_csv or run_dir / "dpg_bench.csv"
    return items, source, run_dir, run_dir / "grids", csv_path, world_rows


class DPGBench(Benchmark):
    """DPG-Bench: dense prompts tiled 2x2, VQA questions with a dependency graph (official + fixed rules).

    python -m evals.run dpg --ckpt world-tiny
    python -m evals.run dpg --ckpt PIPE --dpg-csv dpg_bench.csv --vqa /models/blip-vqa-base
    """

    name, help, n_per_prompt, table = NAME, HELP, 4, "dpg"
    metrics = tuple(Metric(f"dpg_{m}_{c}_x100", True, "x100", f"{c} score, {m} rules")
                    for m in ("official", "fixed") for c in ("overall", *L1)) + (
        Metric("dpg_*", True, "x100", "other DPG-Bench categories"),)

    def add_arguments(self, p) -> None:
        add_arguments(p)

    def plan(self, args, gen) -> Plan:
        from evals.dpg.scoring import MODES, load_questions

        grid = grid_side(args.n_per_prompt)
        if args.dpg_csv and not Path(args.dpg_csv).expanduser().is_file():     # --dry-run checks it too
            from evals.dpg.scoring import CSV_SOURCE_HINT

            raise FileNotFoundError(f"--dpg-csv {args.dpg_csv}: no such file. {CSV_SOURCE_HINT}")
        items, source, run_dir, folder, csv_path, world_rows = _setup(args, gen)
        modes = MODES if args.mode == "both" else (args.mode,)
        name = f"{slug(gen.name if gen else folder.name)}-dpg{split_suffix(args)}"
        gen_protocol = gen.protocol() if gen else {"generator": "external images", "images": str(folder)}
        info = {"prompts": source, "questions": str(csv_path), "n_prompts": len(items) if items else None,
                "modes": modes, "generator": gen_protocol}
        state = {"items": items, "source": source, "run_dir": run_dir, "csv_path": csv_path, "modes": modes,
                 "grid": grid, "gen": gen, "gen_protocol": gen_protocol}
        jobs = all_jobs = None
        if not args.dry_run:
            if world_rows is not None:
                _write_csv_if_changed(world_rows, csv_path)
            questions = {m: load_questions(csv_path, m) for m in modes}   # a missing CSV fails before generating
            state["vqa"] = AnswerMemo(load_vqa(args.vqa, domain_of(gen, args, "vqa"), args.device))
            if gen is not None:
                questions = {m: _check_coverage(q, [i[0] for i in items], bool(args.limit)) for m, q in questions.items()}
            elif args.limit:
                keep = set(list(questions[modes[-1]])[: args.limit])      # the same items in every mode
                questions = {m: {k: v for k, v in q.items() if k in keep} for m, q in questions.items()}
            state["questions"] = questions
        if gen is not None:
            jobs = dpg_jobs(items, run_dir, args.n_per_prompt, args.seed)
            all_jobs = dpg_jobs(items, run_dir, args.n_per_prompt, args.seed, skip_done=False)
        return Plan(name, record_path(args, "dpg", name), folder, jobs, {}, info, state, all_jobs)

    def generate(self, plan, gen, args) -> dict:
        return generate_grids(gen, plan.state["items"], plan.state["run_dir"], args, plan.jobs)

    def score(self, plan, args) -> Scored:
        st, gen = plan.state, plan.state["gen"]
        tile_size = args.tile_size or (gen.resolution if gen else None)
        rows, scores = score_modes(plan.folder, st["questions"], st["vqa"], st["modes"], tile_size, st["grid"],
                                   not args.no_progress)
        plan.protocol.update(_protocol(args, st["gen_protocol"], gen, st["items"], st["source"], plan.folder,
                                       st["csv_path"], st["questions"], st["vqa"], st["modes"], st["grid"]))
        details = {"modes": {m: {k: v for k, v in s.items() if k not in ("overall_x100", "overall_ci95_x100")}
                             for m, s in scores.items()}, "vqa_calls": st["vqa"].calls}
        return Scored(self.scores_of(scores), rows, details, _summary_lines(scores))

    def scores_of(self, scores: dict) -> dict:
        out = {}
        for mode, s in scores.items():
            n = s["n_scored"]
            if s["overall_x100"] is None:
                raise ValueError(f"DPG-Bench [{mode}]: no prompt could be scored ({s['n_failed']} failed); "
                                 f"see the failures in {s.get('failed')}")
            out[f"dpg_{mode}_overall_x100"] = self.make_score(f"dpg_{mode}_overall_x100", s["overall_x100"],
                                                              s["overall_ci95_x100"], n)
            for c, v in s["categories_x100"].items():
                if v is not None:
                    out[f"dpg_{mode}_{c}_x100"] = self.make_score(f"dpg_{mode}_{c}_x100", v, None,
                                                                  s["category_counts"][c])
        return out

    def units(self, rows: list[dict]) -> dict:
        """Per-prompt score x100 of each mode (the overall is their mean)."""
        out: dict[str, dict] = {}
        for r in rows:
            if r["status"] == "ok":
                out.setdefault(f"dpg_{r['mode']}_overall_x100", {"all": {}})["all"][str(r["item_id"])] = \
                    r["prompt_score"] * 100
        return out


def _split_of(args, gen, source) -> str:
    if source and str(source).startswith("world:"):
        return args.world_split
    return "user" if (args.images or args.prompts_dir) else "official"


def _write_csv_if_changed(rows: list[dict], path: Path) -> None:
    import tempfile

    from evals.dpg.world import write_dpg_csv

    with tempfile.TemporaryDirectory() as tmp:
        text = write_dpg_csv(rows, Path(tmp) / "q.csv").read_text()
    if not path.exists() or path.read_text() != text:
        write_dpg_csv(rows, path)


def _protocol(args, gen_protocol, gen, items, source, folder, csv_path, questions, vqa, modes, grid) -> dict:
    from evals.dpg.scoring import ANSWER_RULES
    from snapgen.io import sha256_file, sha256_json

    csv_sha = sha256_file(csv_path)
    scored = sorted(set().union(*(set(q) for q in questions.values())), key=_natural)
    sampler, generator = split_protocol(gen_protocol)
    return {"sampler": sampler, "generator": generator, "images_per_prompt": args.n_per_prompt if gen else None,
            "grid": f"{grid}x{grid}", "seed_scheme": "sha256(item_id, sample_index, base_seed)",
            "base_seed": args.seed, "prompt_source": source, "limit": args.limit, "images_dir": display(folder),
            "questions_csv": display(csv_path), "questions_sha256": csv_sha,
            "prompt_set_sha256": sha256_json([csv_sha, scored]), "n_prompts": len(scored),
            "prompts": prompts_card(_split_of(args, gen, source), len(scored), source),
            "prompts_sha256": prompt_set_hash([list(i[:2]) for i in items]) if items else None,
            "resolution": gen.resolution if gen else None,
            "evaluator": {"rules": "DPG-Bench (TencentQQGYLab/ELLA dpg_bench/compute_dpg_bench.py)",
                          "vqa": vqa.info(), "answer_rules": {m: ANSWER_RULES[m] for m in modes}},
            "scoring_mode": "+".join(modes),
            "bootstrap": {"n": 1000, "seed": 0, "unit": "prompt", "statistic": "mean prompt score x100"}}


def _summary_lines(scores: dict) -> list[str]:
    lines = []
    for mode, s in scores.items():
        lo, hi = s["overall_ci95_x100"]
        cats = "  ".join(f"{c} {v:.1f}" for c, v in s["categories_x100"].items() if v is not None)
        overall = "n/a" if s["overall_x100"] is None else f"{s['overall_x100']:.2f}"
        lines.append(f"DPG-Bench [{mode}] overall {overall} [95% CI {lo:.2f}, {hi:.2f}]  "
                     f"({s['n_scored']} prompts scored, {s['n_failed']} failed)  {cats}")
    return lines


BENCHMARK = register(DPGBench())
