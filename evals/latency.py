"""``python -m evals.run latency``: time a registered variant or a trained pipeline on cpu | cuda | mac | iphone.

Builds the components (random weights for ``--variant``: latency does not depend on weights), then
runs the protocol of ``snapgen.latency`` and writes one validated JSON record per run (per Core ML
compute unit on mac / iphone) under ``results/latency/<target>/``.

    python -m evals.run latency --variant snapgen-t2i --target cpu --resolution 256 --steps 1 --repeats 3
    python -m evals.run latency --ckpt runs/pipe --target cuda --resolution 1024 --steps 4 --dtype float16
    python -m evals.run latency --variant snapgen-t2i --target mac --compute-units ALL CPU_AND_NE
    python -m evals.run latency --variant snapgen-t2i --target iphone --device-name "My iPhone"
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ablations.models import build_model, example_inputs, tiny_config
from ablations.variants import REGISTRY
from snapgen.cost import count_params
from snapgen.env import environment
from snapgen.io import sha256_file
from snapgen.latency import RESULTS, Component, LatencySettings, euler_loop, latency_record, measure, write_record

NAME = "latency"
HELP = "latency per component and end to end on cpu | cuda | mac (Core ML) | iphone (Core ML, Xcode)"
PROMPT = "a photo of an astronaut riding a horse on the moon"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RANDOM_WEIGHTS = "random (--variant: latency does not depend on weight values)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from snapgen.export.coreml import COMPRESSIONS, COMPUTE_UNITS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--variant", choices=REGISTRY.names(), help="registered architecture (random weights)")
    src.add_argument("--ckpt", type=Path, help="pipeline directory written by SnapGenPipeline.save_pretrained")
    p.add_argument("--target", choices=("cpu", "cuda", "mac", "iphone"), default="cpu")
    p.add_argument("--resolution", type=int, default=None, help="output pixels (default: variant / pipeline resolution)")
    p.add_argument("--steps", type=int, default=4, help="sampling steps of the end-to-end run")
    p.add_argument("--cfg", action=argparse.BooleanOptionalAction, default=False,
                   help="classifier-free guidance: doubles the U-Net batch (default off)")
    p.add_argument("--batch", type=int, default=1, help="images per batch")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls (>= 1; the first is reported apart)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (median and p90 reported)")
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net and decoder")
    p.add_argument("--decoder", choices=("auto", "tiny", "sd3_vae", "sdxl_vae", "none"), default="auto",
                   help="auto: tiny for SnapGen variants, sdxl_vae for sdxl-unet, the pipeline's own for --ckpt")
    p.add_argument("--text", choices=("auto", "minilm", "none"), default="auto",
                   help="text encoders for --variant (auto: minilm, none with --tiny); --ckpt uses its stack")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end timing")
    p.add_argument("--tiny", action="store_true", help="tiny widths of the variant (tests, dry runs)")
    p.add_argument("--out", type=Path, default=RESULTS, help="records root (default results/latency)")
    p.add_argument("--dry-run", action="store_true", help="print the settings and exit")
    g = p.add_argument_group("Core ML targets (mac, iphone)")
    g.add_argument("--compute-units", nargs="+", choices=COMPUTE_UNITS, default=list(COMPUTE_UNITS))
    g.add_argument("--packages", type=Path, default=Path("exports/coreml"), help="where .mlpackage files are (re)made")
    g.add_argument("--compress", choices=COMPRESSIONS, default="none")
    g.add_argument("--device-name", help="iphone: the connected device's name (as Xcode shows it)")
    g.add_argument("--team-id", help="iphone: Apple development team for code signing")


def settings_from_args(args, resolution: int) -> LatencySettings:
    return LatencySettings(target=args.target, resolution=resolution, steps=args.steps, cfg=args.cfg, batch=args.batch,
                           dtype=args.dtype, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                           compile=args.compile, end_to_end=not args.no_e2e)


# ------------------------------------------------------------------------------------------------
# Components from a registered variant (random weights)


def _decoder_for(args, family: str, latent_channels: int):
    """(decoder module or None, name) for --variant."""
    from snapgen.models import decoder as D

    name = args.decoder if args.decoder != "auto" else ("sdxl_vae" if family == "sdxl" else "tiny")
    if name == "none":
        return None, "none"
    if name == "tiny":
        small = dict(stage_channels=(32, 16, 16, 8), blocks_per_stage=(1, 1, 1, 1)) if args.tiny else {}
        dec = D.tiny_decoder("snapgen", "cpu", **small)
    else:
        dec = D.DECODERS[name]("cpu")
    cz = dec.cfg.latent_channels if hasattr(dec, "cfg") else dec.latent_channels
    if cz != latent_channels:
        raise SystemExit(f"--decoder {name} takes {cz}-channel latents but the U-Net makes {latent_channels}")
    return dec.eval(), name + ("-small" if args.tiny and name == "tiny" else "")


def _text_for(args):
    choice = args.text if args.text != "auto" else ("none" if args.tiny else "minilm")
    if choice == "none":
        return None, "none"
    from snapgen.text import TextEncoderStack

    return TextEncoderStack().eval(), "minilm (all-MiniLM-L6-v2, offline; the paper's CLIP-L/G + Gemma are not available)"


def _unet_call(model, family: str, kwargs: dict):
    """(x, t) -> velocity tensor, conditioning fixed (random tokens of the variant's context shape)."""
    def call(x, t):
        if family == "sdxl":
            return model(x, t * 1000, **kwargs, return_dict=False)[0]
        return model(x, t, **kwargs)
    return call


def _prepare(module, device, dtype, compile_: bool):
    module = module.to(device=device, dtype=dtype).eval()
    return torch.compile(module) if compile_ else module


def variant_components(args, s: LatencySettings, device: str):
    variant = REGISTRY.get(args.variant)
    if args.tiny and variant.family != "snapgen":
        raise SystemExit(f"--tiny supports SnapGen-family variants only, not {variant.name}")
    config = tiny_config(variant.config) if args.tiny else variant.config
    dtype, load_s = DTYPES[s.dtype], {}
    t0 = time.perf_counter()
    unet = build_model(variant, "cpu", config)
    unet_params = count_params(unet)
    unet = _prepare(unet, device, dtype, s.compile)
    load_s["unet"] = time.perf_counter() - t0
    (x, t), kw = example_inputs(variant, latent=s.latent, batch=s.unet_batch, device=device, config=config)
    kw = _cast(kw, dtype)
    call = _unet_call(unet, variant.family, kw)
    x = x.to(dtype)
    t0 = time.perf_counter()
    cz = 4 if variant.family == "sdxl" else config.in_channels
    decoder, dec_name = _decoder_for(args, variant.family, cz)
    dec_params = count_params(decoder) if decoder is not None else 0
    decoder = _prepare(decoder, device, dtype, s.compile) if decoder is not None else None
    load_s["decoder"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    class_cond = config is not None and config.cond == "class"
    text, text_name = (None, "none (class-conditional)") if class_cond else _text_for(args)
    load_s["text_encoders"] = time.perf_counter() - t0
    model = {"name": variant.name + ("-tiny" if args.tiny else ""), "source": "variant", "variant": variant.name,
             "family": variant.family, "config": config.to_dict() if config else None,
             "config_hash": config.hash if config else None, "weights": RANDOM_WEIGHTS, "decoder": dec_name,
             "text": text_name, "params": {"unet": unet_params, "decoder": dec_params,
                                           "text_encoders": count_params(text) if text is not None else 0},
             "context_tokens": variant.context_tokens, "tiny": args.tiny}
    return _assemble(s, device, call, x, text, decoder, cz, dtype), model, load_s


def _cast(obj, dtype):
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj


def _assemble(s: LatencySettings, device: str, call, x_batch, text, decoder, latent_channels: int, dtype,
              decode=None):
    """Components + the end-to-end closure from the built pieces."""
    prompts = [PROMPT] * s.batch
    noise = torch.randn(s.batch, latent_channels, s.latent, s.latent, generator=torch.Generator().manual_seed(0))
    noise = noise.to(device=device, dtype=dtype)
    t_step = torch.full((s.unet_batch,), 0.5, device=device, dtype=dtype)
    decode = decode or decoder
    comps = []
    if text is not None:
        comps.append(Component("text_encoders", lambda: text(prompts), {"prompts": len(prompts)}))
    comps.append(Component("unet_step", lambda: call(x_batch, t_step),
                           {"input_shape": list(x_batch.shape), "batch": s.unet_batch}))
    if decode is not None:
        comps.append(Component("decoder", lambda: decode(noise), {"input_shape": list(noise.shape)}))

    def end_to_end():
        if text is not None:
            text(prompts)
        z = euler_loop(call, noise, s.steps, s.cfg)
        return decode(z) if decode is not None else z
    return comps, end_to_end


# ------------------------------------------------------------------------------------------------
# Components from a trained pipeline directory


def ckpt_components(args, s: LatencySettings, device: str):
    from snapgen.pipeline import SnapGenPipeline

    dtype = DTYPES[s.dtype]
    t0 = time.perf_counter()
    pipe = SnapGenPipeline.from_pretrained(args.ckpt)
    pipe.unet = _prepare(pipe.unet, device, dtype, s.compile)
    if pipe.decoder is not None:
        pipe.decoder = _prepare(pipe.decoder, device, dtype, s.compile)
    load_s = {"pipeline": time.perf_counter() - t0}
    cfg = pipe.unet.config if hasattr(pipe.unet, "config") else pipe.unet._orig_mod.config
    cz = cfg.in_channels
    if cfg.cond == "text":
        ctx, pooled = pipe.text([PROMPT] * s.batch)
        reps = 2 if s.cfg else 1
        kw = {"context": ctx.repeat(reps, 1, 1).to(device, dtype), "pooled": pooled.repeat(reps, 1).to(device, dtype)}
    else:
        kw = {"class_labels": torch.zeros(s.unet_batch, dtype=torch.long, device=device)}
    x = torch.randn(s.unet_batch, cz, s.latent, s.latent, dtype=dtype, device=device)
    call = _unet_call(pipe.unet, "snapgen", kw)
    decode = None if pipe.config.decoder == "pixel" else (lambda z: pipe.decode(z))
    weights = Path(args.ckpt) / "unet" / "diffusion_pytorch_model.safetensors"
    model = {"name": Path(args.ckpt).name, "source": "ckpt", "ckpt": str(args.ckpt), "family": "snapgen",
             "config": cfg.to_dict(), "config_hash": cfg.hash, "weights": f"sha256:{sha256_file(weights)}",
             "decoder": pipe.config.decoder, "text": pipe.text.config.to_dict() if pipe.text is not None else None,
             "params": {"unet": count_params(pipe.unet)}, "pipeline": pipe.protocol()["pipeline"]}
    text = pipe.text if cfg.cond == "text" else None
    return _assemble(s, device, call, x, text, None, cz, dtype, decode=decode), model, load_s


# ------------------------------------------------------------------------------------------------
# Core ML packages (mac and iphone targets)


def export_settings(args, s: LatencySettings):
    from snapgen.export.coreml import ExportSettings

    ctx = REGISTRY.get(args.variant).context_tokens if args.variant else 333
    return ExportSettings(resolution=s.resolution, batch=s.unet_batch, context_tokens=ctx, compression=args.compress)


def ensure_packages(args, s: LatencySettings) -> tuple[dict[str, Path], dict[str, Any]]:
    """Export (or reuse) the U-Net and decoder packages -> ({component: package}, model info)."""
    from snapgen.export import coreml as X
    from snapgen.models.decoder import TinyDecoder, tiny_decoder
    from snapgen.models.unet import SnapGenUNet

    es = export_settings(args, s)
    if args.variant:
        variant = REGISTRY.get(args.variant)
        if variant.family != "snapgen":
            raise SystemExit(f"Core ML export supports SnapGen U-Nets, not {variant.name}")
        config = tiny_config(variant.config) if args.tiny else variant.config
        name, weights = variant.name + ("-tiny" if args.tiny else ""), RANDOM_WEIGHTS
        make_unet = lambda: SnapGenUNet(config)  # noqa: E731
        make_dec = lambda: tiny_decoder("snapgen", "cpu", **(  # noqa: E731
            dict(stage_channels=(32, 16, 16, 8), blocks_per_stage=(1, 1, 1, 1)) if args.tiny else {}))
    else:
        config = SnapGenUNet.from_pretrained(args.ckpt / "unet").config
        name, weights = args.ckpt.name, f"checkpoint {args.ckpt}"
        make_unet = lambda: SnapGenUNet.from_pretrained(args.ckpt / "unet")  # noqa: E731
        make_dec = lambda: TinyDecoder.from_pretrained(args.ckpt / "decoder")  # noqa: E731
    packages: dict[str, Path] = {}
    for comp, stem, make, fn in (("unet_step", X.record_name("unet", name, es), make_unet, X.export_unet),
                                 ("decoder", X.record_name("decoder", "tiny", es), make_dec, X.export_decoder)):
        path = args.packages / f"{stem}.mlpackage"
        if not path.exists():
            model = make()
            X.reinit_zero_weights(model) if args.variant else None
            fn(model, name if comp == "unet_step" else "tiny", args.packages, es, weights)
        packages[comp] = path
    model = {"name": name, "source": "variant" if args.variant else "ckpt", "variant": args.variant,
             "family": "snapgen", "config": config.to_dict(), "config_hash": config.hash, "weights": weights,
             "decoder": "tiny", "text": "not on device (paper: negligible)", "format": "Core ML mlprogram fp16",
             "minimum_deployment_target": es.deployment_target, "compression": es.compression,
             "packages": {k: str(v) for k, v in packages.items()}}
    return packages, model


def run_mac(args) -> list[Path]:
    """Timed Core ML predictions per compute unit through coremltools (macOS only)."""
    from dataclasses import replace

    from snapgen.export.coreml import CoreMLPredictionUnavailable, can_predict, load_mlmodel, package_summary, random_feed

    if not can_predict():
        raise CoreMLPredictionUnavailable("--target mac: Core ML predictions need macOS (coremltools' runtime is "
                                          "macOS-only). Export here with `python -m snapgen.export.coreml`, run this "
                                          "command on a Mac, or use --target iphone from a Mac with Xcode.")
    s0 = settings_from_args(args, args.resolution or 1024)
    packages, model = ensure_packages(args, s0)
    paths = []
    for unit in args.compute_units:
        s = replace(s0, compute_unit=unit)
        comps, load_s, models = [], {}, {}
        for comp, path in packages.items():
            t0 = time.perf_counter()
            models[comp] = load_mlmodel(path, unit)
            load_s[comp] = time.perf_counter() - t0
            feed = random_feed(package_summary(path)["inputs"])
            comps.append(Component(comp, lambda m=models[comp], f=feed: m.predict(f), {"package": str(path)}))
        unet_fn, dec_fn = comps[0].fn, comps[1].fn

        def e2e(unet_fn=unet_fn, dec_fn=dec_fn):
            for _ in range(s.steps):
                unet_fn()
            dec_fn()
        timing = measure(comps, s, "cpu", e2e)
        notes = ["load_s includes Core ML on-device compilation", "end to end = steps x U-Net + decoder (no text)"]
        rec = latency_record(s, model, timing, load_s, environment("cpu"), notes)
        paths.append(write_record(rec, args.out))
    return paths


# ------------------------------------------------------------------------------------------------
# Entry point


def _device_for(target: str) -> str:
    if target == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--target cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
        return "cuda"
    return "cpu"


def run_torch(args) -> list[Path]:
    device = _device_for(args.target)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res = args.resolution or (REGISTRY.get(args.variant).resolution if args.variant else None)
    if res is None:
        from snapgen.pipeline import PipelineConfig
        res = PipelineConfig(**{k: v for k, v in json.loads((args.ckpt / "pipeline.json").read_text()).items()
                                if not k.startswith("_")}).resolution
    s = settings_from_args(args, res)
    build = variant_components if args.variant else ckpt_components
    (comps, e2e), model, load_s = build(args, s, device)
    timing = measure(comps, s, device, e2e)
    compile_s = ({c: timing["components"][c]["first_call_ms"] / 1e3 for c in ("unet_step", "decoder")
                  if c in timing["components"]} if s.compile else None)
    notes = ["compile_s = first call including torch.compile"] if s.compile else []
    if args.variant:
        notes.append("U-Net conditioning: random tokens of the variant's context shape; text encoders timed apart")
    rec = latency_record(s, model, timing, load_s, environment(device), notes, compile_s)
    return [write_record(rec, args.out)]


def run(args) -> int:
    """CLI body for ``python -m evals.run latency``; returns the exit code."""
    if args.dry_run:
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                          if not callable(v)}, indent=2, sort_keys=True))
        return 0
    try:
        if args.target == "mac":
            paths = run_mac(args)
        elif args.target == "iphone":
            from evals.iphone.orchestrator import run_iphone
            paths = run_iphone(args)
        else:
            paths = run_torch(args)
    except RuntimeError as e:  # CoreMLPredictionUnavailable, missing Xcode tools
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        rec = json.loads(Path(path).read_text())
        summary = {k: round(v["median_ms"], 2) for k, v in rec["components"].items()}
        e2e = rec["end_to_end"]["measured"]
        print(f"{path}: median ms {summary}; end to end ({rec['settings']['steps']} steps) "
              f"{'%.1f' % e2e['median_ms'] if e2e else '—'} ms measured, "
              f"{rec['end_to_end']['estimate_ms']:.1f} ms from components")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.run latency", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n\n", 2)[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
