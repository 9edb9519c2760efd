"""The speed benchmarks' machinery (issue 18): interleaved timing, the matmul reference rate, the decoder benchmark's
record. No timing is asserted: the benchmarks write records, the tests check their structure."""
from __future__ import annotations

import itertools

import pytest
import torch

from ablations.bench_decoders import NAMES, DecoderBenchSettings, main, run_bench
from snapgen.cost import matmul_peak_gflops, time_interleaved
from snapgen.records import read_record, validate_record, value


def test_time_interleaved_runs_round_robin_after_warmup():
    calls: list[str] = []
    clock = itertools.count(0.0, 0.5)
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    stats = time_interleaved(fns, warmup=1, repeats=2, timer=lambda: next(clock))
    assert calls == list("abc") * 3                    # one warm-up round, then two timed rounds, in turn
    assert {k: s.n for k, s in stats.items()} == {"a": 2, "b": 2, "c": 2}
    assert all(s.median_ms == 500.0 for s in stats.values())


def test_matmul_reference_rate_is_a_positive_rate():
    r = matmul_peak_gflops(torch.float32, n=64, repeats=2)
    assert r["gflops_per_s"] > 0 and r["n"] == 64 and r["dtype"] == "float32" and len(r["times_ms"]) == 2


def test_decoder_benchmark_record_and_cli(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["--sizes", "16", "32", "--probe-px", "16", "--repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    rec = validate_record(read_record(out))
    assert rec["kind"] == "benchmark" and rec["protocol"]["order"] == "interleaved"
    assert rec["protocol"]["sizes_px"] == [16, 32] and rec["environment"]["threads"] == 1
    assert rec["protocol"]["dtype"] == "float32"
    for px in (16, 32):
        rows = {n: rec["details"]["rows"][f"{n}@{px}"] for n in NAMES}
        assert value(rec, f"speedup_vs_sd3_{px}") == pytest.approx(rows["sd3_vae"]["median_ms"] /
                                                                   rows["tiny"]["median_ms"])
        assert value(rec, f"flops_ratio_sd3_{px}") == pytest.approx(rows["sd3_vae"]["flops"] / rows["tiny"]["flops"])
        assert value(rec, f"flops_ratio_sd3_{px}") > 50                        # ~99x at every size
    assert set(rec["details"]["probe_ms"]["tiny"]) == {"fused", "modules_channels_last", "modules"}
    assert rec["details"]["chosen"]["tiny"] in rec["details"]["probe_ms"]["tiny"]
    assert len(rec["details"]["matmul_reference"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["--sizes", "20", "--dry-run"])
    assert e.value.code == 2 and "multiple of 8" in capsys.readouterr().err
    assert DecoderBenchSettings().sizes_px == (256, 512, 1024) and run_bench is not None


def test_unet_benchmark_record_paths():
    from ablations.bench import bench_path

    assert bench_path("snapgen-t2i", 32).name == "unet_snapgen-t2i_vs_sdxl_latent32.json"     # the fp32 record's
    assert bench_path("snapgen-t2i", 128, "bfloat16", True).name == \
        "unet_snapgen-t2i_vs_sdxl_latent128_bfloat16_channels_last.json"
    assert bench_path("snapgen-t2i", 128, "float32", True, True).name == \
        "unet_snapgen-t2i_vs_sdxl_latent128_channels_last_split_depthwise.json"
    assert bench_path("snapgen-t2i", 128, "float32", True, True, True).name == \
        "unet_snapgen-t2i_vs_sdxl_latent128_channels_last_split_depthwise_compiled.json"


def test_op_time_breakdown_splits_self_time_by_kernel_kind():
    from snapgen.cost import op_category, op_time_breakdown

    a, w = torch.randn(64, 64), torch.randn(64, 64)
    x = torch.randn(1, 8, 16, 16)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    with torch.inference_mode():
        r = op_time_breakdown(lambda: torch.nn.functional.gelu(conv(x)).sum() + (a @ w).sum(), top=3)
    cats = r["categories"]
    assert cats["gemm"]["calls"] >= 1 and cats["elementwise_and_memory"]["calls"] >= 2
    assert sum(c["share"] for c in cats.values()) == pytest.approx(1.0)
    assert sum(c["ms"] for c in cats.values()) == pytest.approx(r["total_ms"])
    assert len(r["top_ops"]) == 3 and r["top_ops"][0]["ms"] >= r["top_ops"][-1]["ms"]
    assert op_category("aten::_slow_conv2d_forward") == "gemm" and op_category("aten::gelu") == "elementwise_and_memory"
    assert op_category("mkl::_mkl_linear") == "gemm"                    # inductor freezing's kernels (--compile)
    assert op_category("mkldnn::_convolution_pointwise") == op_category("mkldnn::_convolution_pointwise_") == "convolution"
    with pytest.raises(RuntimeError, match="no CPU time"):
        op_time_breakdown(lambda: None)


@pytest.mark.parametrize("dtype,channels_last,split,compile", [("bfloat16", True, False, False),
                                                               ("float32", False, True, False),
                                                               ("float32", True, True, True)])
def test_unet_benchmark_record_in_each_dtype(tmp_path, monkeypatch, dtype, channels_last, split, compile):
    """`python -m ablations bench --dtype/--channels-last/--threads`, on small-width builds of two registry variants
    (the real ones need 10 GB): the record names its dtype and memory format, rates are FLOPs / median."""
    import ablations.bench as bench
    from ablations.models import build_model, example_inputs, tiny_config

    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path))
    monkeypatch.setattr(bench, "REFERENCE", "t2i-baseline")
    monkeypatch.setattr(bench, "build_model", lambda v, device, timing_init=False, dtype=None:
                        build_model(v, device, tiny_config(v.config), timing_init=timing_init, dtype=dtype))
    monkeypatch.setattr(bench, "example_inputs", lambda v, latent: example_inputs(v, latent, config=tiny_config(v.config)))
    if compile:     # inductor compiles even these small U-Nets for minutes: compile_checked is tested on its own below
        monkeypatch.setattr(bench, "compile_checked", lambda models, inputs, names: (models, {
            n: {"compile_s": 1.0, "max_abs_diff": 0.0, "eager_max_abs": 1.0, "relative": 0.0} for n in names}))
    rec = bench.bench_unet_vs_sdxl("snapgen-t2i", 8, warmup=1, repeats=2, dtype=dtype, channels_last=channels_last,
                                   threads=1, split_depthwise=split, profile=split and not compile, compile=compile)
    path = bench.bench_path("snapgen-t2i", 8, dtype, channels_last, split, compile)
    assert path.is_file() and path.parent == tmp_path / "bench"
    assert (dtype in path.name) == (dtype != "float32") and ("channels_last" in path.name) == channels_last
    saved = validate_record(read_record(path))
    assert saved["protocol"]["dtype"] == dtype and saved["protocol"]["threads"] == 1
    assert saved["protocol"].get("channels_last", False) == channels_last
    assert saved["protocol"].get("split_depthwise", False) == split
    assert ("compiled" in path.name) == compile
    if compile:                                                 # --compile: inductor with freezing, checked first
        assert saved["protocol"]["compile"] == {"backend": "inductor", "freezing": True, "eager_weights": "mmap"}
        assert set(saved["details"]["compile"]) == {"snapgen-t2i", "t2i-baseline"}
        assert all(c["relative"] <= bench.COMPILE_PARITY_RTOL[torch.float32] for c in saved["details"]["compile"].values())
    row = saved["details"]["rows"]["snapgen-t2i"]
    assert value(saved, "gflops_per_s_snapgen-t2i") == pytest.approx(row["flops"] / row["median_ms"] * 1e3 / 1e9)
    assert saved["details"]["matmul_reference"][0]["dtype"] == dtype
    assert all(p.dtype == getattr(torch, dtype) for p in bench.build_model(
        bench.REGISTRY.get("snapgen-t2i"), "cpu", timing_init=True, dtype=getattr(torch, dtype)).parameters())
    assert 0 < value(saved, "fraction_of_matmul_peak_snapgen-t2i")
    assert rec["scores"] == saved["scores"]
    if split and not compile:                                   # --profile: one profiled forward per model
        prof = saved["details"]["profile"]
        assert set(prof) == {"snapgen-t2i", "t2i-baseline"}
        assert all(p["categories"]["gemm"]["calls"] > 0 and p["total_ms"] > 0 for p in prof.values())
        assert prof["snapgen-t2i"]["categories"]["convolution"]["calls"] > 0       # the depthwise convs
        from ablations.tables.speed import render

        text = render(tmp_path, allow_dirty=True)
        assert "### Where the time goes" in text and f"| `{path.name}` | snapgen-t2i |" in text
    else:
        assert "profile" not in saved["details"]


def test_harness_rate_is_not_shown_for_reused_images(tmp_path):
    """A GenEval record whose images all came from the cache has a wall time of scoring only: the speed table
    must not turn it into an images/s of the harness."""
    from ablations.tables.speed import render
    from snapgen.records import make_record, write_record

    env = {"threads": 2, "git_commit": "abc", "versions": {}}
    for name, generated in (("fresh", 176), ("cached", 0)):
        rec = make_record("evaluation", name, {"benchmark": "geneval", "generator": {"checkpoint": "x"}}, {},
                          {"wall_time_s": 88.0, "images": 176, "generation": {"generated": generated}}, env)
        write_record(tmp_path / "geneval" / f"{name}.json", rec)
    text = render(tmp_path)
    assert "| `fresh.json` | 176 | 2 | 88 | 2.00 |" in text
    assert "| `cached.json` | 176 | 2 | 88 | — (176 of 176 images reused from the cache) |" in text


def test_bench_train_never_swaps_the_grid_of_its_default_record(tmp_path, monkeypatch):
    """The committed 1-thread record times 8 settings (with --split-depthwise); a run of the default 4-setting grid
    under the same default name is refused before any training, naming --out; the same grid re-measures it."""
    import shutil

    from evals import bench_train
    from snapgen.paths import REPO_ROOT

    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path))
    (tmp_path / "bench").mkdir()
    shutil.copy(REPO_ROOT / "results/bench/train_throughput_tiny-world_t1.json", tmp_path / "bench")
    monkeypatch.setattr(bench_train, "_one", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ValueError, match="--out PATH"):
        bench_train.main(["--threads", "1"])
    monkeypatch.setattr(bench_train, "_one", lambda *a, **k: 0.5)
    assert bench_train.main(["--threads", "1", "--split-depthwise", "--steps", "3", "--warmup", "1"]) == 0
    assert len(read_record(tmp_path / "bench/train_throughput_tiny-world_t1.json")["details"]["rows"]) == 8


