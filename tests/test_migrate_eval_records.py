"""Schema-1 evaluation, learning-curve, sweep and training-benchmark records convert to the envelope with every
number carried over; the GenEval / DPG tables rendered from the converted records equal the committed tables."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from evals.migrate_records import convert
from snapgen.records import validate_record

ROOT = Path(__file__).resolve().parents[1]
SCHEMA1_COMMIT = "d7a3ff9"          # results/ before the migration to the envelope
FOLDERS = ("geneval", "dpg", "fid", "world", "bench", "tables")


def _schema1_results(dest: Path) -> Path:
    """results/ as committed at SCHEMA1_COMMIT (the original schema-1 records), or the working tree's if they
    still are schema 1."""
    for sub in FOLDERS:
        files = subprocess.run(["git", "ls-tree", "-r", "--name-only", SCHEMA1_COMMIT, f"results/{sub}"], cwd=ROOT,
                               capture_output=True, text=True)
        if files.returncode != 0:
            pytest.skip("git history not available")
        for name in files.stdout.split():
            blob = subprocess.run(["git", "show", f"{SCHEMA1_COMMIT}:{name}"], cwd=ROOT, capture_output=True).stdout
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(blob)
    return dest / "results"


def test_converted_records_keep_every_number(tmp_path, monkeypatch):
    results = _schema1_results(tmp_path)
    monkeypatch.chdir(tmp_path)            # samples_jsonl paths in schema-1 records are relative to the repo
    g = results / "geneval" / "world-tiny-geneval.json"
    old = json.loads(g.read_text())
    new = validate_record(convert(g))
    assert new["scores"]["geneval_overall"]["value"] == old["scores"]["overall"]
    assert new["scores"]["geneval_overall"]["ci95"] == old["scores"]["overall_ci95"]
    assert new["scores"]["geneval_overall"]["n"] == old["scores"]["prompts"] == old["protocol"]["prompts"]["n"]
    for t, v in old["scores"]["tasks"].items():
        assert new["scores"][f"geneval_{t}"]["value"] == v["accuracy"] and new["scores"][f"geneval_{t}"]["ci95"] == v["ci95"]
    assert new["created"] == old["created"] and new["environment"] == old["environment"]

    d = results / "dpg" / "world-tiny-dpg.json"
    old = json.loads(d.read_text())
    new = validate_record(convert(d))
    for mode, s in old["scores"].items():
        assert new["scores"][f"dpg_{mode}_overall_x100"]["value"] == s["overall_x100"]
        assert new["scores"][f"dpg_{mode}_overall_x100"]["ci95"] == s["overall_ci95_x100"]

    f = results / "fid" / "world-tiny-fid-world32.json"
    old = json.loads(f.read_text())
    new = validate_record(convert(f))
    assert new["scores"]["fid_world32"]["value"] == old["scores"]["fid_world32"]
    assert new["scores"]["kid_world32_mean"]["value"] == old["scores"]["kid_world32_mean"]
    assert new["scores"]["fid_world32"]["higher_is_better"] is False

    c = results / "world" / "learning_curve-world-tiny.json"
    old = json.loads(c.read_text())
    new = validate_record(convert(c))
    assert new["kind"] == "curve" and new["details"]["points"] == old["points"]
    assert new["scores"]["final_geneval_overall"]["value"] == old["scores"]["final_geneval_overall"]

    s = results / "world" / "sampler_sweep-world-tiny.json"
    old = json.loads(s.read_text())
    new = validate_record(convert(s))
    assert new["details"]["cells"] == old["cells"]
    assert new["scores"]["default_geneval_overall"]["value"] == old["scores"]["default"]["overall"]

    b = results / "bench" / "train_throughput_tiny-world_t1.json"
    old = json.loads(b.read_text())
    new = validate_record(convert(b))
    assert new["scores"]["train_images_per_s_b16_no_contig"]["value"] == old["scores"]["fp32_contiguous_b16"]


def test_tables_from_converted_records_equal_the_committed_tables(tmp_path, monkeypatch):
    from ablations.tables import regenerate
    from snapgen.records import write_record

    results = _schema1_results(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = {n: (results / "tables" / f"{n}.md").read_text() for n in ("geneval", "dpg")}
    for sub in ("geneval", "dpg"):
        for p in sorted((results / sub).glob("*.json")):
            write_record(p, convert(p))
    regenerate(["geneval", "dpg"], results)
    for n, text in before.items():
        assert (results / "tables" / f"{n}.md").read_text() == text, n
