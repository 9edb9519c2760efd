"""Inference options of the evaluation harness's generators: precision, memory format and ``torch.compile``.

    python -m evals.run geneval --ckpt world-tiny --dtype bfloat16 --channels-last
    evals.evaluate("geneval", generator="world-tiny", dtype="bfloat16")

``dtype="bfloat16"`` runs the denoiser and the decoder under ``torch.autocast`` (weights stay float32; matmuls and
convolutions run in bf16, reductions and norms in fp32); ``channels_last`` puts the denoiser and decoder weights in
NHWC, so convolutions take the NHWC kernels; ``compile`` compiles them in place with inductor's ``freezing``
(``compile_frozen``), its CPU inference mode: generation runs under ``no_grad``, so the weights become constants that
oneDNN prepacks, as in ``ablations bench --compile``; the first batch is slow (compilation);
``split_depthwise`` runs the U-Net's depthwise convs with a channel multiplier as plain depthwise convs
(``snapgen.models.layers.set_split_depthwise``: same weights, outputs to float rounding).
The options are part of the generator's protocol, hence of the record and of the image cache key: a faster path
never reuses or silently replaces fp32 images. ``tests/test_inference_options.py`` states the tolerances
against fp32.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

from snapgen.models.layers import set_split_depthwise

DTYPES = ("float32", "bfloat16")
# inductor config of every compiled inference path (harness and latency CLI). freezing applies only where the compiled
# module runs without autograd (generation: no_grad; latency: inference_mode), and assumes the weights never change.
COMPILE_OPTIONS = {"freezing": True}
COMPILE_PROTOCOL = {"backend": "inductor", **COMPILE_OPTIONS}     # what a record of a compiled path states
MODULES = ("unet", "transformer", "vae", "decoder")     # pipeline attributes the options apply to


@dataclass(frozen=True)
class InferenceOptions:
    dtype: str = "float32"          # float32 | bfloat16 (autocast; weights stay float32)
    channels_last: bool = False     # NHWC weights and activations for the convolutional modules
    compile: bool = False           # compile_frozen() of the denoiser and decoder
    split_depthwise: bool = False   # the U-Net's channel-multiplier depthwise convs run as plain ones (same weights)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype {self.dtype}: expected one of {', '.join(DTYPES)}")

    @property
    def is_default(self) -> bool:
        return self == InferenceOptions()

    def protocol(self) -> dict:
        d = asdict(self)
        if not self.split_depthwise:            # absent when off: the protocols (image cache keys) of older runs stay
            del d["split_depthwise"]
        if self.compile:                        # absent when off, for the same reason
            d["compile_options"] = dict(COMPILE_PROTOCOL)
        return {**d, "precision": "autocast" if self.dtype != "float32" else "full"}

    def autocast(self, device: str | torch.device = "cpu"):
        """The context every denoiser / decoder call of a generation runs in."""
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=getattr(torch, self.dtype))


def compile_frozen(module: torch.nn.Module) -> torch.nn.Module:
    """``module.compile()`` in place, each call run with ``COMPILE_OPTIONS`` patched into inductor's config.

    ``torch.compile(..., options={"freezing": True})`` is accepted but does not freeze (measured with torch 2.14: the
    convolutions stay ``aten::_convolution``); compilation happens at the first call, so the config must be set
    around the calls, not around ``compile()``. ``tests/test_inference_options.py`` checks that the compiled module
    runs oneDNN's prepacked kernels."""
    import torch._inductor.config as inductor_config

    module.compile()
    compiled = module._compiled_call_impl          # what Module.__call__ runs once compiled

    def call(*args, **kwargs):
        with inductor_config.patch(COMPILE_OPTIONS):
            return compiled(*args, **kwargs)

    module._compiled_call_impl = call
    return module


def apply(pipe, opts: InferenceOptions) -> list[str]:
    """Apply memory format and compile to the pipeline's denoiser and decoder in place; returns their names."""
    names, split = [], 0
    for name in MODULES:
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        if opts.channels_last:
            module.to(memory_format=torch.channels_last)
        if opts.split_depthwise:
            split += set_split_depthwise(module)
        if opts.compile:
            compile_frozen(module)
        names.append(name)
    if opts.split_depthwise and not split:      # else the record would claim a lever that changed nothing
        raise ValueError("--split-depthwise: this pipeline's denoiser has no depthwise conv with a channel multiplier "
                         "(SnapGen's expansion x2 at the depthwise conv); leave the flag out for it")
    return names
