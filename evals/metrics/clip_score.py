"""CLIP score: image-prompt cosine similarity under an open_clip backbone loaded from a local file.

Conventions (PEERS pain point 6: backbone, scale, clipping and truncation all change the number):

* ``cos``  -- raw cosine between the L2-normalised image and text embeddings, per sample. This is
  what SnapGen's "CLIP score 0.332" (SPEC section 5) looks like.
* ``x100`` -- ``w * max(cos, 0)`` with ``w = 100``: the clipped score of Hessel et al. (CLIPScore,
  2021, who use w = 2.5) with the weight torchmetrics uses.
  # PAPER-UNKNOWN: chose to clip per sample (Hessel et al.) rather than clip the mean (torchmetrics
  # clips the running mean); the two agree whenever no sample has a negative cosine, which is the
  # normal case for real image-prompt pairs. ``scale`` is a parameter.
* Both metric keys carry the backbone, e.g. ``clip_score_vitl14_cos`` / ``clip_score_vitl14_x100``.
* Prompts are tokenised to the 77-token context as ``[SOT] + first 75 BPE tokens + [EOT]``: the
  end-of-text token always survives, because CLIP pools the text at the EOT position (argmax id).
  open_clip 3.3's ``SimpleTokenizer`` happens to do the same; :func:`tokenize_keep_eot` does it
  explicitly so that a tokenizer change cannot silently drop EOT.
* Aggregation: per-prompt mean over its images, then mean over prompts, with a bootstrap 95% CI
  that resamples prompts (seeded).

Weights never come from a hub: ``ClipScorer.from_pretrained`` takes a local file and records its
sha256 in :attr:`ClipScorer.protocol` (also returned by ``info()``, the scorer convention of
:mod:`evals.metrics`). No real CLIP weights exist offline here, so agreement with
published CLIP scores was NOT checked; the tests use a tiny random open_clip model and compare
against open_clip's own tokenizer + encoders.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from snapgen.io import require_path, sha256_file

WEIGHTS_HOWTO = (
    "Download an open_clip checkpoint file and pass its local path: OpenAI ViT-L/14 as "
    "'open_clip_model.safetensors' from huggingface.co/timm/vit_large_patch14_clip_224.openai "
    "(model_name='ViT-L-14', QuickGELU), or ViT-g-14 as 'open_clip_model.safetensors' from "
    "huggingface.co/laion/CLIP-ViT-g-14-laion2B-s34B-b88K (model_name='ViT-g-14')."
)

# Architectures whose reference weights are OpenAI's, which were trained with QuickGELU. open_clip
# only switches QuickGELU on by itself when weights come from a hub tag, never from a file path, so
# loading OpenAI weights from a file into 'ViT-L-14' silently gives wrong features unless forced.
OPENAI_QUICKGELU_ARCHS = frozenset(
    {"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"}
)


class ClipWeightsError(ValueError):
    """The weights file exists but cannot be loaded into the requested architecture."""


@dataclass(frozen=True)
class ClipScoreConfig:
    model_name: str = "ViT-L-14"  # open_clip architecture name (built-in or added config)
    quick_gelu: bool = True       # QuickGELU activations (True for OpenAI-trained weights)
    context_length: int = 77      # text context incl. SOT and EOT
    scale: float = 100.0          # w in w * max(cos, 0)
    backbone_tag: str = "vitl14"  # goes into the metric keys


def backbone_tag(model_name: str) -> str:
    """'ViT-L-14' -> 'vitl14', 'ViT-g-14' -> 'vitg14'; a '-quickgelu' suffix is not part of the tag."""
    name = re.sub(r"-quickgelu$", "", model_name, flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]", "", name.lower())


def default_quick_gelu(model_name: str) -> bool:
    """QuickGELU for the OpenAI architectures and '-quickgelu' names, GELU otherwise."""
    return model_name in OPENAI_QUICKGELU_ARCHS or model_name.lower().endswith("-quickgelu")


def tokenize_keep_eot(tokenizer, prompts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """``[SOT] + BPE tokens + [EOT]`` padded with 0; over-long prompts keep their head and EOT.

    Returns (N, context_length) int64. Uses the open_clip ``SimpleTokenizer``'s ``encode``,
    ``sot_token_id`` and ``eot_token_id``.
    """
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    out = torch.zeros(len(prompts), context_length, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        body = tokenizer.encode(prompt)[: context_length - 2]  # drop the tail, never the EOT
        ids = [sot, *body, eot]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (one value per resampling unit): the one shared
    bootstrap, ``evals.records.bootstrap_ci`` (same stream and numbers as before, see docs/diffusers.md)."""
    from evals.records import bootstrap_ci

    return bootstrap_ci(list(np.asarray(values, dtype=np.float64)), n_boot=n_boot, seed=seed, level=level)


