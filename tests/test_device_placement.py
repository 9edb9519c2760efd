"""Device placement of the text stack and the sampling pipeline: the CPU-drawn dropout masks (training dropout, the
null condition of classifier-free guidance) follow the encoders' device. The ``meta`` device stands in for CUDA on a
CPU machine: mixing it with CPU tensors raises exactly as CUDA does ("Expected all tensors to be on the same device").
Found on a GPU: ``python -m evals.run geneval --device cuda`` failed in ``TextEncoderStack.null``."""
import pytest
import torch

from snapgen.text import MINILM, TextEncoderStack


def _bare_stack() -> TextEncoderStack:
    """A text stack without its encoders: ``merge`` needs only the config and the (empty) projections."""
    from snapgen.text import TextStackConfig

    stack = TextEncoderStack.__new__(TextEncoderStack)
    torch.nn.Module.__init__(stack)
    stack.config, stack.proj = TextStackConfig(), torch.nn.ModuleDict()
    return stack


def test_merge_moves_cpu_drop_masks_to_the_encoders_device():
    stack = _bare_stack()
    parts = {MINILM: (torch.ones(3, 16, 384, device="meta"), torch.ones(3, 384, device="meta"))}
    drop = {MINILM: torch.tensor([True, False, True])}          # drawn on the CPU (sample_drop, null)
    ctx, pooled = stack.merge(parts, drop)
    assert ctx.device.type == "meta" and pooled.device.type == "meta"
    assert ctx.shape == (3, 16, 384) and pooled.shape == (3, 384)


def test_merge_zeroes_exactly_the_dropped_samples():
    stack = _bare_stack()
    tokens, pooled = torch.randn(3, 16, 384), torch.randn(3, 384)
    ctx, pool = stack.merge({MINILM: (tokens, pooled)}, {MINILM: torch.tensor([True, False, True])})
    assert torch.equal(ctx[1], tokens[1]) and torch.equal(pool[1], pooled[1])
    assert not ctx[0].any() and not ctx[2].any() and not pool[0].any() and not pool[2].any()


def test_null_condition_on_a_non_cpu_device(monkeypatch):
    stack = TextEncoderStack()                                  # the packaged MiniLM's config; encoders' outputs
    monkeypatch.setattr(stack, "encode_parts", lambda prompts: {  # as they come from a non-CPU device
        MINILM: (torch.ones(len(prompts), 16, 384, device="meta"), torch.ones(len(prompts), 384, device="meta"))})
    ctx, pooled = stack.null(2)                                 # its all-dropped masks are made on the CPU
    assert ctx.device.type == "meta" and pooled.device.type == "meta" and ctx.shape == (2, 16, 384)


def _sampling_on(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A world pipeline with random weights (perturbed: the U-Net's zero-initialised output layer would make any
    device give the starting noise back) sampled on ``device`` and on the CPU."""
    from snapgen.models.unet import SnapGenUNet
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline
    from snapgen.presets import get_preset

    torch.manual_seed(0)
    unet = SnapGenUNet(get_preset("tiny-world"))
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pipe = SnapGenPipeline(unet, TextEncoderStack(), None, PipelineConfig(decoder="pixel", resolution=32, steps=4,
                                                                          guidance=3.0))
    prompts = ["a photo of a square and a circle"]
    cpu = pipe.generate(prompts, seeds=[1], output="tensor")
    start = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert (cpu - start).abs().max() > 0.05, "the sampler left the starting noise unchanged: the test would be vacuous"
    return cpu, pipe.to(device).generate(prompts, seeds=[1], output="tensor")


def test_sampling_helper_runs_on_the_cpu():
    cpu, again = _sampling_on("cpu")
    assert torch.equal(cpu, again)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_world_pipeline_samples_on_cuda_like_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)   # fp32 on both sides
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cpu, gpu = _sampling_on("cuda")
    assert gpu.device.type == "cpu" and torch.allclose(cpu, gpu, atol=1e-3), (cpu - gpu).abs().max()
