"""Benchmark (a record, not a timed test): SnapGen vs the SDXL U-Net, CPU latency at the same latent
size measured in one run (interleaved, so machine noise hits both), with the FLOPs ratio beside it.

The record (kind "benchmark", ``results/bench/unet_<snapgen>_vs_sdxl_latent<latent>.json``):

    name       "<snapgen>-vs-sdxl-unet"
    protocol   device, latent, resolution_px, batch, dtype, threads, warmup, repeats, order ("interleaved")
    scores     latency_ratio / flops_ratio / params_ratio   SDXL / SnapGen (higher_is_better null, unit "x")
               cpu_ms_median_<res>px_<variant>              each model's median (n = repeats)
    details    rows: per model params, FLOPs at the latent size and every latency statistic
               profile (``--profile``): per model, one extra forward under torch.profiler after the timed runs,
               its self CPU time by kernel kind (``snapgen.cost.op_time_breakdown``); never part of a timing
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import torch

from ablations.models import build_model, example_inputs
from ablations.variants import REGISTRY
from snapgen.cost import count_flops, count_params, summarize_times
from snapgen.env import environment
from snapgen.paths import results_dir
from snapgen.records import RecordError, make_record, score, write_record

KIND = "benchmark"
REFERENCE = "sdxl-unet"
PROTOCOL_KEYS = ("device", "latent", "resolution_px", "batch", "dtype", "threads", "warmup", "repeats", "order")


def bench_path(snapgen: str = "snapgen-t2i", latent: int = 32, dtype: str = "float32",
               channels_last: bool = False, split_depthwise: bool = False, compile: bool = False) -> Path:
    tag = (("" if dtype == "float32" else f"_{dtype}") + ("_channels_last" if channels_last else "")
           + ("_split_depthwise" if split_depthwise else "") + ("_compiled" if compile else ""))
    return results_dir("bench") / f"unet_{snapgen}_vs_sdxl_latent{latent}{tag}.json"


def bench_envelope(snapgen: str, protocol: dict, rows: dict[str, dict], environment_: dict,
                   matmul_reference: list[dict] | None = None) -> dict:
    """The record from the settings and per-model rows (shared by a new run and by ``migrate_v1``)."""
    s, x = rows[snapgen], rows[REFERENCE]
    scores = {"latency_ratio": score(x["median_ms"] / s["median_ms"], higher_is_better=None, unit="x"),
              "flops_ratio": score(x["flops"] / s["flops"], higher_is_better=None, unit="x"),
              "params_ratio": score(x["params"] / s["params"], higher_is_better=None, unit="x")}
    for name, row in rows.items():
        scores[f"cpu_ms_median_{protocol['resolution_px']}px_{name}"] = score(
            row["median_ms"], n=row["n"], higher_is_better=False, unit="ms")
    details = {"snapgen": snapgen, "reference": REFERENCE, "ratios": "reference / snapgen", "rows": rows}
    if matmul_reference:                       # records since issue 18: achieved rates against this CPU's GEMM
        peak = max(r["gflops_per_s"] for r in matmul_reference)
        details["matmul_reference"] = matmul_reference
        for name, row in rows.items():
            scores[f"gflops_per_s_{name}"] = score(row["gflops_per_s"], higher_is_better=True, unit="GFLOP/s")
            scores[f"fraction_of_matmul_peak_{name}"] = score(row["gflops_per_s"] / peak, higher_is_better=True,
                                                              unit="fraction")
    return make_record(KIND, f"{snapgen}-vs-{REFERENCE}", protocol, scores, details, environment_)


def _cast(obj, dtype: torch.dtype, memory_format):
    """Inputs of ``example_inputs`` in ``dtype`` (floating tensors only) and ``memory_format`` (4-D ones)."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            obj = obj.to(dtype)
        return obj.contiguous(memory_format=memory_format) if obj.dim() == 4 else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(o, dtype, memory_format) for o in obj)
    if isinstance(obj, dict):
        return {k: _cast(v, dtype, memory_format) for k, v in obj.items()}
    return obj


