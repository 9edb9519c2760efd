"""Cost primitives: parameter count, FLOPs at the dispatcher, wall-clock latency statistics.

They live in ``snapgen`` (not ``evals``) so that the variant registry in ``ablations`` can compute
tables without importing the evaluation harness.

FLOPs convention: one multiply-add = 2 FLOPs (``FLOPs = 2 x MACs``), as counted by
``torch.utils.flop_counter.FlopCounterMode``. We count on the **meta device**: exact, instantaneous,
no memory, and scaled-dot-product attention decomposes into ``bmm`` there, so attention is included
(on real CPU tensors the fused SDPA kernel is silently counted as 0).
"""
from __future__ import annotations

import copy
import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass
class FlopReport:
    total: int                                              # FLOPs (2 x MACs) for one call
    per_module: dict[str, int] = field(default_factory=dict)  # module path -> FLOPs (nested paths overlap)
    per_op: dict[str, int] = field(default_factory=dict)      # aten op -> FLOPs

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    def children_of(self, prefix: str) -> dict[str, int]:
        """Direct children of ``prefix`` in the module tree (non-overlapping breakdown)."""
        depth = prefix.count(".") + 1
        return {k[len(prefix) + 1:]: v for k, v in self.per_module.items()
                if k.startswith(prefix + ".") and k.count(".") == depth}


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty_like(x, device="meta")
    if isinstance(x, (list, tuple)):
        return type(x)(_to_meta(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    return x


def meta_copy(model: nn.Module) -> nn.Module:
    """A weightless copy of ``model`` on the meta device (the original is untouched)."""
    if next(model.parameters(), torch.empty(0)).device.type == "meta":
        return model
    return copy.deepcopy(model).to("meta")


@torch.no_grad()
def count_flops(model: nn.Module | Callable, *args: Any, **kwargs: Any) -> FlopReport:
    """FLOPs of ``model(*args, **kwargs)`` counted at the dispatcher on the meta device.

    ``model`` may be an ``nn.Module`` (moved to meta as a copy when it holds real weights) or any
    callable whose tensors are already on meta. Inputs are replaced by meta tensors of the same
    shape and dtype.
    """
    fn = meta_copy(model) if isinstance(model, nn.Module) else model
    args, kwargs = _to_meta(args), _to_meta(kwargs)
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    raw = counter.get_flop_counts()
    per_module: dict[str, int] = {}
    per_op: dict[str, int] = {}
    for name, ops in raw.items():
        per_module[name] = int(sum(ops.values()))
        if name == "Global":
            per_op = {str(op): int(n) for op, n in ops.items()}
    return FlopReport(total=int(counter.get_total_flops()), per_module=per_module, per_op=per_op)


@dataclass
class LatencyStats:
    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    n: int
    warmup: int
    times_ms: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_times(times_s: list[float], warmup: int) -> LatencyStats:
    """Statistics of timed runs (seconds in, milliseconds out). p90 by linear interpolation."""
    if not times_s:
        raise ValueError("no timed runs: repeats must be >= 1")
    ms = sorted(t * 1e3 for t in times_s)
    n = len(ms)
    pos = 0.9 * (n - 1)
    lo, hi = int(pos), min(int(pos) + 1, n - 1)
    p90 = ms[lo] + (ms[hi] - ms[lo]) * (pos - lo)
    return LatencyStats(
        median_ms=statistics.median(ms), p90_ms=p90, mean_ms=statistics.fmean(ms),
        std_ms=statistics.pstdev(ms) if n > 1 else 0.0, min_ms=ms[0], max_ms=ms[-1], n=n,
        warmup=warmup, times_ms=[t * 1e3 for t in times_s],
    )


def time_fn(fn: Callable[[], Any], warmup: int = 2, repeats: int = 5,
            timer: Callable[[], float] = time.perf_counter, sync: Callable[[], None] | None = None) -> LatencyStats:
    """Median-of-N wall-clock latency of ``fn()`` after ``warmup`` untimed calls.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before reading the clock so asynchronous
    devices are timed correctly; ``timer`` is injectable so the statistics can be tested.
    """
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    gc.collect()
    times = []
    for _ in range(repeats):
        t0 = timer()
        fn()
        if sync:
            sync()
        times.append(timer() - t0)
    return summarize_times(times, warmup)


def cuda_time_fn(fn: Callable[[], Any], warmup: int, repeats: int) -> LatencyStats:
    """Like :func:`time_fn` but timed with CUDA events (device time, no host jitter)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return summarize_times(times, warmup)


def time_first_call_apart(fn: Callable[[], Any], warmup: int, repeats: int, device: str | torch.device = "cpu",
                          timer: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """The latency protocol's timing: the first call timed apart (``first_call_ms``: lazy init, kernel choice,
    ``torch.compile``), then ``warmup - 1`` untimed calls and ``repeats`` timed ones (CUDA events on CUDA).

    Returns the :class:`LatencyStats` fields (``warmup`` counts the first call) plus ``first_call_ms`` and
    ``clock``.
    """
    if warmup < 1 or repeats < 1:
        raise ValueError(f"warmup ({warmup}) and repeats ({repeats}) must be >= 1")
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    t0 = timer()
    fn()
    if sync:
        sync()
    first_ms = (timer() - t0) * 1e3
    if cuda:
        stats = cuda_time_fn(fn, warmup - 1, repeats)
    else:
        stats = time_fn(fn, warmup=warmup - 1, repeats=repeats, timer=timer, sync=sync)
    stats.warmup = warmup
    return {**stats.to_dict(), "first_call_ms": first_ms, "clock": "cuda_events" if cuda else "perf_counter"}


def time_interleaved(fns: dict[str, Callable[[], Any]], warmup: int = 1, repeats: int = 3,
                     timer: Callable[[], float] = time.perf_counter) -> dict[str, LatencyStats]:
    """Time several callables round-robin (A, B, C, A, B, C, ...) so that machine noise hits each alike; ``warmup``
    untimed rounds first. Returns each one's statistics."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    gc.collect()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = timer()
            fn()
            times[k].append(timer() - t0)
    return {k: summarize_times(t, warmup) for k, t in times.items()}


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> dict:
    """The machine's dense-GEMM rate at the current thread count: an n x n x n matmul (2 n^3 FLOPs), median of
    ``repeats`` after one warm-up; the reference that 'achieved GFLOP/s' of a model is read against."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    stats = time_fn(lambda: a @ b, warmup=1, repeats=repeats)
    return {"gflops_per_s": 2 * n ** 3 / (stats.median_ms / 1e3) / 1e9, "n": n, "dtype": str(dtype).split(".")[-1],
            "threads": torch.get_num_threads(), "median_ms": stats.median_ms, "times_ms": stats.times_ms}


# Which kind of kernel an ATen op's *self* time is spent in (``op_time_breakdown``). A 1x1 convolution on CPU
# runs as ``_slow_conv2d_forward``, which is one GEMM per image for a 1x1 kernel; every other convolution of
# these models goes to oneDNN (``mkldnn_convolution``: SDXL's dense 3x3 convs and SnapGen's depthwise ones alike).
OP_CATEGORIES: dict[str, tuple[str, ...]] = {
    "gemm": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::_slow_conv2d_forward",
             "mkl::_mkl_linear", "mkldnn::_linear_pointwise"),                   # the last two: inductor freezing
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math"),
    "convolution": ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution",
                    "mkldnn::_convolution_pointwise", "mkldnn::_convolution_pointwise_"),  # inductor freezing (1x1
                                                                                  # convs too; _: fused in-place add)
    "normalisation": ("aten::native_group_norm", "aten::native_layer_norm", "aten::_fused_rms_norm",
                      "aten::rms_norm"),
}


def op_category(name: str) -> str:
    """``OP_CATEGORIES``' key of an ATen op; everything else (activations, adds, copies, cat, ...) is
    ``"elementwise_and_memory"``."""
    return next((k for k, ops in OP_CATEGORIES.items() if name in ops), "elementwise_and_memory")


def op_time_breakdown(fn: Callable[[], Any], top: int = 12) -> dict:
    """Run ``fn`` once under ``torch.profiler`` (CPU) and split its self CPU time by kernel kind
    (``op_category``): where a model's time goes, e.g. how much of it is GEMM at all. The profiler adds overhead,
    so use it on a separate call, never on a timed one. Returns ``{"total_ms", "categories": {kind: {"ms",
    "share", "calls"}}, "top_ops": [{"op", "category", "ms", "calls"}, ...]}`` (self times, ms)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = sum(e.self_cpu_time_total for e in events)
    if total_us <= 0:
        raise RuntimeError("op_time_breakdown: the profiler recorded no CPU time (did fn run any torch op?)")
    cats: dict[str, dict] = {k: {"ms": 0.0, "share": 0.0, "calls": 0} for k in (*OP_CATEGORIES, "elementwise_and_memory")}
    for e in events:
        c = cats[op_category(e.key)]
        c["ms"] += e.self_cpu_time_total / 1e3
        c["calls"] += e.count
    for c in cats.values():
        c["share"] = c["ms"] * 1e3 / total_us
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {"total_ms": total_us / 1e3, "categories": cats,
            "top_ops": [{"op": e.key, "category": op_category(e.key), "ms": e.self_cpu_time_total / 1e3,
                         "calls": e.count} for e in ranked]}
