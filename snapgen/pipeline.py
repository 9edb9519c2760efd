"""Text (or class) -> image as a diffusers ``DiffusionPipeline``: U-Net + text stack + flow-matching scheduler + decoder.

Layout of a pipeline directory (``save_pretrained``; ``DiffusionPipeline.from_pretrained(dir)`` returns a
``SnapGenPipeline`` once ``snapgen.pipeline`` is imported)::

    model_index.json     # diffusers: component classes + the pipeline settings (decoder kind, latent scaling, ...)
    unet/                # SnapGenUNet (diffusers ModelMixin; the EMA weights when trained by snapgen.train)
    text_encoder/        # TextEncoderStack (config + trainable merge projections; absent in class mode)
    vae/                 # TinyDecoder or diffusers AutoencoderKL (absent for pixel space)
    scheduler/           # FlowMatchEulerDiscreteScheduler (its ``shift`` is the sampling shift)
    pipeline.json        # PipelineConfig, kept so tools that recognise a snapgen folder by it still do

Folders of the older layout (``pipeline.json`` + ``unet/``, ``text/``, ``decoder/``) load through
``SnapGenPipeline.from_pretrained``; ``python -m snapgen.convert SRC DST`` rewrites one in this layout and
``--index-only DIR`` adds the index files in place (how the shipped world-tiny, now in both layouts, got them).

Scheduler mapping: diffusers' flow-matching schedulers use sigma in [0, 1] with x_sigma = (1 - sigma) x0 +
sigma noise and the model output as the velocity noise - x0 (SD3): exactly ``snapgen.flow`` with t = sigma. The
pipeline hands the scheduler the unshifted grid ``linspace(1, 0, steps + 1)[:-1]`` as ``sigmas=``; the
scheduler applies its ``shift`` and appends the final sigma 0, which reproduces ``flow.timestep_schedule`` bit
for bit; the U-Net gets t = timestep / num_train_timesteps (tests/test_diffusers_pipeline.py).

Seeds: sample ``k`` of prompt ``i`` starts from noise drawn with its own generator seeded by
``sample_seed(i, k, base_seed)`` (``generate`` passes one ``torch.Generator`` per image, as diffusers does for a
list of generators), so images do not depend on batch size, order, or process count.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Literal

import diffusers
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from snapgen.flow import cfg_velocity, timestep_schedule
from snapgen.io import atomic_write_json, require_path, sha256_json
from snapgen.models import decoder as _decoder_module  # noqa: F401  imported so that DiffusionPipeline.from_pretrained
from snapgen import text as _text_module               # noqa: F401  finds the component modules model_index.json names
from snapgen.models.unet import SnapGenUNet


@dataclass(frozen=True)
class PipelineConfig:
    decoder: Literal["pixel", "vae", "tiny"] = "pixel"  # pixel space (synthetic world), AutoencoderKL, or tiny decoder
    latent_scaling: float = 1.0     # z_model = (z_vae - shift) * scaling (SD3: 1.5305)
    latent_shift: float = 0.0       # SD3: 0.0609
    resolution: int = 32            # output pixels
    steps: int = 28                 # default sampling steps
    guidance: float = 4.0           # default classifier-free guidance scale
    shift: float = 1.0              # default timestep shift of the sampling schedule (the scheduler's ``shift``)
    null_class: int | None = None   # class mode: the null label (= num_classes)

    @property
    def latent_factor(self) -> int:
        return 1 if self.decoder == "pixel" else 8


SETTINGS = tuple(f.name for f in fields(PipelineConfig) if f.name != "shift")  # registered in model_index.json


def sample_seed(prompt_id: int | str, sample_index: int, base_seed: int) -> int:
    """Per-sample seed from (prompt id, sample index, base seed); stable across machines and versions."""
    return int(sha256_json([str(prompt_id), int(sample_index), int(base_seed)])[:15], 16)


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) in [-1, 1] -> PIL images (round to nearest uint8)."""
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def flow_scheduler(shift: float = 1.0) -> FlowMatchEulerDiscreteScheduler:
    """The default scheduler: Euler on the rectified flow, SD3's timestep shift."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def set_flow_timesteps(scheduler, steps: int, device: torch.device) -> torch.Tensor:
    """Our grid (``flow.timestep_schedule``) where the scheduler takes ``sigmas=``; its own grid otherwise."""
    if "sigmas" in inspect.signature(scheduler.set_timesteps).parameters:
        scheduler.set_timesteps(sigmas=timestep_schedule(steps, 1.0)[:-1].numpy(), device=device)
    else:
        scheduler.set_timesteps(steps, device=device)
    return scheduler.timesteps


class SnapGenPipeline(DiffusionPipeline):
    """``pipe(prompt, num_inference_steps, guidance_scale, generator=...)`` as any diffusers pipeline; ``generate``
    (prompts, seeds) for the harness. Components: ``unet``, ``text_encoder`` (alias ``text``), ``vae`` (alias
    ``decoder``: TinyDecoder or AutoencoderKL), ``scheduler``. ``SnapGenPipeline(unet, text, decoder, config)``
    (positional, a ``PipelineConfig``) still builds one with the default scheduler at ``config.shift``."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["text_encoder", "vae", "scheduler"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet, text_encoder=None, vae=None, pipeline_config=None, scheduler=None, decoder="pixel",
                 latent_scaling=1.0, latent_shift=0.0, resolution=32, steps=28, guidance=4.0, null_class=None):
        super().__init__()
        if pipeline_config is not None:
            if scheduler is not None and scheduler.config.shift != pipeline_config.shift:
                raise ValueError(f"scheduler shift {scheduler.config.shift} != pipeline_config.shift {pipeline_config.shift}")
            settings = {k: getattr(pipeline_config, k) for k in SETTINGS}
        else:
            settings = dict(decoder=decoder, latent_scaling=latent_scaling, latent_shift=latent_shift,
                            resolution=resolution, steps=steps, guidance=guidance, null_class=null_class)
        scheduler = scheduler if scheduler is not None else flow_scheduler(
            pipeline_config.shift if pipeline_config is not None else 1.0)
        if unet.config.cond == "text" and text_encoder is None:
            raise ValueError("a text-conditional U-Net needs a text stack")
        _verify_loaded_vae(vae)
        self.register_modules(unet=unet.eval(), text_encoder=text_encoder, vae=vae, scheduler=scheduler)
        self.register_to_config(**settings)
        self._null = None

    # --- the older names -----------------------------------------------------------------------------
    @property
    def text(self):
        return self.text_encoder

    @property
    def decoder(self):
        return self.vae

    @decoder.setter
    def decoder(self, module) -> None:
        self.register_modules(vae=module)

    @property
    def pipeline_config(self) -> PipelineConfig:
        """The settings as the typed ``PipelineConfig`` (``shift`` from the scheduler)."""
        return PipelineConfig(**{k: self.config[k] for k in SETTINGS},
                              shift=float(getattr(self.scheduler.config, "shift", 1.0)))

    # --- conditioning -------------------------------------------------------------------------------
    def _conditions(self, prompts: list | None, class_labels: list[int] | None, device: torch.device):
        if self.unet.config.cond == "class":
            labels = torch.as_tensor(class_labels, device=device)
            null = torch.full_like(labels, self.config.null_class if self.config.null_class is not None
                                   else self.unet.config.num_classes)
            return {"class_labels": labels}, {"class_labels": null}
        ctx, pooled = self.text_encoder(list(prompts))
        if self._null is None:
            self._null = self.text_encoder.null(1)
        nctx, npooled = self._null
        n = len(prompts)
        return ({"context": ctx.to(device), "pooled": pooled.to(device)},
                {"context": nctx.expand(n, -1, -1).to(device), "pooled": npooled.expand(n, -1).to(device)})

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model latent -> image in ~[-1, 1] (not clamped)."""
        if self.config.decoder == "pixel":
            return z
        z = z / self.config.latent_scaling + self.config.latent_shift
        return self.vae.decode(z).sample if hasattr(self.vae, "decode") else self.vae(z)

    # --- the diffusers call ---------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
                 class_labels: int | list[int] | None = None, height: int | None = None, width: int | None = None,
                 output_type: Literal["pil", "np", "pt", "latent"] = "pil", return_dict: bool = True,
                 callback_on_step_end: Callable | None = None,
                 callback_on_step_end_tensor_inputs: list[str] = ("latents",)):
        """Sample images. ``guidance_scale`` 1 evaluates the conditional branch only; ``generator``: one, or one
        per image (the harness's per-sample seeds); ``output_type="pt"`` gives [0, 1] tensors as diffusers
        pipelines do, ``"latent"`` the final latents."""
        c, device = self.config, self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else prompt
        labels = [class_labels] if isinstance(class_labels, int) else class_labels
        prompts = None if prompts is None else [p for p in prompts for _ in range(num_images_per_prompt)]
        labels = None if labels is None else [l for l in labels for _ in range(num_images_per_prompt)]
        n = len(prompts if prompts is not None else labels)
        steps = num_inference_steps or c.steps
        guidance = c.guidance if guidance_scale is None else guidance_scale
        factor = self.pipeline_config.latent_factor
        shape = (n, self.unet.config.in_channels, (height or c.resolution) // factor, (width or c.resolution) // factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        latents = latents.to(device)
        cond, uncond = self._conditions(prompts, labels, device)
        velocity = cfg_velocity(self.unet, cond, uncond, guidance)
        timesteps = set_flow_timesteps(self.scheduler, steps, device)
        scale = self.scheduler.config.num_train_timesteps
        for i, t in enumerate(self.progress_bar(timesteps)):
            v = velocity(latents, (t / scale).expand(n))
            latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
            if callback_on_step_end is not None:
                tensors = {"latents": latents}
                out = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                latents = out.pop("latents", latents)
        self.maybe_free_model_hooks()
        if output_type == "latent":
            images = latents
        else:
            x = self.decode(latents).float().cpu()
            images = to_pil(x) if output_type == "pil" else ((x + 1) / 2).clamp(0, 1)
            images = images.permute(0, 2, 3, 1).numpy() if output_type == "np" else images
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    # --- the harness's entry point --------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[str] | None = None, seeds: list[int] | None = None,
                 class_labels: list[int] | None = None, steps: int | None = None, guidance: float | None = None,
                 shift: float | None = None, batch_size: int = 8, output: Literal["pil", "tensor"] = "pil"):
        """One image per (prompt or label, seed), each from ``torch.Generator().manual_seed(seed)``. Batching only
        groups the work; results do not depend on it. ``shift`` overrides the scheduler's for this call.
        ``output="tensor"``: the decoded images in ~[-1, 1], not clamped."""
        n = len(prompts if prompts is not None else class_labels)
        seeds = list(range(n)) if seeds is None else seeds
        if len(seeds) != n:
            raise ValueError(f"{n} prompts but {len(seeds)} seeds")
        scheduler, bar = self.scheduler, dict(getattr(self, "_progress_bar_config", {}))
        if shift and shift != scheduler.config.shift:
            self.scheduler = type(scheduler).from_config(scheduler.config, shift=shift)
        self.set_progress_bar_config(**{**bar, "disable": True})     # the caller (the harness) shows its own
        try:
            outs = []
            for s in range(0, n, batch_size):
                sl = slice(s, s + batch_size)
                z = self(prompt=prompts[sl] if prompts is not None else None,
                         class_labels=class_labels[sl] if class_labels is not None else None,
                         num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
                         generator=[torch.Generator().manual_seed(int(k)) for k in seeds[sl]]).images
                outs.append(self.decode(z).float().cpu())
        finally:
            self.scheduler, self._progress_bar_config = scheduler, bar
        images = torch.cat(outs)
        return to_pil(images) if output == "pil" else images

    def protocol(self) -> dict:
        """What a result record needs to know about this pipeline."""
        return {"unet_config": self.unet.config.to_dict(), "unet_config_hash": self.unet.config.hash,
                "text": self.text_encoder.config.to_dict() if self.text_encoder is not None else None,
                "pipeline": asdict(self.pipeline_config)}

    # --- persistence --------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """diffusers' layout (model_index.json + one folder per component) and ``pipeline.json``."""
        d = Path(directory)
        super().save_pretrained(str(d), **kwargs)
        _manifest_foreign_vae(d / "vae", self.vae)
        atomic_write_json(d / "pipeline.json", {"_class_name": "SnapGenPipeline", **asdict(self.pipeline_config)})
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None, **kwargs) -> "SnapGenPipeline":
        """A folder of either layout; ``kwargs`` go to ``DiffusionPipeline.from_pretrained`` (diffusers layout)."""
        d = require_path(directory, "SnapGen pipeline", "Pass a folder written by SnapGenPipeline.save_pretrained "
                         "(model_index.json or pipeline.json, unet/), e.g. the output of `python -m snapgen.train`.",
                         ("unet",))
        if (d / "model_index.json").exists():
            _import_component_modules(d / "model_index.json")
            pipe = super().from_pretrained(str(d), **kwargs)
        else:
            pipe = load_legacy(d)
        return pipe.to(device) if device is not None else pipe