def test_bench_train_launch_layouts_count_every_rank_and_name_the_record(tmp_path, monkeypatch):
    """`--launch 1x2 2x1`: each setting is timed under each layout (P processes x T threads), images/s counts the
    images of every rank, speed-ups are against the first layout's fp32 contiguous row, and the record is named by
    its layouts; the launcher gets the layout."""
    from evals import bench_train

    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path))
    calls = []

    def fake(preset, batch, mp, cl, split, threads, steps, warmup, processes=1, optimizer="adamw"):
        assert optimizer == "adamw"
        calls.append((processes, threads, cl))
        return 0.5 if processes == 1 else 0.8         # 2 ranks: slower steps, more images

    monkeypatch.setattr(bench_train, "_one", fake)
    assert bench_train.main(["--launch", "1x2", "2x1", "--mixed-precision", "no", "--steps", "3", "--warmup", "1",
                             "--rounds", "1"]) == 0
    assert sorted(calls) == [(1, 2, False), (1, 2, True), (2, 1, False), (2, 1, True)]
    rec = read_record(tmp_path / "bench/train_throughput_tiny-world_launch_1x2-2x1.json")
    validate_record(rec)
    rows = {bench_train.setting_key(r): r for r in rec["details"]["rows"]}
    assert rows["1x2_b16_no_contig"]["images_per_s"] == pytest.approx(16 / 0.5)
    assert rows["2x1_b16_no_contig"]["images_per_s"] == pytest.approx(2 * 16 / 0.8)
    assert rows["2x1_b16_no_contig"]["speedup_vs_fp32_contiguous_same_batch"] == pytest.approx(0.5 / 0.8 * 2)
    assert value(rec, "train_images_per_s_2x1_b16_no_cl") == pytest.approx(40.0)
    assert rec["protocol"]["launch"] == ["1x2", "2x1"] and rec["protocol"]["baseline_launch"] == "1x2"


