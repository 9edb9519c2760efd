"""The ladder table: quality CI over seeds and prompts, paired difference to the parent rung, paper direction."""
import numpy as np
import pytest

from ablations.tables.ladder import hierarchical_ci, paired_units, render_ladder
from snapgen.records import make_record, score, write_record

ENV = {"threads": 1, "git_commit": "abc", "versions": {}}


def _units(level: float, rng) -> dict:
    return {t: {str(i): float(np.clip(level + rng.normal(0, 0.05), 0, 1)) for i in range(8)}
            for t in ("single_object", "two_object", "counting")}


def _write(root, twin, parent, full, seed, units, fid=100.0, ladder="t2i"):
    rec = make_record("ablation", f"{twin}-s{seed}", {"ladder": ladder, "twin": twin, "parent": parent,
                                                         "full_size": full, "seed": seed, "budget": {"name": "cpu"}},
                      {"geneval_overall": score(float(np.mean([np.mean(list(d.values())) for d in units.values()])),
                                                None, 24, True, "fraction"),
                       "fid_world32": score(fid, None, 64, False, "FID")},
                      {"units": {"geneval_overall": units}}, ENV)
    write_record(root / "ablation" / ladder / f"{twin}-s{seed}.json", rec)


def _row(text: str, rung: str) -> dict[str, str]:
    """The table row of ``rung`` as {column header: cell}."""
    lines = text.splitlines()
    head = [c.strip() for c in next(x for x in lines if x.startswith("| rung |")).split("|")[1:-1]]
    cells = [c.strip() for c in next(x for x in lines if x.startswith(f"| {rung} ")).split("|")[1:-1]]
    return dict(zip(head, cells))


def test_hierarchical_ci_widens_with_seed_variance():
    rng = np.random.default_rng(0)
    same = [_units(0.5, rng) for _ in range(3)]
    spread = [_units(x, rng) for x in (0.2, 0.5, 0.8)]
    p1, ci1, _ = hierarchical_ci(same)
    p2, ci2, _ = hierarchical_ci(spread)
    assert ci1[0] <= p1 <= ci1[1] and ci2[0] <= p2 <= ci2[1]
    assert ci2[1] - ci2[0] > 2 * (ci1[1] - ci1[0])               # seed-to-seed variance is in the interval


def test_table_pairs_each_rung_with_its_parent_and_reads_the_paper_direction(tmp_path):
    rng = np.random.default_rng(1)
    for seed in range(3):
        base = _units(0.4, rng)
        _write(tmp_path, "world-t2i-baseline", "world-t2i-sdxl-topology", "t2i-baseline", seed, base, 100.0 + seed)
        better = {t: {k: min(1.0, v + 0.2) for k, v in d.items()} for t, d in base.items()}
        # s1: FID lower than its parent by 10 +- 1 in every seed (paper: better) -> "yes"
        _write(tmp_path, "world-t2i-s1-no-hires-sa", "world-t2i-baseline", "t2i-s1-no-hires-sa", seed, better,
               90.0 + seed + 0.5 * (seed - 1))
        # s2: FID lower again (paper: worse) -> "no", listed as a disagreement
        _write(tmp_path, "world-t2i-s2-sepconv", "world-t2i-s1-no-hires-sa", "t2i-s2-sepconv", seed, better,
               80.0 + seed)
    text = render_ladder(tmp_path, "t2i", allow_dirty=True)
    row = _row(text, "world-t2i-s1-no-hires-sa")
    geneval_p = list(row.values())[list(row).index("Δ GenEval [95% CI]") + 1]   # row["p"] is the last "p" (FID's)
    assert row["seeds"] == "3" and float(row["Δ GenEval [95% CI]"].split()[0]) > 0.15 and float(geneval_p) < 0.05
    assert float(row["Δ FID [95% CI]"].split()[0]) == pytest.approx(-10.0) and float(row["p"]) < 0.05
    assert row["paper"] == "FID 3.76 -> 3.12" and row["same direction?"] == "yes"
    assert _row(text, "world-t2i-s2-sepconv")["same direction?"] == "no"
    assert "disagrees with the paper" in text and "world-t2i-s2-sepconv." in text
    assert "world-t2i-s3-sep-expand2" in text.split("Rungs without quality records yet:")[1]
    with pytest.raises(ValueError, match="same held-out prompts"):
        paired_units({"a": {"0": 1.0}}, {"a": {"1": 1.0}})