def load_legacy(d: Path) -> SnapGenPipeline:
    """The layout before the move to diffusers: ``pipeline.json`` + ``unet/``, ``text/``, ``decoder/``."""
    from snapgen.text import TextEncoderStack

    require_path(d / "pipeline.json", "SnapGen pipeline", "Pass a folder with model_index.json or pipeline.json.")
    raw = json.loads((d / "pipeline.json").read_text())
    raw.pop("_class_name", None)
    config = PipelineConfig(**raw)
    unet = SnapGenUNet.from_pretrained(d / "unet")
    text = TextEncoderStack.from_pretrained(d / "text") if unet.config.cond == "text" else None
    decoder = None
    if config.decoder == "tiny":
        from snapgen.models.decoder import TinyDecoder

        decoder = TinyDecoder.from_pretrained(d / "decoder")
    elif config.decoder == "vae":
        from diffusers import AutoencoderKL

        decoder = AutoencoderKL.from_pretrained(require_path(d / "decoder", "pipeline VAE", "", ("config.json",)))
    return SnapGenPipeline(unet, text, decoder, config)


def _import_component_modules(index: Path) -> None:
    """Import the snapgen modules a pipeline's model_index.json names (e.g. ``snapgen.models.dit`` for a world DiT),
    which diffusers refuses to import itself."""
    import importlib

    try:
        entries = json.loads(index.read_text()).values()
    except ValueError:
        return                                        # diffusers reports a malformed index with its own message
    for e in entries:
        if isinstance(e, list) and e and isinstance(e[0], str) and e[0].startswith("snapgen."):
            importlib.import_module(e[0])


