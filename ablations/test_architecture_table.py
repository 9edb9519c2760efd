"""Regenerates the architecture records, table, Pareto figure and the SnapGen-vs-SDXL benchmark (under
``snapgen.paths.results_root()``)."""
import os

import pytest

from ablations.bench import bench_path, bench_unet_vs_sdxl
from ablations.build_tables import build_architecture
from ablations.tables.architecture import architecture_table
from ablations.variants import PRESETS, REGISTRY
from snapgen.paths import results_root
from snapgen.records import read_record, read_records, value

REPEATS = int(os.environ.get("SNAPGEN_TABLE_REPEATS", "1"))   # CI time; committed records: `python -m ablations table --repeats 5`


@pytest.fixture(scope="module")
def records():
    build_architecture(REGISTRY.names(), latency_latent=32, warmup=1, repeats=REPEATS)
    return list(read_records(results_root() / "architecture", "architecture").values())


def test_every_variant_has_a_record(records):
    names = {r["name"] for r in records}
    assert set(REGISTRY.names()) <= names
    for r in records:
        res = r["protocol"]["resolution_px"]
        assert value(r, "params") > 0 and value(r, f"gflops_{res}") > 0 and r["environment"]["versions"]["torch"]
        assert r["scores"][f"gflops_{res}"]["higher_is_better"] is False
        assert value(r, f"gflops_{res}") == r["details"]["flops"] / 1e9          # FLOPs = 2 x MACs, exact count kept
        assert r["details"]["flops_per_block"], r["name"]
        if REPEATS and r["name"] in REGISTRY.names():
            lat, px = r["protocol"]["latency"], r["protocol"]["latency"]["resolution_px"]
            median, stats = r["scores"][f"cpu_ms_median_{px}px"], r["details"]["latency_cpu"]
            assert lat["repeats"] == median["n"] == REPEATS and lat["latent"] * 8 == px
            assert stats["min_ms"] <= median["value"] <= stats["max_ms"]


def test_table_is_a_pure_function_of_the_records(records):
    md = (results_root() / "tables" / "architecture.md").read_text()
    assert md == architecture_table(records, REGISTRY.names())
    for name in REGISTRY.names():
        assert f"| {name} |" in md
    by = {r["name"]: r for r in records}
    for preset, (name, target) in PRESETS.items():
        assert abs(value(by[name], "params") / target - 1) < 0.01


def test_cost_ordering_matches_the_paper_story(records):
    by = {r["name"]: r for r in records}

    def gf(name):
        return value(by[name], f"gflops_{by[name]['protocol']['resolution_px']}")

    for p in ("t2i", "in256"):
        assert gf(f"{p}-s2-sepconv") < gf(f"{p}-s1-no-hires-sa") < gf(f"{p}-baseline")
        assert value(by[f"{p}-s5-mqa"], "params") < value(by[f"{p}-s4-ffn3"], "params")
    assert gf("sdxl-unet") / gf("snapgen-t2i") > 4


def test_pareto_figure(records):
    from paper_figures.pareto import architecture_pareto, pareto_front
    from snapgen.io import atomic_write_bytes

    png = architecture_pareto(records)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    atomic_write_bytes(results_root() / "figures" / "architecture_pareto.png", png)
    assert pareto_front([(1, 3), (2, 2), (3, 3), (0.5, 5)]) == [3, 0, 1]


@pytest.mark.skipif(REPEATS == 0, reason="latency disabled by SNAPGEN_TABLE_REPEATS=0")
def test_benchmark_snapgen_vs_sdxl_record():
    rec = bench_unet_vs_sdxl("snapgen-t2i", latent=32, warmup=1, repeats=REPEATS)
    saved = read_record(bench_path("snapgen-t2i", 32))
    rows = saved["details"]["rows"]
    assert saved["kind"] == "benchmark" and saved["scores"] == rec["scores"]
    assert value(saved, "flops_ratio") == pytest.approx(rows["sdxl-unet"]["flops"] / rows["snapgen-t2i"]["flops"])
    assert value(saved, "latency_ratio") > 0 and saved["protocol"]["order"] == "interleaved"
    assert saved["scores"]["cpu_ms_median_256px_snapgen-t2i"]["n"] == REPEATS
