"""CLIP score (open_clip, local weights): per-sample cosine and clipped x-scale score, mean over prompts.

    python -m evals.run clip --ckpt PIPE --prompts captions.txt --clip-weights ViT-L-14.safetensors
    python -m evals.run clip --ckpt world-tiny --clip-weights ViT-L-14.safetensors      # world prompt set
    python -m evals.run clip --images DIR --captions captions.txt --clip-weights open_clip_model.safetensors \\
        --clip-model ViT-g-14

Metric keys carry backbone and scale (``clip_score_vitl14_cos``, ``clip_score_vitl14_x100``): the
numbers of different backbones or scales are different metrics. Generated images are shared with
``fid`` / ``imagereward`` (flat folder with an ``images.jsonl`` manifest); ``--images DIR`` reads that
manifest, or ``--captions`` (one caption per line, paired with the folder's images in sorted name
order, or a ``.jsonl`` manifest with ``file`` and ``prompt``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from snapgen.cli import positive_float, positive_int
from evals.api import Benchmark, Metric, Plan, Scored, register
from evals.benchmarks.common import (add_generation_args, add_world_prompt_args, domain_of, prompts_card, record_path,
                                     slug, split_protocol, world_prompt_set)
from evals.benchmarks.fid import MANIFEST, flat_folder, flat_jobs, generate_flat, read_lines
from evals.records import prompt_set_hash
from snapgen.paths import display

NAME = "clip"
HELP = "CLIP score (open_clip backbone from a local file; backbone + scale in the metric name)"


# ----------------------------------------------------------------------------- prompts -> (image, prompt) pairs
# Shared with evals.benchmarks.imagereward.


@dataclass(frozen=True)
class Sample:
    file: Path                   # image path
    prompt: str                  # the text it is scored against
    prompt_id: int | str         # grouping unit of the bootstrap (prompt index, or the text itself)
    sample_index: int | None     # index among the prompt's images (None when unknown)


def add_prompt_args(p) -> None:
    add_generation_args(p, n_per_prompt=1)
    e = p.add_argument_group("prompts")
    e.add_argument("--prompts", default=None, help="one prompt per line (default: the world prompt set for world "
                   "generators)")
    e.add_argument("--captions", default=None, help="--images: captions, one per line in the folder's sorted image "
                   f"order, or a .jsonl with file + prompt (default: DIR/{MANIFEST})")
    e.add_argument("--score-batch-size", type=positive_int, default=32, help="evaluator batch size (speed only)")
    add_world_prompt_args(e)


def load_prompts(args, gen) -> tuple[list[str], list[dict] | None, str]:
    if args.prompts:
        prompts = read_lines(args.prompts, "--prompts")
        return prompts[: args.limit], None, str(args.prompts)
    if domain_of(gen, args) != "world":
        raise ValueError("--prompts FILE (one prompt per line) is required to generate with a non-world generator")
    meta, source = world_prompt_set(args)
    meta = meta[: args.limit]
    return [m["prompt"] for m in meta], meta, source


def generation_plan(args, gen) -> dict:
    """What ``--n-per-prompt`` images per prompt of a generator need: prompts, folder, jobs, samples, prompt info."""
    prompts, meta, source = load_prompts(args, gen)
    n = len(prompts) * args.n_per_prompt
    folder = flat_folder(args.images_root, gen, prompts, meta, n, args.seed)
    jobs = flat_jobs(prompts, meta, folder, n, args.seed)
    samples = [Sample(j.path, j.prompt, j.prompt_index, j.sample_index) for j in jobs]
    split = args.world_split if source.startswith("world:") else "user"
    info = {"prompt_source": source, "prompt_set_sha256": prompt_set_hash(meta if meta is not None else prompts),
            "prompts": prompts_card(split, len(prompts), source)}
    return {"prompts": prompts, "meta": meta, "n": n, "folder": folder, "jobs": jobs, "samples": samples,
            "info": info}


def folder_samples(images: str | Path, captions: str | None) -> tuple[list[Sample], dict]:
    """(samples, prompt info) of an existing folder, from its manifest or a captions file."""
    folder = Path(images)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder '{folder}' does not exist")
    source = Path(captions) if captions else folder / MANIFEST
    if not source.is_file():
        raise FileNotFoundError(f"no captions for '{folder}': '{source}' does not exist; pass --captions FILE (one "
                                "caption per line in sorted image order, or a .jsonl with file + prompt)")
    if source.suffix == ".jsonl":
        rows = [json.loads(x) for x in source.read_text().splitlines() if x.strip()]
        samples = [Sample(folder / r["file"], r["prompt"], r.get("prompt_index", r["prompt"]), r.get("sample_index"))
                   for r in rows]
    else:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        lines = read_lines(source, "--captions")
        if len(lines) != len(files):
            raise ValueError(f"'{source}' has {len(lines)} captions but '{folder}' has {len(files)} images; "
                             "they are paired in sorted file-name order")
        samples = [Sample(f, c, c, None) for f, c in zip(files, lines)]
    missing = [str(s.file) for s in samples if not s.file.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images named in '{source}' are missing, e.g. {missing[:3]}")
    prompts = [s.prompt for s in samples]
    return samples, {"prompt_source": str(source), "prompt_set_sha256": prompt_set_hash(prompts),
                     "prompts": prompts_card("user", len(set(prompts)), str(source))}


class SampleBenchmark(Benchmark):
    """Per-image scorers of (image, prompt) pairs over a flat folder (CLIP score, ImageReward)."""

    n_per_prompt = 1

    def load_scorer(self, args):
        raise NotImplementedError

    def record_name(self, args, gen, scorer) -> str:
        raise NotImplementedError

    def plan(self, args, gen) -> Plan:
        scorer = self.load_scorer(args) if not args.dry_run else None   # missing weights fail before generating
        if gen is not None:
            g = generation_plan(args, gen)
            folder, jobs, samples, info = g["folder"], g["jobs"], g["samples"], g["info"]
            state = {"gen_plan": g}
        else:
            folder, jobs, state = Path(args.images), None, {}
            samples, info = folder_samples(args.images, args.captions) if not args.dry_run else ([], {})
        name = self.record_name(args, gen, scorer)
        state.update(scorer=scorer, samples=samples, info=info, gen=gen)
        dry = {"benchmark": self.name, "prompts": args.prompts, "generator": gen.protocol() if gen else None}
        return Plan(name, record_path(args, self.name, name), folder, jobs, {}, dry, state)

    def generate(self, plan, gen, args) -> dict:
        g = plan.state["gen_plan"]
        return generate_flat(gen, g["prompts"], g["meta"], plan.folder, g["n"], args.seed, args.batch_size,
                             progress=not args.no_progress)

    def sample_scores(self, rows: list[dict], keys: list[str]) -> Scored:
        """Envelope scores (mean over prompts, bootstrap CI over prompts) of the per-image ``keys`` of ``rows``."""
        from evals.metrics.clip_score import aggregate_rows

        raw = aggregate_rows(rows, keys)
        scores = {k: self.make_score(k, raw[k], (raw[k + "_ci95_low"], raw[k + "_ci95_high"]), raw["n_prompts"])
                  for k in keys}
        lines = [f"{k} {raw[k]:.4f} [95% CI {raw[k + '_ci95_low']:.4f}, {raw[k + '_ci95_high']:.4f}]  "
                 f"({raw['n_samples']} images, {raw['n_prompts']} prompts)" for k in keys]
        return Scored(scores, rows, {"aggregate": raw, "score_keys": keys}, lines)

    def units(self, rows: list[dict]) -> dict:
        """Per-prompt mean of each per-image score (each metric is the mean over prompts)."""
        out: dict[str, dict] = {}
        keys = [k for k, v in (rows[0] if rows else {}).items()
                if isinstance(v, float) and any(k.startswith(m.key.rstrip("*")) for m in self.metrics)]
        for key in keys:
            per: dict[str, list[float]] = {}
            for r in rows:
                per.setdefault(str(r["prompt_id"]), []).append(float(r[key]))
            out[key] = {"all": {k: sum(v) / len(v) for k, v in per.items()}}
        return out


def base_protocol(args, gen, folder: Path, info: dict, samples: list[Sample], evaluator: dict) -> dict:
    gen_protocol = gen.protocol() if gen else {"generator": "external images", "images": str(folder)}
    sampler, generator = split_protocol(gen_protocol)
    return {"sampler": sampler, "generator": generator, "images_per_prompt": args.n_per_prompt if gen else None,
            "seed_scheme": "sha256(prompt_index, sample_index, base_seed)", "base_seed": args.seed, **info,
            "n_prompts": len({s.prompt_id for s in samples}), "n_samples": len(samples), "limit": args.limit,
            "images_dir": display(folder), "resolution": gen.resolution if gen else None, "evaluator": evaluator,
            "scoring_mode": None, "bootstrap": {"n": 1000, "seed": 0, "unit": "prompt"}}


def sample_row(s: Sample) -> dict:
    return {"file": str(s.file), "prompt": s.prompt, "prompt_id": s.prompt_id, "sample_index": s.sample_index}


# ----------------------------------------------------------------------------- CLIP score


def add_arguments(p) -> None:
    add_prompt_args(p)
    e = p.add_argument_group("CLIP")
    e.add_argument("--clip-weights", default=None, help="open_clip weights file (.safetensors/.bin/.pt), local")
    e.add_argument("--clip-model", default="ViT-L-14", help="open_clip architecture name (ViT-L-14, ViT-g-14, ...)")
    e.add_argument("--clip-quick-gelu", choices=("auto", "yes", "no"), default="auto",
                   help="QuickGELU (auto: yes for OpenAI architectures)")
    e.add_argument("--clip-scale", type=positive_float, default=100.0, help="w in w * max(cos, 0) (torchmetrics: 100)")
    e.add_argument("--clip-model-config", default=None, help="an extra open_clip architecture JSON, registered "
                   "under its file stem (custom or tiny test models)")


def load_scorer(args):
    from evals.metrics.clip_score import ClipScorer

    if args.clip_model_config:
        import open_clip

        from snapgen.io import require_path

        open_clip.add_model_config(require_path(args.clip_model_config, "--clip-model-config",
                                                "Pass an open_clip model config JSON."))
    quick = {"auto": None, "yes": True, "no": False}[args.clip_quick_gelu]
    return ClipScorer.from_pretrained(args.clip_weights, args.clip_model, quick, args.clip_scale, args.device)


def score_samples(scorer, samples: list[Sample], batch_size: int) -> list[dict]:
    from snapgen.io import open_image_rgb

    rows = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = [open_image_rgb(s.file) for s in chunk]
        for s, r in zip(chunk, scorer.score(images, [s.prompt for s in chunk], batch_size)):
            rows.append({**sample_row(s), **r})
    return rows


class ClipScore(SampleBenchmark):
    """CLIP score (open_clip, local weights): per-sample cosine and clipped w * max(cos, 0), mean over prompts.

    python -m evals.run clip --ckpt PIPE --prompts captions.txt --clip-weights ViT-L-14.safetensors
    """

    name, help = NAME, HELP
    metrics = (Metric("clip_score_*", True, "cosine or x scale", "mean over prompts; the key carries backbone and "
                      "scale (clip_score_vitl14_cos, clip_score_vitl14_x100)"),)

    def add_arguments(self, p) -> None:
        add_arguments(p)

    def load_scorer(self, args):
        return load_scorer(args)

    def record_name(self, args, gen, scorer) -> str:
        tag = scorer.config.backbone_tag if scorer is not None else args.clip_model
        return f"{slug(gen.name if gen else Path(args.images).name)}-clip-{tag}"

    def score(self, plan, args) -> Scored:
        scorer, samples = plan.state["scorer"], plan.state["samples"]
        rows = score_samples(scorer, samples, args.score_batch_size)
        plan.protocol.update(base_protocol(args, plan.state["gen"], plan.folder, plan.state["info"], samples,
                                           scorer.protocol))
        return self.sample_scores(rows, list(scorer.keys))


BENCHMARK = register(ClipScore())
