"""Distillation runs (KD and LADD objectives): their config and what both share (student, teacher, EMA,
the teacher's view of the student's dropped captions)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from snapgen.distill import KDConfig
from snapgen.ladd import LADDConfig
from snapgen.models.layers import set_split_depthwise
from snapgen.models.unet import SnapGenUNet
from snapgen.training.objectives.t2i import TextToImage
from snapgen.training.t2i import RESUME_KEYS, TrainConfig, build_denoiser, build_text, check_text_fits, unet_config


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    out: str = "runs/distill/kd"            # output directory (never the lead's runs/tiny-world)
    processes: int = 1                      # world size (snapgen.train_distill does not launch; use torchrun)
    threads: int | None = 2                 # torch CPU threads per process
    stage: Literal["kd", "ladd"] = "kd"     # multi-level KD, or LADD step distillation
    teacher: str = ""                       # snapgen pipeline dir or local SD3/SD3.5 diffusers dir
    init: str = ""                          # student pipeline to start from ("" = fresh `unet`); required for ladd
    # --- KD (snapgen.distill.KDConfig) ---
    kd_output_weight: float = 1.0           # lambda of output distillation
    kd_feature_weight: float = 1.0          # lambda of feature distillation (0 = no projector)
    kd_weighting: str = "u-shape"           # teacher weight w(t): uniform | u-shape | linear
    kd_w_max: float = 0.75                  # w(t) peak
    kd_w_min: float = 0.25                  # w(t) trough
    kd_max_ratio: float = 100.0             # clamp of the detached ratio L_task / L_kd
    kd_ratio: str = "per_sample"            # per_sample | batch
    proj_hidden: int | None = None          # projector hidden width (None = teacher channels)
    # --- LADD (snapgen.ladd.LADDConfig); tuples as comma-separated strings ---
    ladd_timesteps: str = "1.0,0.75,0.5,0.25"  # student timesteps
    ladd_probs: str = "0.4,0.2,0.2,0.2"     # their probabilities
    ladd_disc_logit_mean: float = 1.0       # re-noising level s ~ logit-normal(mean, std): mean
    ladd_disc_logit_std: float = 1.0        # re-noising level s ~ logit-normal(mean, std): std
    ladd_taps: str = ""                     # teacher feature names for the heads ("" = default_taps)
    ladd_head_hidden: int = 64              # head width
    ladd_adv_weight: float = 1.0            # generator adversarial weight
    ladd_distill_weight: float = 1.0        # generator output-distillation weight
    ladd_disc_lr: float = 2e-4              # head learning rate
    ladd_chance_margin: float = 0.05        # the critic is "at chance" when its balanced accuracy <= 0.5 + this

    @property
    def kd(self) -> KDConfig:
        return KDConfig(self.kd_output_weight, self.kd_feature_weight, self.kd_weighting, self.kd_w_max,
                        self.kd_w_min, self.kd_max_ratio, self.kd_ratio)

    @property
    def ladd(self) -> LADDConfig:
        floats = lambda s: tuple(float(x) for x in s.split(",") if x.strip())
        return LADDConfig(floats(self.ladd_timesteps), floats(self.ladd_probs), self.ladd_disc_logit_mean,
                          self.ladd_disc_logit_std, tuple(x for x in self.ladd_taps.split(",") if x.strip()),
                          self.ladd_head_hidden, self.ladd_adv_weight, self.ladd_distill_weight, self.ladd_disc_lr)


STAGE_DEFAULTS = {  # applied before the user's overrides
    "kd": {"out": "runs/distill/kd"},
    "ladd": {"out": "runs/distill/ladd", "sample_steps": "4", "lr": "1e-4", "warmup": "10", "lr_min": "1e-5"},
}


def build_student(cfg: DistillConfig):
    """(unet, text): from ``cfg.init`` (a pipeline) or fresh from ``cfg.unet`` + ``cfg.text``."""
    if cfg.init:
        from snapgen.pipeline import SnapGenPipeline

        pipe = SnapGenPipeline.from_pretrained(cfg.init)
        return pipe.unet.train(), pipe.text
    if cfg.stage == "ladd":
        raise ValueError("--stage ladd needs --init STUDENT_PIPE (a trained few-step student starts from a model)")
    unet = build_denoiser(unet_config(cfg))
    return unet, build_text(cfg)


class Distillation(TextToImage):
    """Base of KD and LADD: a text-conditional student (+ EMA) and a frozen teacher.

    ``teacher``/``student`` may be passed in (tests, notebooks); else they are loaded from the config."""

    resume_keys = RESUME_KEYS + ("stage", "teacher", "init")

    def __init__(self, cfg: DistillConfig, teacher=None, student=None):
        super().__init__(cfg)
        self.teacher, self._given_student = teacher, student

    def build_student(self) -> tuple[SnapGenUNet, SnapGenUNet]:
        """(student, its EMA copy); also sets ``self.text``, ``self.ucfg`` and loads the teacher."""
        from snapgen.teachers import load_teacher

        unet, self.text = self._given_student or build_student(self.cfg)
        self.ucfg = unet.config
        if unet.config.cond != "text":
            raise ValueError("distillation needs a text-conditional student")
        check_text_fits(self.text, unet.config)
        if not isinstance(unet, SnapGenUNet) and self.cfg.stage == "kd" and self.cfg.kd_feature_weight > 0:
            raise ValueError(f"a {type(unet).__name__} student has no U-Net feature tap for feature distillation: "
                             "use a U-Net student, or kd_feature_weight=0")
        ema = type(unet)(unet.config).requires_grad_(False)
        ema.load_state_dict(unet.state_dict())
        if self.cfg.channels_last:
            unet.to(memory_format=torch.channels_last)
        if self.cfg.split_depthwise:
            set_split_depthwise(unet)
        self.teacher = self.teacher if self.teacher is not None else load_teacher(self.cfg.teacher)
        return unet, ema

    def setup(self, device: torch.device) -> None:
        self.teacher.to(device)
        super().setup(device)

    def teacher_prompts(self, captions: list[str], drop: dict[str, torch.Tensor]) -> list[str | None]:
        """The teacher gets its own null condition only where the student dropped every encoder."""
        null = torch.stack(list(drop.values())).all(0)
        return [None if null[i] else c for i, c in enumerate(captions)]

    def record(self) -> dict:
        return {**super().record(), "teacher_features": dict(self.teacher.feature_channels)}
