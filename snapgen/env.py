"""Environment description stored in every record: library versions, device, threads, git commit."""
from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

_PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "numpy", "open_clip_torch",
             "torch-fidelity", "coremltools", "snapgen-bench")
REPO_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        # "-dirty" = tracked code or docs differ from the commit; records under results/ are outputs, not code,
        # so a job writing them does not make the next record dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str | None]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str | torch.device = "cpu") -> dict:
    device = torch.device(device)
    info = {"device": str(device), "threads": torch.get_num_threads(), "cpu": cpu_name(),
            "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def environment(device: str | torch.device = "cpu") -> dict:
    return {"python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(), "versions": versions(), "git_commit": git_commit(),
            **device_info(device)}
