"""Ladder Pareto charts and the steps sweep: pure functions of records; labels never overlap."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from snapgen.paths import REPO_ROOT
from snapgen.records import make_record, score, write_record

ENV = {"threads": 1, "git_commit": "abc", "versions": {}}


def test_labels_are_placed_without_overlap():
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from paper_figures.ladder import _overlap, place_labels

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [1.0, 1.02, 1.04, 1.0, 2.0, 2.01, 3.0, 1.01]
    ys = [5.0, 5.05, 4.95, 5.1, 3.0, 3.02, 1.0, 4.9]
    ax.scatter(xs, ys)
    ax.margins(0.2)
    texts = place_labels(ax, xs, ys, [f"rung-{i}-label" for i in range(len(xs))])
    renderer = fig.canvas.get_renderer()
    boxes = []
    for t in texts:
        t.update_positions(renderer)
        boxes.append(Text.get_window_extent(t, renderer))
    assert len(boxes) == len(xs)
    assert not any(_overlap(a, b, pad=0) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "architecture").mkdir()
    for name in ("t2i-baseline", "t2i-s1-no-hires-sa", "t2i-s2-sepconv", "snapgen-t2i"):
        shutil.copy(REPO_ROOT / "results" / "architecture" / f"{name}.json", tmp_path / "architecture")
    rng = np.random.default_rng(0)
    for twin, fid in (("world-t2i-baseline", 200), ("world-t2i-s1-no-hires-sa", 190), ("world-t2i-s2-sepconv", 195),
                      ("world-snapgen-t2i", 185)):
        for seed in range(3):
            units = {"colors": {str(i): float(rng.uniform()) for i in range(6)}}
            rec = make_record("ablation", f"{twin}-s{seed}", {"ladder": "t2i", "twin": twin, "seed": seed,
                                                              "budget": {"name": "cpu"}},
                              {"geneval_overall": score(0.5, None, 6, True, "fraction"),
                               "fid_world32": score(fid + rng.normal(0, 2), None, 256, False, "FID")},
                              {"units": {"geneval_overall": units}}, ENV)
            write_record(tmp_path / "ablation" / "t2i" / f"{twin}-s{seed}.json", rec)
    return tmp_path


def test_ladder_chart_from_records(root):
    from paper_figures.ladder import ladder_pareto, ladder_points, write_figures

    pts = ladder_points(root, "t2i")
    assert [p["label"] for p in pts] == ["baseline", "s1-no-hires-sa", "s2-sepconv", "snapgen-t2i"]
    assert all(p["quality"]["fid_world32"]["seeds"] == 3 and p["cpu_ms"] > 0 for p in pts)
    png = ladder_pareto(root, "t2i")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == ladder_pareto(root, "t2i")     # deterministic
    assert ladder_pareto(root, "in256") is None
    written = write_figures(root)
    assert [Path(p).name for p in written] == ["ladder_t2i.png"]
