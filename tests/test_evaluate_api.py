"""The Python API (evals.evaluate) and the validated benchmark registry: the CLI's evaluator from Python."""
import pytest

import evals
from evals.api import get_benchmark, options


def test_registry_declares_metrics_and_rejects_unknown_names():
    known = evals.list_benchmarks()
    assert list(known) == ["geneval", "dpg", "fid", "clip", "imagereward"]
    for b in known.values():
        assert b.metrics and all(m.higher_is_better in (True, False, None) and m.unit for m in b.metrics)
    assert get_benchmark("fid").metric("fid_world32").higher_is_better is False
    with pytest.raises(KeyError, match="did you mean geneval"):
        get_benchmark("genevl")
    with pytest.raises(TypeError, match="did you mean n_per_prompt"):
        options(get_benchmark("geneval"), n_per_promt=2)
    with pytest.raises(ValueError, match="world_split"):
        options(get_benchmark("geneval"), world_split="test")


def test_evaluate_a_pipeline_object_in_memory_images_and_a_builtin_give_one_record(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SNAPGEN_CACHE", str(tmp_path / "cache"))
    from evals.generators import WorldOracle

    rec = evals.evaluate("geneval", generator="world-oracle", limit=6, n_per_prompt=1)
    assert rec["kind"] == "evaluation" and rec["scores"]["geneval_overall"]["value"] == 1.0
    assert (tmp_path / "results" / "geneval" / "world-oracle-geneval.json").exists()

    # the same prompts as in-memory images, in job order: identical scores, nothing written with write=False
    from evals.api import parser_for  # noqa: F401  (the CLI's parser is the option source)
    from snapgen.data.world import WorldConfig, make_prompt_set
    from snapgen.pipeline import sample_seed

    meta = make_prompt_set(12, 1234, WorldConfig(), split="heldout")[:6]
    images = WorldOracle().generate([m["prompt"] for m in meta], [sample_seed(i, 0, 0) for i in range(6)], meta)
    again = evals.evaluate("geneval", images=images, limit=6, n_per_prompt=1, detector="world", write=False)
    assert again["scores"]["geneval_overall"] == rec["scores"]["geneval_overall"]
    assert again["protocol"]["generator"]["generator"] == "in-memory images"
    with pytest.raises(ValueError, match="one image per job"):
        evals.evaluate("geneval", images=images[:5], limit=6, n_per_prompt=1, detector="world", write=False)
    with pytest.raises(ValueError, match="exactly one"):
        evals.evaluate("geneval")


def test_evaluate_a_snapgen_pipeline_object(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPGEN_CACHE", str(tmp_path / "cache"))
    from snapgen.pipeline import SnapGenPipeline

    pipe = SnapGenPipeline.from_pretrained("snapgen/weights/world-tiny/pipeline")
    rec = evals.evaluate("geneval", generator=pipe, detector="world", limit=3, n_per_prompt=1, steps=2,
                         write=False)
    assert rec["protocol"]["generator"]["checkpoint"] == "in-memory"
    assert 0.0 <= rec["scores"]["geneval_overall"]["value"] <= 1.0
