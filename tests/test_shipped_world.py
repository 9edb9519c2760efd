"""The shipped world-tiny checkpoint: verified by sha256 on load, trained by the project's recipe, scored held out."""
import json
import shutil

import pytest

from evals.generators import SHIPPED_WORLD, load_generator, verify_manifest


def test_shipped_world_model_verifies_and_matches_the_recipe():
    manifest = verify_manifest(SHIPPED_WORLD)
    assert "pipeline/pipeline.json" in manifest["files"] and "log.jsonl" in manifest["files"]
    assert any(k.endswith(".safetensors") for k in manifest["files"])
    size = sum((SHIPPED_WORLD / k).stat().st_size for k in manifest["files"])
    assert size < 12 * 2**20                                     # a few MB in the repo
    from snapgen.train import TrainConfig

    recipe = TrainConfig().to_dict()                              # the training command's defaults ARE the recipe
    shipped = manifest["train_config"]
    assert {k: shipped[k] for k in recipe if k not in ("out", "threads")} == \
        {k: v for k, v in recipe.items() if k not in ("out", "threads")}
    scores = json.loads((SHIPPED_WORLD / "heldout_scores.json").read_text())
    assert scores["prompts"]["split"] == "heldout" and scores["prompts"]["n"] >= 40
    lo, hi = scores["overall_ci95"]
    assert lo <= scores["overall"] <= hi


def test_a_flipped_byte_in_the_shipped_weights_is_a_clear_error(tmp_path):
    copy = tmp_path / "world-tiny"
    shutil.copytree(SHIPPED_WORLD, copy)
    weights = next(p for p in sorted(copy.rglob("*.safetensors")))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its sha256"):
        verify_manifest(copy)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        verify_manifest(copy)


def test_world_tiny_generator_uses_the_shipped_pipeline():
    gen = load_generator("world-tiny")
    assert gen.domain == "world" and gen.path == SHIPPED_WORLD / "pipeline"
    image = gen.generate(["a photo of a red circle"], [0])[0]
    assert image.size == (32, 32)
