"""Rectified-flow training of a SnapGen U-Net (text-to-image or class-conditional): the CLI over the
training engine (``snapgen.training``; loss in ``snapgen.training.objectives.flow``).

    python -m snapgen.train --out runs/tiny-world                      # built-in synthetic world, CPU, minutes
    python -m snapgen.train --config my.json --set steps=20000 lr=1e-4  # config file + overrides
    python -m snapgen.train --set channels_last=true cpu=false          # speed levers are config fields
    torchrun --nproc_per_node 2 -m snapgen.train --set cpu=true ...     # 2-process gloo on CPU
    accelerate launch -m snapgen.train --config my.json                 # multi-GPU

``--set key=value`` is typed by ``TrainConfig`` (booleans: true/false, 1/0, yes/no, on/off); unknown
keys are refused with the closest names. Exact resume: the samples, noise, timesteps and text dropout
of step s are drawn from generators seeded by (seed, s, rank), so a run resumed from a checkpoint
replays exactly what an uninterrupted run does; on resume, log.jsonl is trimmed to the resumed step.
"""
from __future__ import annotations

import argparse
import json
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
    cfg.validate()
    return train_loop(RectifiedFlow(cfg), cfg.loop, cfg.to_dict(), progress).out


def dry_run(cfg: TrainConfig) -> dict:
    ucfg = unet_config(cfg.validate())
    with torch.device("meta"):
        from snapgen.training.t2i import build_denoiser

        n = sum(q.numel() for q in build_denoiser(ucfg).parameters())
    return {"config": cfg.to_dict(), "unet": ucfg.to_dict(), "unet_params": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snapgen.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON or YAML file of TrainConfig fields")
    p.add_argument("--out", help="output directory (shortcut for --set out=...)")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--threads", type=positive_int, default=None,
                   help=f"torch CPU threads (shortcut for --set threads=N; default {TrainConfig.threads}, recorded in "
                        "train_config.json and every log line; on a busy machine 1 can be many times faster)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and model size, then exit")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    extra = ([f"out={a.out}"] if a.out else []) + ([f"threads={a.threads}"] if a.threads else [])
    refuse_repeated_keys([("--set", x) for x in a.set] + ([("--out", extra[0])] if a.out else [])
                         + ([("--threads", extra[-1])] if a.threads else []))
    try:
        cfg = load_config(a.config, a.set + extra)
        if a.dry_run:
            print(json.dumps(dry_run(cfg), indent=2))
            return 0
        out = train(cfg, progress=not a.no_progress)
    finally:
        close_distributed()
    print(f"done: {out / 'pipeline'}")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