def test_class_ladder_table_is_fid_only(tmp_path):
    rng = np.random.default_rng(2)
    for seed in range(3):
        u = _units(0.4, rng)
        _write(tmp_path, "world-in256-baseline", "world-in256-sdxl-topology", "in256-baseline", seed, u, 200.0 + seed,
               ladder="in256")
        _write(tmp_path, "world-in256-s1-no-hires-sa", "world-in256-baseline", "in256-s1-no-hires-sa", seed, u,
               200.0 + seed + (0.5, -0.5, 0.2)[seed], ladder="in256")
    text = render_ladder(tmp_path, "in256", allow_dirty=True)
    assert "GenEval" not in text
    row = _row(text, "world-in256-s1-no-hires-sa")
    assert row["seeds"] == "3" and row["same direction?"] == "not significant" and float(row["p"]) > 0.05
    assert "CPU ms 256 px" in row and "CPU ms 1024 px" not in row       # the class ladder deploys at 256 px


def _arch(root, name, config_hash="h1"):
    rec = make_record("architecture", name, {"resolution_px": 1024, "context_tokens": 333, "flop_counter": "meta",
                                             "latency": {"device": "cpu", "latent": 32, "resolution_px": 256, "batch": 1,
                                                         "dtype": "float32", "threads": 1, "warmup": 1, "repeats": 3}},
                      {"params": score(4e8, None, None, None, "params"), "gflops_1024": score(1300.0, None, None, False, "GFLOPs"),
                       "cpu_ms_median_256px": score(1400.0, None, 3, False, "ms")},
                      {"config_hash": config_hash, "latency_cpu": {"flops_at_latent": 9.4e10, "min_ms": 1390.0,
                                                                   "max_ms": 1410.0}}, ENV)
    write_record(root / "architecture" / f"{name}.json", rec)


def _latency(root, name, ms, config_hash="h1", threads=1, steps=1, dtype="float32"):
    rec = make_record("latency", name, {"target": "cpu", "dtype": dtype, "batch": 1, "cfg": False, "channels_last": False,
                                        "compile": False, "threads": threads, "resolution": 1024, "steps": steps},
                      {"unet_step_ms_median": score(ms, None, 3, False, "ms")},
                      {"model": {"config_hash": config_hash}, "components": {"unet_step": {"min_ms": ms - 5, "max_ms": ms + 5}}},
                      ENV)
    write_record(root / "latency" / "cpu" / f"{name}_1024px_{dtype}_{steps}steps_b1.json", rec)


def test_deployment_latency_comes_from_a_matching_latency_record(tmp_path):
    """Text-to-image rungs show CPU ms at 1024 px from a latency record of the same config measured like the
    architecture record (1 thread, fp32); a stale config or another thread count is not used."""
    from ablations.ladder_cost import rung_cost

    _arch(tmp_path, "t2i-s4-ffn3")
    assert rung_cost(tmp_path, "t2i-s4-ffn3", "t2i")["deploy_cpu_ms"] is None
    _latency(tmp_path, "t2i-s4-ffn3", 30000.0, config_hash="stale")
    _latency(tmp_path, "t2i-s4-ffn3", 20000.0, threads=2, steps=28)
    assert rung_cost(tmp_path, "t2i-s4-ffn3", "t2i")["deploy_cpu_ms"] is None
    _latency(tmp_path, "t2i-s4-ffn3", 25000.0, steps=4)
    cost = rung_cost(tmp_path, "t2i-s4-ffn3", "t2i")
    assert cost["deploy_cpu_ms"] == 25000.0 and cost["deploy_cpu_range"] == (24995.0, 25005.0)
    assert cost["ref_cpu_ms"] == 1400.0 and cost["ref_gflops"] == pytest.approx(94.0)
    row = _row(render_ladder(tmp_path, "t2i", allow_dirty=True), "world-t2i-s4-ffn3")
    assert row["CPU ms 1024 px"] == "25000" and row["CPU ms 256 px"] == "1400"
    assert row["GFLOPs 256 px"] == "94" and row["GFLOPs 1024 px"] == "1300"
    in256 = rung_cost(tmp_path, "t2i-s4-ffn3", "in256")      # a ladder deployed at the timed resolution
    assert in256["deploy_cpu_ms"] == 1400.0