def bench_unet_vs_sdxl(snapgen: str = "snapgen-t2i", latent: int = 32, warmup: int = 1, repeats: int = 5,
                       dtype: str = "float32", channels_last: bool = False, threads: int | None = None,
                       split_depthwise: bool = False, profile: bool = False, compile: bool = False) -> dict:
    """Time both U-Nets interleaved; write and return the record (its path: ``bench_path(...)``). ``dtype``
    bfloat16 = bf16 weights and activations (both models); the 2048^3 matmul rate in the same dtype is measured
    before and after, so each model's achieved GFLOP/s (FLOPs counted on meta, fp32 graph) reads against it.
    ``split_depthwise``: SnapGen's channel-multiplier depthwise convs run as plain ones
    (``snapgen.models.layers.set_split_depthwise``; same weights; SDXL has none). ``profile``: after the timed
    runs, one more forward of each model under the profiler, its time by kernel kind in ``details.profile``.
    ``compile``: both U-Nets through ``torch.compile`` (inductor) with ``freezing`` (inductor's CPU inference mode:
    weights become constants, conv/linear weights prepacked for oneDNN, elementwise ops fused into C++ kernels); the
    eager weights are first moved to a temporary file and memory-mapped (``file_backed``) and discarded after
    freezing, so SDXL's 10 GB are not held twice in memory. Each model's first compiled call (compilation)
    is timed apart as ``compile_s``, and its output is compared with the eager model's on the same input first
    (``details.compile``): a compiled path that changes the function beyond ``COMPILE_PARITY_RTOL`` of the output's
    scale is an error, not a record."""
    from snapgen.cost import matmul_peak_gflops, op_time_breakdown
    from snapgen.models.layers import set_split_depthwise

    prev, spill = torch.get_num_threads(), None
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        dt = getattr(torch, dtype)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        variants = [REGISTRY.get(snapgen), REGISTRY.get(REFERENCE)]
        fp32_inputs = [example_inputs(v, latent=latent) for v in variants]
        metas = [build_model(v, "meta") for v in variants]        # counted on meta: no copy of a 10 GB model
        if split_depthwise and not set_split_depthwise(metas[0]):  # before minutes of building the real ones
            raise ValueError(f"--split-depthwise: {snapgen} has no depthwise conv with a channel multiplier")
        flops = [count_flops(m, *a, **k).total for m, (a, k) in zip(metas, fp32_inputs)]
        params = [count_params(m) for m in metas]
        models = [build_model(v, "cpu", timing_init=True, dtype=dt).to(memory_format=fmt) for v in variants]
        if split_depthwise:
            set_split_depthwise(models[0])
        inputs = [(_cast(a, dt, fmt), _cast(k, dt, fmt)) for a, k in fp32_inputs]
        times: list[list[float]] = [[], []]
        compiled = None
        if compile:     # freezing makes prepacked copies of every weight: the eager ones go to a file first (mmap)
            spill = tempfile.TemporaryDirectory(prefix="snapgen-bench-")
            for i, m in enumerate(models):
                file_backed(m, Path(spill.name) / f"{i}.pt")
            models, compiled = compile_checked(models, inputs, [v.name for v in variants])
        with torch.inference_mode(), _inductor_freezing(compile):
            peaks = [matmul_peak_gflops(dt)]
            for _ in range(warmup):
                for m, (a, k) in zip(models, inputs):
                    m(*a, **k)
            for _ in range(repeats):  # interleaved A, B, A, B ...
                for i, (m, (a, k)) in enumerate(zip(models, inputs)):
                    t0 = time.perf_counter()
                    m(*a, **k)
                    times[i].append(time.perf_counter() - t0)
            peaks.append(matmul_peak_gflops(dt))
            breakdown = {v.name: op_time_breakdown(lambda m=m, a=a, k=k: m(*a, **k))
                         for v, m, (a, k) in zip(variants, models, inputs)} if profile else None
        rows = {}
        for v, p, f, t in zip(variants, params, flops, times):
            st = summarize_times(t, warmup).to_dict()
            rows[v.name] = {"params": p, "flops": f, "gflops_per_s": f / (st["median_ms"] / 1e3) / 1e9, **st}
        protocol = {"device": "cpu", "latent": latent, "resolution_px": latent * 8, "batch": 1, "dtype": dtype,
                    "threads": torch.get_num_threads(), "warmup": warmup, "repeats": repeats, "order": "interleaved"}
        if channels_last:
            protocol["channels_last"] = True
        if split_depthwise:
            protocol["split_depthwise"] = True
        if compile:
            protocol["compile"] = {"backend": "inductor", "freezing": True, "eager_weights": "mmap"}
        rec = bench_envelope(snapgen, protocol, rows, environment("cpu"), peaks)
        if breakdown:
            rec["details"]["profile"] = breakdown
        if compiled:
            rec["details"]["compile"] = compiled
    finally:
        torch.set_num_threads(prev)
        if spill is not None:
            models = None
            spill.cleanup()
    write_record(bench_path(snapgen, latent, dtype, channels_last, split_depthwise, compile), rec)
    return rec


