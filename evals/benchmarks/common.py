"""Arguments and plumbing shared by the benchmark plugins: generator options, output paths, records."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from snapgen.cli import nonnegative_float, nonnegative_int, positive_int
from snapgen.io import sha256_json
from snapgen.paths import cache_dir, results_dir

IMAGES = cache_dir("images")   # generated images, keyed by generator + sampler + prompts + seeds (resumable)


def add_generation_args(p: argparse.ArgumentParser, n_per_prompt: int, world_n_per_prompt: int | None = None) -> None:
    """``world_n_per_prompt``: another default for generators of the synthetic world (``--n-per-prompt`` then
    defaults to None; the plugin resolves it with ``resolve_n_per_prompt``)."""
    g = p.add_argument_group("generation (ignored with --images)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="snapgen pipeline dir | diffusers pipeline dir | world-tiny | world-oracle | world-noise")
    src.add_argument("--images", help="score images that already exist, in the benchmark's official layout")
    world = f"; generators of the synthetic world: {world_n_per_prompt}" if world_n_per_prompt else ""
    g.add_argument("--n-per-prompt", type=positive_int, default=None if world_n_per_prompt else n_per_prompt,
                   help=f"images per prompt (default: the official {n_per_prompt}{world})")
    g.add_argument("--seed", type=nonnegative_int, default=0, help="base seed; sample seed = f(prompt id, sample index, seed)")
    g.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the pipeline's)")
    g.add_argument("--guidance", type=nonnegative_float, default=None,
                   help="classifier-free guidance scale (default: the pipeline's)")
    g.add_argument("--resolution", type=positive_int, default=None, help="diffusers pipelines: output side in pixels")
    g.add_argument("--negative-prompt", default=None, help="diffusers pipelines: negative prompt")
    g.add_argument("--batch-size", type=positive_int, default=16)
    g.add_argument("--device", default="cpu")
    g.add_argument("--retrain-world", action="store_true",
                   help="--ckpt world-tiny: retrain it with the project's recipe into runs/tiny-world (about 30 min on "
                        "2 cores) instead of using the shipped, hash-verified checkpoint")
    g.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                   help=f"torch CPU threads for generation (default {DEFAULT_THREADS}; recorded, and part of the image "
                        "cache key since the thread count can change the last bits of an image)")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="generation precision: bfloat16 = autocast of the denoiser and decoder (weights stay float32); "
                        "recorded and part of the image cache key")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format for the denoiser and decoder")
    g.add_argument("--compile", action="store_true", help="torch.compile the denoiser and decoder (slow first batch)")
    g.add_argument("--split-depthwise", action="store_true",
                   help="run the U-Net's channel-multiplier depthwise convs as plain ones (same weights; faster on CPU; "
                        "recorded and part of the image cache key)")
    g.add_argument("--limit", type=positive_int, default=None, help="only the first N prompts (smoke runs; recorded)")
    g.add_argument("--images-root", default=str(IMAGES), help="where generated images are cached (resumable; "
                   "default $SNAPGEN_CACHE/images)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="record path (default results/<benchmark>/<run name>.json)")
    o.add_argument("--name", default=None, help="run name (default: derived from the generator and protocol)")
    o.add_argument("--dry-run", action="store_true", help="print the protocol and paths, generate and score nothing")
    o.add_argument("--no-progress", action="store_true")


def resolve_n_per_prompt(args, official: int, world: int, domain: str, generating: bool) -> int:
    """``--n-per-prompt`` when not given: ``world`` for a world generator, else the benchmark's official count."""
    if args.n_per_prompt is None:
        args.n_per_prompt = world if domain == "world" and generating else official
    return args.n_per_prompt


DEFAULT_THREADS = 2         # generation threads: this project's reference machine has 2 cores
WORLD_PER_TAG = 12          # world prompt sets: prompts per GenEval task (capped by the split's pool)


def add_world_prompt_args(group) -> None:
    """Options that choose the synthetic world's evaluation prompt set (GenEval / DPG / CLIP plugins)."""
    group.add_argument("--world-split", choices=("heldout", "in_distribution"), default="heldout",
                       help="synthetic world: 'heldout' compositions never seen in training (default), or "
                            "'in_distribution' training compositions (to measure the generalisation gap)")
    group.add_argument("--world-prompts-per-tag", type=positive_int, default=WORLD_PER_TAG,
                       help=f"synthetic world: prompts per task (default {WORLD_PER_TAG}; capped by the split's pool)")
    group.add_argument("--world-prompt-seed", type=nonnegative_int, default=1234, help="synthetic world: prompt-set seed")


def world_prompt_set(args) -> tuple[list[dict], str]:
    """(GenEval-format metadata, source string) of the world prompt set the options choose."""
    from snapgen.data.world import WorldConfig, make_prompt_set

    split = getattr(args, "world_split", "heldout")
    meta = make_prompt_set(args.world_prompts_per_tag, args.world_prompt_seed, WorldConfig(), split=split)
    return meta, f"world:{split}:{args.world_prompts_per_tag}/tag,seed={args.world_prompt_seed}"


