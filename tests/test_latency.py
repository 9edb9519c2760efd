"""Latency protocol: statistics on a fake clock, record validation, the CLI on a tiny variant, the iPhone
orchestrator's commands and report parsing, the schema-1 converters, and the latency table."""
from __future__ import annotations

import copy
import json
import platform
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ablations.tables.latency import latency_table, render
from evals import latency as cli
from evals.latency.iphone import orchestrator as orch
from evals.latency.measure import Component, estimate_end_to_end_ms, euler_loop, measure, time_component
from evals.latency.records import (latency_record, migrate_v1, migrate_v1_coreml, record_path, stats,
                                   validate_latency, write_latency)
from evals.latency.settings import LatencyJob, LatencySettings, ModelSource
from snapgen.env import environment
from snapgen.records import RecordError, make_record, read_record, score, validate_record, write_record

REPO = Path(__file__).resolve().parents[1]

SAMPLE = Path(orch.__file__).parent / "sample_report.json"


class FakeClock:
    """Each call of ``work`` advances the clock by the next scheduled duration (seconds)."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def work(self):
        self.now += self.durations[self.calls]
        self.calls += 1

    def __call__(self):
        return self.now


def test_time_component_statistics_on_fake_clock():
    clock = FakeClock([0.5, 0.9, 0.010, 0.030, 0.020, 0.050, 0.040])  # first call, 1 more warm-up, 5 timed
    st = time_component(clock.work, LatencySettings(warmup=2, repeats=5), timer=clock)
    assert clock.calls == 7
    assert st["first_call_ms"] == pytest.approx(500.0)
    assert st["times_ms"] == pytest.approx([10, 30, 20, 50, 40])
    assert st["median_ms"] == pytest.approx(30.0)
    assert st["p90_ms"] == pytest.approx(46.0)  # sorted 10..50, position 3.6 -> 40 + 0.6 x 10
    assert st["n"] == 5 and st["warmup"] == 2 and st["clock"] == "perf_counter"


def test_time_component_rejects_zero_warmup():
    with pytest.raises(ValueError, match="warmup"):
        time_component(lambda: None, LatencySettings(warmup=0))


def _record(**model) -> dict:
    s = LatencySettings(resolution=256, steps=2, cfg=True, warmup=1, repeats=3)
    clocks = {"unet_step": FakeClock([0.2] * 4), "decoder": FakeClock([0.1] * 4)}
    timing = {"components": {name: time_component(k.work, s, timer=k) for name, k in clocks.items()}}
    timing["end_to_end"] = {"measured": None, "estimate_ms": estimate_end_to_end_ms(timing["components"], 2), "steps": 2}
    return latency_record(s, {"name": "m", "weights": "random", **model}, timing, {"unet": 0.1}, environment("cpu"))


def test_record_is_an_envelope_and_estimate_adds_up():
    rec = _record()
    assert validate_latency(rec) is rec and validate_record(rec) is rec
    assert rec["kind"] == "latency" and rec["name"] == "m" and rec["schema_version"] == 2
    assert rec["protocol"]["unet_batch"] == 2 and rec["protocol"]["latent"] == 32 and rec["protocol"]["cfg"]
    assert rec["scores"]["end_to_end_estimate_ms"]["value"] == pytest.approx(2 * 200 + 100)
    unet = rec["scores"]["unet_step_ms_median"]
    assert unet == {"value": pytest.approx(200.0), "ci95": None, "n": 3, "higher_is_better": False, "unit": "ms"}
    assert "median_ms" not in rec["details"]["components"]["unet_step"]  # the scores hold it, once
    assert stats(rec, "unet_step")["times_ms"] == pytest.approx([200.0] * 3)
    assert record_path(rec, Path("/r")) == Path("/r/cpu/m_256px_float32_2steps_b2.json")


def _break_scores(name):
    def breakage(r):
        r["scores"][f"{name}_ms_p90"]["value"] = 1.0
    return breakage


@pytest.mark.parametrize("breakage,message", [
    (lambda r: r.pop("environment"), "environment"),
    (lambda r: r["protocol"].update(unet_batch=1), "unet_batch"),
    (_break_scores("unet_step"), "p90_ms"),
    (lambda r: r["details"]["components"].update(vae={}), "unknown component"),
    (lambda r: r["details"]["components"].pop("unet_step"), "unet_step"),
    (lambda r: r["protocol"].update(target="tpu"), "target"),
    (lambda r: r["protocol"].update(target="iphone"), "compute_unit"),
    (lambda r: r["details"]["model"].pop("weights"), "weights"),
    (lambda r: r["details"]["components"]["decoder"].update(n=7), "n=7"),
    (lambda r: r["scores"]["unet_step_ms_median"].update(value=float("nan")), "finite"),
])
def test_invalid_records_are_rejected(breakage, message):
    rec = copy.deepcopy(_record())
    breakage(rec)
    with pytest.raises(RecordError, match=message):
        validate_latency(rec)


def test_write_record_is_atomic_json(tmp_path):
    path = write_latency(_record(), tmp_path)
    assert read_record(path)["kind"] == "latency"
    assert not list(path.parent.glob("*.tmp"))


def test_records_default_to_the_results_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path))
    assert write_latency(_record()).parent == tmp_path / "latency" / "cpu"


def test_measure_times_components_and_end_to_end():
    s = LatencySettings(warmup=1, repeats=2, steps=3)
    calls = {"a": 0, "e": 0}
    comps = [Component("unet_step", lambda: calls.__setitem__("a", calls["a"] + 1), {"batch": 1})]
    out = measure(comps, s, end_to_end=lambda: calls.__setitem__("e", calls["e"] + 1))
    assert calls == {"a": 3, "e": 3}
    assert out["components"]["unet_step"]["batch"] == 1
    assert out["end_to_end"]["measured"]["n"] == 2 and out["end_to_end"]["steps"] == 3


def test_euler_loop_integrates_from_noise_to_data_with_cfg():
    x = torch.ones(2, 1, 2, 2)
    assert torch.allclose(euler_loop(lambda xb, t: torch.full_like(xb, 0.5), x, steps=4, cfg=False), x - 0.5)
    seen = []

    def call(xb, t):  # conditional half predicts 1, unconditional half 0 -> guided velocity = guidance
        seen.append(xb.shape[0])
        return torch.cat([torch.ones_like(xb[:2]), torch.zeros_like(xb[2:])])
    out = euler_loop(call, x, steps=2, cfg=True, guidance=3.0)
    assert seen == [4, 4] and torch.allclose(out, x - 3.0)


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--variant snapgen-t2i --target cpu" in out and "--compute-units" in out


def test_cli_tiny_variant_on_cpu(tmp_path, capsys):
    torch.set_num_threads(1)
    code = cli.main(["--variant", "snapgen-t2i", "--tiny", "--target", "cpu", "--resolution", "64", "--steps", "2",
                     "--cfg", "--warmup", "1", "--repeats", "2", "--threads", "1", "--out", str(tmp_path)])
    assert code == 0
    (path,) = (tmp_path / "cpu").glob("*.json")
    rec = validate_latency(read_record(path))
    assert path.name == "snapgen-t2i-tiny_64px_float32_2steps_b2.json"
    d = rec["details"]
    assert set(d["components"]) == {"unet_step", "decoder"}  # --tiny: no text encoder by default
    assert d["components"]["unet_step"]["input_shape"] == [2, 16, 8, 8]
    assert d["components"]["decoder"]["input_shape"] == [1, 16, 8, 8]
    assert d["model"]["weights"].startswith("random") and d["model"]["tiny"]
    assert rec["scores"]["end_to_end_ms_median"]["n"] == 2 and d["end_to_end"]["measured"]["n"] == 2
    assert rec["protocol"]["threads"] == 1 and rec["environment"]["threads"] == 1
    assert rec["environment"]["versions"]["torch"] and d["load_s"]["unet"] >= 0
    assert "unet_step" in capsys.readouterr().out


def test_cli_channels_last_is_recorded_in_protocol_and_file_name(tmp_path):
    torch.set_num_threads(1)
    code = cli.main(["--variant", "snapgen-t2i", "--tiny", "--target", "cpu", "--resolution", "64", "--steps", "1",
                     "--warmup", "1", "--repeats", "1", "--threads", "1", "--channels-last", "--no-e2e",
                     "--out", str(tmp_path)])
    assert code == 0
    (path,) = (tmp_path / "cpu").glob("*.json")
    assert path.name == "snapgen-t2i-tiny_64px_float32_1steps_b1_cl.json"
    assert validate_latency(read_record(path))["protocol"]["channels_last"] is True


def test_evals_run_dispatches_to_latency(capsys):
    from evals.run import main as run_main

    with pytest.raises(SystemExit) as e:
        run_main(["latency", "--help"])
    assert e.value.code == 0 and "--target" in capsys.readouterr().out
    assert run_main(["latency", "--variant", "snapgen-t2i", "--dry-run"]) == 0


def test_cli_rejects_tiny_sdxl(capsys):
    assert cli.main(["--variant", "sdxl-unet", "--tiny", "--out", "/tmp/unused"]) == 2
    assert "SnapGen-family" in capsys.readouterr().err


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the non-macOS error")
def test_mac_target_needs_macos(capsys, tmp_path):
    assert cli.main(["--variant", "snapgen-t2i", "--tiny", "--target", "mac", "--out", str(tmp_path)]) == 2
    assert "need macOS" in capsys.readouterr().err


def test_iphone_target_without_xcode(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(orch.shutil, "which", lambda name: None)
    code = cli.main(["--variant", "snapgen-t2i", "--tiny", "--target", "iphone", "--device-name", "X",
                     "--out", str(tmp_path)])
    assert code == 2 and "Xcode" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# iPhone orchestrator


def test_orchestrator_commands():
    assert orch.coremlcompiler_argv(Path("a/u.mlpackage"), Path("out")) == \
        ["xcrun", "coremlcompiler", "compile", "a/u.mlpackage", "out"]
    assert orch.list_devices_argv(Path("d.json")) == ["xcrun", "devicectl", "list", "devices", "--json-output", "d.json"]
    argv = orch.xcodebuild_test_argv("Jo's iPhone 16", Path("dd"), Path("r.xcresult"), team_id="ABCDE12345")
    assert argv[:4] == ["xcodebuild", "test", "-scheme", "SnapGenBench"]
    assert argv[argv.index("-destination") + 1] == "platform=iOS,name=Jo's iPhone 16"
    assert "-only-testing:SnapGenBenchTests/SnapGenBenchTests/testLatency" in argv
    assert argv[-1] == "DEVELOPMENT_TEAM=ABCDE12345"
    assert not any(a.startswith("DEVELOPMENT_TEAM") for a in orch.xcodebuild_test_argv("x", Path("d"), Path("r")))


def test_bench_config_matches_swift_fields():
    cfg = orch.bench_config({"unet_step": "u.mlmodelc", "decoder": "d.mlmodelc"}, ["ALL"], 2, 5, 4)
    assert cfg == {"models": [{"component": "unet_step", "resource": "u.mlmodelc"},
                              {"component": "decoder", "resource": "d.mlmodelc"}],
                   "computeUnits": ["ALL"], "warmup": 2, "repeats": 5, "steps": 4}
    swift = (Path(orch.__file__).parent / "SnapGenBench/Sources/SnapGenBenchCore/Bench.swift").read_text()
    for field in ("models", "computeUnits", "warmup", "repeats", "steps", "component", "resource", "timesMs",
                  "firstCallMs", "loadMs", "endToEnd", orch.BEGIN, orch.END):
        assert field in swift
    with pytest.raises(ValueError):
        orch.bench_config({"vae": "v"}, ["ALL"], 1, 1, 1)


def test_parse_devices():
    data = {"result": {"devices": [
        {"identifier": "ABC", "deviceProperties": {"name": "Lab iPhone", "osVersionNumber": "18.1"},
         "hardwareProperties": {"marketingName": "iPhone 16 Pro Max", "productType": "iPhone17,2"},
         "connectionProperties": {"tunnelState": "connected"}}]}}
    devices = orch.parse_devices(data)
    assert devices == [{"name": "Lab iPhone", "identifier": "ABC", "model": "iPhone 16 Pro Max", "os": "18.1",
                        "state": "connected"}]
    assert orch.find_device(devices, "Lab iPhone")["identifier"] == "ABC"
    with pytest.raises(RuntimeError, match="no connected device"):
        orch.find_device(devices, "Other")


def _iphone_records():
    log = "Test Suite started\n" + orch.BEGIN + "\n" + SAMPLE.read_text() + "\n" + orch.END + "\nTest Suite passed\n"
    report = orch.extract_report(log)
    s = LatencySettings(target="iphone", resolution=1024, steps=4)
    return orch.records_from_report(report, s, {"name": "snapgen-t2i", "weights": "random", "variant": "snapgen-t2i",
                                                "decoder": "tiny"}, "Lab iPhone", environment("cpu"))


def test_iphone_report_to_records():
    recs = _iphone_records()
    assert [r["protocol"]["compute_unit"] for r in recs] == ["CPU_AND_NE", "ALL"]
    ne = recs[0]
    assert ne["scores"]["unet_step_ms_median"]["value"] == pytest.approx(300.0)
    assert ne["scores"]["decoder_ms_median"]["value"] == pytest.approx(122.0)
    assert ne["details"]["components"]["unet_step"]["first_call_ms"] == 400.0
    assert ne["details"]["load_s"]["unet_step"] == 9.0
    assert ne["scores"]["end_to_end_ms_median"]["value"] == pytest.approx(1305.0)
    assert ne["scores"]["end_to_end_estimate_ms"]["value"] == pytest.approx(4 * 300 + 122)
    assert ne["environment"]["device_machine"] == "iPhone17,2"
    for r in recs:
        validate_latency(r)
    with pytest.raises(ValueError, match="no benchmark report"):
        orch.extract_report("build failed")


# ------------------------------------------------------------------------------------------------
# Table


ENV = {"threads": 1, "git_commit": None, "versions": {}}


def _architecture(name: str, params: int, gflops: float) -> dict:  # the envelope ablations.costs writes
    return make_record("architecture", name, {"resolution_px": 1024},
                       {"params": score(params, higher_is_better=None, unit="params"),
                        "gflops_1024": score(gflops, higher_is_better=False, unit="GFLOPs")}, {}, ENV)


def _decoder(name: str, params: int) -> dict:
    return make_record("decoder", name, {}, {"params": score(params, higher_is_better=None, unit="params")}, {}, ENV)


def test_latency_table_is_pure_and_shows_paper_only_on_iphone():
    cpu = _record(name="snapgen-t2i", variant="snapgen-t2i", decoder="tiny")
    recs = [cpu, *_iphone_records()]
    arch = [_architecture("snapgen-t2i", 382_131_216, 1376.9)]
    decs = [_decoder("tiny", 1_388_195)]
    text = latency_table(recs, arch, decs)
    assert text == latency_table(list(reversed(recs)), arch, decs)  # order-independent, deterministic
    rows = [line for line in text.splitlines() if line.startswith("| iphone") or line.startswith("| cpu")]
    assert len(rows) == 3
    cpu_row, ne_row = rows[0], next(r for r in rows if "CPU_AND_NE" in r)
    assert cpu_row.endswith("| — | — | — |")
    assert "| 274 | ~119 | 1400" in ne_row and "300.0 (" in ne_row and "| 382 | 1377 | tiny (1.39M)" in ne_row
    assert "| 200.0 (200.0) |" in cpu_row  # U-Net median (p90) on the fake clock


def test_render_reads_records_under_the_root(tmp_path):
    write_latency(_record(name="snapgen-t2i", variant="snapgen-t2i", decoder="tiny"), tmp_path / "latency")
    write_record(tmp_path / "architecture" / "snapgen-t2i.json", _architecture("snapgen-t2i", 382_131_216, 1376.9))
    write_record(tmp_path / "decoders" / "tiny.json", _decoder("tiny", 1_388_195))
    text = render(tmp_path)
    assert text == render(tmp_path) and "| 382 | 1377 | tiny (1.39M) |" in text and "Core ML exports" not in text
    (tmp_path / "latency" / "cpu" / "broken.json").write_text(json.dumps({"kind": "latency", "schema_version": 1}))
    with pytest.raises(RecordError, match="broken.json"):
        render(tmp_path)


# ------------------------------------------------------------------------------------------------
# Schema-1 records -> envelope (on copies of the committed records)


def _flat_numbers(obj, prefix=""):
    """Every number of a JSON tree by path (bools excluded)."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat_numbers(val, f"{prefix}.{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _flat_numbers(val, f"{prefix}[{i}]").items()}
    return {prefix: obj} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}


