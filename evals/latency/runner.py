"""A :class:`LatencyJob` -> its records, written: the PyTorch path (cpu, cuda) here, Core ML on a Mac in
``evals.latency.coreml``, on an iPhone in ``evals.latency.iphone.orchestrator``."""
from __future__ import annotations

from pathlib import Path

import torch

from evals.latency.components import build_components
from evals.latency.measure import measure
from evals.latency.records import latency_record, write_latency
from evals.latency.settings import LatencyJob
from snapgen.env import environment


def _device_for(target: str) -> str:
    if target == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--target cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
        return "cuda"
    return "cpu"


def run_torch(job: LatencyJob) -> list[dict]:
    """Time the PyTorch components on cpu or cuda -> one record."""
    s = job.settings
    device = _device_for(s.target)
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(0)
    (comps, e2e), model, load_s = build_components(job.source, s, device)
    timing = measure(comps, s, device, e2e)
    compile_s = ({c: timing["components"][c]["first_call_ms"] / 1e3 for c in ("unet_step", "decoder")
                  if c in timing["components"]} if s.compile else None)
    notes = ["compile_s = first call including torch.compile"] if s.compile else []
    if job.source.variant:
        notes.append("U-Net conditioning: random tokens of the variant's context shape; text encoders timed apart")
    return [latency_record(s, model, timing, load_s, environment(device), notes, compile_s)]


def run_job(job: LatencyJob) -> list[Path]:
    """Measure on the job's target and write every record (``job.out`` or results/latency)."""
    if job.settings.target == "mac":
        from evals.latency.coreml import run_mac
        records = run_mac(job)
    elif job.settings.target == "iphone":
        from evals.latency.iphone.orchestrator import run_iphone
        records = run_iphone(job)
    else:
        records = run_torch(job)
    return [write_latency(rec, job.out) for rec in records]