def _manifest_foreign_vae(folder: Path, vae) -> None:
    """A diffusers ``AutoencoderKL`` saves itself without our manifest: give its folder one (our own classes write
    theirs in ``PretrainedMixin.save_pretrained``)."""
    from snapgen.io import WEIGHTS_MANIFEST, write_weights_manifest

    if vae is not None and folder.is_dir() and not (folder / WEIGHTS_MANIFEST).is_file():
        write_weights_manifest(folder)


def _verify_loaded_vae(vae) -> None:
    """A diffusers ``AutoencoderKL`` loaded from a folder (diffusers records it as ``config._name_or_path``) is
    checked against that folder's manifest, whichever loader built the pipeline (``SnapGenPipeline`` or
    ``DiffusionPipeline.from_pretrained``, the legacy layout): diffusers itself does not. Our own classes check
    themselves in ``PretrainedMixin.from_pretrained``; a folder without a manifest (a third-party VAE) is not
    checked."""
    from snapgen.io import verify_weights_folder
    from snapgen.models.pretrained import PretrainedMixin

    source = getattr(getattr(vae, "config", None), "_name_or_path", None)
    if vae is not None and not isinstance(vae, PretrainedMixin) and isinstance(source, str) and Path(source).is_dir():
        verify_weights_folder(source)


# ``DiffusionPipeline.from_pretrained(dir)`` looks the model_index.json class name up in the diffusers namespace.
if not hasattr(diffusers, "SnapGenPipeline"):
    setattr(diffusers, "SnapGenPipeline", SnapGenPipeline)


def image_grid(images: list[Image.Image], cols: int, captions: list[str] | None = None, scale: int = 4) -> Image.Image:
    """Tile images (upscaled ``scale``x, nearest) into a grid, optionally with a caption under each row item."""
    from PIL import ImageDraw

    w, h = images[0].width * scale, images[0].height * scale
    pad = 28 if captions else 0
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * (h + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for i, img in enumerate(images):
        x, y = (i % cols) * w, (i // cols) * (h + pad)
        grid.paste(img.resize((w, h), Image.NEAREST), (x, y))
        if captions:
            words = captions[i].replace("a photo of ", "").split()
            lines = [" ".join(words[: len(words) // 2 + 1]), " ".join(words[len(words) // 2 + 1:])]
            for k, line in enumerate(lines):
                draw.text((x + 2, y + h + 2 + 12 * k), line, fill="black")
    return grid