SCHEMA1_COMMIT = "d7a3ff9"          # results/ before the migration to the envelope


def _committed(folder: str, kind: str, tmp: Path | None = None) -> list[Path]:
    """The schema-1 records of ``kind``: in the working tree, or (once migrated) as committed at SCHEMA1_COMMIT."""
    import subprocess
    import tempfile

    paths = sorted((REPO / "results" / folder).rglob("*.json"))
    old = [p for p in paths if json.loads(p.read_text()).get("schema_version") == 1
           and json.loads(p.read_text()).get("kind") == kind]
    if old:
        return old
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", SCHEMA1_COMMIT, f"results/{folder}"], cwd=REPO,
                           capture_output=True, text=True)
    if names.returncode != 0:
        pytest.skip("git history not available")
    dest = Path(tempfile.mkdtemp(prefix="schema1_"))
    for name in names.stdout.split():
        blob = subprocess.run(["git", "show", f"{SCHEMA1_COMMIT}:{name}"], cwd=REPO, capture_output=True).stdout
        if json.loads(blob).get("kind") == kind:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(blob)
            old.append(dest / name)
    assert old, f"no schema-1 {kind} records at {SCHEMA1_COMMIT}"
    return sorted(old)


def test_migrate_v1_latency_keeps_every_number(tmp_path):
    for src in _committed("latency", "latency"):
        old = json.loads(src.read_text())
        copy_ = tmp_path / src.name
        copy_.write_text(src.read_text())
        new = validate_latency(migrate_v1(json.loads(copy_.read_text()), copy_))
        validate_record(new)
        assert new["created"] == old["created"] and new["environment"] == old["environment"]
        assert new["name"] == old["model"]["name"] and new["details"]["model"] == old["model"]
        for key, value in old["settings"].items():
            assert new["protocol"][key] == value
        assert new["protocol"]["target"] == old["target"] and new["protocol"]["timing"] == old["protocol"]
        for comp, st in old["components"].items():
            assert stats(new, comp) == st  # median/p90 from scores, the rest from details: exactly the old dict
        assert stats(new, "end_to_end") == old["end_to_end"]["measured"]
        assert new["scores"]["end_to_end_estimate_ms"]["value"] == old["end_to_end"]["estimate_ms"]
        assert new["details"]["load_s"] == old["load_s"] and new["details"]["notes"] == old["notes"]
        # nothing lost: every number of the old record appears, unchanged, somewhere in the new one
        new_values = set(_flat_numbers(new).values())
        missing = [k for k, v in _flat_numbers(old).items() if k != ".schema_version" and v not in new_values]
        assert not missing
        path = write_record(tmp_path / "out" / src.name, new)
        assert validate_latency(read_record(path)) == new
        assert record_path(new, tmp_path).name == src.name  # the same file name as before


