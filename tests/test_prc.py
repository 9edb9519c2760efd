"""Precision / recall / density / coverage (evals.metrics.prc) against torch-fidelity's ``metric_prc`` and the
published density / coverage formulas (Naeem et al. 2020), on random arrays and on real Inception features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evals.metrics.prc import PRCConfig, density_coverage, knn_radii, prc_from_features, precision_recall


def _sets(n_gen: int, n_ref: int, d: int = 16, shift: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1.0, (n_gen, d)), rng.normal(0.0, 1.0, (n_ref, d))


def _published_density_coverage(gen: np.ndarray, ref: np.ndarray, k: int) -> tuple[float, float]:
    """Naeem et al. 2020 eq. 5-6, written out with explicit distances (scipy) as the prdc package does."""
    from scipy.spatial.distance import cdist

    ref_ref = cdist(ref, ref)
    radii = np.sort(ref_ref, axis=1)[:, k]                       # column 0 is the point itself
    ref_gen = cdist(ref, gen)                                    # (n_ref, n_gen)
    density = (ref_gen < radii[:, None]).sum(0).mean() / k
    coverage = (ref_gen.min(1) < radii).mean()
    return float(density), float(coverage)


@pytest.mark.parametrize("n_gen,n_ref,shift", [(40, 50, 0.0), (64, 33, 0.7), (25, 80, 1.5)])
def test_precision_recall_equal_torch_fidelity(n_gen, n_ref, shift):
    from torch_fidelity.metric_prc import calculate_precision_recall_full, prc_features_to_metric

    gen, ref = _sets(n_gen, n_ref, shift=shift, seed=n_gen)
    ours = precision_recall(gen, ref, k=3)
    tf_full = calculate_precision_recall_full(torch.from_numpy(gen), torch.from_numpy(ref), neighborhood=3)
    tf_metric = prc_features_to_metric(torch.from_numpy(gen), torch.from_numpy(ref), prc_neighborhood=3,
                                       prc_batch_size=7, save_cpu_ram=True, verbose=False)
    assert ours == pytest.approx(tf_full, abs=1e-6)          # torch-fidelity averages in float32
    assert ours == pytest.approx((tf_metric["precision"], tf_metric["recall"]), abs=1e-6)
    assert prc_from_features(gen, ref)["f_score"] == pytest.approx(tf_metric["f_score"], abs=1e-6)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_density_coverage_equal_published_formulas(k):
    gen, ref = _sets(45, 60, shift=0.4, seed=k)
    assert density_coverage(gen, ref, k=k) == pytest.approx(_published_density_coverage(gen, ref, k), abs=1e-12)


def test_identical_sets_are_fully_precise_recalled_and_covered():
    x = _sets(30, 1, seed=3)[0]
    p, r = precision_recall(x, x)
    d, c = density_coverage(x, x)
    assert (p, r, c) == (1.0, 1.0, 1.0) and d > 0.5


def test_far_apart_sets_score_zero_and_block_size_changes_nothing():
    gen, ref = _sets(30, 40, shift=50.0)
    assert precision_recall(gen, ref) == (0.0, 0.0) and density_coverage(gen, ref) == (0.0, 0.0)
    gen, ref = _sets(70, 90, shift=0.3, seed=5)
    assert prc_from_features(gen, ref, PRCConfig(block=7)) | {"config": None} == \
        prc_from_features(gen, ref, PRCConfig(block=4096)) | {"config": None}


def test_knn_radii_exclude_the_point_itself_and_refuse_too_few_samples():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_array_equal(knn_radii(x, 1), [1.0, 1.0, 2.0, 4.0])
    np.testing.assert_array_equal(knn_radii(x, 3), [7.0, 6.0, 4.0, 7.0])
    with pytest.raises(ValueError, match="more than 4 samples"):
        knn_radii(x, 4)


def test_compute_fid_returns_prc_from_its_own_features_and_keeps_fid_kid(tmp_path):
    """Real Inception features of 12 + 12 photo crops: compute_fid's PRC equals torch-fidelity's prc on the
    same features, and FID / KID are identical with and without PRC."""
    from threadpoolctl import threadpool_limits
    from torch_fidelity.metric_prc import prc_features_to_metric

    from evals.metrics import fid
    from evals.metrics.bench_fid import photo_crops, write_pngs

    a = write_pngs(tmp_path / "a", photo_crops(12, 1, size=64))
    b = write_pngs(tmp_path / "b", photo_crops(12, 2, size=64))
    cache = tmp_path / "cache"
    config = fid.FIDConfig(spread_subsets=0)
    with threadpool_limits(1):
        plain = fid.compute_fid(a, b, cache_dir=cache, config=config)
        with_prc = fid.compute_fid(a, b, cache_dir=cache, config=config, prc=PRCConfig())
        f_a = fid.extract_features(fid.list_images(a), 32, "cpu", cache_dir=cache)
        f_b = fid.extract_features(fid.list_images(b), 32, "cpu", cache_dir=cache)
        small = fid.compute_fid(a, b, cache_dir=cache, config=config, prc=PRCConfig(k_density_coverage=12))
    assert "prc" not in plain
    assert (with_prc["fid"], with_prc["kid_mean"], with_prc["kid_std"]) == \
        (plain["fid"], plain["kid_mean"], plain["kid_std"])
    ref = prc_features_to_metric(torch.from_numpy(np.asarray(f_a, np.float64)),
                                 torch.from_numpy(np.asarray(f_b, np.float64)),
                                 prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    got = with_prc["prc"]
    assert (got["precision"], got["recall"]) == pytest.approx((ref["precision"], ref["recall"]), abs=1e-6)
    assert (got["density"], got["coverage"]) == pytest.approx(
        _published_density_coverage(np.asarray(f_a, np.float64), np.asarray(f_b, np.float64), 5), abs=1e-12)
    assert "need more than k=12" in small["prc"]["skipped"] and small["fid"] == plain["fid"]
