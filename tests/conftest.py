"""Test session defaults: one torch thread.

The test machine has 2 shared cores; torch's default intra-op threads (and the CLIs' recorded default of 2)
oversubscribe them and made tiny models 10-80x slower. The session starts at 1 thread, and subprocesses
(CLI tests) inherit OMP_NUM_THREADS=1 / SNAPGEN_TEST=1. The CLIs' own defaults (``--threads``, ``threads``)
are unchanged: a test that trains or generates passes ``threads=1`` / ``--threads 1`` explicitly.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
