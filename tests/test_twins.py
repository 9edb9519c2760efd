"""World-scale twins: one scaling rule, each twin differs from its parent's twin by exactly the paper's change."""
import json
import pytest

from ablations.registry import config_diff
from ablations.twins import TWINS, ladder_of, main, twin_name, world_twin
from ablations.variants import REGISTRY
from snapgen.presets import PRESETS


def test_every_ladder_step_has_a_twin_with_the_same_parent():
    ladder = [v for v in REGISTRY if v.config is not None and ladder_of(v.name)]
    assert len(ladder) >= 2 * 9 and [twin_name(v.name) for v in ladder] == TWINS.names()
    for v in ladder:
        t = TWINS.get(twin_name(v.name))
        assert t.parent == (twin_name(v.parent) if v.parent else None)
        assert t.paper["full_size"] == v.name and t.resolution == 32


def test_each_twin_differs_from_its_parent_twin_exactly_by_the_paper_change():
    for t in TWINS:
        if t.parent is None:
            continue
        full, full_parent = REGISTRY.get(t.paper["full_size"]), REGISTRY.get(TWINS.get(t.parent).paper["full_size"])
        changed_full = set(config_diff(full_parent.config, full.config))
        changed_twin = set(config_diff(TWINS.get(t.parent).config, t.config))
        assert changed_twin == changed_full, (t.name, changed_full, changed_twin)


def test_the_twin_of_final_snapgen_is_the_shipped_world_recipe_model():
    assert TWINS.get("world-snapgen-t2i").config == PRESETS["tiny-world"]
    assert TWINS.get("world-snapgen-in256").config == PRESETS["tiny-world-class"]
    assert world_twin(PRESETS["snapgen-t2i"]) == PRESETS["tiny-world"]


def test_ls_json_lists_twins_with_parent_and_scale(capsys):
    assert main(["--json", "--ladder", "in256"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "world-in256-sdxl-topology" and rows[0]["parent"] is None
    assert all(r["ladder"] == "in256" and r["scale"]["width_divisor"] == 8 and r["params"] > 0 for r in rows)


def test_ablations_ls_json_lists_variants_then_twins(capsys):
    from ablations.__main__ import main as ablations_main

    assert ablations_main(["ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    twins = [r for r in rows if r["name"].startswith("world-")]
    assert len(twins) == len(TWINS.names()) and all("scale" in r and "full_size" in r for r in twins)


def test_ladder_jobs_shard_by_rank_and_children_do_not_inherit_the_launcher(monkeypatch, capsys, tmp_path):
    from ablations.ladder import child_env, jobs
    from ablations.ladder import main as ladder_main

    all_jobs = jobs("t2i", [0, 1, 2])
    assert len(all_jobs) == 3 * len([t for t in TWINS if t.name.startswith("world-t2i") or t.name == "world-snapgen-t2i"])
    assert [j.name for j in all_jobs[:3]] == ["world-t2i-sdxl-topology-s0", "world-t2i-sdxl-topology-s1",
                                              "world-t2i-sdxl-topology-s2"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert ladder_main(["--dry-run", "--seeds", "0", "1", "2", "--results", str(tmp_path)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [j["job"] for j in plan["jobs"]] == [j.name for j in all_jobs[1::2]] and plan["done"] == []
    # jobs with records are skipped before sharding: with the first three done, rank 1 gets every other one of the
    # rest (not a share that happens to hold the finished jobs, which left one process idle)
    for j in all_jobs[:3]:
        (tmp_path / "t2i").mkdir(exist_ok=True)
        (tmp_path / "t2i" / f"{j.name}.json").write_text("{}")
    assert ladder_main(["--dry-run", "--seeds", "0", "1", "2", "--results", str(tmp_path)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [j["job"] for j in plan["jobs"]] == [j.name for j in all_jobs[3:][1::2]]
    assert [j["job"] for j in plan["done"]] == [j.name for j in all_jobs[:3]]
    env = child_env(1)
    assert "RANK" not in env and "MASTER_PORT" not in env and env["OMP_NUM_THREADS"] == "1"
    import pytest

    with pytest.raises(ValueError, match="not a twin of the t2i ladder"):
        jobs("t2i", [0], ["world-in256-s5-mqa"])


def test_ls_json_carries_quality_of_twins_with_records(tmp_path, monkeypatch, capsys):
    from ablations.__main__ import main as ablations_main
    from snapgen.records import make_record, score, write_record

    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path))
    units = {"colors": {"0": 1.0, "1": 0.5}, "position": {"0": 0.0, "1": 0.5}}
    for seed, fid in enumerate((120.0, 124.0, 119.0)):
        rec = make_record("ablation", f"world-snapgen-t2i-s{seed}",
                          {"ladder": "t2i", "twin": "world-snapgen-t2i", "seed": seed},
                          {"geneval_overall": score(0.5, None, 4, True, "fraction"),
                           "fid_world32": score(fid, None, 256, False, "FID")},
                          {"units": {"geneval_overall": units}}, {"threads": 1, "git_commit": "abc", "versions": {}})
        write_record(tmp_path / "ablation" / "t2i" / f"world-snapgen-t2i-s{seed}.json", rec)
    assert ablations_main(["ls", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    q = rows["world-snapgen-t2i"]["quality"]
    assert q["fid_world32"]["seeds"] == 3 and q["fid_world32"]["value"] == pytest.approx(121.0)
    lo, hi = q["fid_world32"]["ci95"]
    assert lo < 121.0 < hi and hi - lo > 2 * 2.6                      # t-interval over 3 seeds (sd 2.65)
    assert q["geneval_overall"]["value"] == pytest.approx(0.5) and q["geneval_overall"]["seeds"] == 3
    assert "quality" not in rows["world-t2i-baseline"]