def test_migrate_v1_coreml_keeps_every_number(tmp_path):
    for src in _committed("coreml", "coreml_export"):
        old = json.loads(src.read_text())
        new = validate_record(migrate_v1_coreml(copy.deepcopy(old), tmp_path / src.name))
        assert new["kind"] == "export" and new["name"] == old["name"]
        assert new["created"] == old["created"] and new["environment"] == old["environment"]
        p, s, d = new["protocol"], new["scores"], new["details"]
        assert {k: p[k] for k in old["settings"]} == old["settings"] and p["component"] == old["component"]
        assert p["minimum_deployment_target"] == old["minimum_deployment_target"] and p["format"] == old["format"]
        for key in ("params", "n_ops", "weight_bytes", "package_bytes", "peak_rss_gb"):
            assert s[key]["value"] == old[key]
        assert {k: s[k]["value"] for k in old["timings"]} == old["timings"]
        assert (s["rewrite_psnr_db"]["value"] if "rewrite_psnr_db" in s else d["rewrite_psnr_db"]) == old["rewrite_psnr_db"]
        assert {**d["parity"], "psnr_db": s.get("parity_psnr_db", {}).get("value")} == old["parity"]
        for key in ("op_counts", "inputs", "outputs", "weight_sha256", "spec_version", "package", "config", "weights",
                    "attention_rewrites"):
            assert d[key] == old[key], key
        with pytest.raises(RecordError):
            migrate_v1(old, src)


