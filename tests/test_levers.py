"""Recipe lever studies (ablations.levers): cells are checked against the training config, jobs pair with the
control, budgets do not mix, one toy study runs end to end, and the table pairs each cell with the control."""
import json

import numpy as np
import pytest

from ablations import levers
from ablations.tables.levers import render
from snapgen.records import make_record, score, write_record

ENV = {"threads": 1, "git_commit": "abc", "versions": {}}


def test_cells_are_checked_against_the_training_config():
    cells = levers.parse_cells(["lr=4e-3", "timesteps=uniform logit_std=0.5"])
    assert [n for n, _ in cells] == ["default", "lr=4e-3", "timesteps=uniform+logit_std=0.5"]
    for bad, msg in [("lrr=1", "unknown config field 'lrr'"), ("seed=3", "names the run"), ("lr", "not KEY=VALUE"),
                     ("lr=2e-3", "equals the default recipe"), ("lr=1 lr=2", "given twice"), ("", "empty cell"),
                     ("timesteps=cosine", "timesteps")]:
        with pytest.raises(ValueError, match=msg):
            levers.parse_cells([bad])
    with pytest.raises(ValueError, match="given twice"):
        levers.parse_cells(["lr=4e-3", "lr=4e-3"])


def test_jobs_are_seed_major_and_budgets_do_not_mix(tmp_path, capsys):
    cells = levers.parse_cells(["lr=4e-3"])
    assert [j.name for j in levers.jobs("lr", cells, [0, 1])] == ["default-s0", "lr=4e-3-s0", "default-s1", "lr=4e-3-s1"]
    with pytest.raises(ValueError, match="--seeds: 1 given more than once"):
        levers.jobs("lr", cells, [1, 1])
    args = ["--study", "lr", "--cell", "lr=4e-3", "--results", str(tmp_path / "res"), "--runs", str(tmp_path / "runs")]
    assert levers.main(args + ["--dry-run", "--steps", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget"]["steps"] == 10 and len(out["jobs"]) == 6
    b = levers.recipe_budget(10, 1, 8, 2, 1, 1)
    rec = make_record("lever", "lr-default-s0", {"study": "lr", "cell": "default", "seed": 0,
                                                 "budget": {**b.__dict__, "benchmarks": list(b.benchmarks)}}, {}, {}, ENV)
    write_record(tmp_path / "res" / "lr" / "default-s0.json", rec)
    same = ["--dry-run", "--steps", "10", "--threads", "1", "--fid-n", "8", "--sample-steps", "2",
            "--prompts-per-tag", "1", "--n-per-prompt", "1"]
    with pytest.raises(ValueError, match="does not say which TrainConfig defaults"):     # cannot be paired safely
        levers.main(args + same)
    # written before split_depthwise and processes existed: they count with their LEGACY_VALUES (False, 1), which
    # are not today's recipe (True, 2): not paired
    old_defaults = {k: v for k, v in levers.recipe_defaults().items() if k not in ("split_depthwise", "processes")}
    rec["protocol"]["recipe_defaults"] = old_defaults
    write_record(tmp_path / "res" / "lr" / "default-s0.json", rec)
    with pytest.raises(ValueError, match="another recipe.*processes, split_depthwise"):
        levers.main(args + same)
    rec["protocol"]["recipe_defaults"] = levers.recipe_defaults()           # today's recipe: paired
    write_record(tmp_path / "res" / "lr" / "default-s0.json", rec)
    assert levers.main(args + same) == 0
    capsys.readouterr()
    with pytest.raises(ValueError, match="another budget.*steps: 10 there, 20 now"):
        levers.main(args + ["--dry-run", "--steps", "20", "--threads", "1", "--fid-n", "8", "--sample-steps", "2",
                            "--prompts-per-tag", "1", "--n-per-prompt", "1"])
    # the same budget, but the study's records were trained from other TrainConfig defaults: not paired either
    rec["protocol"]["recipe_defaults"] = {**levers.recipe_defaults(), "split_depthwise": False}
    write_record(tmp_path / "res" / "lr" / "default-s0.json", rec)
    with pytest.raises(ValueError, match="another recipe.*split_depthwise"):
        levers.main(args + ["--dry-run", "--steps", "10", "--threads", "1", "--fid-n", "8", "--sample-steps", "2",
                            "--prompts-per-tag", "1", "--n-per-prompt", "1"])


def _units(level, rng):
    return {t: {str(i): float(np.clip(level + rng.normal(0, 0.05), 0, 1)) for i in range(8)}
            for t in ("single_object", "two_object", "counting")}


def test_table_pairs_each_cell_with_the_control(tmp_path):
    rng = np.random.default_rng(0)
    b = {"steps": 1900, "batch_size": 16, "threads": 2, "n_per_prompt": 4, "prompts_per_tag": 12, "fid_n": 512,
         "sample_steps": 20, "guidance": 3.0}
    for seed in range(3):
        base = _units(0.3, rng)
        for cell, units, fid in (("default", base, 100.0 + seed),
                                 ("lr=4e-3", {t: {k: min(1.0, v + 0.2) for k, v in d.items()} for t, d in base.items()},
                                  90.0 + seed + 0.3 * seed)):
            rec = make_record("lever", f"lr-{cell}-s{seed}", {"study": "lr", "cell": cell, "seed": seed, "budget": b},
                              {"fid_world32": score(fid, None, 512, False, "FID")},
                              {"units": {"geneval_overall": units}, "train_wall_s": 1800.0}, ENV)
            write_record(tmp_path / "world" / "levers" / "lr" / f"{cell}-s{seed}.json", rec)
    text = render(tmp_path)
    row = [c.strip() for c in next(x for x in text.splitlines() if x.startswith("| lr=4e-3")).split("|")[1:-1]]
    assert row[1] == "3" and row[2] == "30.0"
    assert float(row[4].split()[0]) == pytest.approx(0.2, abs=0.03) and float(row[5]) < 0.05
    assert float(row[7].split()[0]) == pytest.approx(-9.7, abs=0.01)
    assert "## lr" in text and "1900 steps x batch 16" in text and "not paired" not in text
    for seed in range(3):                       # a 64 px cell: its FID-world is another metric, never paired
        rec = make_record("lever", f"lr-res64-s{seed}", {"study": "lr", "cell": "resolution=64", "seed": seed,
                                                         "budget": b},
                          {"fid_world64": score(50.0, None, 512, False, "FID")},
                          {"units": {"geneval_overall": _units(0.3, rng)}, "train_wall_s": 3600.0}, ENV)
        write_record(tmp_path / "world" / "levers" / "lr" / f"resolution=64-s{seed}.json", rec)
    text = render(tmp_path)
    row = [c.strip() for c in next(x for x in text.splitlines() if x.startswith("| resolution=64")).split("|")[1:-1]]
    assert row[7] == "—" and "Δ FID not paired for resolution=64" in text


def test_a_toy_study_runs_end_to_end(tmp_path):
    """Two jobs (control + one cell) at toy size through the real stages: train, then held-out GenEval (kept to
    GenEval for time; FID-world is the same `evals.run fid --ref world` stage the FID tests cover)."""
    res, runs = tmp_path / "res", tmp_path / "runs"
    args = ["--study", "toy", "--cell", "lr=4e-3", "--seeds", "0", "--steps", "2", "--threads", "1", "--fid-n", "8",
            "--sample-steps", "2", "--prompts-per-tag", "1", "--n-per-prompt", "1", "--benchmarks", "geneval",
            "--results", str(res),
            "--runs", str(runs)]
    assert levers.main(args) == 0
    recs = {p.name: json.loads(p.read_text()) for p in (res / "toy").glob("*.json")}
    assert set(recs) == {"default-s0.json", "lr=4e-3-s0.json"}
    cell = recs["lr=4e-3-s0.json"]
    assert cell["kind"] == "lever" and cell["protocol"]["overrides"] == ["lr=4e-3"]
    assert cell["details"]["train_config"]["lr"] == 4e-3 and recs["default-s0.json"]["details"]["train_config"]["lr"] == 2e-3
    assert cell["protocol"]["prompts"]["split"] == "heldout" and "geneval_overall" in cell["scores"]
    assert cell["protocol"]["budget"]["benchmarks"] == ["geneval"]
    assert levers.main(args) == 0                                    # resumable: nothing left to do


def test_a_run_trained_from_other_defaults_is_not_reused(tmp_path):
    """A run folder left by an earlier session (finished or to be resumed) must match today's TrainConfig defaults in
    every field the study does not set, or its record would claim a recipe it was not trained with."""
    from snapgen.training.t2i import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    levers.check_run_recipe(run, set())                                 # nothing trained yet: fine
    cfg = {**TrainConfig().to_dict(), "steps": 10, "seed": 3}
    (run / "train_config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "split_depthwise"}))
    with pytest.raises(ValueError, match="other TrainConfig defaults \\(split_depthwise\\)"):
        levers.check_run_recipe(run, {"steps", "seed"})                 # an older run: the legacy value (False)
    (run / "train_config.json").write_text(json.dumps(cfg))
    levers.check_run_recipe(run, {"steps", "seed"})
    (run / "train_config.json").write_text(json.dumps({**cfg, "lr": 1e-4}))
    with pytest.raises(ValueError, match="other TrainConfig defaults \\(lr\\)"):
        levers.check_run_recipe(run, {"steps", "seed"})
    levers.check_run_recipe(run, {"steps", "seed", "lr"})               # a cell that sets lr itself


def test_base_and_train_device_shape_every_job(tmp_path, monkeypatch):
    """``--base`` changes every cell, the control too (a cell's own value wins); ``--train-device cuda`` leaves out
    ``cpu=true``; a study refuses records of another base or device, and a run trained elsewhere is not scored as
    this device's."""
    base = levers.parse_base("processes=1 batch_size=32")
    cells = levers.parse_cells(["batch_size=128"], base)
    with pytest.raises(ValueError, match="equals the study recipe"):
        levers.parse_cells(["batch_size=32"], base)
    with pytest.raises(ValueError, match="--base 'seed=1': seed names the run"):
        levers.parse_base("seed=1")
    with pytest.raises(ValueError, match="--base 'procezzes=1'"):
        levers.parse_base("procezzes=1")
    seen = []
    monkeypatch.setattr(levers, "_run", lambda cmd, log, threads: seen.append(cmd[cmd.index("--set") + 1:]))
    b = levers.recipe_budget(10, 1, 8, 2, 1, 1)
    paths = levers.Paths(tmp_path / "runs", tmp_path / "res")
    control, cell = levers.jobs("gpu", cells, [0], base)
    levers.train(control, b, paths, "cuda")
    levers.train(cell, b, paths, "cpu")
    assert "cpu=true" not in seen[0] and "processes=1" in seen[0] and "batch_size=32" in seen[0]
    assert "cpu=true" in seen[1] and "batch_size=128" in seen[1] and "batch_size=32" not in seen[1]
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"environment": {"device": "cuda:0"}}))
    levers.check_trained_on(run, "cuda")
    with pytest.raises(ValueError, match="trained on cuda .*not on --train-device cpu"):
        levers.check_trained_on(run, "cpu")
    rec = make_record("lever", "gpu-default-s0", {"study": "gpu", "cell": "default", "seed": 0,
                                                  "budget": json.loads(json.dumps(b.__dict__)),
                                                  "recipe_defaults": levers.recipe_defaults(), "base": list(base),
                                                  "train_device": "cuda"}, {}, {}, ENV)
    write_record(tmp_path / "res" / "gpu" / "default-s0.json", rec)
    levers.check_budget(paths, "gpu", b, base, "cuda")
    with pytest.raises(ValueError, match="--base: .*processes=1 batch_size=32"):
        levers.check_budget(paths, "gpu", b, (), "cuda")
    with pytest.raises(ValueError, match="--train-device cpu: .*trained on cuda"):
        levers.check_budget(paths, "gpu", b, base, "cpu")


