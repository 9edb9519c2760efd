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
    row = next(line for line in text.splitlines() if line.startswith("| world-t2i-s1-no-hires-sa"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[4] == "3" and float(cells[6].split()[0]) > 0.15 and float(cells[7]) < 0.05   # Δ GenEval, p
    assert float(cells[9].split()[0]) == pytest.approx(-10.0) and float(cells[10]) < 0.05          # Δ FID, p
    assert cells[-2] == "FID 3.76 -> 3.12" and cells[-1] == "yes"
    row2 = [c.strip() for c in next(x for x in text.splitlines() if x.startswith("| world-t2i-s2-sepconv")).split("|")]
    assert row2[-2] == "no" and "disagrees with the paper" in text and "world-t2i-s2-sepconv." in text
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
    row = [c.strip() for c in next(x for x in text.splitlines() if x.startswith("| world-in256-s1")).split("|")[1:-1]]
    assert row[4] == "3" and row[-1] == "not significant" and float(row[7]) > 0.05