def test_bench_train_times_each_optimizer_against_adamw(tmp_path, monkeypatch):
    """`--optimizers adamw muon`: every setting under each optimizer, rows and score names say the optimizer, and
    speed-ups are against AdamW's fp32 contiguous row even when muon is named first."""
    from evals import bench_train

    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path))
    calls = []

    def fake(preset, batch, mp, cl, split, threads, steps, warmup, processes=1, optimizer="adamw"):
        calls.append((optimizer, cl))
        return 0.6 if optimizer == "muon" else 0.5

    monkeypatch.setattr(bench_train, "_one", fake)
    out = tmp_path / "opt.json"
    assert bench_train.main(["--launch", "2x1", "--mixed-precision", "no", "--optimizers", "muon", "adamw", "--steps",
                             "3", "--warmup", "1", "--rounds", "1", "--out", str(out)]) == 0
    assert sorted(calls) == [("adamw", False), ("adamw", True), ("muon", False), ("muon", True)]
    rec = read_record(out)
    validate_record(rec)
    rows = {bench_train.setting_key(r): r for r in rec["details"]["rows"]}
    assert set(rows) == {"2x1_b16_no_contig", "2x1_b16_no_cl", "2x1_b16_no_contig_muon", "2x1_b16_no_cl_muon"}
    assert rows["2x1_b16_no_contig_muon"]["speedup_vs_fp32_contiguous_same_batch"] == pytest.approx(0.5 / 0.6)
    assert rows["2x1_b16_no_contig"]["speedup_vs_fp32_contiguous_same_batch"] == 1.0
    assert value(rec, "train_images_per_s_2x1_b16_no_cl_muon") == pytest.approx(2 * 16 / 0.6)
    with pytest.raises(ValueError, match="include adamw"):
        bench_train.main(["--optimizers", "muon", "--out", str(tmp_path / "x.json")])


