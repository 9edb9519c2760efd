"""GenEval's CI (evals.records.two_stage_ci): images resampled within prompts, prompts only in tasks that sample a
larger pool; the world's held-out record says which tasks were a census."""
import numpy as np
import pytest

from evals.records import two_stage_ci


def test_census_keeps_prompts_and_sampled_tasks_resample_them():
    tasks = {"a": [[1.0] * 8, [0.0] * 8]}          # one prompt always passes, the other never
    assert two_stage_ci(tasks, sampled=set())["a"] == (0.5, 0.5)     # a census: only the images vary, and they agree
    lo, hi = two_stage_ci(tasks, sampled={"a"})["a"]                  # a sample of prompts: which prompts were drawn
    assert lo == 0.0 and hi == 1.0


def test_overall_is_the_mean_of_task_means_and_images_vary():
    tasks = {"a": [[1, 0] * 8], "b": [[1, 1, 1, 1], [0, 0, 0, 0]]}
    out = two_stage_ci(tasks, n_boot=2000)
    assert out["b"] == (0.5, 0.5)
    assert out["a"][0] < 0.5 < out["a"][1]
    assert out["overall"] == pytest.approx(tuple((x + 0.5) / 2 for x in out["a"]))    # the mean of the task means


@pytest.mark.parametrize("n_images", [8, 16])
def test_covers_the_expected_score_of_a_known_sampler(n_images):
    """Binomial images with known per-prompt rates (some near 0 and 1, as the world's are), census prompts: the 95%
    interval holds the expected score in at least 90% of 200 simulated evaluations."""
    rng = np.random.default_rng(0)
    rates = {"a": [0.3, 0.95], "b": [0.5, 0.75, 0.6, 0.97], "c": [0.4, 0.5, 0.15, 0.02], "d": [0.98] * 10,
             "e": list(rng.uniform(0, 0.5, 12))}
    truth = np.mean([np.mean(r) for r in rates.values()])
    hits = 0
    for k in range(200):
        tasks = {t: [list((rng.random(n_images) < p).astype(float)) for p in r] for t, r in rates.items()}
        lo, hi = two_stage_ci(tasks, n_boot=300, seed=k)["overall"]
        hits += lo <= truth <= hi
    assert hits >= 180, hits


def test_unknown_sampled_task_is_refused():
    with pytest.raises(ValueError, match="no prompts"):
        two_stage_ci({"a": [[1.0]]}, sampled={"b"})


def test_world_record_names_its_census_tasks(tmp_path):
    import json

    from evals.run import main
    from snapgen.data.world import GENEVAL_TAGS, WorldConfig, all_metadata

    out = tmp_path / "o.json"
    assert main(["geneval", "--ckpt", "world-oracle", "--n-per-prompt", "1", "--out", str(out), "--no-progress",
                 "--images-root", str(tmp_path / "img")]) == 0
    rec = json.loads(out.read_text())
    boot = rec["protocol"]["bootstrap"]
    assert boot["pool"] == {t: len(all_metadata(t, WorldConfig(), "heldout")) for t in GENEVAL_TAGS}
    # every held-out prompt of a task with <= 12 of them is scored (a census); colour attribution samples 12 of 466
    assert boot["census_tasks"] == sorted(t for t in GENEVAL_TAGS if t != "color_attr")
    assert rec["protocol"]["images_per_prompt"] == 1


def test_world_generators_default_to_eight_images_per_prompt(tmp_path):
    from evals.api import get_benchmark, options

    bench = get_benchmark("geneval")
    args = options(bench, ckpt="world-oracle", dry_run=True)
    assert args.n_per_prompt is None
    from evals.benchmarks.common import resolve_n_per_prompt

    assert resolve_n_per_prompt(args, 4, 8, "world", True) == 8
    args = options(bench, images=str(tmp_path), dry_run=True)
    assert resolve_n_per_prompt(args, 4, 8, "world", False) == 4
