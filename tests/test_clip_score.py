"""CLIP score: a tiny random open_clip model saved to tmp and loaded through the user-facing loader."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from evals.metrics.clip_score import (
    ClipScorer,
    ClipWeightsError,
    aggregate_rows,
    backbone_tag,
    default_quick_gelu,
    tokenize_keep_eot,
)
from snapgen.io import MissingWeightsError, sha256_file

TINY = "snapgen-tiny-clip"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PROMPTS = ["a red cube on a table", "two dogs in the snow", "a photo of a cat", "an astronaut riding a horse",
           "a bowl of fruit"]


def _register(tmp_dir, name, cfg):
    path = tmp_dir / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("clip")
    _register(tmp, TINY, TINY_CFG)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    path = tmp / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def scorer(tiny_weights):
    return ClipScorer.from_pretrained(tiny_weights, model_name=TINY)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_keys_range_and_reference(scorer):
    images = _images(len(PROMPTS))
    rows = scorer.score(images, PROMPTS, batch_size=2)
    cos_key, x100_key = scorer.keys
    assert (cos_key, x100_key) == ("clip_score_snapgentinyclip_cos", "clip_score_snapgentinyclip_x100")
    # reference: open_clip's own tokenizer + model, cosine by hand
    with torch.no_grad():
        pix = torch.stack([scorer.preprocess(im) for im in images])
        img = torch.nn.functional.normalize(scorer.model.encode_image(pix), dim=-1)
        txt = torch.nn.functional.normalize(scorer.model.encode_text(open_clip.tokenize(PROMPTS)), dim=-1)
        ref = (img * txt).sum(-1)
    for row, prompt, r in zip(rows, PROMPTS, ref.tolist()):
        assert row["prompt"] == prompt
        assert -1.0 <= row[cos_key] <= 1.0
        assert row[cos_key] == pytest.approx(r, abs=1e-5)
        assert row[x100_key] == pytest.approx(100.0 * max(r, 0.0), abs=1e-3)
    assert not np.allclose([r[cos_key] for r in rows], rows[0][cos_key])  # not a constant


def test_negative_cosine_clipped_in_x100(scorer):
    rows = scorer.score(_images(len(PROMPTS), seed=3) * 3, PROMPTS * 3)
    cos_key, x100_key = scorer.keys
    for r in rows:
        assert r[x100_key] == pytest.approx(100.0 * max(r[cos_key], 0.0), abs=1e-4)
        assert r[x100_key] >= 0.0


def test_eot_kept_for_200_word_prompt(scorer):
    long_prompt = " ".join(["a very detailed painting of a lighthouse"] * 29)[: 200 * 6]
    assert len(long_prompt.split()) >= 200
    tok = scorer.tokenizer
    tokens = scorer.tokenize([long_prompt, "a cat"])
    assert tokens.shape == (2, 77)
    assert tokens[0, 0] == tok.sot_token_id and tokens[0, -1] == tok.eot_token_id
    assert (tokens[0] == tok.eot_token_id).sum() == 1
    assert tokens[0, 1:-1].tolist() == tok.encode(long_prompt)[:75]  # head kept, tail dropped
    short = [tok.sot_token_id, *tok.encode("a cat"), tok.eot_token_id]
    assert tokens[1, : len(short)].tolist() == short and tokens[1, len(short):].eq(0).all()
    # open_clip 3.3's default truncation agrees (documents that it also keeps EOT)
    assert torch.equal(tokens, open_clip.tokenize([long_prompt, "a cat"]))
    # CLIP pools at the argmax id: the EOT position
    assert tokens[0].argmax().item() == 76


def test_tokenize_keep_eot_other_context_length(scorer):
    tokens = tokenize_keep_eot(scorer.tokenizer, ["word " * 50], context_length=16)
    assert tokens.shape == (1, 16) and tokens[0, -1] == scorer.tokenizer.eot_token_id


def test_batch_size_independence(scorer):
    images = _images(len(PROMPTS), seed=1)
    cos_key, _ = scorer.keys
    a = [r[cos_key] for r in scorer.score(images, PROMPTS, batch_size=1)]
    b = [r[cos_key] for r in scorer.score(images, PROMPTS, batch_size=4)]
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_protocol_records_weights_hash(scorer, tiny_weights):
    p = scorer.protocol
    assert p["weights_sha256"] == sha256_file(tiny_weights)
    assert p["model_name"] == TINY and p["context_length"] == 77 and p["scale"] == 100.0
    assert p["quick_gelu"] is False and p["truncation"] == "sot+head+eot"


def test_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope" / "ViT-L-14.safetensors"
    with pytest.raises(MissingWeightsError) as err:
        ClipScorer.from_pretrained(missing)
    assert str(missing) in str(err.value) and "ViT-L/14" in str(err.value) and "ViT-g-14" in str(err.value)


def test_corrupt_and_truncated_files_name_it(tmp_path, tiny_weights):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_weights.read_bytes()[: tiny_weights.stat().st_size // 2])
    for bad in (garbage, truncated):
        with pytest.raises(ClipWeightsError) as err:
            ClipScorer.from_pretrained(bad, model_name=TINY)
        assert str(bad) in str(err.value)


def test_wrong_architecture_raises(tmp_path, tiny_weights):
    other = dict(TINY_CFG, embed_dim=8)
    _register(tmp_path, "snapgen-tiny-clip-e8", other)
    with pytest.raises(ClipWeightsError, match="snapgen-tiny-clip-e8"):
        ClipScorer.from_pretrained(tiny_weights, model_name="snapgen-tiny-clip-e8")


def test_unknown_model_name_suggests(tiny_weights):
    with pytest.raises(ValueError, match="ViT-L-14"):
        ClipScorer.from_pretrained(tiny_weights, model_name="ViT-L14")
    with pytest.raises(ValueError, match="schemas are not allowed"):
        ClipScorer.from_pretrained(tiny_weights, model_name="hf-hub:laion/CLIP-ViT-g-14-laion2B-s34B-b88K")


def test_backbone_tags_and_quick_gelu_defaults():
    assert backbone_tag("ViT-L-14") == "vitl14" and backbone_tag("ViT-g-14") == "vitg14"
    assert backbone_tag("ViT-L-14-quickgelu") == "vitl14" and backbone_tag("ViT-bigG-14") == "vitbigg14"
    assert default_quick_gelu("ViT-L-14") and default_quick_gelu("ViT-B-32-quickgelu")
    assert not default_quick_gelu("ViT-g-14") and not default_quick_gelu(TINY)


def test_aggregate_mean_over_prompts_and_ci():
    key = "clip_score_vitl14_cos"
    # prompt a: two images (0.2, 0.4) -> 0.3; prompt b: one image 0.6 -> mean over prompts 0.45
    rows = [{"prompt": "a", key: 0.2}, {"prompt": "a", key: 0.4}, {"prompt": "b", key: 0.6}]
    out = aggregate_rows(rows, [key], n_boot=200, seed=0)
    assert out[key] == pytest.approx(0.45) and out["n_prompts"] == 2 and out["n_samples"] == 3
    assert 0.3 - 1e-12 <= out[f"{key}_ci95_low"] <= out[key] <= out[f"{key}_ci95_high"] <= 0.6 + 1e-12
    rng = np.random.default_rng(0)
    many = [{"prompt_id": i, "prompt": "same text", key: float(v)} for i, v in enumerate(rng.normal(0.3, 0.05, 400))]
    a = aggregate_rows(many, [key], seed=1)
    assert a == aggregate_rows(many, [key], seed=1)  # seeded: reproducible
    assert a["n_prompts"] == 400  # grouped by prompt_id, not by text
    half_width = (a[f"{key}_ci95_high"] - a[f"{key}_ci95_low"]) / 2
    assert half_width == pytest.approx(1.96 * 0.05 / np.sqrt(400), rel=0.25)
    assert aggregate_rows(many, [key], seed=2)[f"{key}_ci95_low"] != a[f"{key}_ci95_low"]


def test_scorer_aggregate_uses_both_keys(scorer):
    rows = scorer.score(_images(3), PROMPTS[:3])
    out = scorer.aggregate(rows, n_boot=50)
    for key in scorer.keys:
        assert out[f"{key}_ci95_low"] <= out[key] <= out[f"{key}_ci95_high"]
    assert out[scorer.keys[1]] == pytest.approx(np.mean([r[scorer.keys[1]] for r in rows]))


def test_length_mismatch_raises(scorer):
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        scorer.score(_images(2), PROMPTS[:3])


def test_scorer_convention(scorer):
    from evals.metrics import PairScorer

    images = _images(len(PROMPTS), seed=5)
    assert isinstance(scorer, PairScorer) and scorer.higher_is_better is True
    assert scorer.metric_key == scorer.keys[0] and scorer.info() == scorer.protocol
    values = scorer.score_batch(images, PROMPTS)
    assert isinstance(values, list) and len(values) == len(PROMPTS)
    np.testing.assert_allclose(values, [r[scorer.metric_key] for r in scorer.score(images, PROMPTS)], atol=1e-6)
    with pytest.raises(ValueError):
        scorer.score_batch(images, PROMPTS[:2])
