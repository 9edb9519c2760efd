"""Multi-level knowledge distillation (``snapgen.distill``): the student's flow task loss mixed with
output distillation (student v vs teacher v) and feature distillation (projected student features vs
the teacher's last-layer features), each term rescaled to the task loss's size and weighted by w(t).

Trains the student U-Net, the text projection (if any) and the feature projector with one optimizer.
Draw order per micro-step: timesteps, noise, then the condition's dropout.
"""
from __future__ import annotations

import torch

from snapgen.distill import FeatureProjector, feature_distillation, output_distillation, timestep_aware_loss
from snapgen.flow import interpolate, sample_timesteps, velocity_target
from snapgen.models.taps import tap
from snapgen.training.engine import Parts, StepOut
from snapgen.training.objectives.distill import Distillation
from snapgen.training.objectives.t2i import text_modules


class KnowledgeDistillation(Distillation):
    name = "kd"

    def build(self) -> Parts:
        unet, ema = self.build_student()
        trained = {"unet": unet, **text_modules(self.text)}
        if self.cfg.kd_feature_weight > 0:
            c_teacher = self.teacher.feature_channels[self.teacher.kd_feature]
            trained["projector"] = FeatureProjector(unet.config.channels[-1], c_teacher, self.cfg.proj_hidden)
        return Parts(trained, ema, "unet")

    def loss(self, net, batch: dict, g: torch.Generator, step: int) -> StepOut:
        x0 = batch["image"]                                              # (N, C, H, W)
        t = sample_timesteps(x0.shape[0], self.cfg.flow, g).to(self.device)
        noise = self._layout(torch.randn(x0.shape, generator=g).to(self.device))
        drawn = self.draw_condition(batch, g)
        prompts = self.teacher_prompts(batch["caption"], drawn["drop"])
        x_t = interpolate(x0, noise, t)
        key = self.teacher.kd_feature
        with torch.no_grad():
            v_teacher, tfeat = self.teacher(x_t, t, prompts, features=(key,) if self.cfg.kd_feature_weight > 0 else ())
        grid = tuple(tfeat[key].shape[-2:]) if key in tfeat else None
        v, projected = net(self._student, x_t, t, drawn, grid)
        task = (v.float() - velocity_target(x0, noise).float()).square().flatten(1).mean(1)
        terms = {"output": output_distillation(v, v_teacher)}
        if projected is not None:
            terms["feature"] = feature_distillation(projected, tfeat[key])  # (N,) on the teacher's grid
        total, parts = timestep_aware_loss(task, terms, t, self.cfg.kd)
        return StepOut(total.mean(), {"loss": total.detach(), "task": task.detach(),
                                      **{k: v_.detach() for k, v_ in terms.items()}, **parts}, t)

    def _student(self, modules, x_t, t, drawn, grid):
        unet = modules["unet"]
        with tap(unet.tap_points(), ("last",)) as feats:
            v = unet(x_t, t, **self.condition(drawn))                   # (N, C, H, W)
        return v, (modules["projector"](feats["last"], grid) if "projector" in modules else None)  # feats: (N, C_s, H/4, W/4)
