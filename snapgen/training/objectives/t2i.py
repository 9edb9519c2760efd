"""What the rectified-flow, KD and LADD objectives share: data, the text condition (its random
dropout drawn from the step's generator, its trainable projection run inside the trained net), the
train_config.json record and the final EMA pipeline + sample grid."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from snapgen.models.dit import WorldDiT
from snapgen.models.unet import SnapGenUNet
from snapgen.training.engine import Parts
from snapgen.training.t2i import (LEGACY_VALUES, RESUME_KEYS, TrainConfig, batch_indices, build_dataset, collate,
                                  prefill_world_prompts)


def text_modules(text) -> dict[str, nn.Module]:
    """The text stack's trainable part (the Gemma projection), if it has one."""
    return {"text_proj": text.proj} if text is not None and any(True for _ in text.proj.parameters()) else {}


class TextToImage:
    """Base of the text-to-image objectives; subclasses set ``self.ucfg``/``self.text`` in ``build``."""

    resume_keys = RESUME_KEYS
    legacy_values = LEGACY_VALUES          # fields added since a checkpoint was written, at their value then

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.ucfg = None
        self.text = None
        self.device = torch.device("cpu")

    def critic_optimizer(self, params):
        raise NotImplementedError(f"{type(self).__name__} has no critic")

    def critic_loss(self, critic, inputs):
        raise NotImplementedError(f"{type(self).__name__} has no critic")

    def setup(self, device: torch.device) -> None:
        from snapgen.text import CachedText

        self.device = device
        self.dataset = build_dataset(self.cfg)
        self.cached = CachedText(self.text) if self.text is not None else None
        if self.cached is not None and self.cfg.data == "world":
            prefill_world_prompts(self.cached, self.cfg)

    def batch(self, micro_step: int, rank: int, world: int, g: torch.Generator) -> dict:
        size, first, factor = self.cfg.micro_batch(micro_step, world)
        idx = batch_indices(micro_step, rank, world, size, len(self.dataset), self.cfg.seed, first)
        batch = collate([self.dataset[i] for i in idx])
        image = batch["image"].to(self.device)
        if factor > 1:  # progressive resolution's low-res phase: box filter, the mean of each factor x factor block
            # PAPER-UNKNOWN: how SnapGen's 256 px stage gets its images (resized from the same data, filter not
            # stated) and whether it shifts timesteps by resolution (SD3 does); chose a box filter and the same
            # timestep distribution at both sides
            image = torch.nn.functional.avg_pool2d(image, factor)
        batch["image"] = self._layout(image)
        return batch

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def draw_condition(self, batch: dict, g: torch.Generator) -> dict:
        """The random part of the condition: class-label or per-encoder text dropout, drawn from ``g``."""
        n = batch["image"].shape[0]
        if self.ucfg.cond == "class":
            labels = batch["label"].clone()
            labels[torch.rand(n, generator=g) < self.cfg.text_drop_prob] = self.ucfg.num_classes  # null class
            return {"class_labels": labels.to(self.device)}
        return {"captions": batch["caption"], "drop": self.text.sample_drop(n, g)}

    def condition(self, drawn: dict) -> dict:
        """U-Net keyword arguments; call inside the trained net (the text projection is trained)."""
        if "class_labels" in drawn:
            return drawn
        ctx, pooled = self.cached(drawn["captions"], drop=drawn["drop"], device=self.device)
        return {"context": ctx, "pooled": pooled}

    def record(self) -> dict:
        return {"unet_config": self.ucfg.to_dict()}

    def finalize(self, parts: Parts, out: Path) -> None:
        finalize(self.cfg, parts.ema, self.text, out)


def finalize(cfg: TrainConfig, ema: SnapGenUNet | WorldDiT, text, out: Path) -> Path:
    """Write the EMA pipeline (``OUT/pipeline``) and, on the world, a sample grid for fixed captions."""
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline, image_grid, sample_seed

    pcfg = PipelineConfig(decoder="vae" if cfg.vae else "pixel", resolution=cfg.resolution, steps=cfg.sample_steps,
                          guidance=cfg.sample_guidance, null_class=ema.config.num_classes if ema.config.cond == "class" else None)
    decoder = None
    if cfg.vae:
        from diffusers import AutoencoderKL

        decoder = AutoencoderKL.from_pretrained(cfg.vae)
        pcfg = dataclasses.replace(pcfg, latent_scaling=decoder.config.scaling_factor,
                                   latent_shift=decoder.config.shift_factor or 0.0)
    ema_cpu = type(ema)(ema.config)                                      # SnapGenUNet or WorldDiT
    ema_cpu.load_state_dict({k: v.detach().cpu() for k, v in ema.state_dict().items()})
    pipe = SnapGenPipeline(ema_cpu, text.cpu() if text is not None else None, decoder, pcfg)
    tmp = out / "pipeline.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    shutil.rmtree(out / "pipeline", ignore_errors=True)
    os.replace(tmp, out / "pipeline")
    if ema.config.cond == "text" and cfg.data == "world":
        from snapgen.io import atomic_save_image

        images = pipe.generate(SAMPLE_CAPTIONS, [sample_seed(i, 0, 0) for i in range(len(SAMPLE_CAPTIONS))])
        atomic_save_image(out / "samples.png", image_grid(images, cols=4, captions=SAMPLE_CAPTIONS))
    return out / "pipeline"


SAMPLE_CAPTIONS = ["a photo of a red circle", "a photo of a blue square", "a photo of a green triangle",
                   "a photo of a yellow cross", "a photo of two circles", "a photo of three squares",
                   "a photo of a circle and a square", "a photo of a triangle left of a cross",
                   "a photo of a white circle and a purple square", "a photo of a square above a circle",
                   "a photo of an orange triangle", "a photo of four crosses"]
