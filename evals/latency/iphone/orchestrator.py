"""Run the Swift benchmark (``evals/latency/iphone/SnapGenBench``) on a connected iPhone and record the numbers.

Steps (macOS with Xcode only):
  1. export (or reuse) the U-Net and decoder ``.mlpackage`` files (``evals.latency.coreml.ensure_packages``);
  2. compile each to ``.mlmodelc``: ``xcrun coremlcompiler compile <pkg> <dir>``;
  3. copy the Swift package to a build folder, stage ``bench_config.json`` + ``Models/*.mlmodelc``
     as test resources;
  4. check the device is connected: ``xcrun devicectl list devices --json-output <file>``;
  5. ``xcodebuild test -scheme SnapGenBench -destination 'platform=iOS,name=<device>'`` (the XCTest
     times N predictions per compute unit after warm-up and prints its JSON between markers);
  6. parse the JSON from the log and build one latency record per compute unit (the CLI writes them).

Every command is built by a pure function returning an argv list (tested on Linux); only
:func:`run_iphone` executes them. It receives a :class:`~evals.latency.settings.LatencyJob`, never the
argparse namespace.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from evals.latency.coreml import ensure_packages
from evals.latency.measure import estimate_end_to_end_ms
from evals.latency.records import latency_record
from evals.latency.settings import COMPONENTS, LatencyJob, LatencySettings
from snapgen.cost import summarize_times
from snapgen.env import environment

PACKAGE_DIR = Path(__file__).resolve().parent / "SnapGenBench"
SCHEME = "SnapGenBench"
TEST_ID = "SnapGenBenchTests/SnapGenBenchTests/testLatency"
BEGIN, END = "SNAPGEN_BENCH_JSON_BEGIN", "SNAPGEN_BENCH_JSON_END"   # must match Bench.swift


class XcodeToolsMissing(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------
# Commands (pure)


def coremlcompiler_argv(package: Path, out_dir: Path) -> list[str]:
    return ["xcrun", "coremlcompiler", "compile", str(package), str(out_dir)]


def list_devices_argv(json_out: Path) -> list[str]:
    return ["xcrun", "devicectl", "list", "devices", "--json-output", str(json_out)]


def xcodebuild_test_argv(device_name: str, derived_data: Path, result_bundle: Path,
                         team_id: str | None = None) -> list[str]:
    """Run from the (staged) package folder: xcodebuild opens Package.swift itself."""
    argv = ["xcodebuild", "test", "-scheme", SCHEME, "-destination", f"platform=iOS,name={device_name}",
            "-derivedDataPath", str(derived_data), "-resultBundlePath", str(result_bundle),
            f"-only-testing:{TEST_ID}", "-allowProvisioningUpdates"]
    if team_id:
        argv.append(f"DEVELOPMENT_TEAM={team_id}")
    return argv


def bench_config(resources: dict[str, str], compute_units: list[str], warmup: int, repeats: int,
                 steps: int) -> dict[str, Any]:
    """``bench_config.json`` for the Swift test: ``resources`` maps component -> compiled model folder."""
    for comp in resources:
        if comp not in ("unet_step", "decoder"):
            raise ValueError(f"component {comp!r}: expected unet_step or decoder")
    if warmup < 1 or repeats < 1:
        raise ValueError("warmup and repeats must be >= 1")
    return {"models": [{"component": c, "resource": r} for c, r in resources.items()],
            "computeUnits": list(compute_units), "warmup": warmup, "repeats": repeats, "steps": steps}


# ------------------------------------------------------------------------------------------------
# Parsing (pure)


def parse_devices(devicectl_json: dict) -> list[dict[str, str]]:
    """``devicectl list devices --json-output`` -> [{name, identifier, model, os, state}]."""
    out = []
    for d in devicectl_json.get("result", {}).get("devices", []):
        props, hw = d.get("deviceProperties", {}), d.get("hardwareProperties", {})
        out.append({"name": props.get("name", ""), "identifier": d.get("identifier", ""),
                    "model": hw.get("marketingName") or hw.get("productType", ""),
                    "os": props.get("osVersionNumber", ""),
                    "state": d.get("connectionProperties", {}).get("tunnelState", "")})
    return out


def find_device(devices: list[dict[str, str]], name: str) -> dict[str, str]:
    for d in devices:
        if d["name"] == name:
            return d
    raise XcodeToolsMissing(f"no connected device named {name!r}; devicectl sees {[d['name'] for d in devices]}")


def extract_report(log: str) -> dict[str, Any]:
    """The benchmark JSON printed between the markers in an ``xcodebuild test`` log."""
    start, end = log.rfind(BEGIN), log.rfind(END)
    if start < 0 or end < start:
        raise ValueError(f"no benchmark report between {BEGIN} and {END} in the xcodebuild log")
    report = json.loads(log[start + len(BEGIN):end].strip())
    for key in ("device", "config", "results"):
        if key not in report:
            raise ValueError(f"benchmark report lacks {key!r}")
    return report


def _stats(r: dict[str, Any], warmup: int) -> dict[str, Any]:
    st = summarize_times([t / 1e3 for t in r["timesMs"]], warmup).to_dict()
    return {**st, "first_call_ms": r["firstCallMs"], "clock": "DispatchTime (device)"}


def records_from_report(report: dict[str, Any], s: LatencySettings, model: dict[str, Any],
                        device_name: str, host_env: dict[str, Any]) -> list[dict[str, Any]]:
    """One validated latency record per compute unit from a parsed benchmark report."""
    cfg = report["config"]
    recs = []
    for unit in cfg["computeUnits"]:
        rows = [r for r in report["results"] if r["computeUnit"] == unit and r["component"] in COMPONENTS]
        comps = {r["component"]: _stats(r, cfg["warmup"]) for r in rows}
        e2e = next((r for r in report.get("endToEnd", []) if r["computeUnit"] == unit), None)
        su = replace(s, compute_unit=unit, warmup=cfg["warmup"], repeats=cfg["repeats"], steps=cfg["steps"] or s.steps)
        timing = {"components": comps, "end_to_end": {
            "measured": _stats(e2e, cfg["warmup"]) if e2e else None,
            "estimate_ms": estimate_end_to_end_ms(comps, su.steps), "steps": su.steps}}
        env = {**host_env, "device": f"iPhone ({device_name})", "device_machine": report["device"]["machine"],
               "device_os": f"{report['device']['systemName']} {report['device']['systemVersion']}",
               "thermal_state_end": report["device"]["thermalState"]}
        load = {r["component"]: r["loadMs"] / 1e3 for r in rows}
        notes = ["load_s: MLModel(contentsOf:) of the compiled .mlmodelc on device",
                 "text encoders not run on device (paper: negligible)"]
        recs.append(latency_record(su, model, timing, load, env, notes))
    return recs


# ------------------------------------------------------------------------------------------------
# Execution (macOS + Xcode only)


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def stage_package(work: Path, compiled: dict[str, Path], config: dict[str, Any]) -> Path:
    """Copy the Swift package to ``work`` and put the config and compiled models in its test resources."""
    dst = work / "SnapGenBench"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(PACKAGE_DIR, dst, ignore=shutil.ignore_patterns(".build", "*.xcresult"))
    res = dst / "Tests" / "SnapGenBenchTests" / "Resources"
    (res / "Models").mkdir(parents=True, exist_ok=True)
    for path in compiled.values():
        shutil.copytree(path, res / "Models" / path.name)
    (res / "bench_config.json").write_text(json.dumps(config, indent=2))
    return dst


def run_iphone(job: LatencyJob) -> list[dict[str, Any]]:
    """``--target iphone``: export, compile, build and run on the named device -> one record per compute unit."""
    device_name, s = job.coreml.device_name, job.settings
    if not device_name:
        raise RuntimeError("--target iphone needs --device-name (the name Xcode shows for the connected iPhone)")
    if shutil.which("xcrun") is None or shutil.which("xcodebuild") is None:
        raise XcodeToolsMissing("--target iphone needs macOS with Xcode's command-line tools (xcrun, xcodebuild) "
                                "and a connected, trusted iPhone in developer mode; none found on this machine")
    packages, model = ensure_packages(job)
    with tempfile.TemporaryDirectory(prefix="snapgen_iphone_") as tmp:
        work = Path(tmp)
        _run(list_devices_argv(work / "devices.json"))
        device = find_device(parse_devices(json.loads((work / "devices.json").read_text())), device_name)
        compiled = {}
        for comp, pkg in packages.items():
            _run(coremlcompiler_argv(pkg, work / "compiled"))
            compiled[comp] = work / "compiled" / (pkg.stem + ".mlmodelc")
        config = bench_config({c: p.name for c, p in compiled.items()}, list(job.coreml.compute_units), s.warmup,
                              s.repeats, s.steps)
        pkg_dir = stage_package(work, compiled, config)
        proc = _run(xcodebuild_test_argv(device_name, work / "derived", work / "result.xcresult", job.coreml.team_id),
                    cwd=pkg_dir)
        report = extract_report(proc.stdout)
    return records_from_report(report, s, {**model, "device": device}, device_name, environment("cpu"))
