"""The distillation study end to end at toy size: a 2-step world DiT teacher, the KD study (plain and the paper's
recipe), the step study (base, LADD, control), the records and the table (ablations.distill_study)."""
from __future__ import annotations

import json

import pytest

from snapgen.cli import run_cli
from snapgen.records import read_record

TOY = ["--steps", "2", "--ladd-steps", "2", "--batch-size", "2", "--benchmarks", "geneval", "--prompts-per-tag", "1",
       "--n-per-prompt", "1", "--sample-steps", "2", "--base-eval-steps", "2", "--ladd-eval-steps", "2",
       "--seeds", "0"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from ablations.distill_study import main
    from snapgen.train import main as train

    tmp = tmp_path_factory.mktemp("study")
    assert train(["--out", str(tmp / "teacher"), "--no-progress", "--set", "unet=world-dit-s", "steps=2",
                  "batch_size=2", "threads=1", "processes=1", "sample_steps=1", "sample_guidance=1.0", "warmup=1"]) == 0
    teacher = tmp / "teacher" / "pipeline"
    common = ["--teacher", str(teacher), "--runs", str(tmp / "runs"), "--results", str(tmp / "res" / "distill"), *TOY]
    assert main([*common, "--study", "kd", "--arms", "plain", "kd-output-feature-ta"]) == 0
    assert main([*common, "--study", "ladd", "--arms", "base", "ladd", "--no-teacher-score"]) == 0
    return tmp, common


def test_records_of_both_studies(study):
    tmp, _ = study
    res = tmp / "res" / "distill"
    kd = read_record(res / "kd" / "kd-output-feature-ta-s0.json")
    assert kd["kind"] == "distillation" and kd["protocol"]["arm_settings"] == {"kd_weighting": "u-shape"}
    assert kd["protocol"]["prompts"]["split"] == "heldout" and kd["protocol"]["teacher"]["class"] == "WorldDiT"
    assert kd["details"]["train_wall_s"] > 0 and "geneval_overall" in kd["scores"]
    assert set(kd["details"]["units"]["geneval_overall"]) == {"single_object", "two_object", "counting", "colors",
                                                              "position", "color_attr"}
    plain = read_record(res / "kd" / "plain-s0.json")
    assert plain["protocol"]["arm_settings"] == {} and plain["protocol"]["sample_steps"] == 2
    base = read_record(res / "ladd" / "base@2-s0.json")
    assert base["protocol"]["sample_steps"] == 2 and base["details"]["run"] == plain["details"]["run"]
    ladd = read_record(res / "ladd" / "ladd@2-s0.json")
    assert set(ladd["details"]["discriminator"]) >= {"balanced_acc", "logit_gap", "at_chance"}
    assert ladd["details"]["base_train_wall_s"] == plain["details"]["train_wall_s"]
    cfg = json.loads((tmp / "runs" / "ladd" / "ladd-s0" / "train_config.json").read_text())
    assert cfg["ladd_adv_weight"] == 1 and cfg["init"].endswith("plain-s0/pipeline")
    teacher = read_record(res / "teacher" / "teacher.json")
    assert teacher["protocol"]["study"] == "teacher" and teacher["details"]["train_config"]["unet"] == "world-dit-s"


def test_the_control_arm_differs_from_ladd_only_by_the_adversarial_weight(study, tmp_path):
    """What the control run would be launched with (its training is the LADD run's, tested above)."""
    from ablations.distill_study import BUDGETS, LADD_ARMS, Job, Paths, train

    calls = []
    import ablations.distill_study as ds

    tmp, _ = study
    (tmp_path / "kd").mkdir()
    (tmp_path / "kd" / "plain-s0").symlink_to(tmp / "runs" / "kd" / "plain-s0")    # the base student
    paths = Paths(tmp_path, tmp_path / "res")
    orig = ds._run
    ds._run = lambda cmd, log, threads: calls.append(cmd)
    try:
        for arm in ("ladd", "control"):
            train(Job("ladd", arm, 0), BUDGETS["cpu"], paths, tmp / "teacher" / "pipeline")
    finally:
        ds._run = orig
    ladd_cmd, control_cmd = calls
    assert [a for a in control_cmd if a not in ladd_cmd] == [str(paths.run(Job("ladd", "control", 0))),
                                                             "ladd_adv_weight=0"]
    assert LADD_ARMS["control"] == {"ladd_adv_weight": "0"}


def test_rerun_is_a_no_op_and_the_table_renders(study):
    from ablations.distill_study import main
    from ablations.tables.distillation import render

    tmp, common = study
    log = tmp / "runs" / "kd" / "plain-s0" / "log.jsonl"
    before = log.stat().st_mtime_ns
    assert main([*common, "--study", "kd", "--arms", "plain", "kd-output-feature-ta"]) == 0
    assert log.stat().st_mtime_ns == before
    from dataclasses import replace

    from ablations.distill_study import BUDGETS, Paths, write_reports

    pages = write_reports("kd", replace(BUDGETS["cpu"], sample_steps=2), Paths(tmp / "runs", tmp / "res" / "distill"),
                          tmp / "res" / "reports")
    assert [p.parent.name for p in pages] == ["kd-output-feature-ta"] and pages[0].is_file()
    md = render(tmp / "res", allow_dirty=True)
    assert "[kd-output-feature-ta](../reports/distill_kd/kd-output-feature-ta/index.html)" in md
    for row in ("| teacher (WorldDiT) |", "| plain | 1 |", "kd-output-feature-ta/index.html) | 1 |", "| base@2 | 1 |",
                "| ladd@2 | 1 |"):
        assert row in md, row
    assert "GenEval 0.66 (multi-level KD + TA scaling)" in md


def test_bad_study_inputs(study, tmp_path, capsys):
    from ablations.distill_study import main

    tmp, common = study
    assert run_cli(main, [*common, "--study", "kd", "--arms", "kd-feature", "--dry-run"]) == 2
    assert "--arms kd-feature: not an arm of the kd study" in capsys.readouterr().err
    other = ["--teacher", str(tmp / "teacher" / "pipeline"), "--runs", str(tmp_path / "runs"), "--results",
             str(tmp_path / "res"), *TOY, "--no-teacher-score"]
    assert run_cli(main, [*other, "--study", "ladd", "--arms", "ladd"]) == 2
    assert "run `--study kd --arms plain --seeds 0` first" in capsys.readouterr().err
    assert run_cli(main, ["--teacher", str(tmp_path / "none"), "--dry-run"]) == 2
    assert "none" in capsys.readouterr().err
