"""Generation options of the harness (evals.inference): parity with fp32 at stated tolerances, recorded in the
generator protocol and the image cache key, refused where they do not apply.

Tolerances (uint8 pixels of the shipped world-tiny, 8 prompts x 10 Euler steps, measured here at 1 thread):
channels_last changes at most 1 level on a pixel (measured max 1, mean 1e-4); bf16 autocast has mean |diff|
0.32 levels and 0.15% of pixels off by more than 8 levels (edges of shapes that flip colour). The tests allow
max 2 / mean 0.01 for channels_last and mean 1.0 / 1% for bf16. split_depthwise (the U-Net's channel-multiplier
depthwise convs run as plain ones) measured max 0 levels; it is held to the channels_last bound.
"""
import numpy as np
import torch
import pytest

from evals.generators import load_generator
from evals.inference import InferenceOptions

PROMPTS = ["a photo of a red circle", "a photo of a blue square and a green cross", "a photo of three triangles",
           "a photo of a yellow cross left of a purple circle"] * 2
SEEDS = list(range(8))


def _images(opts: InferenceOptions) -> tuple[np.ndarray, dict]:
    gen = load_generator("world-tiny", steps=10, batch_size=8)
    gen.set_inference(opts)
    ims = gen.generate(PROMPTS, SEEDS)
    return np.stack([np.asarray(i, dtype=np.int16) for i in ims]), gen.protocol()


@pytest.fixture(scope="module")
def fp32():
    return _images(InferenceOptions())


def test_channels_last_matches_fp32(fp32):
    x, proto = _images(InferenceOptions(channels_last=True))
    d = np.abs(x - fp32[0])
    assert d.max() <= 2 and d.mean() <= 0.01
    assert proto["inference"] == {"dtype": "float32", "channels_last": True, "compile": False, "precision": "full"}
    assert "inference" not in fp32[1]               # default runs keep their protocol and image folders


def test_split_depthwise_matches_fp32_and_is_recorded(fp32):
    from snapgen.models.layers import SeparableConv2d

    gen = load_generator("world-tiny", steps=10, batch_size=8)
    gen.set_inference(InferenceOptions(split_depthwise=True))
    assert any(m.split_depthwise for m in gen.pipe.unet.modules() if isinstance(m, SeparableConv2d))
    assert sum(m.expand is None and m.depthwise.out_channels > m.depthwise.in_channels           # convs it changes
               for m in gen.pipe.unet.modules() if isinstance(m, SeparableConv2d)) > 0
    x = np.stack([np.asarray(i, dtype=np.int16) for i in gen.generate(PROMPTS, SEEDS)])
    d = np.abs(x - fp32[0])
    assert d.max() <= 2 and d.mean() <= 0.01
    assert gen.protocol()["inference"]["split_depthwise"] is True
    assert "split_depthwise" not in InferenceOptions(channels_last=True).protocol()   # older protocols keep their keys


def test_bf16_autocast_is_close_to_fp32_and_recorded(fp32):
    x, proto = _images(InferenceOptions(dtype="bfloat16"))
    d = np.abs(x - fp32[0])
    assert 0 < d.mean() <= 1.0 and (d > 8).mean() <= 0.01
    assert proto["inference"]["dtype"] == "bfloat16" and proto["inference"]["precision"] == "autocast"


def test_options_change_the_image_cache_key(fp32):
    from evals.benchmarks.common import generation_key

    _, proto = _images(InferenceOptions(dtype="bfloat16"))
    assert generation_key(proto, "p", 4, 0) != generation_key(fp32[1], "p", 4, 0)


def test_options_refused_where_they_do_not_apply():
    gen = load_generator("world-oracle")
    gen.set_inference(InferenceOptions())           # the default is fine everywhere
    with pytest.raises(ValueError, match="--dtype/--channels-last/--compile/--split-depthwise"):
        gen.set_inference(InferenceOptions(dtype="bfloat16"))
    with pytest.raises(ValueError, match="--dtype"):
        InferenceOptions(dtype="float16")


def test_split_depthwise_on_a_model_without_multiplier_convs_is_refused():
    """A pipeline whose denoiser has no channel-multiplier depthwise conv: the flag would change nothing and the
    record would still claim it."""
    import types

    from evals.inference import apply

    pipe = types.SimpleNamespace(unet=torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1)))
    with pytest.raises(ValueError, match="--split-depthwise"):
        apply(pipe, InferenceOptions(split_depthwise=True))
    assert apply(pipe, InferenceOptions()) == ["unet"]


def _kernels(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_compile_freezes_the_weights_and_is_recorded():
    """--compile (harness and latency CLI): inductor with freezing, so under no_grad (every generation) the
    convolutions run as oneDNN kernels on prepacked constant weights (``mkldnn::_convolution_pointwise``), which
    plain ``Module.compile()`` does not do; same function to float rounding; the options are in the protocol."""
    import types

    from evals.inference import COMPILE_PROTOCOL, apply

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(8, 4, 3, padding=1))
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        ref = net(x)
        eager_ops = _kernels(lambda: net(x))
        torch._dynamo.reset()
        pipe = types.SimpleNamespace(unet=net)
        assert apply(pipe, InferenceOptions(compile=True)) == ["unet"]
        out = pipe.unet(x)                                  # compiles
        compiled_ops = _kernels(lambda: pipe.unet(x))
        torch._dynamo.reset()
    assert "mkldnn::_convolution_pointwise" in compiled_ops and "mkldnn::_convolution_pointwise" not in eager_ops
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    proto = InferenceOptions(compile=True).protocol()
    assert proto["compile"] is True and proto["compile_options"] == COMPILE_PROTOCOL == {"backend": "inductor",
                                                                                          "freezing": True}
    assert "compile_options" not in InferenceOptions().protocol()


def test_latency_compile_uses_the_same_options():
    from evals.inference import COMPILE_PROTOCOL
    from evals.latency.records import settings_protocol
    from evals.latency.settings import LatencySettings

    assert settings_protocol(LatencySettings(compile=True))["compile_options"] == COMPILE_PROTOCOL
    assert "compile_options" not in settings_protocol(LatencySettings())
