"""Precompute FID reference statistics (mu, sigma, features) of a folder once; print the cache path.

    python -m evals.run fid-ref COCO_VAL2014_256/                  # -> ~/.cache/snapgen-bench/fid_reference/<key>.npz
    python -m evals.run fid-ref world --n-ref 1000                 # held-out synthetic-world renders
    python -m evals.run fid --images GEN --ref <printed .npz>

The cache key hashes every reference file's name and bytes, the extractor weights and the
preprocessing, so `fid` finds the same file again from the folder itself and never serves stale
statistics; passing the .npz directly skips even the hashing of the reference images.
"""
from __future__ import annotations

import json
from pathlib import Path

from snapgen.cli import positive_int
from evals.benchmarks.common import IMAGES
from evals.benchmarks.fid import DEFAULT_WORLD_N, add_fid_options, world_reference

NAME = "fid-ref"
HELP = "precompute FID reference statistics for a folder (or the world) and print the cache path"


def add_arguments(p) -> None:
    p.add_argument("ref", help="a folder of .png/.jpg reference images, or 'world' (held-out world renders)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--images-root", default=str(IMAGES), help="where 'world' reference renders are cached")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=positive_int, default=None, help="torch + BLAS threads (default: leave as is; 1 is "
                   "faster on a busy 2-core machine)")
    add_fid_options(p)


def run(args) -> int:
    from evals.benchmarks.fid import limit_threads
    from evals.metrics.fid import load_reference, precompute_reference

    folder = Path(args.ref)
    if args.ref == "world":
        n_ref = args.n_ref or DEFAULT_WORLD_N
        folder = world_reference(args.images_root, n_ref, args.world_seed,
                                 args.world_resolution or 32, progress=not args.no_progress, split=args.world_split)
    with limit_threads(args.threads) as threads:
        path = precompute_reference(folder, args.fid_batch_size, args.device, cache_dir=args.fid_cache,
                                    weights_path=args.fid_weights, progress=not args.no_progress)
    meta = load_reference(path)["meta"]
    print(json.dumps({"ref_dir": str(folder), "n": meta["n"], "key": meta["key"],
                      "weights_sha256": meta["weights_sha256"], "threads": threads}, indent=2))
    print(path)
    return 0
