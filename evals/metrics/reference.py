"""Reference statistics for FID/KID: features + (mu, sigma) of a reference folder, a content-addressed .npz cache.

Protocol. ``<cache>/fid_reference/<key>.npz`` holds ``mu`` (d,) and ``sigma`` (d, d) in float64,
``features`` (N, d) float32 (KID needs them) and a JSON ``meta`` (folder, n, weights sha256,
extractor, ``PREPROCESSING``, library versions). The key (:func:`reference_key`) covers every
reference file's name and bytes, the extractor weights, the preprocessing and the torch-fidelity
version, so a stale file can never be served; a cached file that fails to load is recomputed, and
one made with other weights or preprocessing is refused by :func:`load_reference`.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch

from evals.metrics.features import PREPROCESSING, count_lossy, extract_features, list_images
from evals.metrics.frechet import feature_statistics
from evals.metrics.inception import EXTRACTOR_NAME, FEATURE_DIM, default_cache_dir, load_extractor
from snapgen.io import atomic_write_bytes, sha256_file, sha256_json


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose code fixes the numbers (recorded in references and results)."""
    import torch_fidelity

    return {"torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__}


def reference_key(files: list[Path], weights_sha256: str) -> str:
    """sha256 over (name, content sha256) of every reference file in feature order, the extractor
    weights sha256, ``PREPROCESSING`` and the torch-fidelity version (its code does the resize).
    Names are included because feature order fixes the KID subsets; any changed byte, added,
    removed or renamed file gives a new key, so stale statistics can never be served."""
    import torch_fidelity

    contents = [[p.name, sha256_file(p)] for p in files]
    return sha256_json({"files": contents, "weights_sha256": weights_sha256, "preprocessing": PREPROCESSING,
                        "torch_fidelity": torch_fidelity.__version__})


def _write_reference(path: Path, features: np.ndarray, meta: dict[str, Any]) -> None:
    mu, sigma = feature_statistics(features)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, features=features.astype(np.float32), meta=np.array(json.dumps(meta)))
    atomic_write_bytes(path, buf.getvalue())


def load_reference(path: str | os.PathLike, weights_sha256: str | None = None) -> dict[str, Any]:
    """Load a reference .npz written by :func:`precompute_reference`: ``mu`` (d,), ``sigma`` (d, d),
    ``features`` (N, d) float32, ``meta``. Raises ValueError naming the file when it is unreadable or
    was made with other weights / preprocessing than ours."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            ref = {k: data[k] for k in ("mu", "sigma", "features")}
            meta = json.loads(str(data["meta"]))
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated zip, missing member, bad JSON
        raise ValueError(f"reference statistics '{path}' are unreadable ({type(err).__name__}: {err})") from err
    if meta.get("preprocessing") != PREPROCESSING:
        raise ValueError(f"reference statistics '{path}' used preprocessing {meta.get('preprocessing')}, "
                         f"ours is {PREPROCESSING}")
    if weights_sha256 is not None and meta.get("weights_sha256") != weights_sha256:
        raise ValueError(f"reference statistics '{path}' were made with weights {meta.get('weights_sha256')}, "
                         f"the extractor has {weights_sha256}")
    if ref["features"].shape != (meta.get("n"), FEATURE_DIM):
        raise ValueError(f"reference statistics '{path}': features {ref['features'].shape} != n={meta.get('n')}")
    return {**ref, "meta": meta, "path": str(path)}


def precompute_reference(ref_dir: str | os.PathLike, batch_size: int = 32, device: str | torch.device = "cpu", *,
                         cache_dir: str | os.PathLike | None = None, weights_path: str | os.PathLike | None = None,
                         progress: bool = False, extract: Callable[..., np.ndarray] | None = None) -> Path:
    """Statistics + features of a reference folder, cached as ``<cache>/fid_reference/<key>.npz``
    (key: :func:`reference_key`). A cached file that fails to load is recomputed. ``extract``: the
    files -> features function, default :func:`~evals.metrics.features.extract_features` (``compute_fid``
    passes the one it uses, so every Inception pass goes through one patchable name)."""
    extract = extract_features if extract is None else extract
    _, digest = load_extractor(weights_path, device, cache_dir)
    files = list_images(ref_dir)
    if len(files) < 2:
        raise ValueError(f"reference folder '{ref_dir}' holds {len(files)} image; FID needs at least 2 (a covariance); "
                         "pass a folder of 2 or more reference images")
    key = reference_key(files, digest)
    path = default_cache_dir(cache_dir) / "fid_reference" / f"{key}.npz"
    if path.exists():
        try:
            load_reference(path, digest)
            return path
        except ValueError as err:
            warnings.warn(f"recomputing reference statistics: {err}", RuntimeWarning, stacklevel=2)
    features = extract(files, batch_size, device, weights_path=weights_path, cache_dir=cache_dir, progress=progress)
    meta = {"key": key, "ref_dir": str(Path(ref_dir).resolve()), "n": len(files), "weights_sha256": digest,
            "extractor": EXTRACTOR_NAME, "preprocessing": PREPROCESSING, "n_lossy": count_lossy(files),
            "versions": library_versions()}
    _write_reference(path, features, meta)
    return path
