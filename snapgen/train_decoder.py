"""Train SnapGen's tiny decoder against a frozen VAE encoder (SD3 VAE in the paper): the CLI over the
training engine (``snapgen.training``; loss in ``snapgen.training.objectives.decoder``).

Loss: ``mse_weight * MSE + lpips_weight * LPIPS(VGG) + adv_weight * hinge-GAN`` on random crops;
the generator's adversarial term and the discriminator start at ``adv_start_step``. The EMA of the
decoder weights (``OUT/checkpoints/step-*/ema/``) is the deliverable. Same engine as the U-Net
trainers: per-step generators seeded by (seed, step, rank), so a resumed run equals an uninterrupted
one bit for bit; every config field is a flag below or a ``--set key=value``.

Examples::

    python -m snapgen.train_decoder --encoder-dir /models/sd3/vae --image-dir /data/photos \\
        --out runs/tiny_decoder --steps 100000 --batch-size 32 \\
        --vgg16-weights /models/vgg16-397923af.pth --lpips-weights /models/lpips_vgg_v0.1.pth
    accelerate launch -m snapgen.train_decoder --encoder-dir ... --image-dir ...   # multi-GPU

The CPU-scale proof with a stand-in VAE on the synthetic world is an experiment, not a training mode:
``python -m snapgen.experiments.decoder_world_proof --out runs/decoder_world`` (``--world`` here says so).
"""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields, replace
from pathlib import Path

from snapgen.cli import nonnegative_int, refuse_repeated_keys
from snapgen.models.decoder import TINY_DECODER_PRESETS
from snapgen.training import config as C
from snapgen.training.decoder_data import (IMAGE_SUFFIXES, FolderImages, TensorImages, encode, load_frozen_encoder,
                                           render_world, sample_batch)
from snapgen.training.engine import close_distributed, train_loop
from snapgen.training.objectives.decoder import (PatchDiscriminator, TinyDecoderObjective, TrainDecoderConfig,
                                                 hinge_d_loss, hinge_g_loss)

__all__ = ["TrainDecoderConfig", "train", "main", "build_parser", "config_from_args", "PatchDiscriminator",
           "hinge_d_loss", "hinge_g_loss", "FolderImages", "TensorImages", "render_world", "sample_batch",
           "load_frozen_encoder", "encode", "IMAGE_SUFFIXES"]

_OWN_FLAGS = {"decoder", "encoder_dir", "image_dir", "world", "vgg16_weights", "lpips_weights", "betas", "out",
              "threads", "cpu"}


def train(cfg: TrainDecoderConfig, out: str | Path | None = None, vae=None, pool=None, resume: bool = True,
          progress: bool = True, cpu: bool | None = None) -> dict:
    """Train (or resume) the tiny decoder; returns {"out", "step", "lpips", "lpips_reason", "last", "ema", "decoder"}.

    ``vae``/``pool`` replace the encoder and image folder named in ``cfg``; ``cpu`` forces CPU."""
    cfg = replace(cfg, **({"out": str(out)} if out is not None else {}), **({"cpu": cpu} if cpu is not None else {}))
    objective = TinyDecoderObjective(cfg, vae=vae, pool=pool)
    res = train_loop(objective, cfg.loop, cfg.to_dict(), progress, resume=resume)
    return {"out": str(res.out), "step": res.step, "lpips": objective.record()["lpips"],
            "lpips_reason": objective.lpips_reason, "last": res.last, "ema": res.modules["ema"],
            "decoder": res.modules["decoder"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m snapgen.train_decoder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="run folder (train_config.json, log.jsonl, checkpoints/; default "
                   f"{TrainDecoderConfig.out})")
    p.add_argument("--encoder-dir", help="local diffusers AutoencoderKL folder (frozen encoder)")
    p.add_argument("--image-dir", help="folder of training images")
    p.add_argument("--world", action="store_true",
                   help="moved: the CPU proof is `python -m snapgen.experiments.decoder_world_proof` (this flag only "
                        "says so and exits 2)")
    p.add_argument("--preset", default="snapgen", choices=sorted(TINY_DECODER_PRESETS), help="decoder preset")
    p.add_argument("--vgg16-weights", help="local torchvision vgg16 state dict (LPIPS trunk)")
    p.add_argument("--lpips-weights", help="local LPIPS v0.1 linear layers (vgg.pth)")
    p.add_argument("--no-resume", action="store_true", help="start fresh even if --out has checkpoints")
    p.add_argument("--threads", type=nonnegative_int, default=0,
                   help="torch CPU threads (default 0 = torch's own choice; recorded in train_config.json and the "
                        "log; on a busy machine 1 can be many times faster)")
    p.add_argument("--config", help="JSON or YAML file of TrainDecoderConfig fields")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config fields (typed; nested: decoder.norm_groups=4)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    hints = typing.get_type_hints(TrainDecoderConfig)
    for f in fields(TrainDecoderConfig):  # every scalar config field is a flag, parsed like --set
        if f.name in _OWN_FLAGS:
            continue
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
        p.add_argument("--" + f.name.replace("_", "-"), default=None, choices=choices,
                       help=f"(config) default {f.default}")
    return p


def config_from_args(args) -> TrainDecoderConfig:
    """Preset <- config file <- flags <- --set (later wins)."""
    cfg = TrainDecoderConfig(decoder=TINY_DECODER_PRESETS[args.preset])
    flags = [f"{f.name}={getattr(args, f.name)}" for f in fields(cfg)
             if f.name not in _OWN_FLAGS and getattr(args, f.name, None) is not None]
    paths = {"encoder_dir": args.encoder_dir, "image_dir": args.image_dir, "vgg16_weights": args.vgg16_weights,
             "lpips_weights": args.lpips_weights, "out": args.out, "threads": args.threads or None}
    given = {k: v for k, v in paths.items() if v is not None}
    # a field given by a flag and by --set (or twice by --set): the later would silently win
    refuse_repeated_keys([("--" + x.split("=", 1)[0].replace("_", "-"), x) for x in flags]
                         + [("--" + k.replace("_", "-"), f"{k}={v}") for k, v in given.items()]
                         + [("--set", x) for x in args.set])
    if args.config:
        data = C.read_config_file(args.config)
        try:
            cfg = C.from_mapping(cfg, data)
        except ValueError as e:
            raise ValueError(f"--config {args.config}: {e}; fix the field in the file, or drop it and use --set") \
                from None
    cfg = C.apply_overrides(cfg, flags + args.set)
    return replace(cfg, **given, **({"world": True} if args.world else {}))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.world:
        raise ValueError("--world: the CPU proof (stand-in VAE on the synthetic world) is its own experiment "
                         "with its own settings: run `python -m snapgen.experiments.decoder_world_proof --help`")
    cfg = config_from_args(args)
    if args.dry_run:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if cfg.image_dir is None:
        raise ValueError("--image-dir: no training images given; pass a folder of images (and --encoder-dir)")
    if cfg.encoder_dir is None:
        raise ValueError("--encoder-dir: no frozen VAE encoder given; pass a local diffusers AutoencoderKL folder")
    try:
        res = train(cfg, resume=not args.no_resume)
    finally:
        close_distributed()
    print(json.dumps({k: res[k] for k in ("out", "step", "lpips", "lpips_reason", "last")}, indent=2))
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