def test_latency_table_from_migrated_records_matches_the_committed_table():
    """The committed table was rendered from the schema-1 records: the converted records give the same bytes
    (records already converted are read as they are)."""
    def load(folder: str, convert) -> list[dict]:
        out = []
        for p in sorted((REPO / "results" / folder).rglob("*.json")):
            r = json.loads(p.read_text())
            out.append(validate_record(r) if r.get("schema_version") == 2 else convert(r, p))
        return out
    recs = load("latency", migrate_v1)
    exps = load("coreml", migrate_v1_coreml)
    arch = load("architecture", lambda r, p: _architecture(r["variant"], r["params"], r["gflops"]))
    decs = load("decoders", lambda r, p: _decoder(r["decoder"], r["params"]))
    if not recs:
        pytest.skip("no latency records committed")
    assert latency_table(recs, arch, decs, exps) == (REPO / "results" / "tables" / "latency.md").read_text()


def test_settings_from_args_roundtrip():
    import argparse

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--variant", "snapgen-t2i", "--cfg", "--dtype", "bfloat16", "--compile", "--no-e2e"])
    s = cli.settings_from_args(args, 512)
    assert s == replace(LatencySettings(), resolution=512, cfg=True, dtype="bfloat16", compile=True, end_to_end=False)
    assert s.unet_batch == 2 and s.latent == 64


def test_job_from_args_resolves_defaults_at_the_edge():
    import argparse

    from evals.latency.cli import job_from_args

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    job = job_from_args(p.parse_args(["--variant", "snapgen-t2i", "--target", "iphone", "--device-name", "Lab",
                                      "--compute-units", "ALL"]))
    assert isinstance(job, LatencyJob) and job.source == ModelSource(variant="snapgen-t2i")
    assert job.settings.resolution == 1024 and job.coreml.compute_units == ("ALL",) and job.coreml.device_name == "Lab"
    assert job.out is None  # records go to snapgen.paths.results_dir("latency")
    job = job_from_args(p.parse_args(["--variant", "snapgen-in256", "--tiny"]))
    assert job.settings.resolution == 256 and job.source.tiny  # the variant's reference resolution
    with pytest.raises(ValueError, match="exactly one"):
        ModelSource()
