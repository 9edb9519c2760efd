"""``python -m evals.latency.export``: Core ML packages of a U-Net preset or a checkpoint (and a decoder), with
one export record per package under ``results/coreml/`` (``evals.latency.records``).

    python -m evals.latency.export --variant snapgen-t2i --resolution 1024 --out exports/coreml --decoder tiny
    python -m evals.latency.export --ckpt runs/pipe --resolution 1024 --out exports/coreml --decoder tiny --compress palettize6

The conversion itself (attention rewrite, trace, convert, compression, parity gate) is
``snapgen.export.coreml``; this command builds the models, calls it and writes the records.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from evals.latency.components import SMALL_TINY_DECODER
from evals.latency.coreml import export_atomically
from evals.latency.records import write_export
from snapgen.cli import nonnegative_int, positive_int
from snapgen.export.coreml import (COMPRESSIONS, DEPLOYMENT_TARGET, ExportSettings, export_decoder, export_unet,
                                   reinit_zero_weights)
from snapgen.io import sha256_file

TINY_UNET = dict(channels=(32, 64, 64), head_dim=16, context_dim=32, pooled_dim=24, norm_groups=8, emb_mult=2)


def build_unet(variant: str, ckpt: Path | None, name: str | None, tiny: bool, seed: int):
    """(U-Net, name, weights statement) from a checkpoint or a preset with random weights."""
    from snapgen.models.unet import SnapGenUNet
    from snapgen.presets import get_preset

    if ckpt:
        sha = sha256_file(Path(ckpt) / "unet" / "diffusion_pytorch_model.safetensors")[:16]
        # keyed by content: two checkpoints in folders of the same name never share a package
        return SnapGenUNet.from_pretrained(Path(ckpt) / "unet"), name or f"{Path(ckpt).name}-{sha[:12]}", \
            f"checkpoint {ckpt}/unet (sha256 {sha})"
    config = get_preset(variant)
    if tiny:
        config = config.replace(**TINY_UNET)
    torch.manual_seed(seed)
    unet = SnapGenUNet(config)
    n = reinit_zero_weights(unet, seed)
    return unet, variant + ("-tiny" if tiny else ""), \
        f"random (seed {seed}; {n} zero-initialised output tensors re-randomised so parity is meaningful)"


def build_decoder(decoder: str, ckpt: Path | None, tiny: bool, seed: int):
    from snapgen.models import decoder as D

    if decoder == "tiny":
        if ckpt and (Path(ckpt) / "decoder").exists():
            return D.TinyDecoder.from_pretrained(Path(ckpt) / "decoder"), "tiny", f"checkpoint {ckpt}/decoder"
        torch.manual_seed(seed)
        dec = D.tiny_decoder("snapgen", "cpu", **(SMALL_TINY_DECODER if tiny else {}))
        n = reinit_zero_weights(dec, seed)
        return dec, "tiny" + ("-small" if tiny else ""), f"random (seed {seed}; {n} zero-init tensors re-randomised)"
    torch.manual_seed(seed)
    return D.sd3_vae_decoder("cpu"), "sd3_vae", f"random (seed {seed})"


def build_parser() -> argparse.ArgumentParser:
    from snapgen.presets import PRESETS

    p = argparse.ArgumentParser(prog="python -m evals.latency.export", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n\n", 1)[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--variant", choices=sorted(PRESETS), default="snapgen-t2i", help="U-Net preset (random weights)")
    src.add_argument("--ckpt", type=Path, help="pipeline directory (unet/, decoder/) written by SnapGenPipeline.save_pretrained")
    p.add_argument("--name", help="name used in file names (default: variant or checkpoint folder)")
    p.add_argument("--out", required=True, type=Path, help="folder for the .mlpackage files")
    p.add_argument("--records", type=Path, default=None, help="folder for the export records (default results/coreml)")
    p.add_argument("--no-records", action="store_true", help="write the packages only")
    p.add_argument("--resolution", type=positive_int, default=1024, help="output pixels (a multiple of 8 x the U-Net's downsampling)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--context-tokens", type=positive_int, default=333)
    p.add_argument("--precision", choices=("float16", "float32"), default="float16")
    p.add_argument("--attention", choices=("matmul", "sdpa"), default="matmul")
    p.add_argument("--compress", choices=COMPRESSIONS, default="none")
    p.add_argument("--palettize-mode", choices=("kmeans", "uniform"), default="kmeans")
    p.add_argument("--decoder", choices=("none", "tiny", "sd3_vae"), default="none", help="also export this decoder")
    p.add_argument("--no-unet", action="store_true", help="export only the decoder")
    p.add_argument("--tiny", action="store_true", help="small widths (tests, dry runs)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse what the export would fail on (or silently ignore) before any model is built."""
    from snapgen.io import check_writable_dir
    from snapgen.presets import get_preset

    if args.ckpt is not None:
        for sub in ["unet"] * (not args.no_unet) + ["decoder"] * (args.decoder == "tiny" and (args.ckpt / "decoder").exists()):
            if not (args.ckpt / sub / "config.json").is_file():
                raise FileNotFoundError(f"--ckpt {args.ckpt}: '{args.ckpt / sub / 'config.json'}' is missing (expected a "
                                        "pipeline folder written by SnapGenPipeline.save_pretrained)")
    if args.no_unet and args.decoder == "none":
        raise ValueError("--no-unet with --decoder none exports nothing; choose --decoder tiny or sd3_vae")
    levels = 3 if args.ckpt is not None or args.no_unet else len(get_preset(args.variant).stages)
    factor = 8 * 2 ** (levels - 1)
    if args.resolution % factor:
        raise ValueError(f"--resolution {args.resolution}: must be a multiple of {factor} (the VAE's 8x times the "
                         f"U-Net's {factor // 8}x)")
    check_writable_dir(args.out)
    if args.records is not None and not args.no_records:
        check_writable_dir(args.records, "--records")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = ExportSettings(args.resolution, args.batch, args.context_tokens, args.precision, DEPLOYMENT_TARGET,
                       args.attention, args.compress, args.palettize_mode, args.seed)
    plan = [c for c, on in (("unet", not args.no_unet), ("decoder", args.decoder != "none")) if on]
    if args.dry_run:
        print(json.dumps({"export": plan, "settings": asdict(s), "out": str(args.out)}, indent=2))
        return 0
    for component in plan:
        if component == "unet":
            model, name, weights = build_unet(args.variant, args.ckpt, args.name, args.tiny, args.seed)
            result = export_atomically(export_unet, model, name, args.out, s, weights)
        else:
            model, name, weights = build_decoder(args.decoder, args.ckpt, args.tiny, args.seed)
            result = export_atomically(export_decoder, model, name, args.out, s, weights)
        path = None if args.no_records else write_export(result, args.records)
        print(f"{component} {name}: {result['package']} ops={result['n_ops']} "
              f"weights={result['weight_bytes'] / 2**20:.1f} MiB trace {result['timings']['trace_s']:.1f}s "
              f"convert {result['timings']['convert_s']:.1f}s parity={result['parity']['status']}"
              + (f" -> {path}" if path else ""))
        del model
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
