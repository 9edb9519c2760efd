"""Latency protocol: statistics on a fake clock, record validation, the CLI on a tiny variant, the iPhone
orchestrator's commands and report parsing, and the latency table."""
from __future__ import annotations

import copy
import json
import platform
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ablations.latency_table import latency_table
from evals import latency as cli
from evals.iphone import orchestrator as orch
from snapgen.env import environment
from snapgen.latency import (Component, LatencySettings, estimate_end_to_end_ms, euler_loop, latency_record, measure,
                             record_path, time_component, validate_latency_record, write_record)

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


def _record(**changes) -> dict:
    s = LatencySettings(resolution=256, steps=2, cfg=True, warmup=1, repeats=3)
    clocks = {"unet_step": FakeClock([0.2] * 4), "decoder": FakeClock([0.1] * 4)}
    timing = {"components": {name: time_component(k.work, s, timer=k) for name, k in clocks.items()}}
    timing["end_to_end"] = {"measured": None, "estimate_ms": estimate_end_to_end_ms(timing["components"], 2), "steps": 2}
    rec = latency_record(s, {"name": "m", "weights": "random"}, timing, {"unet": 0.1}, environment("cpu"))
    rec.update(changes)
    return rec


def test_record_validates_and_estimate_adds_up():
    rec = _record()
    assert validate_latency_record(rec) is rec
    assert rec["settings"]["unet_batch"] == 2 and rec["settings"]["latent"] == 32
    assert rec["end_to_end"]["estimate_ms"] == pytest.approx(2 * 200 + 100)
    assert record_path(rec, Path("/r")) == Path("/r/cpu/m_256px_float32_2steps_b2.json")


@pytest.mark.parametrize("breakage,message", [
    (lambda r: r.pop("environment"), "missing key 'environment'"),
    (lambda r: r["settings"].update(unet_batch=1), "unet_batch"),
    (lambda r: r["components"]["unet_step"].update(p90_ms=1.0), "p90_ms"),
    (lambda r: r["components"].update(vae={}), "unknown component"),
    (lambda r: r["components"].pop("unet_step"), "unet_step"),
    (lambda r: r.update(target="tpu"), "target"),
    (lambda r: r.update(target="iphone"), "compute_unit"),
    (lambda r: r["model"].pop("weights"), "weights"),
    (lambda r: r["components"]["decoder"].update(n=7), "n=7"),
])
def test_invalid_records_are_rejected(breakage, message):
    rec = copy.deepcopy(_record())
    breakage(rec)
    with pytest.raises(ValueError, match=message):
        validate_latency_record(rec)


def test_write_record_is_atomic_json(tmp_path):
    path = write_record(_record(), tmp_path)
    assert json.loads(path.read_text())["kind"] == "latency"
    assert not list(path.parent.glob("*.tmp"))


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
    rec = validate_latency_record(json.loads(path.read_text()))
    assert path.name == "snapgen-t2i-tiny_64px_float32_2steps_b2.json"
    assert set(rec["components"]) == {"unet_step", "decoder"}  # --tiny: no text encoder by default
    assert rec["components"]["unet_step"]["input_shape"] == [2, 16, 8, 8]
    assert rec["components"]["decoder"]["input_shape"] == [1, 16, 8, 8]
    assert rec["model"]["weights"].startswith("random") and rec["model"]["tiny"]
    assert rec["end_to_end"]["measured"]["n"] == 2
    assert rec["settings"]["threads"] == 1 and rec["environment"]["threads"] == 1
    assert rec["environment"]["versions"]["torch"] and rec["load_s"]["unet"] >= 0


def test_evals_run_dispatches_to_latency(capsys):
    from evals.run import main as run_main

    with pytest.raises(SystemExit) as e:
        run_main(["latency", "--help"])
    assert e.value.code == 0 and "--target" in capsys.readouterr().out
    assert run_main(["latency", "--variant", "snapgen-t2i", "--dry-run"]) == 0


def test_cli_rejects_tiny_sdxl():
    with pytest.raises(SystemExit, match="SnapGen-family"):
        cli.main(["--variant", "sdxl-unet", "--tiny", "--out", "/tmp/unused"])


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
    assert [r["settings"]["compute_unit"] for r in recs] == ["CPU_AND_NE", "ALL"]
    ne = recs[0]
    assert ne["components"]["unet_step"]["median_ms"] == pytest.approx(300.0)
    assert ne["components"]["decoder"]["median_ms"] == pytest.approx(122.0)
    assert ne["components"]["unet_step"]["first_call_ms"] == 400.0 and ne["load_s"]["unet_step"] == 9.0
    assert ne["end_to_end"]["measured"]["median_ms"] == pytest.approx(1305.0)
    assert ne["end_to_end"]["estimate_ms"] == pytest.approx(4 * 300 + 122)
    assert ne["environment"]["device_machine"] == "iPhone17,2"
    for r in recs:
        validate_latency_record(r)
    with pytest.raises(ValueError, match="no benchmark report"):
        orch.extract_report("build failed")


# ------------------------------------------------------------------------------------------------
# Table


def test_latency_table_is_pure_and_shows_paper_only_on_iphone():
    cpu = _record()
    cpu["model"].update(name="snapgen-t2i", variant="snapgen-t2i", decoder="tiny")
    recs = [cpu, *_iphone_records()]
    arch = [{"kind": "architecture", "variant": "snapgen-t2i", "params": 382_131_216, "gflops": 1376.9}]
    decs = [{"kind": "decoder_cost", "decoder": "tiny", "params": 1_388_195}]
    text = latency_table(recs, arch, decs)
    assert text == latency_table(list(reversed(recs)), arch, decs)  # order-independent, deterministic
    rows = [line for line in text.splitlines() if line.startswith("| iphone") or line.startswith("| cpu")]
    assert len(rows) == 3
    cpu_row, ne_row = rows[0], next(r for r in rows if "CPU_AND_NE" in r)
    assert cpu_row.endswith("| — | — | — |")
    assert "| 274 | ~119 | 1400" in ne_row and "300.0 (" in ne_row and "| 382 | 1377 | tiny (1.39M)" in ne_row
    assert "| 200.0 (200.0) |" in cpu_row  # U-Net median (p90) on the fake clock


def test_settings_from_args_roundtrip():
    import argparse

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--variant", "snapgen-t2i", "--cfg", "--dtype", "bfloat16", "--compile", "--no-e2e"])
    s = cli.settings_from_args(args, 512)
    assert s == replace(LatencySettings(), resolution=512, cfg=True, dtype="bfloat16", compile=True, end_to_end=False)
    assert s.unet_batch == 2 and s.latent == 64
