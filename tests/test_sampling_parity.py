"""Sampling parity: images from ``SnapGenPipeline`` at fixed seeds are pinned (sha256 of the uint8 pixels and of
the float output), recorded with the hand-written Euler sampler before the pipeline moved onto diffusers
(``DiffusionPipeline`` + ``FlowMatchEulerDiscreteScheduler``). The committed scores of the shipped world-tiny
stay valid only while these hold. 1 torch thread (the harness's ``--threads 1``)."""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from snapgen.config import UNetConfig
from snapgen.env import cpu_name
from snapgen.models.decoder import TinyDecoder, TinyDecoderConfig
from snapgen.models.unet import SnapGenUNet
from snapgen.pipeline import PipelineConfig, SnapGenPipeline

SHIPPED = Path(__file__).resolve().parents[1] / "snapgen/weights/world-tiny/pipeline"
PROMPTS = ["a photo of a red cube", "a photo of two blue spheres", "a green cone left of a yellow cube"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pixels_sha(images) -> str:
    return hashlib.sha256(b"".join(np.asarray(i).tobytes() for i in images)).hexdigest()[:16]


def tensor_sha(x: torch.Tensor) -> str:
    return hashlib.sha256(x.float().contiguous().numpy().tobytes()).hexdigest()[:16]


def randomize(model: torch.nn.Module, scale: float = 1.0) -> torch.nn.Module:
    """Every float parameter from a generator seeded by its name (order-independent)."""
    with torch.no_grad():
        for name, t in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            r = torch.randn(t.shape, generator=g)
            t.copy_(r * t[0].numel() ** -0.5 * scale if t.dim() > 1 else
                    (1 + 0.1 * r if name.endswith("weight") else 0.1 * r))
    return model.eval()


def class_unet(in_channels: int) -> SnapGenUNet:
    cfg = UNetConfig.from_dict(dict(in_channels=in_channels, out_channels=in_channels, sample_size=8, channels=[32, 32],
                                    res_blocks=[1, 1], depth=[1, 1], attention=["cross", "self_cross"],
                                    head_dim=16, cond="class", num_classes=4, norm_groups=8))
    return randomize(SnapGenUNet(cfg))


def tiny_decoder_pipeline() -> SnapGenPipeline:
    dec = randomize(TinyDecoder(TinyDecoderConfig(stage_channels=(16, 8, 8, 8), blocks_per_stage=(1, 1, 1, 1))))
    return SnapGenPipeline(class_unet(16), None, dec, PipelineConfig(decoder="tiny", latent_scaling=1.5305,
                                                                      latent_shift=0.0609, resolution=64, steps=4,
                                                                      guidance=2.0, shift=2.0, null_class=4))


def vae_pipeline() -> SnapGenPipeline:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=4, layers_per_block=1).eval()
    return SnapGenPipeline(class_unet(4), None, vae, PipelineConfig(decoder="vae", latent_scaling=0.5, latent_shift=0.1,
                                                                     resolution=64, steps=3, guidance=3.0))


# (pixels sha256, float output sha256) per CPU family: float kernels round differently across families (the same
# code gives other low bits on an Intel Xeon with AMX than on an AMD EPYC), so a pin is a claim about one family.
# AMD EPYC: recorded with the hand-written Euler sampler (commit before the move onto diffusers), held since.
# Intel Xeon: recorded at 688b519 with today's sampler; its pixels of the shipped default case equal the EPYC ones
# (the images the shipped scores were computed from), and its other cases differ from the EPYC pins only in float
# rounding (the float outputs) or, in the guidance-5 case, in pixels that rounding moved across a uint8 step.
PINS = {
    "AMD EPYC": {
        "world": {"default": ("f8b9dcc2131db7f0", "65c19b7038b3efac"),   # the re-shipped world-tiny (2 processes)
                  "steps6_guidance1": ("6a8f0e927c985c5b", "5829870bcfc1739c"),
                  "steps5_guidance5_shift3": ("2e7138982d6bceee", "2e442e530ce3b80e")},
        "tiny": ("4b0a399a988b4f77", "432fb70c9cee33a5"),
        "vae": ("60477ab7b4fa95a4", "acb93aaa10efcbef")},
    "Intel(R) Xeon(R) Processor": {
        "world": {"default": ("f8b9dcc2131db7f0", "1c3c4fc0432e00a7"),
                  "steps6_guidance1": ("6a8f0e927c985c5b", "2abbfa3c8293534d"),
                  "steps5_guidance5_shift3": ("b54468278d1bf8c1", "2d342f7a74f15396")},
        "tiny": ("4159fab1e887f567", "432fb70c9cee33a5"),
        "vae": ("60477ab7b4fa95a4", "d291bcee1d43edeb")},
}
FAMILY = next((f for f in PINS if cpu_name().startswith(f)), None)
WORLD, TINY, VAE = (PINS[FAMILY or "AMD EPYC"][k] for k in ("world", "tiny", "vae"))
needs_pins = pytest.mark.skipif(FAMILY is None, reason=f"no pins recorded for this CPU family ({cpu_name()!r}); "
                                                       "record them with this file's cases on it")


@pytest.fixture(scope="module")
def world():
    return SnapGenPipeline.from_pretrained(SHIPPED)


@needs_pins
@pytest.mark.parametrize("case", sorted(WORLD))
def test_shipped_world_tiny_images_are_pinned(world, case):
    kw = {"default": dict(seeds=[0, 1, 12345]),
          "steps6_guidance1": dict(seeds=[3, 4, 5], steps=6, guidance=1.0),
          "steps5_guidance5_shift3": dict(seeds=[7, 8, 9], steps=5, guidance=5.0, shift=3.0, batch_size=2)}[case]
    assert pixels_sha(world.generate(PROMPTS, **kw)) == WORLD[case][0]
    if WORLD[case][1] is not None:
        assert tensor_sha(world.generate(PROMPTS, output="tensor", **kw)) == WORLD[case][1]


@needs_pins
def test_tiny_decoder_pipeline_is_pinned():
    """The pin guards the sampler's arithmetic, so it is taken on the decoder's module path (the pins predate the
    tiny decoder's fused CPU path, which rounds differently); the fused path, the default, stays within float
    rounding of it here (its own parity tests: tests/test_decoder_fused.py)."""
    pipe = tiny_decoder_pipeline()
    fused = pipe.generate(class_labels=[0, 1, 3], seeds=[10, 11, 12], output="tensor")
    pipe.vae.fused_cpu = False
    out = pipe.generate(class_labels=[0, 1, 3], seeds=[10, 11, 12], output="tensor")
    assert (pixels_sha(pipe.generate(class_labels=[0, 1, 3], seeds=[10, 11, 12], batch_size=2)),
            tensor_sha(out)) == TINY
    assert (fused - out).abs().max() <= 1e-5


@needs_pins
def test_vae_pipeline_is_pinned():
    pipe = vae_pipeline()
    out = pipe.generate(class_labels=[2, 0], seeds=[5, 6], output="tensor")
    assert (pixels_sha(pipe.generate(class_labels=[2, 0], seeds=[5, 6])), tensor_sha(out)) == VAE

