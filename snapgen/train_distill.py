"""Distillation training: multi-level KD (``--stage kd``) and LADD step distillation (``--stage ladd``).

    python -m snapgen.train_distill --stage kd --teacher runs/distill/teacher-small/pipeline \\
        --out runs/distill/kd --set unet=tiny-world steps=300
    python -m snapgen.train_distill --stage kd --teacher /models/sd3.5-large --out runs/kd-sd3 \\
        --set unet=snapgen-t2i vae=/models/sd3.5-large/vae text=snapgen clip_l=... clip_g=... gemma=...
    python -m snapgen.train_distill --stage ladd --teacher runs/distill/teacher-small/pipeline \\
        --init runs/distill/kd/pipeline --out runs/distill/ladd --set steps=200

Reuses ``snapgen.train``'s config fields, data, text, sampling of batches (exact resume: step s draws
from generators seeded by (seed, s, rank)), checkpoints and ``finalize`` (EMA pipeline in
``OUT/pipeline`` + ``OUT/train_config.json``, so ``python -m evals.run geneval --ckpt OUT/pipeline``
recognises the world). The stage's own modules (KD projector; LADD heads and their optimizer) travel
inside each checkpoint as ``distill_state.pt``. Losses: ``snapgen.distill`` and ``snapgen.ladd``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from snapgen import train as base
from snapgen.distill import FeatureProjector, KDConfig, feature_distillation, output_distillation, timestep_aware_loss
from snapgen.flow import interpolate, loss_by_t_bins, sample_timesteps, velocity_target
from snapgen.io import atomic_write_json
from snapgen.ladd import (Discriminator, LADDConfig, default_taps, hinge_d_loss, hinge_g_loss, sample_disc_timesteps,
                          sample_gen_timesteps)
from snapgen.models.unet import SnapGenUNet


@dataclass(frozen=True)
class DistillConfig(base.TrainConfig):
    out: str = "runs/distill/kd"            # output directory (never the lead's runs/tiny-world)
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
    ladd_disc_logit_mean: float = 1.0       # re-noising level s ~ logit-normal(mean, std)
    ladd_disc_logit_std: float = 1.0
    ladd_taps: str = ""                     # teacher feature names for the heads ("" = default_taps)
    ladd_head_hidden: int = 64              # head width
    ladd_adv_weight: float = 1.0            # generator adversarial weight
    ladd_distill_weight: float = 1.0        # generator output-distillation weight
    ladd_disc_lr: float = 2e-4              # head learning rate

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
_OPTIONAL_INT = {"proj_hidden", "threads", "stop_at"}   # None-defaulted ints (base.parse_overrides would keep strings)


def parse_overrides(cfg: DistillConfig, items: list[str]) -> DistillConfig:
    base_fields = {f.name for f in dataclasses.fields(base.TrainConfig)} - _OPTIONAL_INT
    ours = {f.name: f for f in dataclasses.fields(DistillConfig)}
    plain, changes = [], {}
    for item in items:
        key, _, value = item.partition("=")
        if key in base_fields:
            plain.append(item)
        elif key in ours:
            cur = getattr(DistillConfig(), key)
            if key in _OPTIONAL_INT:
                changes[key] = None if value.lower() in ("none", "null", "") else int(value)
            else:
                changes[key] = type(cur)(float(value)) if isinstance(cur, (int, float)) else value
        else:
            base.parse_overrides(cfg, [item])   # raises with close matches
    return dataclasses.replace(base.parse_overrides(cfg, plain), **changes)


# ------------------------------------------------------------------------------------------------
# Stages: each owns its extra modules and returns (loss to back-propagate, per-sample terms, t)


class KDStage:
    def __init__(self, cfg: DistillConfig, student: SnapGenUNet, teacher):
        self.cfg, self.kd, self.teacher = cfg, cfg.kd, teacher
        c_student = student.config.channels[-1]
        self.projector = (FeatureProjector(c_student, teacher.feature_channels[teacher.kd_feature], cfg.proj_hidden)
                          if cfg.kd_feature_weight > 0 else None)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"projector": self.projector} if self.projector is not None else {}

    def student_parameters(self):
        return list(self.projector.parameters()) if self.projector is not None else []

    def step(self, unet, x0, cond, prompts, g, device):
        t = sample_timesteps(x0.shape[0], self.cfg.flow, g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        x_t = interpolate(x0, noise, t)
        v, feat = unet(x_t, t, **cond, return_features=True)         # (N, C, H, W), (N, C_s, H/4, W/4)
        task = (v.float() - velocity_target(x0, noise).float()).square().flatten(1).mean(1)
        names = (self.teacher.kd_feature,) if self.projector is not None else ()
        with torch.no_grad():
            v_teacher, tfeat = self.teacher(x_t, t, prompts, features=names)
        terms = {"output": output_distillation(v, v_teacher)}
        if self.projector is not None:
            target = tfeat[self.teacher.kd_feature]                     # (N, C_t, h_t, w_t)
            terms["feature"] = feature_distillation(self.projector(feat, target.shape[-2:]), target)
        total, parts = timestep_aware_loss(task, terms, t, self.kd)
        return total.mean(), {"loss": total.detach(), "task": task.detach(),
                              **{k: v_.detach() for k, v_ in terms.items()}, **parts}, t


class LADDStage:
    def __init__(self, cfg: DistillConfig, teacher, pooled_dim: int, device):
        self.cfg, self.ladd, self.teacher = cfg, cfg.ladd, teacher
        taps = self.ladd.taps or default_taps(teacher)
        self.disc = Discriminator(teacher, taps, self.ladd.head_hidden, pooled_dim)
        self.disc.heads.to(device)
        self.disc_opt = torch.optim.AdamW(self.disc.head_parameters(), lr=self.ladd.disc_lr, betas=(0.0, 0.99))

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"disc_heads": self.disc.heads}

    def student_parameters(self):
        return []

    def step(self, unet, x0, cond, prompts, g, device):
        n, c = x0.shape[0], self.ladd
        t = sample_gen_timesteps(n, c, g).to(device)
        s = sample_disc_timesteps(n, c, g).to(device)
        noise, fake_noise, real_noise = (torch.randn(x0.shape, generator=g).to(device) for _ in range(3))
        x_t = interpolate(x0, noise, t)
        v = unet(x_t, t, **cond)
        x0_hat = x_t - t.view(-1, 1, 1, 1) * v                         # one-step prediction of x0
        fake_s, real_s = interpolate(x0_hat, fake_noise, s), interpolate(x0, real_noise, s)
        pooled = cond["pooled"]
        # discriminator step (heads only; the fake is detached)
        self.disc_opt.zero_grad(set_to_none=True)
        real_logit, fake_logit = self.disc(torch.cat([real_s, fake_s.detach()]), torch.cat([s, s]),
                                           list(prompts) * 2, torch.cat([pooled, pooled])).chunk(2)
        d = hinge_d_loss(real_logit, fake_logit)
        d.mean().backward()
        self.disc_opt.step()
        self.disc_opt.zero_grad(set_to_none=True)
        # generator: adversarial through the frozen teacher + output distillation
        g_adv = hinge_g_loss(self.disc(fake_s, s, list(prompts), pooled))
        with torch.no_grad():
            v_teacher, _ = self.teacher(x_t, t, prompts)
        distill = output_distillation(v, v_teacher)
        total = c.adv_weight * g_adv + c.distill_weight * distill
        return total.mean(), {"loss": total.detach(), "d": d.detach(), "g_adv": g_adv.detach(),
                              "distill": distill.detach(), "real_logit": real_logit.detach(),
                              "fake_logit": fake_logit.detach()}, t


# ------------------------------------------------------------------------------------------------
# Student, checkpoints


def build_student(cfg: DistillConfig):
    """(unet, text): from ``cfg.init`` (a pipeline) or fresh from ``cfg.unet`` + ``cfg.text``."""
    if cfg.init:
        from snapgen.pipeline import SnapGenPipeline

        pipe = SnapGenPipeline.from_pretrained(cfg.init)
        return pipe.unet.train(), pipe.text
    if cfg.stage == "ladd":
        raise ValueError("--stage ladd needs --init STUDENT_PIPE (a trained few-step student starts from a model)")
    torch.manual_seed(cfg.seed)
    return SnapGenUNet(base.unet_config(cfg)), base.build_text(cfg)


class _TextWithExtras:
    """Adapter so ``snapgen.train.save_checkpoint`` (which saves ``text`` into CK/text) also writes the
    stage's modules and optimizer into the same atomically renamed checkpoint folder."""

    def __init__(self, text, stage):
        self.text, self.stage = text, stage

    def save_pretrained(self, directory):
        d = Path(directory)
        if self.text is not None:
            self.text.save_pretrained(d)
        d.parent.mkdir(parents=True, exist_ok=True)
        blob = {k: m.state_dict() for k, m in self.stage.modules().items()}
        if hasattr(self.stage, "disc_opt"):
            blob["disc_opt"] = self.stage.disc_opt.state_dict()
        torch.save(blob, d.parent / "distill_state.pt")


