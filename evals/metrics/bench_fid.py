"""Time FID through our API against torch-fidelity called directly, on the same photo-crop images.

Example:
    python -m evals.metrics.bench_fid --n 100 --size 64 --batch 32 --threads 1 \\
        --out results/bench/fid_harness_overhead.json

One run measures: converting the weights (cold cache), ``compute_fid`` with a cold reference cache
(first run), ``compute_fid`` again with the cached reference statistics (second run), and
``torch_fidelity.calculate_metrics`` (FID + KID, no cache) on the same two folders. The record holds
the settings, the timings and both sets of values.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


PHOTOS_SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket")   # shipped with scikit-image (offline)


def real_photos() -> list[np.ndarray]:
    """Six natural RGB photos available offline: scikit-image samples + scikit-learn china/flower."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    return [getattr(skimage.data, n)() for n in PHOTOS_SKIMAGE] + list(load_sample_images().images)


def photo_crops(n: int, seed: int, size: int = 64) -> list[Image.Image]:
    """Random square crops (128 px .. the photo's short side) of :func:`real_photos`, Lanczos-resized
    to ``size``; photo i % 6 for image i, crop positions from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    photos, crops = real_photos(), []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w, _ = photo.shape
        side = int(rng.integers(128, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[y:y + side, x:x + side])
        crops.append(crop.resize((size, size), Image.Resampling.LANCZOS))
    return crops


def write_pngs(folder: Path, images: list[Image.Image]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(folder / f"{i:05d}.png")
    return folder


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def run(n: int, size: int, batch: int, threads: int, work: Path) -> dict:
    import torch
    import torch_fidelity
    from threadpoolctl import threadpool_limits

    from evals.metrics import fid

    torch.set_num_threads(threads)
    gen = write_pngs(work / "gen", photo_crops(n, seed=1, size=size))
    ref = write_pngs(work / "ref", photo_crops(n, seed=2, size=size))
    cache = work / "cache"
    with threadpool_limits(threads):
        fid.clear_extractor_memo()
        (_, digest), t_convert = _timed(fid.converted_weights, cache)
        first, t_first = _timed(fid.compute_fid, gen, ref, batch, cache_dir=cache)
        second, t_second = _timed(fid.compute_fid, gen, ref, batch, cache_dir=cache)
        direct, t_direct = _timed(fid.torch_fidelity_direct, gen, ref, batch, cache_dir=cache)
    return {
        "settings": {"n_gen": n, "n_ref": n, "image_size": size, "batch_size": batch, "torch_threads": threads,
                     "blas_threads": threads, "device": "cpu", "images": "photo crops (skimage + sklearn), PNG",
                     "torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__,
                     "numpy": np.__version__, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                     "weights_sha256": digest, "fid_config": first["config"]},
        "seconds": {"convert_weights_cold": t_convert, "ours_first_run_cold_reference": t_first,
                    "ours_second_run_cached_reference": t_second, "torch_fidelity_direct": t_direct,
                    "ours_first_stages": first["seconds"], "ours_second_stages": second["seconds"]},
        "ratios": {"ours_first_over_torch_fidelity": t_first / t_direct,
                   "ours_second_over_torch_fidelity": t_second / t_direct},
        "values": {"fid_ours": first["fid"], "fid_torch_fidelity": direct["fid"],
                   "fid_rel_diff": abs(first["fid"] - direct["fid"]) / abs(direct["fid"]),
                   "fid_second_run": second["fid"], "kid_mean_ours": first["kid_mean"],
                   "kid_mean_torch_fidelity": direct["kid_mean"], "fid_spread": first["fid_spread"]},
    }


def overhead_record(measured: dict, environment: dict | None = None, created: str | None = None) -> dict:
    """Kind "benchmark": wall seconds of our FID (cold and cached reference) and of torch-fidelity, lower is
    better; FID agreement as a descriptive score; the settings are the protocol."""
    from snapgen.records import make_record, score

    s, v = measured["seconds"], measured["values"]
    scores = {f"seconds_{k}": score(s[k], None, 1, False, "s") for k in
              ("ours_first_run_cold_reference", "ours_second_run_cached_reference", "torch_fidelity_direct")}
    scores["fid_rel_diff_vs_torch_fidelity"] = score(v["fid_rel_diff"], None, None, None, "relative")
    rec = make_record("benchmark", "fid_harness_overhead", {"benchmark": "fid_harness_overhead", **measured["settings"]},
                      scores, measured, environment)
    return {**rec, "created": created} if created else rec


def migrate_v1(old: dict, path: Path) -> dict:
    """The schema-1 record had no envelope: its environment comes from its settings; its time is unknown."""
    st = old["settings"]
    env = {"threads": st["torch_threads"], "git_commit": None, "cpu_count": st["cpu_count"], "device": st["device"],
           "versions": {"torch": st["torch"], "torch-fidelity": st["torch_fidelity"], "numpy": st["numpy"]},
           "platform": st["platform"]}
    return overhead_record(old, env, "unknown (schema-1 record without a timestamp)")


def main(argv: list[str] | None = None) -> int:
    from snapgen.cli import positive_int

    parser = argparse.ArgumentParser(prog="python -m evals.metrics.bench_fid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=positive_int, default=100, help="images per set (generated and reference), >= 2")
    parser.add_argument("--size", type=positive_int, default=64, help="image side in pixels (resized to 299 inside)")
    parser.add_argument("--batch", type=positive_int, default=32, help="Inception batch size")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch and BLAS threads")
    parser.add_argument("--out", default=None, help="record path (default: <results>/bench/fid_harness_overhead.json)")
    parser.add_argument("--dry-run", action="store_true", help="print the settings and exit")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"argument --n: must be >= 2 (FID needs a covariance of each set), got {args.n}")
    if args.dry_run:
        print(f"would time FID on 2 x {args.n} images of {args.size}px, batch {args.batch}, "
              f"{args.threads} thread(s) -> {args.out or 'results/bench/fid_harness_overhead.json'}")
        return 0
    from snapgen.paths import results_dir
    from snapgen.records import write_record

    out = Path(args.out) if args.out else results_dir("bench") / "fid_harness_overhead.json"
    with tempfile.TemporaryDirectory(prefix="bench_fid_") as tmp:
        measured = run(args.n, args.size, args.batch, args.threads, Path(tmp))
    write_record(out, overhead_record(measured))
    record = measured
    s = record["seconds"]
    print(f"ours first {s['ours_first_run_cold_reference']:.1f}s, second {s['ours_second_run_cached_reference']:.1f}s, "
          f"torch-fidelity {s['torch_fidelity_direct']:.1f}s; FID {record['values']['fid_ours']:.4f} vs "
          f"{record['values']['fid_torch_fidelity']:.4f} -> {out}")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
