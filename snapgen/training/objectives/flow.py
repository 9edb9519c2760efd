"""Rectified flow (``snapgen.flow``): L = E_{t, noise} || v(x_t, t, c) - (noise - x0) ||^2.

The denoiser is the U-Net or, for a DiT preset (``--set unet=world-dit-s``), the world DiT (``snapgen.models.dit``):
same call, same loss, EMA, checkpoints and pipeline.

Draw order per micro-step (all from the step's generator; the published runs depend on it):
timesteps, noise, then the condition's dropout.
"""
from __future__ import annotations

import torch

from snapgen.flow import flow_loss, sample_timesteps
from snapgen.models.layers import set_split_depthwise
from snapgen.training.engine import Parts, StepOut
from snapgen.training.objectives.t2i import TextToImage, text_modules
from snapgen.training.t2i import build_denoiser, build_text, check_text_fits, unet_config


class RectifiedFlow(TextToImage):
    name = "flow"

    def build(self) -> Parts:
        self.ucfg = ucfg = unet_config(self.cfg)
        unet = build_denoiser(ucfg)                                      # SnapGenUNet, or WorldDiT for a DiT preset
        ema = build_denoiser(ucfg).requires_grad_(False)
        ema.load_state_dict(unet.state_dict())
        self.text = build_text(self.cfg) if ucfg.cond == "text" else None
        if self.text is not None:
            check_text_fits(self.text, ucfg)
        if self.cfg.channels_last:
            unet.to(memory_format=torch.channels_last)
        if self.cfg.split_depthwise:
            set_split_depthwise(unet)
        return Parts({"unet": unet, **text_modules(self.text)}, ema, "unet")

    def loss(self, net, batch: dict, g: torch.Generator, step: int) -> StepOut:
        x0 = batch["image"]                                              # (N, C, H, W)
        t = sample_timesteps(x0.shape[0], self.cfg.flow, g).to(self.device)
        noise = self._layout(torch.randn(x0.shape, generator=g).to(self.device))
        drawn = self.draw_condition(batch, g)
        loss, per_sample = net(self._loss, x0, t, noise, drawn)
        return StepOut(loss, {"loss": per_sample.detach()}, t)

    def _loss(self, modules, x0, t, noise, drawn):
        loss, per_sample, _ = flow_loss(modules["unet"], x0, t, noise, **self.condition(drawn))
        return loss, per_sample