def _resume(ck: Path, cfg: DistillConfig, unet, ema, text, opt, sched, stage) -> int:
    saved = json.loads((ck / "state.json").read_text())["config"]
    changed = {k: (saved.get(k), getattr(cfg, k)) for k in ("stage", "teacher", "init") if saved.get(k) != getattr(cfg, k)}
    if changed:
        raise ValueError(f"cannot resume {ck}: the config changed in {changed} (saved, now); use another --out")
    step = base._resume(ck, cfg, unet, ema, text, opt, sched)
    blob = torch.load(ck / "distill_state.pt", map_location="cpu", weights_only=False)
    for k, m in stage.modules().items():
        m.load_state_dict(blob[k])
    if "disc_opt" in blob:
        stage.disc_opt.load_state_dict(blob["disc_opt"])
    return step


# ------------------------------------------------------------------------------------------------
# Training


def _batch(cfg, dataset, step, micro, acc, text, unet_cfg):
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + (step * cfg.grad_accum + micro) * 7919 + acc.process_index)
    idx = base.batch_indices(step * cfg.grad_accum + micro, acc.process_index, acc.num_processes, cfg.batch_size,
                             len(dataset), cfg.seed)
    batch = base._collate([dataset[i] for i in idx])
    n = len(idx)
    drop = text.stack.sample_drop(n, g)
    ctx, pooled = text(batch["caption"], drop=drop)
    null = torch.stack(list(drop.values())).all(0)       # teacher gets its null condition only if all encoders dropped
    prompts = [None if null[i] else c for i, c in enumerate(batch["caption"])]
    cond = {"context": ctx.to(acc.device), "pooled": pooled.to(acc.device)}
    return batch["image"].to(acc.device), cond, prompts, g


