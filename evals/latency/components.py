"""PyTorch components to time (cpu and cuda targets): from a registered variant (random weights: latency does
not depend on weight values) or from a trained pipeline directory."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ablations.models import build_model, example_inputs, tiny_config
from ablations.variants import REGISTRY
from evals.latency.measure import Component, euler_loop
from evals.latency.settings import LatencySettings, ModelSource
from snapgen.cost import count_params
from snapgen.io import sha256_file

PROMPT = "a photo of an astronaut riding a horse on the moon"
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RANDOM_WEIGHTS = "random (--variant: latency does not depend on weight values)"
SMALL_TINY_DECODER = dict(stage_channels=(32, 16, 16, 8), blocks_per_stage=(1, 1, 1, 1))  # the --tiny decoder

Built = tuple[tuple[list[Component], Callable[[], Any]], dict[str, Any], dict[str, float]]


def default_resolution(src: ModelSource) -> int:
    """The variant's reference resolution, or the pipeline's (``pipeline.json``)."""
    if src.variant:
        return REGISTRY.get(src.variant).resolution
    from snapgen.pipeline import PipelineConfig

    raw = json.loads((Path(src.ckpt) / "pipeline.json").read_text())
    return PipelineConfig(**{k: v for k, v in raw.items() if not k.startswith("_")}).resolution


def _decoder_for(src: ModelSource, family: str, latent_channels: int):
    """(decoder module or None, name) for a variant."""
    from snapgen.models import decoder as D

    name = src.decoder if src.decoder != "auto" else ("sdxl_vae" if family == "sdxl" else "tiny")
    if name == "none":
        return None, "none"
    if name == "tiny":
        dec = D.tiny_decoder("snapgen", "cpu", **(SMALL_TINY_DECODER if src.tiny else {}))
    else:
        dec = D.DECODERS[name]("cpu")
    cz = dec.cfg.latent_channels if hasattr(dec, "cfg") else dec.latent_channels
    if cz != latent_channels:
        raise ValueError(f"--decoder {name} takes {cz}-channel latents but the U-Net makes {latent_channels}")
    return dec.eval(), name + ("-small" if src.tiny and name == "tiny" else "")


def _text_for(src: ModelSource):
    choice = src.text if src.text != "auto" else ("none" if src.tiny else "minilm")
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


def _prepare(module, device, dtype, compile_: bool, channels_last: bool = False):
    module = module.to(device=device, dtype=dtype).eval()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if not compile_:
        return module
    from evals.inference import compile_frozen      # inductor freezing: measure() runs under inference_mode

    return compile_frozen(module)


def _nhwc(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _cast(obj, dtype):
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj


def variant_components(src: ModelSource, s: LatencySettings, device: str) -> Built:
    variant = REGISTRY.get(src.variant)
    if src.tiny and variant.family != "snapgen":
        raise ValueError(f"--tiny supports SnapGen-family variants only, not {variant.name}")
    config = tiny_config(variant.config) if src.tiny else variant.config
    dtype, load_s = TORCH_DTYPES[s.dtype], {}
    t0 = time.perf_counter()
    unet = build_model(variant, "cpu", config)
    unet_params = count_params(unet)
    unet = _prepare(unet, device, dtype, s.compile, s.channels_last)
    load_s["unet"] = time.perf_counter() - t0
    (x, t), kw = example_inputs(variant, latent=s.latent, batch=s.unet_batch, device=device, config=config)
    call = _unet_call(unet, variant.family, _cast(kw, dtype))
    x = x.to(dtype)
    t0 = time.perf_counter()
    cz = 4 if variant.family == "sdxl" else config.in_channels
    decoder, dec_name = _decoder_for(src, variant.family, cz)
    dec_params = count_params(decoder) if decoder is not None else 0
    decoder = _prepare(decoder, device, dtype, s.compile, s.channels_last) if decoder is not None else None
    load_s["decoder"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    class_cond = config is not None and config.cond == "class"
    text, text_name = (None, "none (class-conditional)") if class_cond else _text_for(src)
    load_s["text_encoders"] = time.perf_counter() - t0
    model = {"name": variant.name + ("-tiny" if src.tiny else ""), "source": "variant", "variant": variant.name,
             "family": variant.family, "config": config.to_dict() if config else None,
             "config_hash": config.hash if config else None, "weights": RANDOM_WEIGHTS, "decoder": dec_name,
             "text": text_name, "params": {"unet": unet_params, "decoder": dec_params,
                                           "text_encoders": count_params(text) if text is not None else 0},
             "context_tokens": variant.context_tokens, "tiny": src.tiny}
    return assemble(s, device, call, x, text, decoder, cz, dtype), model, load_s


def assemble(s: LatencySettings, device: str, call, x_batch, text, decoder, latent_channels: int, dtype,
             decode=None) -> tuple[list[Component], Callable[[], Any]]:
    """Components + the end-to-end closure from the built pieces."""
    prompts = [PROMPT] * s.batch
    noise = torch.randn(s.batch, latent_channels, s.latent, s.latent, generator=torch.Generator().manual_seed(0))
    noise = _nhwc(noise.to(device=device, dtype=dtype), s.channels_last)
    x_batch = _nhwc(x_batch, s.channels_last)
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


def ckpt_components(src: ModelSource, s: LatencySettings, device: str) -> Built:
    from snapgen.pipeline import SnapGenPipeline

    dtype = TORCH_DTYPES[s.dtype]
    t0 = time.perf_counter()
    pipe = SnapGenPipeline.from_pretrained(src.ckpt)
    pipe.unet = _prepare(pipe.unet, device, dtype, s.compile, s.channels_last)
    if pipe.decoder is not None:
        pipe.decoder = _prepare(pipe.decoder, device, dtype, s.compile, s.channels_last)
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
    weights = Path(src.ckpt) / "unet" / "diffusion_pytorch_model.safetensors"
    model = {"name": Path(src.ckpt).name, "source": "ckpt", "ckpt": str(src.ckpt), "family": "snapgen",
             "config": cfg.to_dict(), "config_hash": cfg.hash, "weights": f"sha256:{sha256_file(weights)}",
             "decoder": pipe.config.decoder, "text": pipe.text.config.to_dict() if pipe.text is not None else None,
             "params": {"unet": count_params(pipe.unet)}, "pipeline": pipe.protocol()["pipeline"]}
    text = pipe.text if cfg.cond == "text" else None
    return assemble(s, device, call, x, text, None, cz, dtype, decode=decode), model, load_s


def build_components(src: ModelSource, s: LatencySettings, device: str) -> Built:
    return (variant_components if src.variant else ckpt_components)(src, s, device)
