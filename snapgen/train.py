"""Rectified-flow training of a SnapGen U-Net (text-to-image or class-conditional): the CLI over the
training engine (``snapgen.training``; loss in ``snapgen.training.objectives.flow``).

    python -m snapgen.train --out runs/tiny-world                      # the world recipe: 2 processes x 1 thread
    python -m snapgen.train --set processes=1 threads=2 batch_size=32  # the same problem in one process (slower)
    python -m snapgen.train --config my.json --set steps=20000 lr=1e-4  # config file + overrides
    python -m snapgen.train --set channels_last=true cpu=false          # speed levers are config fields
    torchrun --nproc_per_node 4 -m snapgen.train --set processes=4 ... # any launcher: world size = processes
    accelerate launch -m snapgen.train --config my.json                 # multi-GPU

``processes`` (default 2) is part of the recipe: the global batch is processes x batch_size x grad_accum. Started
as one process with ``processes`` > 1, the command launches itself ``processes`` times under
``torch.distributed.run --standalone`` (gloo on CPU), each rank with ``threads`` torch threads (OMP_NUM_THREADS).

``--set key=value`` is typed by ``TrainConfig`` (booleans: true/false, 1/0, yes/no, on/off); unknown
keys are refused with the closest names. Exact resume: the samples, noise, timesteps and text dropout
of step s are drawn from generators seeded by (seed, s, rank), so a run resumed from a checkpoint
replays exactly what an uninterrupted run does; on resume, log.jsonl is trimmed to the resumed step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from snapgen.training import config as C
from snapgen.cli import positive_int, refuse_repeated_keys
from snapgen.training.engine import close_distributed, lr_at, make_accelerator as _make_accelerator, train_loop
from snapgen.training.ema import ema_update
from snapgen.training.objectives.flow import RectifiedFlow
from snapgen.training.objectives.t2i import SAMPLE_CAPTIONS, finalize
from snapgen.training.t2i import TrainConfig, batch_indices, build_dataset, build_text, unet_config

__all__ = ["TrainConfig", "train", "finalize", "load_config", "parse_overrides", "batch_indices", "unet_config",
           "build_text", "build_dataset", "lr_at", "ema_update", "make_accelerator", "SAMPLE_CAPTIONS", "main"]


def parse_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """``key=value`` strings -> a new config; values are parsed by the field's type."""
    return C.apply_overrides(cfg, items)


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    """``TrainConfig()`` <- the ``--config`` file <- ``overrides``; a bad field of the file is an error naming it."""
    cfg = TrainConfig()
    if path:
        data = C.read_config_file(path)
        try:
            cfg = C.from_mapping(cfg, data)
        except ValueError as e:
            raise ValueError(f"--config {path}: {e}; fix the field in the file, or drop it and use --set") from None
    return C.apply_overrides(cfg, overrides)


def make_accelerator(cfg: TrainConfig):
    return _make_accelerator(cfg.loop)


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Run (or resume) training; returns the output directory (with ``pipeline/`` when finished)."""
    cfg.validate().check_world_size()
    return train_loop(RectifiedFlow(cfg), cfg.loop, cfg.to_dict(), progress).out


def dry_run(cfg: TrainConfig) -> dict:
    ucfg = unet_config(cfg.validate())
    with torch.device("meta"):
        from snapgen.training.t2i import build_denoiser

        n = sum(q.numel() for q in build_denoiser(ucfg).parameters())
    return {"config": cfg.to_dict(), "unet": ucfg.to_dict(), "unet_params": n}


def launch_command(cfg: TrainConfig, argv: list[str]) -> list[str] | None:
    """The ``torch.distributed.run`` command that runs this training as ``cfg.processes`` ranks, or None when this
    process is a rank already (started by a launcher: ``WORLD_SIZE`` set) or the recipe has one process."""
    if "WORLD_SIZE" in os.environ or cfg.processes == 1:
        return None
    if not cfg.cpu and torch.cuda.is_available() and torch.cuda.device_count() < cfg.processes:
        raise ValueError(f"processes={cfg.processes} but {torch.cuda.device_count()} CUDA device(s): pass --set "
                         f"processes={torch.cuda.device_count()}, or cpu=true")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(cfg.processes),
            "-m", "snapgen.train", *argv]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snapgen.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON or YAML file of TrainConfig fields")
    p.add_argument("--out", help="output directory (shortcut for --set out=...)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--threads", type=positive_int, default=None,
                   help=f"torch CPU threads per process (shortcut for --set threads=N; default {TrainConfig.threads} "
                        f"x {TrainConfig.processes} processes, recorded in "
                        "train_config.json and every log line; on a busy machine 1 can be many times faster)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and model size, then exit")
    p.add_argument("--no-progress", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    extra = ([f"out={a.out}"] if a.out else []) + ([f"threads={a.threads}"] if a.threads else [])
    refuse_repeated_keys([("--set", x) for x in a.set] + ([("--out", extra[0])] if a.out else [])
                         + ([("--threads", extra[-1])] if a.threads else []))
    try:
        cfg = load_config(a.config, a.set + extra)
        if a.dry_run:
            print(json.dumps(dry_run(cfg), indent=2))
            return 0
        cmd = launch_command(cfg, argv)
        if cmd is not None:
            from snapgen.training.engine import preflight

            preflight(RectifiedFlow, cfg.validate().loop, cfg.to_dict())    # one clear error, not one per rank
            env = {**os.environ}
            if cfg.threads:
                env.update(OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads))
            print(f"launching {cfg.processes} processes x {cfg.threads} thread(s): {' '.join(cmd[1:7])} ...",
                  flush=True)
            return subprocess.run(cmd, env=env).returncode
        out = train(cfg, progress=not a.no_progress)
    finally:
        close_distributed()
    if os.environ.get("RANK", "0") == "0":             # once, not once per rank
        print(f"done: {out / 'pipeline'}")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
