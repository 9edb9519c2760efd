"""FROZEN reference: the rectified-flow training loop of ``snapgen/train.py`` at commit 75b2f07, the last
trainer before the engine (``snapgen.training``). Do not edit: tests/test_training_engine.py checks that
the engine reproduces it bit for bit. Kept verbatim from that commit except: checkpoints, resume, the
JSONL log, the progress bar and ``finalize`` are dropped (the loop returns the U-Net and its EMA), and
the builders take the (field-compatible) ``TrainConfig`` of today.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from snapgen.config import UNetConfig
from snapgen.flow import flow_loss, sample_timesteps
from snapgen.models.unet import SnapGenUNet


def unet_config(cfg) -> UNetConfig:
    from snapgen.presets import PRESETS, get_preset

    if cfg.unet in PRESETS:
        return get_preset(cfg.unet)
    p = Path(cfg.unet)
    if not p.exists():
        get_preset(cfg.unet)  # raises with close matches
    return UNetConfig.from_dict(json.loads(p.read_text()))


def build_text(cfg):
    from snapgen.text import EncoderSpec, TextEncoderStack, TextStackConfig

    if cfg.text == "minilm":
        return TextEncoderStack(TextStackConfig((EncoderSpec("minilm", None, 16, cfg.text_drop_prob),), 384, 384))
    return TextEncoderStack(TextStackConfig.snapgen(cfg.clip_l, cfg.clip_g, cfg.gemma, drop_prob=cfg.text_drop_prob))


def build_dataset(cfg):
    from snapgen.data import datasets as D

    kind, _, arg = cfg.data.partition(":")
    if kind == "folder":
        return D.CaptionFolder(arg, cfg.resolution)
    if kind == "classes":
        return D.ClassFolder(arg, cfg.resolution)
    raise ValueError(f"the frozen reference is run on folder: or classes: data, not {cfg.data!r}")


def batch_indices(micro_step: int, rank: int, world: int, batch: int, n: int, seed: int) -> list[int]:
    start = micro_step * batch * world + rank * batch
    if n >= 10**8:
        return list(range(start, start + batch))
    out, perm, epoch = [], None, None
    for pos in range(start, start + batch):
        if pos // n != epoch:
            epoch = pos // n
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(perm[pos % n]))
    return out


def lr_at(step: int, cfg) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach().to(pe.dtype), 1 - decay)


def _collate(items: list[dict]) -> dict:
    out = {"image": torch.stack([it["image"] for it in items])}
    if "caption" in items[0]:
        out["caption"] = [it["caption"] for it in items]
    if "label" in items[0]:
        out["label"] = torch.tensor([it["label"] for it in items])
    return out


def _condition(batch: dict, unet_cfg: UNetConfig, text, g: torch.Generator, p_drop: float, device):
    n = batch["image"].shape[0]
    if unet_cfg.cond == "class":
        labels = batch["label"].clone()
        labels[torch.rand(n, generator=g) < p_drop] = unet_cfg.num_classes  # null class
        return {"class_labels": labels.to(device)}
    ctx, pooled = text(batch["caption"], drop=text.stack.sample_drop(n, g))
    return {"context": ctx.to(device), "pooled": pooled.to(device)}


def make_accelerator(cfg):
    from accelerate import Accelerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return Accelerator(cpu=cfg.cpu or not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                       gradient_accumulation_steps=cfg.grad_accum)


def train(cfg) -> tuple[SnapGenUNet, SnapGenUNet]:
    """The loop of commit 75b2f07 from step 0 to cfg.steps; returns (unet, ema)."""
    from snapgen.text import CachedText

    acc = make_accelerator(cfg)
    ucfg = unet_config(cfg)
    torch.manual_seed(cfg.seed)
    unet = SnapGenUNet(ucfg)
    ema = SnapGenUNet(ucfg).requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    text = build_text(cfg) if ucfg.cond == "text" else None
    params = list(unet.parameters()) + (list(text.trainable_parameters()) if text is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / cfg.lr)
    unet, opt = acc.prepare(unet, opt)
    ema.to(acc.device)
    dataset = build_dataset(cfg)
    cached = CachedText(text) if text is not None else None
    for step in range(cfg.steps):
        for micro in range(cfg.grad_accum):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + (step * cfg.grad_accum + micro) * 7919 + acc.process_index)
            idx = batch_indices(step * cfg.grad_accum + micro, acc.process_index, acc.num_processes, cfg.batch_size,
                                len(dataset), cfg.seed)
            batch = _collate([dataset[i] for i in idx])
            x0 = batch["image"].to(acc.device)
            t = sample_timesteps(x0.shape[0], cfg.flow, g).to(acc.device)
            noise = torch.randn(x0.shape, generator=g).to(acc.device)
            cond = _condition(batch, ucfg, cached, g, cfg.text_drop_prob, acc.device)
            with acc.accumulate(unet):
                loss, per_sample, _ = flow_loss(unet, x0, t, noise, **cond)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
        sched.step()
        ema_update(ema, acc.unwrap_model(unet), min(cfg.ema_decay, (1 + step) / (10 + step)))  # EMA warm-up
    return acc.unwrap_model(unet), ema
