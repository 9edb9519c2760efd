"""`python -m ablations ladder --verify JOB`: one twin retrained and rescored from scratch equals its record
(training and sampling are deterministic at a fixed thread count), and a record that the rerun does not reproduce
is reported with a non-zero exit."""
import json

from ablations.ladder import main
from snapgen.records import read_record, write_record

TOY = ["--ladder", "t2i", "--variants", "world-snapgen-t2i", "--seeds", "0", "--steps", "2", "--threads", "1",
       "--benchmarks", "geneval", "--sample-steps", "2", "--prompts-per-tag", "1", "--n-per-prompt", "1"]


def test_a_retrained_twin_reproduces_its_record(tmp_path, capsys):
    res = tmp_path / "res"
    assert main(TOY + ["--runs", str(tmp_path / "runs"), "--results", str(res)]) == 0
    rec_path = res / "t2i" / "world-snapgen-t2i-s0.json"
    rec = read_record(rec_path)
    assert len(rec["details"]["checkpoint_sha256"]) == 64
    capsys.readouterr()
    assert main(["--ladder", "t2i", "--verify", "world-snapgen-t2i-s0", "--runs", str(tmp_path / "verify"),
                 "--results", str(res)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["equal"] and out["checkpoint_sha256"]["equal"] and out["scores"]["geneval_overall"]["equal"]
    assert out["budget"]["steps"] == 2                       # the record's budget, not the default
    # the rerun is trained with the recipe stored in the record (a later change of TrainConfig's defaults, e.g. a
    # speed lever switched on, cannot change it)
    recipe = rec["details"]["recipe"]
    assert recipe["split_depthwise"] is True and recipe["processes"] == 1 and recipe["steps"] == 2
    pinned = json.loads((tmp_path / "verify" / "t2i" / "world-snapgen-t2i-s0" / "pinned_recipe.json").read_text())
    assert pinned == rec["details"]["recipe"]
    rec["scores"]["geneval_overall"]["value"] += 0.25         # a record the code does not reproduce
    write_record(rec_path, rec)
    assert main(["--ladder", "t2i", "--verify", "world-snapgen-t2i-s0", "--runs", str(tmp_path / "verify"),
                 "--results", str(res)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["equal"] and not out["scores"]["geneval_overall"]["equal"]


def test_verify_names_a_bad_job(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="not a job of the t2i ladder"):
        main(["--ladder", "t2i", "--verify", "world-snapgen-t2i", "--results", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no record"):
        main(["--ladder", "t2i", "--verify", "world-snapgen-t2i-s4", "--results", str(tmp_path),
              "--runs", str(tmp_path / "v")])
