"""Records come from committed code: the world records in results/ say a clean commit, and tables refuse
records made from uncommitted code unless asked."""
import json
import shutil
from pathlib import Path

import pytest

from ablations.tables import dirty_records, regenerate
from ablations.tables.__main__ import main as tables_main
from snapgen.records import read_record


def write_tables(results, allow_dirty=False):
    return regenerate(["geneval", "dpg"], results, allow_dirty)

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("geneval", "dpg", "fid", "world")        # the quality records of the world (issue 13 onwards)


def _records():
    for sub in CHECKED:
        for p in sorted((ROOT / "results" / sub).rglob("*.json")):
            yield p, read_record(p)                                    # every record follows the envelope


def test_world_records_state_a_clean_commit_and_their_split():
    seen = 0
    for path, rec in _records():
        commit = (rec.get("environment") or {}).get("git_commit")
        assert commit and not commit.endswith("-dirty"), f"{path}: made from uncommitted code ({commit})"
        prompts = (rec.get("protocol") or {}).get("prompts")
        if rec["protocol"].get("benchmark") in ("geneval", "dpg", "fid") and "world" in str(rec["protocol"].get("prompt_source")):
            assert prompts and prompts["split"] in ("heldout", "in_distribution") and prompts["n"] > 0, path
        seen += 1
    assert seen >= 3


def test_tables_refuse_dirty_records_unless_asked(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "geneval", results / "geneval")
    (results / "dpg").mkdir()
    assert write_tables(results)                                       # the committed records are clean
    name = next(p for p in sorted((results / "geneval").glob("*.json")))
    rec = json.loads(name.read_text())
    rec["environment"]["git_commit"] = "0" * 40 + "-dirty"
    name.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="uncommitted code"):
        write_tables(results)
    assert tables_main(["geneval", "--results", str(results)]) == 2
    assert "--allow-dirty" in capsys.readouterr().err
    write_tables(results, allow_dirty=True)
    table = (results / "tables" / "geneval.md").read_text()
    assert f"| {name.stem}* |" in table
    assert dirty_records({"a": {"environment": {}}, "b": {"environment": {"git_commit": "abc"}}}) == ["a"]
