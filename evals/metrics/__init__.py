"""Evaluation metrics: one concept per file, every scorer family under one convention.

Files (torch-fidelity's layout: the feature extractor, each distance and the reference cache apart):

    inception.py    InceptionV3 2015-12-05 weights: TorchScript -> torch-fidelity conversion, verified cache, loading
    features.py     images -> (N, 2048) pool features: folder rules, decode, TF1 resize, scale (PREPROCESSING);
                    InceptionFeatures, the FID/KID family under the scorer convention
    frechet.py      Fréchet distance maths (FID from features / statistics, subset spread)
    kid.py          Kernel Inception Distance (unbiased polynomial MMD^2 over torch-fidelity's subsets)
    reference.py    reference statistics: content-addressed .npz cache of (mu, sigma, features)
    fid.py          FID + KID of a folder against a reference (compute_fid, FIDConfig); re-exports the
                    names it held before the split, so ``from evals.metrics.fid import X`` keeps working
    clip_score.py   CLIP score under a local open_clip model (ClipScorer)
    imagereward.py  ImageReward-v1.0 rebuilt from transformers' BLIP parts (ImageRewardModel)
    bench_fid.py    timing of compute_fid against torch-fidelity called directly (a CLI)

The scorer convention. Every scorer family exposes:

    Family.from_pretrained(<local weights path(s)>, ..., device="cpu")
        Weights only ever come from local files; a missing one raises ``snapgen.io.MissingWeightsError``
        naming the path and how to get it, an unreadable one the family's own error naming the file
        (``ClipWeightsError``, ``CheckpointMismatchError``, ``CorruptWeightsError``).
    scorer.info() -> dict
        JSON-able protocol card: evaluator, weights file(s) and sha256, preprocessing, config. It goes
        into the result record as the evaluator's protocol. (``scorer.protocol`` holds the same dict
        on the per-sample scorers, for existing callers.)
    scorer.higher_is_better
        Declared once on the class; records and ``compare`` take it from there.
    per-sample scorers (:class:`PairScorer`: CLIP score, ImageReward):
        ``scorer.score_batch(images, prompts) -> list[float]``, one float per (PIL image, prompt) pair,
        under ``scorer.metric_key``.
    set metrics (:class:`FeatureScorer`: FID / KID):
        ``scorer.features(images) -> (N, d) float32``; the distance between two feature sets comes
        from ``frechet.py`` / ``kid.py`` (a single image has no FID), under ``scorer.metric_keys``.

Family-specific extras stay where they are (``ClipScorer.score`` rows with the scaled key,
``ImageRewardModel.score(prompt, images)``, ``compute_fid``'s whole-folder result).
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable


@runtime_checkable
class PairScorer(Protocol):
    """A per-sample scorer of (image, prompt) pairs (see the module docstring)."""

    higher_is_better: bool
    metric_key: str

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> "PairScorer": ...

    def info(self) -> dict[str, Any]: ...

    def score_batch(self, images: Sequence[Any], prompts: Sequence[str]) -> list[float]: ...


@runtime_checkable
class FeatureScorer(Protocol):
    """A set-metric family: per-sample features, distances computed between feature sets."""

    higher_is_better: bool
    metric_keys: tuple[str, ...]

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> "FeatureScorer": ...

    def info(self) -> dict[str, Any]: ...

    def features(self, images: Any, batch_size: int = 32, progress: bool = False) -> Any: ...
