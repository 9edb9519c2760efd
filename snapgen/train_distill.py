"""Distillation training: multi-level KD (``--stage kd``) and LADD step distillation (``--stage ladd``),
the CLI over the training engine (``snapgen.training``; losses in ``snapgen.training.objectives.kd``
and ``.ladd``, maths in ``snapgen.distill`` and ``snapgen.ladd``).

    python -m snapgen.train_distill --stage kd --teacher runs/distill/teacher-small/pipeline \\
        --out runs/distill/kd --set unet=tiny-world steps=300
    python -m snapgen.train_distill --stage kd --teacher /models/sd3.5-large --out runs/kd-sd3 \\
        --set unet=snapgen-t2i vae=/models/sd3.5-large/vae text=snapgen clip_l=... clip_g=... gemma=...
    python -m snapgen.train_distill --stage ladd --teacher runs/distill/teacher-small/pipeline \\
        --init runs/distill/kd/pipeline --out runs/distill/ladd --set steps=200

Every ``snapgen.train`` field works with ``--set`` (typed; see ``python -m snapgen.train --help``), plus
the ``kd_*`` / ``ladd_*`` fields of ``DistillConfig``. Same engine, so the same exact resume,
checkpoint layout (the KD projector and LADD heads + their optimizer travel in each checkpoint), logs,
and ``OUT/pipeline`` (EMA) + ``OUT/train_config.json`` at the end (``python -m evals.run geneval --ckpt
OUT/pipeline`` recognises the world).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from snapgen.training import config as C
from snapgen.cli import positive_int, refuse_repeated_keys
from snapgen.training.engine import close_distributed, train_loop
from snapgen.training.objectives.distill import STAGE_DEFAULTS, DistillConfig
from snapgen.training.objectives.kd import KnowledgeDistillation
from snapgen.training.objectives.ladd import LADD

__all__ = ["DistillConfig", "STAGE_DEFAULTS", "parse_overrides", "train_distill", "main"]
OBJECTIVES = {"kd": KnowledgeDistillation, "ladd": LADD}


def parse_overrides(cfg: DistillConfig, items: list[str]) -> DistillConfig:
    return C.apply_overrides(cfg, items)


def train_distill(cfg: DistillConfig, progress: bool = True) -> Path:
    """Run (or resume) a distillation stage; returns the output directory (``pipeline/`` when finished)."""
    cfg.validate().check_world_size()
    return train_loop(OBJECTIVES[cfg.stage](cfg), cfg.loop, cfg.to_dict(), progress).out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snapgen.train_distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=tuple(OBJECTIVES), required=True)
    p.add_argument("--teacher", required=True, help="snapgen pipeline dir or local SD3/SD3.5 diffusers dir")
    p.add_argument("--init", default=None, help="student pipeline to start from (required for ladd)")
    p.add_argument("--out", default=None, help="output directory (default runs/distill/<stage>)")
    p.add_argument("--config", help="JSON or YAML file of DistillConfig fields")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--threads", type=positive_int, default=None,
                   help=f"torch CPU threads (shortcut for --set threads=N; default {DistillConfig.threads}, recorded)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, then exit")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    refuse_repeated_keys([("--set", x) for x in a.set] + ([("--out", f"out={a.out}")] if a.out else [])
                         + ([("--threads", f"threads={a.threads}")] if a.threads else [])
                         + [("--teacher", f"teacher={a.teacher}")] + ([("--init", f"init={a.init}")] if a.init else [])
                         + [("--stage", f"stage={a.stage}")])
    try:
        cfg = C.apply_overrides(DistillConfig(), [f"{k}={v}" for k, v in STAGE_DEFAULTS[a.stage].items()])
        cfg = C.load_config(cfg, a.config, a.set + [f"stage={a.stage}", f"teacher={a.teacher}"]
                            + ([f"init={a.init}"] if a.init else []) + ([f"out={a.out}"] if a.out else [])
                            + ([f"threads={a.threads}"] if a.threads else []))
        if a.stage == "ladd" and not cfg.init:
            raise ValueError("--init: --stage ladd starts from a trained student; give --init STUDENT_PIPE")
        if a.dry_run:
            cfg.validate()
            from snapgen.io import require_path

            require_path(cfg.teacher, "--teacher", "Pass a snapgen pipeline folder or a local SD3/SD3.5 diffusers "
                         "folder (see docs/distillation.md)")
            if cfg.init:
                require_path(cfg.init, "--init", "Pass the student pipeline folder (<run>/pipeline)")
            print(json.dumps({"config": cfg.to_dict(), "kd": cfg.kd.to_dict(), "ladd": cfg.ladd.to_dict()}, indent=2))
            return 0
        out = train_distill(cfg, progress=not a.no_progress)
    finally:
        close_distributed()
    print(f"done: {out / 'pipeline'}")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
