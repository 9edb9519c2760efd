"""The one record envelope (snapgen.records): validated on write and on read, errors name file and field."""
import json
import math

import pytest

from snapgen import paths
from snapgen.records import RecordError, make_record, read_record, read_records, score, validate_record, write_record

ENV = {"threads": 2, "git_commit": "abc", "versions": {"torch": "x"}}


def _rec(**scores):
    return make_record("evaluation", "demo", {"benchmark": "demo"}, scores or {"acc": score(0.5, (0.4, 0.6), 10)},
                       environment=ENV)


def test_round_trip_and_samples(tmp_path):
    rec = _rec()
    p = write_record(tmp_path / "a" / "demo.json", rec, rows=[{"i": 0}])
    back = read_record(p)
    assert back["scores"]["acc"] == {"value": 0.5, "ci95": [0.4, 0.6], "n": 10, "higher_is_better": True, "unit": ""}
    assert (tmp_path / "a" / "demo.samples.jsonl").read_text() == '{"i": 0}\n'
    assert list(read_records(tmp_path)) == [str(p)]


@pytest.mark.parametrize("bad, match", [
    (lambda r: r["scores"].update(acc={"value": float("nan"), "ci95": None, "n": 1, "higher_is_better": True,
                                      "unit": ""}), "finite"),
    (lambda r: r["scores"].update(acc={"value": 0.5}), "missing"),
    (lambda r: r["scores"]["acc"].update(ci95=[0.7, 0.6]), "ci95"),
    (lambda r: r["scores"]["acc"].update(higher_is_better="yes"), "higher_is_better"),
    (lambda r: r["scores"]["acc"].update(value="0.5"), "finite"),
    (lambda r: r.update(kind="evals"), "kind"),
    (lambda r: r.pop("protocol"), "missing envelope"),
    (lambda r: r["environment"].pop("threads"), "threads"),
    (lambda r: r["details"].update(x=math.inf), "non-finite"),
    (lambda r: r.update(schema_version=1), "migrate_records"),
])
def test_malformed_records_are_refused_naming_the_field(bad, match):
    rec = json.loads(json.dumps(_rec()))
    bad(rec)
    with pytest.raises(RecordError, match=match):
        validate_record(rec, "x.json")


def test_read_names_the_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(RecordError, match="broken.json"):
        read_record(p)
    p.write_text(json.dumps(_rec()).replace("0.5", "NaN", 1))
    with pytest.raises(RecordError, match="non-finite"):
        read_record(p)
    with pytest.raises(RecordError, match="finite"):
        score(float("nan"))


def test_paths_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.RESULTS_ENV, str(tmp_path / "r"))
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "c"))
    assert paths.results_dir("geneval") == tmp_path / "r" / "geneval"
    assert paths.cache_dir("text") == tmp_path / "c" / "text"
    monkeypatch.delenv(paths.RESULTS_ENV)
    assert paths.results_root() == paths.REPO_ROOT / "results"
