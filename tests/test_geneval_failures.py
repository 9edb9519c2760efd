"""`python -m evals.run failures`: each failing image's first reason, as the judge writes it, sorted into a kind."""
import json

import pytest

from evals.geneval.failures import KINDS, failure_kind, failure_table
from evals.geneval.rules import judge


def _det(cls, box, color="red"):
    return {"class": cls, "box": list(box), "score": 0.99, "color": color}


def _kind(meta, dets):
    kept = {}
    for d in dets:
        kept.setdefault(d["class"], []).append(d)
    correct, reason, _ = judge(meta, kept, classify_color=lambda d: d["color"])
    return failure_kind(correct, reason)


TRAFFIC = "traffic light"           # GenEval's classes have spaces: the kinds must not depend on single words


@pytest.mark.parametrize("meta,dets,kind", [
    ({"include": [{"class": TRAFFIC, "count": 1}]}, [_det(TRAFFIC, (0, 0, 4, 4))], "correct"),
    ({"include": [{"class": TRAFFIC, "count": 1}]}, [], "missing"),
    ({"include": [{"class": "circle", "count": 3}], "exclude": [{"class": "circle", "count": 4}]},
     [_det("circle", (0, 0, 4, 4)), _det("circle", (10, 10, 14, 14))], "too_few"),
    ({"include": [{"class": "circle", "count": 2}], "exclude": [{"class": "circle", "count": 3}]},
     [_det("circle", (i * 6, 0, i * 6 + 4, 4)) for i in range(3)], "too_many"),
    ({"include": [{"class": TRAFFIC, "count": 1, "color": "blue"}]}, [_det(TRAFFIC, (0, 0, 4, 4), "red")],
     "wrong_color"),
    ({"include": [{"class": "square", "count": 1}, {"class": TRAFFIC, "count": 1, "position": ["left of", 0]}]},
     [_det("square", (0, 0, 4, 4)), _det(TRAFFIC, (20, 0, 24, 4))], "wrong_position"),
    ({"include": [{"class": "square", "count": 1}, {"class": "cross", "count": 1, "position": ["left of", 0]}]},
     [_det("cross", (20, 0, 24, 4))], "missing"),          # first failed clause: no square (then: no target)
])
def test_every_kind_from_the_judges_own_reason(meta, dets, kind):
    assert _kind(meta, dets) == kind


def test_an_unknown_reason_is_an_error_not_a_bucket():
    with pytest.raises(ValueError, match="not a reason the judge"):
        failure_kind(False, "detector crashed")
    with pytest.raises(ValueError, match="no verdict"):
        failure_table([{"tag": "counting", "filename": "x.png"}])


def test_table_counts_every_image_once():
    rows = [{"tag": "counting", "correct": False, "reason": "expected circle>=3, found 0"},
            {"tag": "counting", "correct": True, "reason": ""},
            {"tag": "position", "correct": False, "reason": "no target for cross to be left of"}]
    t = failure_table(rows)
    assert list(t) == ["counting", "position"] and all(list(c) == list(KINDS) for c in t.values())
    assert t["counting"]["missing"] == 1 and t["counting"]["correct"] == 1 and sum(t["counting"].values()) == 2
    assert t["position"]["wrong_position"] == 1


def test_cli_on_committed_records(capsys):
    """The oracle's record: every image correct; the shipped model's: every image in exactly one kind."""
    from evals.run import main
    from snapgen.paths import REPO_ROOT

    oracle = REPO_ROOT / "results/geneval/world-oracle-geneval.json"
    tiny = REPO_ROOT / "results/geneval/world-tiny-geneval.json"
    assert main(["failures", str(oracle), str(tiny), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    o, t = out[str(oracle)], out[str(tiny)]
    assert all(c["correct"] == sum(c.values()) for c in o.values())
    rec = json.loads(tiny.read_text())
    images, n = rec["scores"]["geneval_images_correct"], 44 * rec["protocol"]["images_per_prompt"]
    assert sum(sum(c.values()) for c in t.values()) == images["n"] == n
    assert sum(c["correct"] for c in t.values()) == round(images["value"] * images["n"])
    assert main(["failures", str(tiny)]) == 0
    assert f"| **all** | {n} |" in capsys.readouterr().out


def test_cli_refuses_a_record_of_another_benchmark(capsys):
    from evals.run import main
    from snapgen.paths import REPO_ROOT

    assert main(["failures", str(REPO_ROOT / "results/fid/world-tiny-fid-world32.json")]) != 0
    assert "reads GenEval records" in capsys.readouterr().err
