"""The architecture records (results/architecture, written by ``python -m ablations table --repeats 5``) against
the registry, and the table, Pareto figure and SnapGen-vs-SDXL benchmark regenerated from them."""
import pytest
import torch

from ablations.bench import bench_path
from ablations.tables.architecture import architecture_table
from ablations.variants import PRESETS, REGISTRY
from snapgen.io import atomic_write_text
from snapgen.paths import results_root
from snapgen.records import read_record, read_records, value



@pytest.fixture(scope="module")
def records():
    return list(read_records(results_root() / "architecture", "architecture").values())


def test_every_variant_has_a_record(records):
    names = {r["name"] for r in records}
    missing = [n for n in REGISTRY.names() if n not in names]
    assert not missing, (f"registry variants without a cost record: {missing}; run "
                         f"`python -m ablations table --variants {' '.join(missing)} --repeats 5`")
    for r in records:
        res = r["protocol"]["resolution_px"]
        assert value(r, "params") > 0 and value(r, f"gflops_{res}") > 0 and r["environment"]["versions"]["torch"]
        assert r["scores"][f"gflops_{res}"]["higher_is_better"] is False
        assert value(r, f"gflops_{res}") == r["details"]["flops"] / 1e9          # FLOPs = 2 x MACs, exact count kept
        lat = r["protocol"]["latency"]
        if lat:
            px = lat["resolution_px"]
            median, stats = r["scores"][f"cpu_ms_median_{px}px"], r["details"]["latency_cpu"]
            assert median["n"] == lat["repeats"] and lat["latent"] * 8 == px
            assert stats["min_ms"] <= median["value"] <= stats["max_ms"]


def test_records_still_match_the_registry(records):
    """A record whose config hash or parameter count no longer matches its variant is stale: re-measure it."""
    from snapgen.models.unet import SnapGenUNet

    stale = []
    for r in records:
        if r["name"] not in REGISTRY.names():
            continue
        v = REGISTRY.get(r["name"])
        if v.config is None:
            continue
        with torch.device("meta"):
            params = sum(p.numel() for p in SnapGenUNet(v.config).parameters())
        if r["details"].get("config_hash") != v.config.hash or value(r, "params") != params:
            stale.append(r["name"])
    assert not stale, f"stale cost records (config or params changed): {stale}; `python -m ablations table --variants ...`"


def test_table_is_a_pure_function_of_the_records(records):
    md = architecture_table(records, REGISTRY.names())
    assert md == architecture_table(records, REGISTRY.names())
    atomic_write_text(results_root() / "tables" / "architecture.md", md)
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
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == architecture_pareto(records)
    atomic_write_bytes(results_root() / "figures" / "architecture_pareto.png", png)
    assert pareto_front([(1, 3), (2, 2), (3, 3), (0.5, 5)]) == [3, 0, 1]


def test_benchmark_snapgen_vs_sdxl_record():
    saved = read_record(bench_path("snapgen-t2i", 32))
    rows = saved["details"]["rows"]
    assert saved["kind"] == "benchmark" and saved["protocol"]["order"] == "interleaved"
    assert value(saved, "flops_ratio") == pytest.approx(rows["sdxl-unet"]["flops"] / rows["snapgen-t2i"]["flops"])
    assert value(saved, "latency_ratio") > 0