def _log_record(step, cfg, acc, sched, dt, terms: list[dict], ts: list[torch.Tensor]) -> dict:
    t = torch.cat(ts)
    cat = {k: torch.cat([d[k] for d in terms]).float() for k in terms[0]}
    return {"step": step, "stage": cfg.stage, "loss": float(cat["loss"].mean()),
            "terms": {k: float(v.mean()) for k, v in cat.items()},
            "terms_by_t": {k: loss_by_t_bins(t, v) for k, v in cat.items()},
            "lr": sched.get_last_lr()[0], "step_time_s": dt,
            "images_per_s": cfg.batch_size * cfg.grad_accum * acc.num_processes / dt,
            "memory_mb": base._memory_mb(acc.device)}


def train_distill(cfg: DistillConfig, progress: bool = True) -> Path:
    """Run (or resume) a distillation stage; returns the output directory (``pipeline/`` when finished)."""
    from tqdm import tqdm

    from snapgen.teachers import load_teacher
    from snapgen.text import CachedText

    acc = base.make_accelerator(cfg)
    out = Path(cfg.out)
    teacher = load_teacher(cfg.teacher).to(acc.device)
    unet, text = build_student(cfg)
    if unet.config.cond != "text":
        raise ValueError("distillation needs a text-conditional student")
    ema = SnapGenUNet(unet.config).requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    stage = KDStage(cfg, unet, teacher) if cfg.stage == "kd" else LADDStage(cfg, teacher, unet.config.pooled_dim, acc.device)
    for m in stage.modules().values():
        m.to(acc.device)
    params = list(unet.parameters()) + list(text.trainable_parameters()) + stage.student_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: base.lr_at(s, cfg) / cfg.lr)
    start, ck = 0, base.latest_checkpoint(out)
    if ck is not None:
        start = _resume(ck, cfg, unet, ema, text, opt, sched, stage)
        acc.print(f"resumed from {ck} at step {start}")
    unet, opt = acc.prepare(unet, opt)
    ema.to(acc.device)
    dataset, cached = base.build_dataset(cfg), CachedText(text)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "train_config.json", {**cfg.to_dict(), "unet_config": ema.config.to_dict(),
                                                      "teacher_features": dict(teacher.feature_channels)})
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"distill-{cfg.stage}", unit="step",
               disable=not (progress and acc.is_main_process))
    for step in bar:
        t0, terms, ts = time.perf_counter(), [], []
        for micro in range(cfg.grad_accum):
            x0, cond, prompts, g = _batch(cfg, dataset, step, micro, acc, cached, ema.config)
            with acc.accumulate(unet):
                loss, per, t = stage.step(unet, x0, cond, prompts, g, acc.device)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
            terms.append(per)
            ts.append(t)
        sched.step()
        base.ema_update(ema, acc.unwrap_model(unet), cfg.ema_decay)
        if acc.is_main_process and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            rec = _log_record(step, cfg, acc, sched, time.perf_counter() - t0, terms, ts)
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        last = step == cfg.steps - 1
        stopping = cfg.stop_at is not None and step + 1 >= cfg.stop_at and not last
        if (step + 1) % cfg.ckpt_every == 0 or last or stopping:
            acc.wait_for_everyone()
            if acc.is_main_process:
                base.save_checkpoint(out, step + 1, acc.unwrap_model(unet), ema, _TextWithExtras(text, stage), opt,
                                     sched, cfg, cfg.keep_ckpts)
        if stopping:
            acc.print(f"stopped at step {step + 1} (stop_at); rerun without stop_at to resume")
            return out
    acc.wait_for_everyone()
    if acc.is_main_process:
        base.finalize(cfg, ema, text, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snapgen.train_distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=("kd", "ladd"), required=True)
    p.add_argument("--teacher", required=True, help="snapgen pipeline dir or local SD3/SD3.5 diffusers dir")
    p.add_argument("--init", default=None, help="student pipeline to start from (required for ladd)")
    p.add_argument("--out", default=None, help="output directory (default runs/distill/<stage>)")
    p.add_argument("--config", help="JSON file of DistillConfig fields")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, then exit")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        items = [f"{k}={v}" for k, v in STAGE_DEFAULTS[a.stage].items()]
        if a.config:
            items += [f"{k}={v}" for k, v in json.loads(Path(a.config).read_text()).items()]
        items += a.set + [f"stage={a.stage}", f"teacher={a.teacher}"] + ([f"init={a.init}"] if a.init else []) \
            + ([f"out={a.out}"] if a.out else [])
        cfg = parse_overrides(DistillConfig(), items)
        if a.dry_run:
            print(json.dumps({"config": cfg.to_dict(), "kd": cfg.kd.to_dict(), "ladd": cfg.ladd.to_dict()}, indent=2))
            return 0
        out = train_distill(cfg, progress=not a.no_progress)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {out / 'pipeline'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
