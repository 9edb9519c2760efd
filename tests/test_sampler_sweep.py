"""The sampler sweep reuses a cell record only when it was made from the same weights and settings."""
import json
import shutil

import pytest

from evals import sampler_sweep
from snapgen.paths import REPO_ROOT

CELL = REPO_ROOT / "results" / "world" / "sampler_sweep" / "world-tiny-g3-s20.json"


def _stub_harness(monkeypatch) -> list:
    """``evals.run.main`` replaced by a stub that records its argv and stops the sweep (no generation)."""
    import evals.run

    calls = []

    def fake_run(argv):
        calls.append(argv)
        raise RuntimeError("rescored")

    monkeypatch.setattr(evals.run, "main", fake_run)
    return calls


def test_a_cell_of_other_weights_is_rescored_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path / "res"))
    folder = tmp_path / "res" / "world" / "sampler_sweep"
    folder.mkdir(parents=True)
    rec = json.loads(CELL.read_text())
    want = sampler_sweep.checkpoint_key("world-tiny", 1, 4)
    assert want["checkpoint_sha256"] and len(want["checkpoint_sha256"]) == 64
    # the same record, as if made from other weights (the sweep of an earlier world-tiny)
    rec["protocol"]["generator"]["checkpoint_sha256"] = "0" * 64
    (folder / "world-tiny-g3-s20.json").write_text(json.dumps(rec))
    calls = _stub_harness(monkeypatch)
    with pytest.raises(RuntimeError, match="rescored"):
        sampler_sweep.main(["--ckpt", "world-tiny", "--cells", "3:20", "--threads", "1"])
    assert calls and calls[0][:3] == ["geneval", "--ckpt", "world-tiny"]
    assert not (folder / "world-tiny-g3-s20.json").exists()
    # a record of these very weights and settings is reused (no generation)
    rec["protocol"]["generator"]["checkpoint_sha256"] = want["checkpoint_sha256"]
    assert sampler_sweep.cell_key(rec) == want
    assert sampler_sweep.cell_key({**rec, "protocol": {**rec["protocol"], "images_per_prompt": 8}}) != want


def test_in_distribution_sweep_is_its_own_cells(tmp_path, monkeypatch):
    """``--world-split in_distribution`` (choosing a setting on training compositions) scores that split into its own
    cell files, and a held-out cell of the same weights is not reused for it."""
    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path / "res"))
    folder = tmp_path / "res" / "world" / "sampler_sweep"
    folder.mkdir(parents=True)
    rec = json.loads(CELL.read_text())
    assert rec["protocol"]["prompts"]["split"] == "heldout"
    held = sampler_sweep.checkpoint_key("world-tiny", 1, 4)
    rec["protocol"]["generator"]["checkpoint_sha256"] = held["checkpoint_sha256"]
    rec["protocol"]["generator"]["threads"] = 1
    assert sampler_sweep.cell_key(rec) == held                      # reused by a held-out sweep
    assert sampler_sweep.cell_key(rec) != sampler_sweep.checkpoint_key("world-tiny", 1, 4, "in_distribution")
    # placed under the in-distribution cell's own name: rescored, with the split passed to the harness
    (folder / "world-tiny-in_distribution-g3-s20.json").write_text(json.dumps(rec))
    calls = _stub_harness(monkeypatch)
    with pytest.raises(RuntimeError, match="rescored"):
        sampler_sweep.main(["--ckpt", "world-tiny", "--cells", "3:20", "--threads", "1",
                            "--world-split", "in_distribution"])
    argv = calls[0]
    assert argv[argv.index("--world-split") + 1] == "in_distribution"
    assert argv[argv.index("--out") + 1].endswith("world-tiny-in_distribution-g3-s20.json")