def test_the_table_names_the_cpus_when_a_study_trained_on_several():
    """Train walls from two CPU families are not comparable: the CPU comes from each job's train_config (the
    `cost` study's table names both since its progressive-resolution cell trained on another host)."""
    from ablations.tables.levers import _train_cpu

    def rec(env):
        return {"details": {"train_config": {"environment": env}}}

    assert _train_cpu(rec({"device": "cpu", "cpu": "AMD EPYC 7B13"})) == "AMD EPYC 7B13"
    assert _train_cpu(rec({"device": "cuda:0", "cpu": "AMD EPYC"})) == "a GPU (cuda)"
    assert _train_cpu({"details": {}}) == "unknown"


def test_a_study_borrows_the_control_another_study_trained(tmp_path, capsys):
    """A control is the default recipe at a budget: a new study pairs its cells with another study's control of the
    same recipe, budget, base, device, seed and prompts instead of training it again (the runner counts that job
    done, the table pairs with it and says so); a control of another budget or recipe is never borrowed."""
    rng = np.random.default_rng(1)
    b = levers.recipe_budget(10, 1, 8, 2, 1, 1)
    res = tmp_path / "world" / "levers"

    def write(study, cell, seed, level, budget=b, recipe=None):
        protocol = {"study": study, "cell": cell, "seed": seed, "budget": json.loads(json.dumps(budget.__dict__)),
                    "recipe_defaults": recipe or levers.recipe_defaults(), "prompts": {"split": "heldout"},
                    "base": [], "train_device": "cpu"}
        rec = make_record("lever", f"{study}-{cell}-s{seed}", protocol, {"fid_world32": score(50.0, None, 8, False, "FID")},
                          {"units": {"geneval_overall": _units(level, rng)}, "train_wall_s": 60.0}, ENV)
        write_record(res / study / f"{cell}-s{seed}.json", rec)

    for seed in (0, 1):
        write("noise", "default", seed, 0.3)
    write("other", "default", 1, 0.3, budget=levers.recipe_budget(20, 1, 8, 2, 1, 1))     # another budget
    write("mine", "default", 0, 0.3)
    args = ["--study", "mine", "--cell", "lr=4e-3", "--seeds", "0", "1", "2", "--steps", "10", "--threads", "1",
            "--fid-n", "8", "--sample-steps", "2", "--prompts-per-tag", "1", "--n-per-prompt", "1",
            "--results", str(res), "--runs", str(tmp_path / "runs"), "--dry-run"]
    assert levers.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    done = {d["job"]: d["record"] for d in out["done"]}
    assert done == {"default-s0": str(res / "mine" / "default-s0.json"),
                    "default-s1": str(res / "noise" / "default-s1.json")}        # seed 2: nobody has it
    assert [d["job"] for d in out["jobs"]] == ["lr=4e-3-s0", "lr=4e-3-s1", "default-s2", "lr=4e-3-s2"]
    for seed in (0, 1):
        write("mine", "lr=4e-3", seed, 0.5)
    text = render(tmp_path)
    section = text.split("## mine")[1].split("## noise")[0]
    row = [c.strip() for c in next(x for x in section.splitlines() if x.startswith("| default")).split("|")[1:-1]]
    assert row[1] == "2" and "seed 1 from `noise/default-s1.json`" in section
    cell = [c.strip() for c in next(x for x in section.splitlines() if x.startswith("| lr=4e-3")).split("|")[1:-1]]
    assert float(cell[4].split()[0]) == pytest.approx(0.2, abs=0.05)
    # the control of seed 1 in "noise" was trained from another recipe: not the same control, nothing borrowed
    write("noise", "default", 1, 0.3, recipe={**levers.recipe_defaults(), "lr": 1e-3})
    assert levers.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert "default-s1" in [d["job"] for d in out["jobs"]]
    assert "noise/default-s1.json" not in render(tmp_path).split("## mine")[1].split("## noise")[0]