def test_compile_checked_compiles_with_freezing_and_times_compilation():
    """`ablations bench --compile`: the compiled model (inductor, freezing) computes the eager function within
    COMPILE_PARITY_RTOL of the output's scale; compilation is timed apart."""
    from ablations.bench import COMPILE_PARITY_RTOL, compile_checked

    torch.manual_seed(0)
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    class Net(torch.nn.Module):         # returns what diffusers' UNet2DConditionModel returns (SDXL in the bench)
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.GELU(),
                                            torch.nn.Conv2d(8, 4, 1))

        def forward(self, x):
            return UNet2DConditionOutput(sample=self.body(x))

    m, x = Net().eval(), torch.randn(1, 4, 8, 8)
    torch._dynamo.reset()
    (cm,), info = compile_checked([m], [((x,), {})], ["net"])
    torch._dynamo.reset()
    assert info["net"]["compile_s"] > 0 and info["net"]["relative"] <= COMPILE_PARITY_RTOL[torch.float32]
    assert info["net"]["allowed"] == COMPILE_PARITY_RTOL[torch.float32]
    assert info["net"]["eager_max_abs"] > 0


def test_compile_checked_refuses_a_compiled_path_that_changes_the_function(monkeypatch):
    from ablations.bench import compile_checked

    m = torch.nn.Linear(4, 4)
    monkeypatch.setattr(torch, "compile", lambda mod: (lambda *a, **k: mod(*a, **k) + 1.0))
    with pytest.raises(RuntimeError, match="--compile: the compiled net differs from the eager model"):
        compile_checked([m], [((torch.randn(2, 4),), {})], ["net"])


def test_file_backed_keeps_weights_dtype_and_memory_format(tmp_path):
    """`--compile` first moves the eager weights to a memory-mapped file (freezing's prepacked copies would
    otherwise hold SDXL twice): same values, dtype and strides; the module computes the same function."""
    from ablations.bench import file_backed

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(2, 8)).to(torch.bfloat16)
    m = m.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 9, 9, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    strides = {k: v.stride() for k, v in m.state_dict().items()}
    with torch.inference_mode():
        ref = m(x)
    file_backed(m, tmp_path / "w.pt")
    assert (tmp_path / "w.pt").stat().st_size > 0
    for k, v in m.state_dict().items():
        assert v.dtype == torch.bfloat16 and v.stride() == strides[k] and torch.equal(v, before[k]), k
    assert isinstance(m[0].weight, torch.nn.Parameter)
    with torch.inference_mode():
        assert torch.equal(m(x), ref)
