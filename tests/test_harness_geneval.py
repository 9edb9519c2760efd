"""The harness end to end on the synthetic world: records, resume after a kill, --images, compare."""
import json

import pytest

from evals.generate import geneval_jobs, run_jobs
from evals.run import main


def _run(tmp_path, *extra):
    out = tmp_path / "rec.json"
    rc = main(["geneval", "--images-root", str(tmp_path / "img"), "--out", str(out), "--no-progress", *extra])
    return rc, (json.loads(out.read_text()) if out.exists() else None)


def test_oracle_scores_one_noise_scores_zero_and_record_has_protocol_card(tmp_path):
    rc, rec = _run(tmp_path, "--ckpt", "world-oracle", "--limit", "12")
    assert rc == 0 and rec["scores"]["geneval_overall"]["value"] == 1.0
    assert rec["kind"] == "evaluation" and rec["scores"]["geneval_overall"]["higher_is_better"] is True
    p = rec["protocol"]
    for key in ("sampler", "generator", "images_per_prompt", "seed_scheme", "prompt_set_sha256", "evaluator", "bootstrap"):
        assert key in p, key
    assert rec["environment"]["versions"]["torch"] and rec["details"]["wall_time_s"] > 0
    rows = [json.loads(x) for x in open(tmp_path / "rec.samples.jsonl")]
    assert p["images_per_prompt"] == 8                       # the world's default (official GenEval: 4)
    assert len(rows) == 12 * 8 and all({"correct", "reason", "filename"} <= set(r) for r in rows)
    rc, noise = _run(tmp_path, "--ckpt", "world-noise", "--limit", "12")
    assert noise["scores"]["geneval_overall"]["value"] < 0.05


def test_resume_after_a_kill_regenerates_nothing_that_is_finished(tmp_path):
    from evals.generators import WorldOracle
    from snapgen.data.world import WorldConfig, make_prompt_set

    metas = make_prompt_set(2, 0, WorldConfig())
    jobs = geneval_jobs(metas, tmp_path, 4, base_seed=0)
    oracle, calls = WorldOracle(), []

    def dying(prompts, seeds, metadata):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # the process dies during its second batch
        return oracle.generate(prompts, seeds, metadata)

    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, dying, batch_size=8, progress=False)
    done = {j.path: j.path.stat().st_mtime_ns for j in jobs if j.path.exists()}
    assert len(done) == 8                                    # the first batch survived, nothing half-written
    assert not list(tmp_path.rglob("*.tmp"))
    counts = run_jobs(jobs, oracle.generate, batch_size=8, progress=False)
    assert counts["existing"] == 8 and counts["generated"] == len(jobs) - 8
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())


def test_images_flag_scores_an_official_layout_folder(tmp_path):
    rc, rec = _run(tmp_path, "--ckpt", "world-oracle", "--limit", "6", "--n-per-prompt", "4")
    folder = rec["protocol"]["images_dir"]
    out = tmp_path / "again.json"
    assert main(["geneval", "--images", folder, "--detector", "world", "--out", str(out)]) == 0   # official 4
    again = json.loads(out.read_text())
    assert again["scores"]["geneval_overall"] == rec["scores"]["geneval_overall"]
    assert again["protocol"]["prompt_set_sha256"] == rec["protocol"]["prompt_set_sha256"]


def test_compare_flags_protocol_mismatch(tmp_path, capsys):
    _run(tmp_path, "--ckpt", "world-oracle", "--limit", "6")
    a = tmp_path / "a.json"
    (tmp_path / "rec.json").rename(a)
    (tmp_path / "rec.samples.jsonl").rename(tmp_path / "a.samples.jsonl")   # a record moves with its samples
    _run(tmp_path, "--ckpt", "world-oracle", "--limit", "6", "--n-per-prompt", "2")
    assert main(["compare", str(a), str(tmp_path / "rec.json")]) == 3
    assert "images_per_prompt" in capsys.readouterr().out
    assert main(["compare", str(a), str(a)]) == 0
    out = capsys.readouterr().out
    assert "+0.0000 [+0.0000, +0.0000]" in out                      # paired: same prompts and seeds


def test_compare_uses_higher_is_better_and_pairs_runs_of_the_same_prompts(tmp_path, capsys):
    _run(tmp_path, "--ckpt", "world-oracle", "--limit", "12", "--n-per-prompt", "2")
    (tmp_path / "rec.json").rename(tmp_path / "oracle.json")
    (tmp_path / "rec.samples.jsonl").rename(tmp_path / "oracle.samples.jsonl")
    _run(tmp_path, "--ckpt", "world-noise", "--limit", "12", "--n-per-prompt", "2")
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "rec.json"), str(tmp_path / "oracle.json"), "--force", "--json"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)[0]["rows"]}
    overall = rows["geneval_overall"]
    assert overall["better"] == "B" and overall["diff"] > 0.9
    assert overall["paired"]["ci95"][0] > 0.5 and overall["paired"]["n_units"] == 12


def test_compare_rejects_malformed_records_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 2, "kind": "evaluation", "name": "x", "protocol": {},
                               "scores": {"a": "0.5"}, "details": {}, "environment": {}, "created": ""}))
    assert main(["compare", str(bad), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "scores.a" in err
    nan = tmp_path / "nan.json"
    nan.write_text('{"schema_version": 2, "value": NaN}')
    assert main(["compare", str(nan), str(nan)]) == 2
    assert "non-finite" in capsys.readouterr().err


def test_missing_detector_for_real_images_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "00000" / "samples").mkdir(parents=True)
    assert main(["geneval", "--images", str(tmp_path)]) == 2
    assert "--detector is required" in capsys.readouterr().err
    assert main(["geneval", "--ckpt", str(tmp_path / "nope")]) == 2
