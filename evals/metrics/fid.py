"""FID + KID of a generated image folder against a reference: the harness entry point of the FID family.

Protocol: InceptionV3 (TF 2015-12-05) ``2048`` pool features, offline weights
(:mod:`evals.metrics.inception`), torch-fidelity's decode / TF1-bilinear resize / scale
(:mod:`evals.metrics.features`), reference statistics from a folder or a cached ``.npz``
(:mod:`evals.metrics.reference`), the Fréchet distance (:mod:`evals.metrics.frechet`) and KID
(:mod:`evals.metrics.kid`), with the knobs in :class:`FIDConfig`. :func:`compute_fid` returns a
JSON-able result carrying that protocol; :func:`torch_fidelity_direct` runs torch-fidelity itself on
the same folders for parity checks and timing.

This module held the whole family until issue 14 split it by concept; the names it held are still
importable from here (see the re-export block below).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evals.metrics.features import IMAGE_EXTENSIONS, PREPROCESSING, count_lossy, extract_features, list_images
from evals.metrics.frechet import (TraceSqrtMethod, covariance_factor, feature_statistics, fid_from_stats,
                                   fid_subset_spread)
from evals.metrics.inception import EXTRACTOR_NAME, SOURCE_SHA256, converted_weights, load_extractor
from evals.metrics.kid import kid_from_features
from evals.metrics.prc import PRCConfig, prc_from_features
from evals.metrics.reference import library_versions, load_reference, precompute_reference

# Re-exports. Every public name evals.metrics.fid held before the split stays importable from here (the
# imports above cover the ones compute_fid uses, the block below the rest), so evals/benchmarks/{fid,fid_ref}.py,
# evals/metrics/bench_fid.py and the tests run unchanged; new code imports from the home module named on each
# line. `scipy` stays because tests/test_fid.py patches `fid.scipy.linalg.sqrtm`, and `extract_features` is
# the name tests patch to count Inception passes, which is why _reference_from hands it to precompute_reference.
import scipy.linalg  # noqa: F401
from evals.metrics.features import LOSSY_EXTENSIONS, OTHER_IMAGE_EXTENSIONS  # noqa: F401
from evals.metrics.frechet import fid_from_features, trace_sqrt_product  # noqa: F401
from evals.metrics.inception import (CONVERTED_NAME, CONVERTER_VERSION, FEATURE_DIM, SOURCE_FILE,  # noqa: F401
                                     SOURCE_PACKAGE, SOURCE_SHA1, CorruptWeightsError, clear_extractor_memo,
                                     conv_key_table, convert_torchscript_state_dict, default_cache_dir,
                                     load_torchscript, torchscript_source_path, verify_weights_file)
from evals.metrics.reference import reference_key  # noqa: F401


@dataclass(frozen=True)
class FIDConfig:
    # PAPER-UNKNOWN: chose "svd" because scipy sqrtm takes ~15 s per call at d=2048 on 2 CPU cores and
    # the spread needs 1 + spread_subsets calls; "svd" equals "sqrtm" to ~1e-6 relative (tested).
    trace_sqrt: TraceSqrtMethod = "svd"      # how tr sqrt(S1 S2) is computed ("sqrtm" = TTUR/pytorch-fid)
    eps: float = 1e-6                        # sqrtm retry offset (eps * I) when the result is not finite
    kid_subsets: int = 100                   # torch-fidelity default
    kid_subset_size: int = 1000              # torch-fidelity default; capped at min(n_gen, n_ref)
    kid_degree: int = 3                      # polynomial kernel (gamma x.y + coef0)^degree
    kid_gamma: float | None = None           # None -> 1 / feature dim
    kid_coef0: float = 1.0
    kid_seed: int = 2020                     # torch-fidelity rng_seed: same subsets -> same KID
    # PAPER-UNKNOWN: no paper states an FID error bar; chose 10 subsets of 50% (seeded) as a cheap
    # sampling-spread estimate; set spread_subsets=0 to skip.
    spread_subsets: int = 10                 # random generated-image subsets for the FID spread
    spread_fraction: float = 0.5             # subset size as a fraction of n_gen (without replacement)
    spread_seed: int = 0                     # np.random.default_rng seed for the subsets


def _reference_from(ref_dir_or_stats: str | os.PathLike, digest: str, batch_size: int, device: Any,
                    cache_dir: Any, weights_path: Any, progress: bool) -> dict[str, Any]:
    source = Path(ref_dir_or_stats)
    if source.is_file() and source.suffix == ".npz":
        return load_reference(source, digest)
    path = precompute_reference(source, batch_size, device, cache_dir=cache_dir, weights_path=weights_path,
                                progress=progress, extract=extract_features)
    return load_reference(path, digest)


def compute_fid(gen_dir: str | os.PathLike, ref_dir_or_stats: str | os.PathLike, batch_size: int = 32,
                device: str | torch.device = "cpu", *, config: FIDConfig = FIDConfig(),
                cache_dir: str | os.PathLike | None = None, weights_path: str | os.PathLike | None = None,
                progress: bool = False, prc: PRCConfig | None = None) -> dict[str, Any]:
    """FID + KID of the images in ``gen_dir`` against a reference folder or a reference ``.npz``.

    Returns a JSON-able dict: ``fid``, ``kid_mean``, ``kid_std``, ``fid_spread`` (see
    :func:`fid_subset_spread`), ``n_gen``, ``n_ref``, ``extractor``, ``weights_sha256``,
    ``resize_filter``, ``preprocessing``, ``config``, ``reference`` (key + path), ``versions``,
    ``seconds`` (per stage). ``batch_size`` and ``device`` change speed only. With ``prc`` (a
    :class:`~evals.metrics.prc.PRCConfig`) it also returns ``prc``: precision / recall / density / coverage
    from the same two feature sets (every other number is unchanged).
    """
    import time

    seconds: dict[str, float] = {}
    if len(list_images(gen_dir)) < 2:
        raise ValueError(f"image folder '{gen_dir}' holds {len(list_images(gen_dir))} image; FID needs at least 2 "
                         "(a covariance); pass a folder of 2 or more images")
    t0 = time.perf_counter()
    _, digest = load_extractor(weights_path, device, cache_dir)
    ref = _reference_from(ref_dir_or_stats, digest, batch_size, device, cache_dir, weights_path, progress)
    seconds["reference"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    files = list_images(gen_dir)
    f_gen = extract_features(files, batch_size, device, weights_path=weights_path, cache_dir=cache_dir,
                             progress=progress)
    seconds["extract_gen"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mu, sigma = feature_statistics(f_gen)
    svd = config.trace_sqrt == "svd"
    ref_factor = covariance_factor(ref["features"]) if svd else None
    factors = (covariance_factor(f_gen), ref_factor) if svd else None
    fid = fid_from_stats(mu, sigma, ref["mu"], ref["sigma"], config.trace_sqrt, config.eps, factors)
    spread = fid_subset_spread(f_gen, ref["mu"], ref["sigma"], ref_factor, config.spread_subsets,
                               config.spread_fraction, config.spread_seed, config.trace_sqrt, config.eps) \
        if config.spread_subsets > 0 else None
    seconds["fid"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kid_mean, kid_std = kid_from_features(f_gen, ref["features"], config.kid_subsets, config.kid_subset_size,
                                          config.kid_degree, config.kid_gamma, config.kid_coef0, config.kid_seed)
    seconds["kid"] = time.perf_counter() - t0
    extra = {}
    if prc is not None:
        t0 = time.perf_counter()
        k, n = max(prc.k_precision_recall, prc.k_density_coverage), min(len(f_gen), len(ref["features"]))
        extra["prc"] = prc_from_features(f_gen, ref["features"], prc) if n > k else \
            {"skipped": f"precision/recall/density/coverage need more than k={k} images per set, got {n}"}
        seconds["prc"] = time.perf_counter() - t0
    return {**extra, "fid": fid, "kid_mean": kid_mean, "kid_std": kid_std, "fid_spread": spread,
            "higher_is_better": {"fid": False, "kid_mean": False},
            "n_gen": len(files), "n_ref": int(ref["meta"]["n"]),
            "kid_subset_size": min(config.kid_subset_size, len(files), int(ref["meta"]["n"])),
            "n_lossy_gen": count_lossy(files), "n_lossy_ref": ref["meta"].get("n_lossy"),
            "extractor": EXTRACTOR_NAME, "weights_sha256": digest, "source_weights_sha256": SOURCE_SHA256,
            "resize_filter": PREPROCESSING["resize_filter"], "preprocessing": PREPROCESSING,
            "config": dataclasses.asdict(config), "gen_dir": str(Path(gen_dir).resolve()),
            "reference": {"key": ref["meta"]["key"], "path": ref["path"], "ref_dir": ref["meta"].get("ref_dir")},
            "runtime": {"device": str(device), "batch_size": batch_size, "torch_threads": torch.get_num_threads()},
            "versions": library_versions(), "seconds": seconds}


def torch_fidelity_direct(gen_dir: str | os.PathLike, ref_dir: str | os.PathLike, batch_size: int = 32,
                          device: str | torch.device = "cpu", *, kid: bool = True, kid_subset_size: int = 1000,
                          cache_dir: str | os.PathLike | None = None,
                          weights_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``torch_fidelity.calculate_metrics`` on the same two folders with the converted weights (no
    cache, no worker processes, same glob rules); for parity checks and overhead timing."""
    import torch_fidelity

    path = Path(weights_path) if weights_path is not None else converted_weights(cache_dir)[0]
    n_gen, n_ref = len(list_images(gen_dir)), len(list_images(ref_dir))
    metrics = torch_fidelity.calculate_metrics(
        input1=str(gen_dir), input2=str(ref_dir), fid=True, kid=kid,
        kid_subset_size=min(kid_subset_size, n_gen, n_ref), feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(path), cuda=str(device).startswith("cuda"), batch_size=batch_size,
        cache=False, save_cpu_ram=True, verbose=False, samples_find_ext=",".join(IMAGE_EXTENSIONS))
    out = {"fid": float(metrics["frechet_inception_distance"]), "n_gen": n_gen, "n_ref": n_ref}
    if kid:
        out.update(kid_mean=float(metrics["kernel_inception_distance_mean"]),
                   kid_std=float(metrics["kernel_inception_distance_std"]))
    return out