# A compiled model's output may differ from the eager one's by float rounding (fused kernels sum in another order,
# oneDNN's prepacked GEMMs block differently): at most this fraction of the eager output's largest magnitude, by the
# output's dtype (bf16 keeps 8 bits of mantissa: its rounding alone is ~0.4% per op).
COMPILE_PARITY_RTOL = {torch.float32: 1e-3, torch.bfloat16: 3e-2}


def file_backed(model: torch.nn.Module, path: Path) -> None:
    """Move ``model``'s parameters and buffers (dtype and memory format kept) to a file, memory-mapped back in place:
    their pages become file-backed, which the kernel can drop and reread, instead of anonymous memory. inductor's
    freezing writes a prepacked copy of every weight, so SDXL (10 GB in fp32) would need 20 GB at once; on a
    24 GiB machine that was killed for memory (measured), with file-backed eager weights it fits."""
    torch.save(model.state_dict(), path)
    model.load_state_dict(torch.load(path, mmap=True, weights_only=True), assign=True)


@contextlib.contextmanager
def _inductor_freezing(on: bool):
    """inductor's ``freezing`` (+ discard the eager parameters) while ``on``; nothing otherwise."""
    if not on:
        yield
        return
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True, freezing_discard_parameters=True):
        yield


def _output_tensor(out) -> torch.Tensor:
    """The prediction in a U-Net's output: a tensor, a diffusers output (``.sample``) or a tuple's first item."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"--compile: cannot find the output tensor in a {type(out).__name__}")


def compile_checked(models: list, inputs: list, names: list[str]) -> tuple[list, dict]:
    """``torch.compile`` each model with inductor freezing; its first call (the compilation) is timed, and its output
    checked against the eager model's on the same input. Returns the compiled models and ``{name: {"compile_s",
    "max_abs_diff", "eager_max_abs", "relative"}}``; raises ``RuntimeError`` when a compiled model's output is off by
    more than ``COMPILE_PARITY_RTOL`` of the eager output's largest magnitude (a faster path must compute the
    same function)."""
    out, info = [], {}
    for m, (a, k), name in zip(models, inputs, names):
        with torch.inference_mode():
            ref = m(*a, **k)
            with _inductor_freezing(True):
                cm = torch.compile(m)
                t0 = time.perf_counter()
                got = cm(*a, **k)
                compile_s = time.perf_counter() - t0
        ref, got = _output_tensor(ref), _output_tensor(got)
        diff = (got.float() - ref.float()).abs().max().item()
        scale = ref.float().abs().max().item()
        rel, tol = diff / max(scale, 1e-12), COMPILE_PARITY_RTOL.get(ref.dtype, 1e-3)
        info[name] = {"compile_s": compile_s, "max_abs_diff": diff, "eager_max_abs": scale, "relative": rel,
                      "allowed": tol}
        if not rel <= tol:
            raise RuntimeError(f"--compile: the compiled {name} differs from the eager model by {diff:.3g} "
                               f"({rel:.2%} of the output's largest magnitude {scale:.3g}; allowed "
                               f"{tol:.1%} in {ref.dtype}); no record written. Compare module by module with "
                               f"torch.compile to find the block, or run without --compile.")
        out.append(cm)
        del ref, got
    return out, info


def migrate_v1(old: dict, path: Path) -> dict:
    """A schema-1 "bench_unet_vs_sdxl" record in the envelope (numbers carried over; the ratios are recomputed
    from the same rows with the same expressions, so they are bit-identical; the old absolute ``path`` is dropped)."""
    snapgen = next(n for n in old["rows"] if n != REFERENCE)
    env = {"versions": None, "threads": old.get("threads"), "git_commit": None, **old["environment"]}
    rec = bench_envelope(snapgen, {k: old[k] for k in PROTOCOL_KEYS}, old["rows"], env)
    for k in ("latency_ratio", "flops_ratio", "params_ratio"):
        if rec["scores"][k]["value"] != old[k]:
            raise RecordError(f"{path}: recomputed {k} {rec['scores'][k]['value']!r} != stored {old[k]!r}")
    return {**rec, "created": old.get("created")}
