"""GenEval's zero-shot colour classifier: CLIP ViT-L/14 (OpenAI weights) loaded from a local file.

Protocol (djghosh13/geneval `evaluate_images.py`): for one detected instance, paste the image over a
flat #999999 canvas through the instance mask (no mask: the image as is), crop to the box, apply the CLIP
model's eval transform, and take the argmax of cosine similarity against ten colour embeddings. Each
colour embedding is the re-normalised mean of the normalised text embeddings of three templates filled
with the colour and the object's class name (CLIP_benchmark's zero_shot_classifier), so the classifier is
per object class; text embeddings are computed once per class and cached.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from evals.geneval.rules import OFFICIAL, Detection, GenEvalRules
from snapgen.io import require_path, sha256_file

HOW_TO_GET_CLIP = (
    "Download the OpenAI CLIP ViT-L/14 weights as an open_clip state dict on a machine with internet, e.g. "
    "'open_clip_pytorch_model.bin' or 'open_clip_model.safetensors' from the Hugging Face repo "
    "timm/vit_large_patch14_clip_224.openai, and pass its path (GenEval uses pretrained='openai').")


def crop_for_color(image: Image.Image, detection: Detection, rules: GenEvalRules = OFFICIAL) -> Image.Image:
    """The image CLIP sees for one instance: mask-composited on the background colour, then box-cropped."""
    image = image.convert("RGB")
    mask = detection.get("mask")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (image.height, image.width):
            raise ValueError(f"mask shape {mask.shape} != image (H, W) {(image.height, image.width)}")
        canvas = Image.new("RGB", image.size, color=rules.color_background)
        alpha = Image.fromarray((mask > 0).astype(np.uint8) * 255, mode="L")  # bool mask, like mmdet's
        image = Image.composite(image, canvas, alpha)
    if rules.color_crop:
        image = image.crop(tuple(float(v) for v in detection["box"][:4]))  # PIL rounds float corners
    return image


class ClipColorClassifier:
    """``classifier(image, detection) -> colour``; ``classifier.bind(image)`` gives ``detection -> colour``
    for :func:`evals.geneval.rules.evaluate_image`."""

    def __init__(self, model, preprocess, tokenizer, rules: GenEvalRules = OFFICIAL, device: str = "cpu",
                 weights_path: str | None = None, model_name: str | None = None):
        self.model = model.eval().to(device)
        self.preprocess = preprocess              # the CLIP model's eval transform (resize, centre crop, norm)
        self.tokenizer = tokenizer
        self.rules = rules
        self.device = device
        self.weights_path = weights_path
        self.model_name = model_name
        self._text: dict[str, torch.Tensor] = {}  # class name -> (D, n_colors) unit colour embeddings

    @classmethod
    def from_pretrained(cls, weights_path: str | Path, model_name: str = "ViT-L-14", quick_gelu: bool = True,
                        device: str = "cpu", rules: GenEvalRules = OFFICIAL) -> "ClipColorClassifier":
        """Load open_clip ``model_name`` with weights from the local file ``weights_path``.

        quick_gelu: OpenAI's CLIP weights were trained with QuickGELU; open_clip applies it for the
        'openai' tag (what GenEval uses) but not for a file path, so it is forced here. Set False only for
        weights trained with standard GELU.
        """
        import open_clip

        path = require_path(weights_path, f"CLIP {model_name} weights for GenEval's colour classifier",
                            HOW_TO_GET_CLIP)
        if not path.is_file():
            raise FileNotFoundError(f"CLIP weights '{path}' must be a file (a state dict), not a folder")
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=str(path), force_quick_gelu=quick_gelu, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
        return cls(model, preprocess, tokenizer, rules, device, str(path), model_name)

    def protocol(self, with_hash: bool = True) -> dict:
        """What a result record needs to reproduce the classifier."""
        out = {"model_name": self.model_name, "weights_path": self.weights_path, "colors": list(self.rules.colors),
               "templates": list(self.rules.color_templates), "background": self.rules.color_background}
        if with_hash and self.weights_path:
            out["weights_sha256"] = sha256_file(self.weights_path)
        return out

    @torch.no_grad()
    def text_embeddings(self, classname: str) -> torch.Tensor:
        """(D, n_colors) colour embeddings for objects of ``classname`` (cached)."""
        if classname not in self._text:
            columns = []
            for color in self.rules.colors:
                texts = [t.format(c=color, obj=classname) for t in self.rules.color_templates]
                emb = self.model.encode_text(self.tokenizer(texts).to(self.device))   # (n_templates, D)
                mean = F.normalize(emb.float(), dim=-1).mean(0)
                columns.append(mean / mean.norm())
            self._text[classname] = torch.stack(columns, dim=1)                     # (D, n_colors)
        return self._text[classname]

    @torch.no_grad()
    def classify(self, image: Image.Image, detections: Sequence[Detection]) -> list[str]:
        """Colour name of each detection in ``image`` (one batch)."""
        if not detections:
            return []
        pixels = torch.stack([self.preprocess(crop_for_color(image, d, self.rules)) for d in detections])
        feats = F.normalize(self.model.encode_image(pixels.to(self.device)).float(), dim=-1)  # (N, D)
        colors = []
        for d, f in zip(detections, feats):
            logits = f @ self.text_embeddings(d["class"])                              # (n_colors,)
            colors.append(self.rules.colors[int(logits.argmax())])
        return colors

    def __call__(self, image: Image.Image, detection: Detection) -> str:
        return self.classify(image, [detection])[0]

    def bind(self, image: Image.Image):
        """``detection -> colour`` on this image, the callable ``evaluate_image`` expects."""
        return lambda detection: self(image, detection)