def aggregate_rows(rows: Iterable[dict], keys: Sequence[str], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean over prompts (each prompt = mean of its samples) + bootstrap 95% CI resampling prompts.

    Rows are grouped by ``prompt_id`` when present, else by ``prompt``.
    """
    groups: dict[Any, list[dict]] = {}
    n_samples = 0
    for row in rows:
        groups.setdefault(row.get("prompt_id", row.get("prompt")), []).append(row)
        n_samples += 1
    if not groups:
        raise ValueError("aggregate: no rows")
    out: dict[str, Any] = {"n_prompts": len(groups), "n_samples": n_samples,
                           "bootstrap": {"unit": "prompt", "n_boot": n_boot, "seed": seed, "level": 0.95}}
    for key in keys:
        per_prompt = np.array([np.mean([r[key] for r in g]) for g in groups.values()])  # (P,)
        lo, hi = bootstrap_mean_ci(per_prompt, n_boot=n_boot, seed=seed)
        out[key] = float(per_prompt.mean())
        out[f"{key}_ci95_low"], out[f"{key}_ci95_high"] = lo, hi
    return out


def _check_model_name(model_name: str) -> None:
    import open_clip

    if ":" in model_name:
        raise ValueError(f"model_name '{model_name}': hub/dir schemas are not allowed; give an open_clip "
                         f"architecture name and a local weights file")
    known = open_clip.list_models()
    if model_name not in known:
        close = difflib.get_close_matches(model_name, known, n=3)
        raise ValueError(f"unknown open_clip model_name '{model_name}'; close matches: {close}")


class ClipScorer:
    """Scores (image, prompt) pairs with a local open_clip model. ``higher_is_better`` for both keys.

    Scorer convention (:mod:`evals.metrics`): ``from_pretrained(weights_path, ..., device)``,
    ``info()``, ``score_batch(images, prompts) -> list[float]``; ``score`` adds the scaled key per row.
    """

    higher_is_better = True

    def __init__(self, model, preprocess, tokenizer, config: ClipScoreConfig, protocol: dict, device="cpu"):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.config = config
        self.protocol = protocol
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, weights_path, model_name: str = "ViT-L-14", quick_gelu: bool | None = None,
                        scale: float = 100.0, device: str | torch.device = "cpu") -> "ClipScorer":
        """Build ``model_name`` and load ``weights_path`` (a local .safetensors/.bin/.pt state dict).

        ``quick_gelu=None`` means True for the OpenAI architectures (their reference weights are
        OpenAI's) and False otherwise; pass it explicitly for e.g. LAION ViT-L-14 weights.
        """
        import open_clip

        path = require_path(weights_path, f"CLIP weights for {model_name}", WEIGHTS_HOWTO).resolve()
        if not path.is_file():
            raise ClipWeightsError(f"CLIP weights '{path}' is not a file. {WEIGHTS_HOWTO}")
        _check_model_name(model_name)
        if quick_gelu is None:
            quick_gelu = default_quick_gelu(model_name)
        try:  # an absolute path can never be mistaken for a hub tag by open_clip
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(path), force_quick_gelu=quick_gelu, device=device)
        except Exception as err:  # corrupt file, wrong architecture, truncated download
            raise ClipWeightsError(f"could not load CLIP weights '{path}' into open_clip '{model_name}': "
                                   f"{type(err).__name__}: {err}. {WEIGHTS_HOWTO}") from err
        tokenizer = open_clip.get_tokenizer(model_name)
        if not hasattr(tokenizer, "eot_token_id"):
            raise ValueError(f"'{model_name}' uses a {type(tokenizer).__name__}; only the CLIP BPE "
                             f"SimpleTokenizer (offline, EOT-pooled) is supported")
        context_length = int(getattr(model, "context_length", 77) or 77)
        config = ClipScoreConfig(model_name, bool(quick_gelu), context_length, float(scale), backbone_tag(model_name))
        protocol = {"evaluator": "open_clip", "open_clip_version": open_clip.__version__,
                    "weights_file": path.name, "weights_sha256": sha256_file(path),
                    "truncation": "sot+head+eot", "clipping": "per-sample max(cos,0) for x100",
                    "preprocess": repr(preprocess), **asdict(config)}
        return cls(model, preprocess, tokenizer, config, protocol, device)

    def info(self) -> dict[str, Any]:
        """Weights (file, sha256), preprocessing, truncation and scale: the scorer's protocol card."""
        return dict(self.protocol)

    @property
    def metric_key(self) -> str:
        """The key of the per-sample floats :meth:`score_batch` returns (the raw cosine)."""
        return self.keys[0]

    @property
    def keys(self) -> tuple[str, str]:
        """(cosine key, scaled key), e.g. ('clip_score_vitl14_cos', 'clip_score_vitl14_x100')."""
        tag = self.config.backbone_tag
        scale = f"x{self.config.scale:g}"
        return f"clip_score_{tag}_cos", f"clip_score_{tag}_{scale}"

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return tokenize_keep_eot(self.tokenizer, prompts, self.config.context_length)

    @torch.inference_mode()
    def cosines(self, images: Sequence, prompts: Sequence[str]) -> torch.Tensor:
        """Per-pair cosine for one batch: (N,) float32."""
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)  # (N, 3, H, W)
        tokens = self.tokenize(prompts).to(self.device)                                # (N, 77)
        img = self.model.encode_image(pixels, normalize=True).float()                  # (N, D)
        txt = self.model.encode_text(tokens, normalize=True).float()                   # (N, D)
        return (img * txt).sum(dim=-1).cpu()

    def score_batch(self, images: Sequence, prompts: Sequence[str]) -> list[float]:
        """The scorer convention: one cosine (:attr:`metric_key`) per (PIL image, prompt) pair, one forward pass."""
        if len(images) != len(prompts):
            raise ValueError(f"score_batch: {len(images)} images but {len(prompts)} prompts")
        return self.cosines(images, prompts).tolist()

    def score(self, images: Sequence, prompts: Sequence[str], batch_size: int = 32) -> list[dict]:
        """One row per (image, prompt) pair: ``{'prompt', <cos key>, <x100 key>}``."""
        if len(images) != len(prompts):
            raise ValueError(f"score: {len(images)} images but {len(prompts)} prompts")
        cos_key, scaled_key = self.keys
        rows = []
        for start in range(0, len(images), batch_size):
            cos = self.cosines(images[start:start + batch_size], prompts[start:start + batch_size])
            for prompt, c in zip(prompts[start:start + batch_size], cos.tolist()):
                rows.append({"prompt": prompt, cos_key: c, scaled_key: self.config.scale * max(c, 0.0)})
        return rows

    def aggregate(self, rows: Iterable[dict], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Mean over prompts + bootstrap 95% CI for both keys (see :func:`aggregate_rows`)."""
        return aggregate_rows(rows, self.keys, n_boot=n_boot, seed=seed)
