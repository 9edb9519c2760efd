"""Schema-1 -> envelope converters of the ablations records (architecture, decoder costs, the U-Net benchmark,
the tiny-decoder world proof), run on copies of the committed records: every number carried over, the envelope
validates, ``created``/``environment`` kept, and the tables rendered from the converted records equal the
committed tables."""
from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path

import pytest

from snapgen.paths import REPO_ROOT
from snapgen.records import RecordError, read_record, validate_record, write_record

COMMITTED = REPO_ROOT / "results"
SCHEMA1_COMMIT = "d7a3ff9"   # the last commit whose results/ held only schema-1 records of these kinds
# folder under results/ -> (old kind, converter, new kind)
CASES = {
    "architecture": ("architecture", "ablations.costs:migrate_v1", "architecture"),
    "decoders": ("decoder_cost", "ablations.decoders:migrate_v1", "decoder"),
    "bench": ("bench_unet_vs_sdxl", "ablations.bench:migrate_v1", "benchmark"),
    "decoder": ("tiny_decoder_world_proof", "snapgen.experiments.decoder_world_proof:migrate_v1", "decoder"),
}


def _converter(spec: str):
    module, _, fn = spec.partition(":")
    return getattr(importlib.import_module(module), fn)


def _from_git(folder: str) -> dict[str, str]:
    """The records of ``results/<folder>`` at SCHEMA1_COMMIT (once results/ itself is migrated); {} without git."""
    try:
        names = subprocess.run(["git", "ls-tree", "--name-only", f"{SCHEMA1_COMMIT}:results/{folder}"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=30, check=True).stdout.split()
        return {n: subprocess.run(["git", "show", f"{SCHEMA1_COMMIT}:results/{folder}/{n}"], cwd=REPO_ROOT,
                                  capture_output=True, text=True, timeout=30, check=True).stdout
                for n in names if n.endswith(".json")}
    except (OSError, subprocess.SubprocessError):
        return {}


def _old_records(folder: str, kind: str) -> dict[str, str]:
    """File name -> text of the schema-1 records of ``kind``: the committed files, or (after the migration)
    the same files at SCHEMA1_COMMIT."""
    texts = {p.name: p.read_text() for p in sorted((COMMITTED / folder).glob("*.json"))}
    if not any(json.loads(t).get("schema_version") is None for t in texts.values()):
        texts = _from_git(folder)
    return {n: t for n, t in texts.items()
            if json.loads(t).get("schema_version") is None and json.loads(t).get("kind") == kind}


def _old_table(name: str) -> str:
    """The committed table, or the one at SCHEMA1_COMMIT if the current one already comes from new records."""
    try:
        return subprocess.run(["git", "show", f"{SCHEMA1_COMMIT}:results/tables/{name}.md"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return (COMMITTED / "tables" / f"{name}.md").read_text()


def _numbers(obj) -> list[float]:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, (int, float)):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj
    return [x for v in items for x in _numbers(v)]


def _convert_copies(tmp: Path, folder: str) -> list[tuple[dict, dict]]:
    old_kind, spec, _ = CASES[folder]
    olds = _old_records(folder, old_kind)
    if not olds:
        pytest.skip(f"no schema-1 {old_kind!r} records in results/{folder} nor in git at {SCHEMA1_COMMIT}")
    pairs = []
    for name, text in olds.items():
        dst = tmp / folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text)
        old = json.loads(dst.read_text())
        new = _converter(spec)(old, dst)
        write_record(dst, new)
        pairs.append((old, read_record(dst)))
    return pairs


@pytest.mark.parametrize("folder", list(CASES))
def test_converter_carries_every_number(tmp_path, folder):
    for old, new in _convert_copies(tmp_path, folder):
        validate_record(new)
        assert new["kind"] == CASES[folder][2]
        assert new["created"] == old.get("created")          # null where the old record had none
        old_env = old.get("environment", old.get("env"))
        assert {k: new["environment"][k] for k in old_env} == old_env
        assert all(k in new["environment"] for k in ("versions", "threads", "git_commit"))
        have = set(_numbers(new))
        missing = [x for x in _numbers(old) if x not in have]
        assert not missing, f"{new['name']}: numbers lost in conversion: {missing[:5]}"


@pytest.mark.parametrize("folder", list(CASES))
def test_converters_are_the_registered_ones(folder):
    from evals.migrate_records import CONVERTERS

    old_kind, spec, _ = CASES[folder]
    assert CONVERTERS[old_kind] == spec


def test_architecture_table_from_converted_records_equals_committed(tmp_path):
    from ablations.tables.architecture import render

    _convert_copies(tmp_path, "architecture")
    assert render(tmp_path) == _old_table("architecture")


def test_decoder_table_from_converted_records_equals_committed(tmp_path):
    from ablations.tables.decoders import render

    _convert_copies(tmp_path, "decoders")
    new, old = render(tmp_path).splitlines(), _old_table("decoders").splitlines()
    assert new[1:] == old[1:]                                  # the title line names the new writer
    assert new[0].startswith("# Decoder table (generated from results/decoders/*.json")


def test_benchmark_scores_equal_the_old_ratios(tmp_path):
    for old, new in _convert_copies(tmp_path, "bench"):
        for k in ("latency_ratio", "flops_ratio", "params_ratio"):
            assert new["scores"][k]["value"] == old[k]
        for name, row in old["rows"].items():
            assert new["scores"][f"cpu_ms_median_{old['resolution_px']}px_{name}"]["value"] == row["median_ms"]


def test_world_proof_scores(tmp_path):
    for old, new in _convert_copies(tmp_path, "decoder"):
        for dec in ("tiny", "standin_vae"):
            assert new["scores"][f"psnr_heldout_{dec}"]["value"] == old["psnr"][dec]
            assert new["scores"][f"ssim_heldout_{dec}"]["value"] == old["ssim"][dec]
        assert new["scores"]["speedup_256px"]["value"] == old["latency"]["latent32_px256"]["speedup"]


def test_tables_refuse_unconverted_records(tmp_path):
    from ablations.tables.architecture import render as render_architecture
    from ablations.tables.decoders import render as render_decoders

    for folder, old_kind in (("architecture", "architecture"), ("decoders", "decoder_cost")):
        name, text = next(iter(_old_records(folder, old_kind).items()))
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(text)              # a schema-1 record, not converted
    with pytest.raises(RecordError, match="schema_version"):
        render_architecture(tmp_path)
    with pytest.raises(RecordError, match="schema_version"):
        render_decoders(tmp_path)
