"""GenEval: 553 compositional prompts x 4 images, detector + CLIP colour rules (official thresholds).

    python -m evals.run geneval --ckpt world-tiny                         # synthetic world, exact detector, CPU
    python -m evals.run geneval --ckpt PIPE --detector mask2former:DIR --clip-weights ViT-L-14.pt
    python -m evals.run geneval --images OUTDIR --detector mask2former:DIR --clip-weights ViT-L-14.pt
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from evals.api import Benchmark, Metric, Plan, Scored, register
from evals.benchmarks.common import (add_generation_args, add_world_prompt_args, domain_of, generation_key,
                                     prompts_card, record_path, resolve_n_per_prompt, slug, split_protocol,
                                     split_suffix, world_prompt_set)
from evals.records import prompt_set_hash, two_stage_ci
from snapgen.paths import display

NAME = "geneval"
HELP = "GenEval (compositional: objects, counts, colours, positions)"
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
OFFICIAL_METADATA = Path(__file__).resolve().parents[1] / "data" / "geneval" / "evaluation_metadata.jsonl"


# The world's held-out set has 44 prompts (GenEval's file has 553), and five of its six tasks are a census of 2-12
# prompts, so the CI's width comes from the images each prompt gets, and an image bootstrap over 4 images
# under-states it (a prompt whose 4 images agree adds no width): world generators default to 8 (docs/world.md).
WORLD_N_PER_PROMPT = 8


def add_arguments(p) -> None:
    add_generation_args(p, n_per_prompt=4, world_n_per_prompt=WORLD_N_PER_PROMPT)
    e = p.add_argument_group("evaluator")
    e.add_argument("--prompts", default=None, help="evaluation_metadata.jsonl (default: official 553, or the world's set "
                   "for world generators)")
    e.add_argument("--detector", default=None, help="world | mask2former:DIR | mmdet:CONFIG,CHECKPOINT "
                   "(default: world for world generators)")
    e.add_argument("--clip-weights", default=None, help="open_clip ViT-L-14 weights file (colour classifier)")
    e.add_argument("--allow-incomplete", action="store_true", help="--images: score a folder with missing or extra "
                   "samples (default: refuse and name them); the record counts them")
    add_world_prompt_args(e)


def _load_prompts(args, domain: str) -> tuple[list[dict], str, str, dict[str, int]]:
    """(metadata, source, split, pool): ``pool`` counts each task's prompts in the set the prompts come from
    (the whole file, or the world split's every composition), so a task scored on all of them is a census."""
    if args.prompts:
        rows = [json.loads(x) for x in Path(args.prompts).read_text().splitlines() if x.strip()]
        return rows, str(args.prompts), "user", dict(Counter(r["tag"] for r in rows))
    if domain == "world":
        from snapgen.data.world import GENEVAL_TAGS, WorldConfig, all_metadata

        pool_split = "heldout" if args.world_split == "heldout" else "train"
        pool = {t: len(all_metadata(t, WorldConfig(), pool_split)) for t in GENEVAL_TAGS}
        return (*world_prompt_set(args), args.world_split, pool)
    rows = [json.loads(x) for x in OFFICIAL_METADATA.read_text().splitlines() if x.strip()]
    return rows, "official-553", "official", dict(Counter(r["tag"] for r in rows))


def _evaluator(args, domain: str):
    from evals.geneval import detectors

    spec = args.detector or ("world" if domain == "world" else None)
    if spec is None:
        raise ValueError("--detector is required for non-world images: mask2former:DIR (transformers COCO instance "
                         "Mask2Former, local) or mmdet:CONFIG,CHECKPOINT (the official detector)")
    kind, _, arg = spec.partition(":")
    if kind == "world":
        return detectors.WorldDetector(), None, {"detector": "world-exact-reader", "color": "world palette"}
    if kind == "mask2former":
        det = detectors.Mask2FormerDetector.from_pretrained(arg, device=args.device)
    elif kind == "mmdet":
        cfg, ckpt = arg.split(",", 1)
        det = detectors.MMDetDetector(cfg, ckpt, device=args.device)
    else:
        raise ValueError(f"--detector {spec!r}: world | mask2former:DIR | mmdet:CONFIG,CHECKPOINT")
    from evals.geneval.colors import ClipColorClassifier

    if not args.clip_weights:
        raise ValueError("--clip-weights is required with a real detector (open_clip ViT-L-14 weights file, e.g. "
                         "OpenAI's ViT-L-14.pt downloaded once to local disk)")
    clf = ClipColorClassifier.from_pretrained(args.clip_weights, device=args.device)
    info = {"detector": spec, "detector_info": getattr(det, "info", lambda: {})() if callable(getattr(det, "info", None)) else None,
            "color": clf.protocol()}
    return det, clf, info


def geneval_scores(rows: list[dict], pool: dict[str, int] | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Official summary + bootstrap 95% CIs (``evals.records.two_stage_ci``) for overall and each task: images are
    resampled within each prompt, and prompts within each task that samples a larger pool (``pool``: task -> prompts
    the set was drawn from; None = every task is a sample). ``summary["bootstrap"]`` says which tasks were a census."""
    from evals.geneval.rules import summarize

    summary = summarize(rows)
    per_prompt: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        per_prompt.setdefault(r["tag"], {}).setdefault(r["prompt_index"], []).append(float(bool(r["correct"])))
    census = sorted(t for t, d in per_prompt.items() if pool is not None and len(d) >= pool.get(t, len(d) + 1))
    cis = two_stage_ci({t: list(d.values()) for t, d in per_prompt.items()},
                       sampled={t for t in per_prompt if t not in census}, n_boot=n_boot, seed=seed)
    summary["overall_ci95"] = list(cis["overall"])
    for t, d in per_prompt.items():
        summary["tasks"][t]["ci95"] = list(cis[t])
        summary["tasks"][t]["prompts"] = len(d)
    summary["bootstrap"] = {"n": n_boot, "seed": seed, "method": "two-stage", "stratified_by": "task",
                            "unit": "image within prompt; prompt within task unless the task is a census",
                            "census_tasks": census, "pool": dict(pool) if pool is not None else None}
    return summary


class GenEval(Benchmark):
    """GenEval: 553 compositional prompts x 4 images, detector + CLIP colour rules (official thresholds).

    python -m evals.run geneval --ckpt world-tiny
    python -m evals.run geneval --ckpt PIPE --detector mask2former:DIR --clip-weights ViT-L-14.pt
    """

    name, help, n_per_prompt, table = NAME, HELP, 4, "geneval"
    metrics = (Metric("geneval_overall", True, "fraction", "mean of the six task accuracies (official)"),
               *(Metric(f"geneval_{t}", True, "fraction", f"accuracy of the {t} task") for t in TASKS),
               Metric("geneval_images_correct", True, "fraction", "fraction of correct images (all tasks pooled)"),
               Metric("geneval_prompts_any_correct", True, "fraction", "fraction of prompts with >= 1 correct image"))

    def add_arguments(self, p) -> None:
        add_arguments(p)

    def plan(self, args, gen) -> Plan:
        domain = domain_of(gen, args, "detector")
        resolve_n_per_prompt(args, self.n_per_prompt, WORLD_N_PER_PROMPT, domain, gen is not None)
        metadata, prompt_source, split, pool = (None, None, "user", None) if args.images else _load_prompts(args, domain)
        if metadata is not None and args.limit:
            metadata = metadata[: args.limit]
        gen_protocol = gen.protocol() if gen else {"generator": "external images", "images": str(args.images)}
        if args.images:
            folder = Path(args.images)
        else:
            key = generation_key(gen_protocol, prompt_set_hash(metadata), args.n_per_prompt, args.seed)
            folder = Path(args.images_root) / "geneval" / f"{slug(gen.name)}-{key}"
        name = f"{slug(gen.name if gen else folder.name)}-geneval{split_suffix(args)}"
        jobs = None
        if gen is not None:
            from evals.generate import geneval_jobs

            jobs = geneval_jobs(metadata, folder, args.n_per_prompt, args.seed)
        info = {"prompts": prompt_source, "n_prompts": len(metadata) if metadata else None, "generator": gen_protocol}
        state = {"metadata": metadata, "domain": domain, "gen_protocol": gen_protocol, "gen": gen, "split": split,
                 "prompt_source": prompt_source, "pool": pool}
        if not args.dry_run:
            state["evaluator"] = _evaluator(args, domain)          # a bad --detector fails before generating
        return Plan(name, record_path(args, "geneval", name), folder, jobs, {}, info, state)

    def generate(self, plan, gen, args) -> dict:
        from evals.generate import write_geneval_metadata

        write_geneval_metadata(plan.state["metadata"], plan.folder)
        return super().generate(plan, gen, args)

    def score(self, plan, args) -> Scored:
        from evals.geneval.score import check_complete, list_samples, score_folder

        det, clf, ev_info = plan.state["evaluator"]
        problems = check_complete(list_samples(plan.folder), args.n_per_prompt)
        if problems and not args.allow_incomplete:
            raise ValueError(f"'{plan.folder}' is not a complete GenEval run of --n-per-prompt {args.n_per_prompt}: "
                             f"{len(problems)} problem(s), e.g. {problems[:3]}. Regenerate the missing images, pass "
                             "the right --n-per-prompt, or --allow-incomplete to score what is there (the record "
                             "then counts what was missing)")
        rows, _ = score_folder(plan.folder, det, clf)
        summary = geneval_scores(rows, plan.state["pool"])
        all_meta = [m for _, m, _ in list_samples(plan.folder)]
        gen = plan.state["gen"]
        sampler, generator = split_protocol(plan.state["gen_protocol"])
        plan.protocol.update({
            "sampler": sampler, "generator": generator, "images_per_prompt": args.n_per_prompt if gen else None,
            "seed_scheme": "sha256(prompt_index, sample_index, base_seed)", "base_seed": args.seed,
            "prompts": prompts_card(plan.state["split"], len(all_meta), plan.state["prompt_source"]),
            "prompt_source": plan.state["prompt_source"], "prompt_set_sha256": prompt_set_hash(all_meta),
            "n_prompts": len(all_meta), "limit": args.limit, "images_dir": display(plan.folder),
            "resolution": gen.resolution if gen else None,
            "evaluator": {"rules": "GenEval official (threshold 0.3, counting 0.9, max 16, NMS off, position 0.1)",
                          **ev_info},
            "scoring_mode": "official", "bootstrap": summary["bootstrap"]})
        for r in rows:
            r["details"] = compact_details(r.get("details"))      # kept boxes + colours: the report draws them
        details = {"tasks": summary["tasks"], "images": summary["images"], "missing_tasks": summary["missing_tasks"],
                   "incomplete": {"allowed": bool(args.allow_incomplete), "problems": len(problems),
                                  "examples": problems[:20]}}
        return Scored(self.scores_of(summary), rows, details, _summary_lines(summary))

    def scores_of(self, summary: dict) -> dict:
        """The official summary (``geneval_scores``) as envelope scores."""
        n_prompts = {t: v.get("prompts") for t, v in summary["tasks"].items()}
        out = {"geneval_overall": self.make_score("geneval_overall", summary["overall"], summary["overall_ci95"],
                                                  summary["prompts"])}
        for t, v in summary["tasks"].items():
            out[f"geneval_{t}"] = self.make_score(f"geneval_{t}", v["accuracy"], v.get("ci95"), n_prompts[t])
        out["geneval_images_correct"] = self.make_score("geneval_images_correct", summary["images_correct"], None,
                                                        summary["images"])
        out["geneval_prompts_any_correct"] = self.make_score("geneval_prompts_any_correct",
                                                             summary["prompts_any_correct"], None, summary["prompts"])
        return out

    def units(self, rows: list[dict]) -> dict:
        """Per-prompt accuracy by task: the overall is the mean over tasks of the mean over prompts."""
        per: dict[str, dict[str, list[float]]] = {}
        for r in rows:
            per.setdefault(r["tag"], {}).setdefault(f"{r['prompt_index']}", []).append(float(r["correct"]))
        strata = {t: {k: sum(v) / len(v) for k, v in d.items()} for t, d in per.items()}
        out = {"geneval_overall": strata}
        out.update({f"geneval_{t}": {t: d} for t, d in strata.items()})
        return out


def compact_details(details: dict | None) -> dict | None:
    """A row's ``details`` (``evals.geneval.rules.evaluate_image``) as compact JSON: the kept detections (class ->
    [{box, score, color}], boxes to 0.01 px, scores to 1e-4), the colours read, the matched clauses, the threshold
    and the image size; masks never reach it."""
    if details is None:
        return None
    kept = {cls: [{"box": [round(float(v), 2) for v in d["box"][:4]], "score": round(float(d["score"]), 4),
                   **({"color": d["color"]} if d.get("color") is not None else {})} for d in dets]
            for cls, dets in details.get("kept", {}).items()}
    return {"kept": kept, "colors": {str(k): list(v) for k, v in details.get("colors", {}).items()},
            "matched": [bool(m) for m in details.get("matched", [])],
            "threshold": float(details["threshold"]) if "threshold" in details else None,
            "image_size": [int(v) for v in details.get("image_size", [])]}


def _summary_lines(scores: dict) -> list[str]:
    lo, hi = scores["overall_ci95"]
    lines = [f"GenEval overall {scores['overall']:.3f} [95% CI {lo:.3f}, {hi:.3f}]  ({scores['images']} images)"]
    lines += [f"  {t:14s} {v['accuracy']:.3f}  ({v['correct']}/{v['images']})" for t, v in scores["tasks"].items()]
    return lines


BENCHMARK = register(GenEval())
