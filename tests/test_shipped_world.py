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
    from snapgen.training.t2i import LEGACY_VALUES

    # fields added to TrainConfig after the shipped run, at the value that reproduces the code it was trained with
    shipped = {**LEGACY_VALUES, **manifest["train_config"]}
    assert {k: shipped[k] for k in recipe if k not in ("out", "threads")} == \
        {k: v for k, v in recipe.items() if k not in ("out", "threads")}
    scores = json.loads((SHIPPED_WORLD / "heldout_scores.json").read_text())
    assert scores["prompts"]["split"] == "heldout" and scores["prompts"]["n"] >= 40
    lo, hi = scores["overall_ci95"]
    assert lo <= scores["overall"] <= hi


def test_shipped_scores_are_the_main_jobs_record():
    """heldout_scores.json beside the weights says what the committed main-job record says (same protocol)."""
    from snapgen.paths import REPO_ROOT

    scores = json.loads((SHIPPED_WORLD / "heldout_scores.json").read_text())
    rec = json.loads((REPO_ROOT / "results/geneval/world-tiny-geneval.json").read_text())
    assert scores["overall"] == rec["scores"]["geneval_overall"]["value"]
    assert scores["overall_ci95"] == rec["scores"]["geneval_overall"]["ci95"]
    assert scores["images_per_prompt"] == rec["protocol"]["images_per_prompt"]
    assert scores["ci"] == rec["protocol"]["bootstrap"] and scores["prompts"] == rec["protocol"]["prompts"]


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


# sha256 of the U-Net weights as shipped (the 2-process recipe, a8e73d5; the same bytes as an earlier session's run
# of the same command): the held-out scores in heldout_scores.json and results/ were measured on these bytes
SHIPPED_UNET_SHA256 = "7cb641985c7ae441e2145226f919271d37635e7df3a12e0ff7e7e51698cf2ef0"


def test_shipped_folder_is_in_the_diffusers_layout_with_the_weights_as_shipped():
    manifest = verify_manifest(SHIPPED_WORLD)
    files = manifest["files"]
    assert files["pipeline/unet/diffusion_pytorch_model.safetensors"] == SHIPPED_UNET_SHA256
    assert [k for k in files if k.endswith(".safetensors")] == ["pipeline/unet/diffusion_pytorch_model.safetensors"]
    written = ["pipeline/model_index.json", "pipeline/scheduler/scheduler_config.json",
               "pipeline/text_encoder/config.json", "pipeline/pipeline.json", "pipeline/unet/config.json",
               "pipeline/unet/weights.sha256.json"]
    assert sorted(k for k in files if k.startswith("pipeline/")) == sorted(written + list(
        k for k in files if k.endswith(".safetensors")))
    assert "refreshed" not in manifest                                # everything written by the engine and shipping


def test_refresh_manifest_adds_new_files_and_refuses_changed_ones(tmp_path):
    from evals.ship_world import refresh_manifest

    copy = tmp_path / "world-tiny"
    shutil.copytree(SHIPPED_WORLD, copy)
    assert refresh_manifest(copy) == []                                       # nothing new: manifest untouched
    assert (copy / "manifest.json").read_bytes() == (SHIPPED_WORLD / "manifest.json").read_bytes()
    (copy / "pipeline" / "extra").mkdir()
    (copy / "pipeline" / "extra" / "x.json").write_text("{}")
    assert refresh_manifest(copy) == ["pipeline/extra/x.json"]
    manifest = verify_manifest(copy)
    assert "pipeline/extra/x.json" in manifest["files"] and manifest["refreshed"][-1]["added"] == ["pipeline/extra/x.json"]
    weights = copy / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    (copy / "pipeline" / "extra" / "y.json").write_text("{}")
    with pytest.raises(ValueError, match="does not match its sha256"):
        refresh_manifest(copy)                                                # a changed weight is never re-hashed
    assert "pipeline/extra/y.json" not in json.loads((copy / "manifest.json").read_text())["files"]


def test_retrain_world_reuses_a_run_of_the_default_recipe_only(tmp_path):
    """`--retrain-world` reuses runs/world-tiny when it was trained with the default recipe (another thread count, or
    a run older than a field added to TrainConfig since, which counts with its LEGACY_VALUES), and refuses otherwise."""
    from evals.generators import ensure_world_model
    from snapgen.train import TrainConfig

    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "pipeline.json").write_text("{}")
    cfg = {**TrainConfig(out=str(tmp_path)).to_dict(), "threads": 2, "environment": {"threads": 2}}
    (tmp_path / "train_config.json").write_text(json.dumps(cfg))
    assert ensure_world_model(tmp_path, retrain=True) == tmp_path / "pipeline"
    (tmp_path / "train_config.json").write_text(json.dumps({**cfg, "split_depthwise": False}))
    with pytest.raises(ValueError, match="another recipe than the default"):
        ensure_world_model(tmp_path, retrain=True)
    # a run of the first recipe (written before processes and split_depthwise existed: 1 process, no split)
    old = {k: v for k, v in cfg.items() if k not in ("processes", "split_depthwise")}
    (tmp_path / "train_config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="another recipe than the default"):
        ensure_world_model(tmp_path, retrain=True)
