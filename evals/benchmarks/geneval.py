"""GenEval: 553 compositional prompts x 4 images, detector + CLIP colour rules (official thresholds).

    python -m evals.run geneval --ckpt world-tiny                         # synthetic world, exact detector, CPU
    python -m evals.run geneval --ckpt PIPE --detector mask2former:DIR --clip-weights ViT-L-14.pt
    python -m evals.run geneval --images OUTDIR --detector mask2former:DIR --clip-weights ViT-L-14.pt
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from evals.benchmarks.common import (RESULTS, add_generation_args, add_world_prompt_args, prompts_card, world_prompt_set, generation_key, generator_from_args, record_path, slug,
                                     split_protocol)
from evals.records import bootstrap_ci, build_record, prompt_set_hash, write_record

NAME = "geneval"
HELP = "GenEval (compositional: objects, counts, colours, positions)"
OFFICIAL_METADATA = Path(__file__).resolve().parents[1] / "data" / "geneval" / "evaluation_metadata.jsonl"


def add_arguments(p) -> None:
    add_generation_args(p, n_per_prompt=4)
    e = p.add_argument_group("evaluator")
    e.add_argument("--prompts", default=None, help="evaluation_metadata.jsonl (default: official 553, or the world's set "
                   "for world generators)")
    e.add_argument("--detector", default=None, help="world | mask2former:DIR | mmdet:CONFIG,CHECKPOINT "
                   "(default: world for world generators)")
    e.add_argument("--clip-weights", default=None, help="open_clip ViT-L-14 weights file (colour classifier)")
    add_world_prompt_args(e)


def _load_prompts(args, domain: str) -> tuple[list[dict], str, str]:
    """(metadata, source, split)."""
    if args.prompts:
        rows = [json.loads(x) for x in Path(args.prompts).read_text().splitlines() if x.strip()]
        return rows, str(args.prompts), "user"
    if domain == "world":
        return (*world_prompt_set(args), args.world_split)
    rows = [json.loads(x) for x in OFFICIAL_METADATA.read_text().splitlines() if x.strip()]
    return rows, "official-553", "official"


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


def geneval_scores(rows: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Official summary + bootstrap 95% CIs over prompts (stratified by task) for overall and each task."""
    from evals.geneval.rules import summarize

    summary = summarize(rows)
    per_prompt: dict[str, dict[int, list[bool]]] = {}
    for r in rows:
        per_prompt.setdefault(r["tag"], {}).setdefault(r["prompt_index"], []).append(bool(r["correct"]))
    strata = {t: [float(np.mean(v)) for v in d.values()] for t, d in per_prompt.items()}
    lo, hi = bootstrap_ci(strata, lambda s: float(np.mean([a.mean() for a in s.values()])), n_boot, seed)
    summary["overall_ci95"] = [lo, hi]
    for t, vals in strata.items():
        summary["tasks"][t]["ci95"] = list(bootstrap_ci(vals, n_boot=n_boot, seed=seed))
    return summary


def run(args) -> int:
    from evals.generate import geneval_jobs, run_jobs, wait_for_shards, write_geneval_metadata

    t0 = time.time()
    gen = generator_from_args(args)
    domain = gen.domain if gen else ("world" if (args.detector or "").startswith("world") else "generic")
    metadata, prompt_source, split = (None, None, "user") if args.images else _load_prompts(args, domain)
    if metadata is not None and args.limit:
        metadata = metadata[: args.limit]
    gen_protocol = gen.protocol() if gen else {"generator": "external images", "images": str(args.images)}
    if args.images:
        folder = Path(args.images)
    else:
        key = generation_key(gen_protocol, prompt_set_hash(metadata), args.n_per_prompt, args.seed)
        folder = Path(args.images_root) / "geneval" / f"{slug(gen.name)}-{key}"
    name = f"{slug(gen.name if gen else folder.name)}-geneval"
    out = record_path(args, "geneval", name)
    if args.dry_run:
        print(json.dumps({"images": str(folder), "record": str(out), "prompts": prompt_source,
                          "n_prompts": len(metadata) if metadata else None, "generator": gen_protocol}, indent=2, default=str))
        return 0
    if gen is not None:
        write_geneval_metadata(metadata, folder)
        jobs = geneval_jobs(metadata, folder, args.n_per_prompt, args.seed)
        counts = run_jobs(jobs, gen.generate, args.batch_size, progress=not args.no_progress)
        wait_for_shards(jobs)
        print(f"images: {counts['existing']} reused, {counts['generated']} generated -> {folder}")
        from evals.generate import shard_info

        if shard_info()[0] != 0:
            return 0
    from evals.geneval.score import list_samples, score_folder

    det, clf, ev_info = _evaluator(args, domain)
    rows, _ = score_folder(folder, det, clf)
    scores = geneval_scores(rows)
    all_meta = [m for _, m, _ in list_samples(folder)]
    sampler, generator = split_protocol(gen_protocol)
    protocol = {"sampler": sampler, "generator": generator, "images_per_prompt": args.n_per_prompt if gen else None,
                "seed_scheme": "sha256(prompt_index, sample_index, base_seed)", "base_seed": args.seed,
                "prompts": prompts_card(split, len(all_meta), prompt_source),
                "prompt_source": prompt_source, "prompt_set_sha256": prompt_set_hash(all_meta),
                "n_prompts": len(all_meta), "limit": args.limit, "images_dir": str(folder),
                "resolution": gen.resolution if gen else None,
                "evaluator": {"rules": "GenEval official (threshold 0.3, counting 0.9, max 16, NMS off, position 0.1)",
                              **ev_info},
                "scoring_mode": "official", "bootstrap": {"n": 1000, "seed": 0, "unit": "prompt", "stratified_by": "task"}}
    for r in rows:
        r.pop("details", None)
    record = build_record("geneval", scores, protocol, None, None, time.time() - t0, args.device,
                          higher_is_better={"overall": True})
    write_record(out, record, rows)
    _print_summary(scores, out)
    if out.parent.parent.resolve() == RESULTS.resolve():        # a record under results/: refresh the table
        from evals.report import write_tables

        try:
            print(f"table: {write_tables(RESULTS)[0]}")
        except ValueError as e:                                  # e.g. a record from uncommitted code
            print(f"table not refreshed: {e}")
    return 0


def _print_summary(scores: dict, out: Path) -> None:
    lo, hi = scores["overall_ci95"]
    print(f"GenEval overall {scores['overall']:.3f} [95% CI {lo:.3f}, {hi:.3f}]  ({scores['images']} images)")
    for t, v in scores["tasks"].items():
        print(f"  {t:14s} {v['accuracy']:.3f}  ({v['correct']}/{v['images']})")
    print(f"record: {out}")
