"""LADD step distillation (``snapgen.ladd``): the student predicts x0 in one step from x_t at a
generator timestep, the prediction and the real x0 are re-noised to a level s, and the frozen teacher's
features + trainable heads judge them (hinge losses), plus output distillation.

Generator step first (heads frozen; adversarial + distillation), then the critic step on the detached
re-noised fake and real from the same forward (heads only, their own AdamW). Draw order per micro-step:
generator timesteps, re-noising levels, three noises (x_t, fake, real), then the condition's dropout.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch

from snapgen.distill import output_distillation
from snapgen.flow import interpolate, predict_x0
from snapgen.ladd import Discriminator, default_taps, hinge_d_loss, hinge_g_loss, sample_disc_timesteps, \
    sample_gen_timesteps
from snapgen.io import atomic_write_json
from snapgen.training.engine import Parts, StepOut
from snapgen.training.objectives.distill import Distillation
from snapgen.training.objectives.t2i import text_modules


class LADD(Distillation):
    name = "ladd"

    def build(self) -> Parts:
        unet, ema = self.build_student()
        c = self.cfg.ladd
        self.disc = Discriminator(self.teacher, c.taps or default_taps(self.teacher), c.head_hidden,
                                  unet.config.pooled_dim)
        return Parts({"unet": unet, **text_modules(self.text)}, ema, "unet", critics={"disc_heads": self.disc.heads})

    def critic_optimizer(self, params):
        return torch.optim.AdamW(params, lr=self.cfg.ladd.disc_lr, betas=(0.0, 0.99))

    def loss(self, net, batch: dict, g: torch.Generator, step: int) -> StepOut:
        x0, c = batch["image"], self.cfg.ladd                            # (N, C, H, W)
        n = x0.shape[0]
        t = sample_gen_timesteps(n, c, g).to(self.device)
        s = sample_disc_timesteps(n, c, g).to(self.device)
        noise, fake_noise, real_noise = (self._layout(torch.randn(x0.shape, generator=g).to(self.device))
                                         for _ in range(3))
        drawn = self.draw_condition(batch, g)
        prompts = self.teacher_prompts(batch["caption"], drawn["drop"])
        x_t = interpolate(x0, noise, t)
        v, pooled = net(self._student, x_t, t, drawn)
        fake_s = interpolate(predict_x0(x_t, t, v), fake_noise, s)       # one-step x0 prediction, re-noised
        real_s = interpolate(x0, real_noise, s)
        g_adv = hinge_g_loss(self.disc(fake_s, s, prompts, pooled))      # through the frozen teacher + heads
        with torch.no_grad():
            v_teacher, _ = self.teacher(x_t, t, prompts)
        distill = output_distillation(v, v_teacher)
        total = c.adv_weight * g_adv + c.distill_weight * distill
        terms = {"loss": total.detach(), "g_adv": g_adv.detach(), "distill": distill.detach()}
        return StepOut(total.mean(), terms, t, (real_s.detach(), fake_s.detach(), s, prompts, pooled.detach()))

    def _student(self, modules, x_t, t, drawn):
        cond = self.condition(drawn)
        return modules["unet"](x_t, t, **cond), cond["pooled"]

    def critic_loss(self, critic, inputs):
        real_s, fake_s, s, prompts, pooled = inputs
        logits = critic(self._logits, torch.cat([real_s, fake_s]), torch.cat([s, s]), list(prompts) * 2,
                        torch.cat([pooled, pooled]))
        real_logit, fake_logit = logits.chunk(2)
        d = hinge_d_loss(real_logit, fake_logit)
        real_logit, fake_logit = real_logit.detach().reshape(-1), fake_logit.detach().reshape(-1)
        # whether the critic tells real from fake: accuracy at threshold 0 on each, and the logit gap
        return d.mean(), {"d": d.detach(), "real_logit": real_logit, "fake_logit": fake_logit,
                          "d_real_acc": (real_logit > 0).float(), "d_fake_acc": (fake_logit < 0).float(),
                          "d_logit_gap": real_logit - fake_logit}

    def _logits(self, modules, x_s, s, prompts, pooled):
        return self.disc(x_s, s, prompts, pooled)                        # heads = modules["disc_heads"]

    def finalize(self, parts, out: Path) -> None:
        super().finalize(parts, out)
        summary = discriminator_summary(out / "log.jsonl", self.cfg.ladd_chance_margin)
        atomic_write_json(out / "discriminator.json", summary)
        if summary["at_chance"]:
            msg = (f"LADD: the discriminator stayed at chance over the last {summary['window_steps']} logged steps "
                   f"(balanced accuracy {summary['balanced_acc']:.3f}, logit gap {summary['logit_gap']:.3f}; "
                   f"needs > {0.5 + self.cfg.ladd_chance_margin:.2f}): this run's few-step gain is not adversarial. "
                   f"Raise ladd_disc_lr or ladd_head_hidden, or train longer; see {out / 'discriminator.json'}")
            warnings.warn(msg, DiscriminatorAtChanceWarning, stacklevel=2)
            print(f"WARNING: {msg}", file=sys.stderr, flush=True)


class DiscriminatorAtChanceWarning(UserWarning):
    """A LADD run whose critic never learned to tell real from fake."""


def discriminator_summary(log: Path, margin: float = 0.05, tail: float = 0.25) -> dict:
    """From a LADD run's ``log.jsonl``: the critic's mean real / fake accuracy and logit gap over the last ``tail``
    of the logged steps; ``at_chance`` when the balanced accuracy is not above 0.5 + ``margin``."""
    rows = [json.loads(x) for x in Path(log).read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "d_real_acc" in r.get("terms", {})]
    if not rows:
        raise ValueError(f"{log}: no logged critic step (d_real_acc); was it written by a LADD run?")
    window = rows[-max(1, round(len(rows) * tail)):]

    def mean(k: str) -> float:
        return sum(r["terms"][k] for r in window) / len(window)

    real, fake, gap = mean("d_real_acc"), mean("d_fake_acc"), mean("d_logit_gap")
    balanced = (real + fake) / 2
    return {"real_acc": real, "fake_acc": fake, "balanced_acc": balanced, "logit_gap": gap,
            "window_steps": len(window), "first_step": window[0]["step"], "last_step": window[-1]["step"],
            "chance_margin": margin, "at_chance": bool(balanced <= 0.5 + margin)}
