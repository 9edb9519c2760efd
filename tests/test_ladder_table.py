"""The ladder table: quality CI over seeds and prompts, paired difference to the parent rung, paper direction."""
import numpy as np
import pytest

from ablations.tables.ladder import hierarchical_ci, paired_units, render_ladder
from snapgen.records import make_record, score, write_record

ENV = {"threads": 1, "git_commit": "abc", "versions": {}}


def _units(level: float, rng) -> dict:
    return {t: {str(i): float(np.clip(level + rng.normal(0, 0.05), 0, 1)) for i in range(8)}
            for t in ("single_object", "two_object", "counting")}


def _write(root, twin, parent, full, seed, units):
    rec = make_record("ablation", f"{twin}-s{seed}", {"ladder": "t2i", "twin": twin, "parent": parent,
                                                         "full_size": full, "seed": seed},
                      {"geneval_overall": score(float(np.mean([np.mean(list(d.values())) for d in units.values()])),
                                                None, 24, True, "fraction"),
                       "fid_world32": score(100.0, None, 64, False, "FID")},
                      {"units": {"geneval_overall": units}}, ENV)
    write_record(root / "ablation" / "t2i" / f"{twin}-s{seed}.json", rec)


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
        _write(tmp_path, "world-t2i-baseline", "world-t2i-sdxl-topology", "t2i-baseline", seed, base)
        better = {t: {k: min(1.0, v + 0.2) for k, v in d.items()} for t, d in base.items()}
        _write(tmp_path, "world-t2i-s1-no-hires-sa", "world-t2i-baseline", "t2i-s1-no-hires-sa", seed, better)
    text = render_ladder(tmp_path, "t2i", allow_dirty=True)
    row = next(line for line in text.splitlines() if line.startswith("| world-t2i-s1-no-hires-sa"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[4] == "3" and float(cells[7]) > 0.15 and float(cells[9]) < 0.05   # Δ parent, p
    assert cells[-2] == "FID 3.76 -> 3.12" and cells[-1] == "yes"
    assert "world-t2i-s2-sepconv" in text.split("Rungs without quality records yet:")[1]
    with pytest.raises(ValueError, match="same held-out prompts"):
        paired_units({"a": {"0": 1.0}}, {"a": {"1": 1.0}})
