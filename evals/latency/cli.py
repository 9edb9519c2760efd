"""The ``python -m evals.run latency`` command line: parse the flags into a :class:`LatencyJob` (the only place
that sees the argparse namespace), run the target's path, write one record per result and print a summary."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ablations.variants import REGISTRY
from snapgen.cli import positive_int
from evals.latency.settings import (COMPRESSIONS, COMPUTE_UNITS, DTYPES, TARGETS, CoreMLSettings, LatencyJob,
                                    LatencySettings, ModelSource)

NAME = "latency"
HELP = "latency per component and end to end on cpu | cuda | mac (Core ML) | iphone (Core ML, Xcode)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--variant", choices=REGISTRY.names(), help="registered architecture (random weights)")
    src.add_argument("--ckpt", type=Path, help="pipeline directory written by SnapGenPipeline.save_pretrained")
    p.add_argument("--target", choices=TARGETS, default="cpu")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="output pixels, a multiple of 8 x the U-Net's downsampling (default: variant / pipeline resolution)")
    p.add_argument("--steps", type=positive_int, default=4, help="sampling steps of the end-to-end run")
    p.add_argument("--cfg", action=argparse.BooleanOptionalAction, default=False,
                   help="classifier-free guidance: doubles the U-Net batch (default off)")
    p.add_argument("--batch", type=positive_int, default=1, help="images per batch")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's own choice; recorded in the protocol)")
    p.add_argument("--warmup", type=positive_int, default=2, help="untimed calls (>= 1; the first is reported apart)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed calls (median and p90 reported)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the U-Net and decoder (inductor with freezing: evals.inference.compile_frozen)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for the U-Net, the decoder and "
                   "their 4-D inputs (recorded; the record file name gets _cl)")
    p.add_argument("--decoder", choices=("auto", "tiny", "sd3_vae", "sdxl_vae", "none"), default="auto",
                   help="auto: tiny for SnapGen variants, sdxl_vae for sdxl-unet, the pipeline's own for --ckpt")
    p.add_argument("--text", choices=("auto", "minilm", "none"), default="auto",
                   help="text encoders for --variant (auto: minilm, none with --tiny); --ckpt uses its stack")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end timing")
    p.add_argument("--tiny", action="store_true", help="tiny widths of the variant (tests, dry runs)")
    p.add_argument("--out", type=Path, default=None, help="records root (default results/latency)")
    p.add_argument("--dry-run", action="store_true", help="print the settings and exit")
    g = p.add_argument_group("Core ML targets (mac, iphone)")
    g.add_argument("--compute-units", nargs="+", choices=COMPUTE_UNITS, default=list(COMPUTE_UNITS))
    g.add_argument("--packages", type=Path, default=Path("exports/coreml"), help="where .mlpackage files are (re)made")
    g.add_argument("--compress", choices=COMPRESSIONS, default="none")
    g.add_argument("--device-name", help="iphone: the connected device's name (as Xcode shows it)")
    g.add_argument("--team-id", help="iphone: Apple development team for code signing")


def settings_from_args(args: argparse.Namespace, resolution: int) -> LatencySettings:
    return LatencySettings(target=args.target, resolution=resolution, steps=args.steps, cfg=args.cfg, batch=args.batch,
                           dtype=args.dtype, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                           compile=args.compile, end_to_end=not args.no_e2e,
                           channels_last=getattr(args, "channels_last", False))


def job_from_args(args: argparse.Namespace) -> LatencyJob:
    """Parse once at the edge; the default resolution is the variant's / pipeline's (1024 on Core ML targets)."""
    from evals.latency.components import default_resolution

    source = ModelSource(variant=args.variant, ckpt=args.ckpt, tiny=args.tiny, decoder=args.decoder, text=args.text)
    resolution = args.resolution or (1024 if args.target in ("mac", "iphone") else default_resolution(source))
    check_resolution(resolution, source)
    coreml = CoreMLSettings(compute_units=tuple(args.compute_units), packages=args.packages, compress=args.compress,
                            device_name=args.device_name, team_id=args.team_id)
    return LatencyJob(settings_from_args(args, resolution), source, coreml, args.out)


def check_resolution(resolution: int, source: ModelSource) -> None:
    """``--resolution`` must give a latent side (``/ 8``) that the U-Net's levels halve evenly."""
    config = REGISTRY.get(source.variant).config if source.variant else None
    factor = 8 * 2 ** (len(config.stages) - 1) if config is not None else 8
    if resolution % factor:
        raise ValueError(f"--resolution {resolution}: must be a multiple of {factor} (the VAE's 8x"
                         + (f" times the U-Net's {factor // 8}x" if factor > 8 else "") + f"); e.g. "
                         f"{max(factor, resolution // factor * factor)}")
    if source.ckpt is not None and not Path(source.ckpt).is_dir():
        raise FileNotFoundError(f"--ckpt {source.ckpt}: no such pipeline folder")


def check_target_options(args: argparse.Namespace) -> None:
    """Core ML options with a torch target (cpu, cuda) would be ignored: refuse them rather than time something else
    than what the command line says."""
    if args.target in ("mac", "iphone"):
        return
    given = [f for f, changed in (("--compute-units", list(args.compute_units) != list(COMPUTE_UNITS)),
                                  ("--compress", args.compress != "none"), ("--device-name", bool(args.device_name)),
                                  ("--team-id", bool(args.team_id)),
                                  ("--packages", Path(args.packages) != Path("exports/coreml"))) if changed]
    if given:
        raise ValueError(f"{', '.join(given)}: Core ML options, ignored by --target {args.target}; drop them, or use "
                         "--target mac / iphone")


def run(args: argparse.Namespace) -> int:
    """CLI body for ``python -m evals.run latency``; returns the exit code."""
    check_target_options(args)
    if args.ckpt is not None:
        from snapgen.io import require_path

        require_path(args.ckpt, "--ckpt", "Pass a pipeline folder written by SnapGenPipeline.save_pretrained "
                     "(model_index.json or pipeline.json, unet/), e.g. <run>/pipeline", ("unet",))
    if args.dry_run:
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                          if not callable(v)}, indent=2, sort_keys=True))
        return 0
    from evals.latency.runner import run_job

    job = job_from_args(args)
    if job.out is not None:
        from snapgen.io import check_writable_dir

        check_writable_dir(job.out)
    try:
        paths = run_job(job)
    except RuntimeError as e:  # CoreMLPredictionUnavailable, missing Xcode tools
        raise ValueError(f"--target {args.target}: {e}") from e
    from evals.latency.records import read_latency, summary_line

    for path in paths:
        print(summary_line(path, read_latency(path)))
    return 0


def main(argv: list[str] | None = None, doc: str | None = None) -> int:
    """``python -m evals.latency``; ``doc`` (first line = description, the rest = epilog) is the package's."""
    doc = doc or __doc__
    p = argparse.ArgumentParser(prog="python -m evals.run latency", description=doc.split("\n")[0],
                                epilog=doc.split("\n\n", 1)[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    from snapgen.cli import run_cli

    return run_cli(lambda a: run(p.parse_args(a)), argv)
