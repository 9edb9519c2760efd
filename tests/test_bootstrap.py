"""The one shared bootstrap (evals.records.bootstrap_ci) against scipy.stats.bootstrap, and its two callers agree."""
import numpy as np
import pytest
from scipy.stats import bootstrap

from evals.metrics.clip_score import bootstrap_mean_ci
from evals.records import bootstrap_ci


@pytest.mark.parametrize("n,seed", [(5, 0), (37, 0), (200, 3)])
def test_matches_scipy_percentile_bootstrap(n, seed):
    x = np.random.default_rng(n).random(n)
    ours = bootstrap_ci(list(x), n_boot=1000, seed=seed)
    ref = bootstrap((x,), np.mean, n_resamples=1000, method="percentile", rng=np.random.default_rng(seed),
                    vectorized=True, confidence_level=0.95).confidence_interval
    assert ours == pytest.approx(tuple(ref), abs=1e-12)


def test_clip_score_uses_the_shared_bootstrap():
    x = np.random.default_rng(1).random(23)
    assert bootstrap_mean_ci(x, n_boot=500, seed=2) == bootstrap_ci(list(x), n_boot=500, seed=2)
    assert bootstrap_mean_ci(np.array([0.5]))== (0.5, 0.5)
