"""Text (or class) -> image: text stack + U-Net + rectified-flow sampler + decoder, in one directory.

Layout of a pipeline directory::

    pipeline.json        # PipelineConfig (decoder kind, latent scaling, sampler defaults, resolution)
    unet/                # SnapGenUNet.save_pretrained (the EMA weights when trained by snapgen.train)
    text/                # TextEncoderStack.save_pretrained (config + trainable merge projections)
    decoder/             # TinyDecoder or diffusers AutoencoderKL folder (absent for pixel space)

Seeds: sample ``k`` of prompt ``i`` starts from noise drawn with its own generator seeded by
``sample_seed(i, k, base_seed)``, so images do not depend on batch size, order, or process count.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from snapgen.flow import cfg_velocity, euler_sample
from snapgen.io import atomic_write_json, require_path, sha256_json
from snapgen.models.unet import SnapGenUNet


@dataclass(frozen=True)
class PipelineConfig:
    decoder: Literal["pixel", "vae", "tiny"] = "pixel"  # pixel space (synthetic world), AutoencoderKL, or tiny decoder
    latent_scaling: float = 1.0     # z_model = (z_vae - shift) * scaling (SD3: 1.5305)
    latent_shift: float = 0.0       # SD3: 0.0609
    resolution: int = 32            # output pixels
    steps: int = 28                 # default sampling steps
    guidance: float = 4.0           # default classifier-free guidance scale
    shift: float = 1.0              # default timestep shift of the sampling schedule
    null_class: int | None = None   # class mode: the null label (= num_classes)

    @property
    def latent_factor(self) -> int:
        return 1 if self.decoder == "pixel" else 8


def sample_seed(prompt_id: int | str, sample_index: int, base_seed: int) -> int:
    """Per-sample seed from (prompt id, sample index, base seed); stable across machines and versions."""
    return int(sha256_json([str(prompt_id), int(sample_index), int(base_seed)])[:15], 16)


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) in [-1, 1] -> PIL images (round to nearest uint8)."""
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


class SnapGenPipeline:
    def __init__(self, unet: SnapGenUNet, text=None, decoder: torch.nn.Module | None = None,
                 config: PipelineConfig = PipelineConfig()):
        self.unet, self.text, self.decoder, self.config = unet.eval(), text, decoder, config
        if unet.config.cond == "text" and text is None:
            raise ValueError("a text-conditional U-Net needs a text stack")
        self._null = None

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    def to(self, device) -> "SnapGenPipeline":
        for m in (self.unet, self.text, self.decoder):
            if m is not None:
                m.to(device)
        return self

    # --- conditioning -------------------------------------------------------------------------------
    def _conditions(self, prompts: list | None, class_labels: list[int] | None):
        if self.unet.config.cond == "class":
            labels = torch.as_tensor(class_labels, device=self.device)
            null = torch.full_like(labels, self.config.null_class if self.config.null_class is not None
                                   else self.unet.config.num_classes)
            return {"class_labels": labels}, {"class_labels": null}
        ctx, pooled = self.text(list(prompts))
        if self._null is None:
            self._null = self.text.null(1)
        nctx, npooled = self._null
        n = len(prompts)
        return ({"context": ctx.to(self.device), "pooled": pooled.to(self.device)},
                {"context": nctx.expand(n, -1, -1).to(self.device), "pooled": npooled.expand(n, -1).to(self.device)})

    def initial_noise(self, seeds: list[int]) -> torch.Tensor:
        c, side = self.unet.config.in_channels, self.config.resolution // self.config.latent_factor
        return torch.stack([torch.randn(c, side, side, generator=torch.Generator().manual_seed(s)) for s in seeds])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.decoder == "pixel":
            return z
        z = z / self.config.latent_scaling + self.config.latent_shift
        out = self.decoder.decode(z).sample if hasattr(self.decoder, "decode") else self.decoder(z)
        return out

    # --- generation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[str] | None = None, seeds: list[int] | None = None,
                 class_labels: list[int] | None = None, steps: int | None = None, guidance: float | None = None,
                 shift: float | None = None, batch_size: int = 8, output: Literal["pil", "tensor"] = "pil"):
        """One image per (prompt or label, seed). Batching only groups the work; results do not depend on it."""
        n = len(prompts if prompts is not None else class_labels)
        seeds = list(range(n)) if seeds is None else seeds
        if len(seeds) != n:
            raise ValueError(f"{n} prompts but {len(seeds)} seeds")
        c = self.config
        steps, guidance, shift = steps or c.steps, c.guidance if guidance is None else guidance, shift or c.shift
        outs = []
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            cond, uncond = self._conditions(prompts[sl] if prompts is not None else None,
                                            class_labels[sl] if class_labels is not None else None)
            noise = self.initial_noise(seeds[sl]).to(self.device)
            z = euler_sample(cfg_velocity(self.unet, cond, uncond, guidance), noise, steps=steps, shift=shift)
            outs.append(self.decode(z).float().cpu())
        images = torch.cat(outs)
        return to_pil(images) if output == "pil" else images

    def protocol(self) -> dict:
        """What a result record needs to know about this pipeline."""
        return {"unet_config": self.unet.config.to_dict(), "unet_config_hash": self.unet.config.hash,
                "text": self.text.config.to_dict() if self.text is not None else None,
                "pipeline": asdict(self.config)}

    # --- persistence --------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        d = Path(directory)
        self.unet.save_pretrained(d / "unet")
        if self.text is not None:
            self.text.save_pretrained(d / "text")
        if self.decoder is not None:
            self.decoder.save_pretrained(d / "decoder")
        atomic_write_json(d / "pipeline.json", {"_class_name": "SnapGenPipeline", **asdict(self.config)})
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "SnapGenPipeline":
        from snapgen.text import TextEncoderStack

        d = require_path(directory, "SnapGen pipeline", "Pass a folder written by SnapGenPipeline.save_pretrained "
                         "(pipeline.json, unet/, text/), e.g. the output of `python -m snapgen.train`.",
                         ("pipeline.json", "unet"))
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
        return cls(unet, text, decoder, config).to(device)


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