def prompts_card(split: str, n: int, source: str | None) -> dict:
    """``protocol.prompts`` of a record: which split the prompts come from and how many were scored.
    split: "heldout" / "in_distribution" (world), "official" (a benchmark's own prompt file), "user"."""
    return {"split": split, "n": int(n), "source": source}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[-60:] or "run"


def generation_key(gen_protocol: dict, prompt_hash: str, n_per_prompt: int, seed: int) -> str:
    """Images are cached under this key: same generator + sampler + prompts + seeds -> same folder."""
    return sha256_json({"g": gen_protocol, "p": prompt_hash, "n": n_per_prompt, "s": seed})[:12]


def split_suffix(args) -> str:
    """``-in_distribution`` for a world run on the training compositions, so that its default record name never
    replaces the held-out record of the same generator; empty otherwise."""
    return "-in_distribution" if getattr(args, "world_split", "heldout") == "in_distribution" else ""


def record_path(args, benchmark: str, name: str) -> Path:
    return Path(args.out) if args.out else results_dir(benchmark) / f"{slug(args.name or name)}.json"


def domain_of(gen, args, *world_flags: str) -> str:
    """"world" when the generator is a world model or one of ``world_flags`` (e.g. --detector) says world."""
    if gen is not None and getattr(gen, "domain", "generic") == "world":
        return "world"
    return "world" if any(str(getattr(args, f, "") or "").startswith("world") for f in world_flags) else "generic"


SAMPLER_KEYS = ("sampler", "steps", "guidance", "shift", "resolution", "negative_prompt")


def split_protocol(gen_protocol: dict) -> tuple[dict, dict]:
    """(sampler settings that must match between compared runs, generator identity that may differ)."""
    sampler = {k: gen_protocol.get(k) for k in SAMPLER_KEYS}
    return sampler, {k: v for k, v in gen_protocol.items() if k not in SAMPLER_KEYS}



# generation options that do nothing when scoring existing --images (None / False = not given)
GENERATION_ONLY = ("steps", "guidance", "resolution", "negative_prompt", "retrain_world")
INFERENCE_OPTIONS = {"dtype": "float32", "channels_last": False, "compile": False,   # option -> its default
                     "split_depthwise": False}


def refuse_generation_options(args) -> None:
    """Scoring ``--images``: a sampler option would be silently ignored, so it is an error naming it."""
    images = getattr(args, "images", None)
    if isinstance(images, str) and not images.strip():
        raise ValueError("--images '': empty path; pass the folder of generated images (or --ckpt to generate them)")
    if isinstance(images, (str, Path)) and not Path(images).is_dir():
        raise FileNotFoundError(f"--images {images}: no such folder (generated images in the benchmark's layout)")
    given = [k for k in GENERATION_ONLY if getattr(args, k, None) not in (None, False)]
    given += [k for k, default in INFERENCE_OPTIONS.items() if getattr(args, k, default) not in (None, default)]
    if given and getattr(args, "images", None) is not None:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags}: generation options do nothing when scoring existing --images; drop them, or "
                         "generate with --ckpt")


def generator_from_args(args):
    """The ``--ckpt`` generator with the CLI's sampler options, or None when scoring ``--images``.
    Sets torch's CPU thread count to ``--threads`` (recorded in the generator's protocol)."""
    ckpt = getattr(args, "ckpt", None)
    if isinstance(ckpt, str) and not ckpt.strip():
        raise ValueError("--ckpt '': empty checkpoint; pass a snapgen or diffusers pipeline folder, or world-tiny, "
                         "world-oracle, world-noise (or --images to score existing images)")
    if not ckpt:
        refuse_generation_options(args)
        return None
    import torch

    from evals.generators import load_generator

    threads = getattr(args, "threads", None)
    if threads:
        torch.set_num_threads(threads)
    if getattr(args, "retrain_world", False) and args.ckpt != "world-tiny":
        raise ValueError(f"--retrain-world only applies to --ckpt world-tiny, not --ckpt {args.ckpt}")
    gen = load_generator(args.ckpt, args.steps, args.guidance, args.resolution, args.negative_prompt,
                         args.batch_size, args.device, retrain_world=getattr(args, "retrain_world", False))
    gen.threads = torch.get_num_threads()
    apply_inference_options(gen, args)
    return gen


def apply_inference_options(gen, args) -> None:
    """``--dtype`` / ``--channels-last`` / ``--compile`` / ``--split-depthwise`` -> the generator
    (``evals.inference``)."""
    from evals.inference import InferenceOptions

    opts = InferenceOptions(getattr(args, "dtype", "float32") or "float32", bool(getattr(args, "channels_last", False)),
                            bool(getattr(args, "compile", False)), bool(getattr(args, "split_depthwise", False)))
    if hasattr(gen, "set_inference"):
        gen.set_inference(opts)
    elif not opts.is_default:
        raise ValueError(f"--dtype/--channels-last/--compile/--split-depthwise: {getattr(gen, 'name', gen)} is not a "
                         "pipeline, they do not apply")
