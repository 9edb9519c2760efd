"""The one training loop. Objectives (``snapgen.training.objectives``) supply models, data and losses;
the loop owns everything else: accelerate, seeding, optimizers, LR schedule, EMA, checkpoints,
resume, logs.

Per optimizer step ``s`` and micro-step ``m`` (``grad_accum`` of them), on rank ``r``:

    g      = Generator(seed * 1_000_003 + (s * grad_accum + m) * 7919 + r)  # every random draw of the step
    batch  = objective.batch(s * grad_accum + m, r, world, g)               # data
    out    = objective.loss(net, batch, g, s)                               # critics frozen here
    backward(out.loss); clip; optimizer step                                 # main optimizer
    if out.critic_inputs: backward(objective.critic_loss(critic, ...)); critic optimizer step
then the LR scheduler step and the EMA update (``snapgen.training.ema``). Since the draws of step s
depend only on (seed, s, rank), a resumed run replays exactly what an uninterrupted run does.

Multi-process: every module an objective trains is registered in one ``Trainable`` container whose
``forward`` runs the objective's generator computation, and every critic in another; both go through
``accelerate.prepare`` with their optimizers, so DDP averages the gradients of every trainable
module (U-Net, text projection, KD projector, LADD heads, decoder discriminator), not only the U-Net.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import torch
from torch import nn

from snapgen.flow import loss_by_t_bins
from snapgen.io import atomic_write_json, check_writable_dir
from snapgen.training.checkpoint import (check_not_finished_elsewise, check_resumable, latest_checkpoint, load_checkpoint,
                                        save_checkpoint, trim_log)
from snapgen.training.ema import ema_decay_at, ema_update
from snapgen.training.optim import build_optimizer


@dataclass(frozen=True)
class LoopConfig:
    out: str                                # run directory: checkpoints/, log.jsonl, train_config.json
    steps: int                              # optimizer steps
    lr: float                               # main optimizer's peak learning rate
    grad_accum: int = 1                     # micro-steps per optimizer step
    warmup: int = 0                         # linear warm-up steps, then cosine decay to lr_min
    lr_min: float | None = None             # final learning rate (None = lr: constant after warm-up)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas of the main optimizer
    weight_decay: float = 0.0               # AdamW weight decay of the main optimizer
    grad_clip: float = 1.0                  # max global grad norm of the main optimizer's parameters (0 = off)
    ema_decay: float = 0.995                # EMA decay after warm-up
    optimizer: Literal["adamw", "muon"] = "adamw"  # main optimizer (snapgen.training.optim)
    muon_momentum: float = 0.95             # Muon's Nesterov momentum (optimizer="muon")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0                           # model init and every per-step draw
    log_every: int = 25                     # JSONL log period (steps); the last step always logs
    ckpt_every: int = 500                   # checkpoint period (steps); the last step always checkpoints
    keep_ckpts: int = 2                     # checkpoints kept on disk
    stop_at: int | None = None              # stop (checkpointed, resumable) after this step
    threads: int | None = None              # torch CPU threads (None = torch default)
    cpu: bool = False                       # force CPU even when CUDA exists

    def __post_init__(self):
        from snapgen.training.config import check_ranges

        check_ranges(self)


@dataclass
class Parts:
    """What an objective trains. ``trained`` share the main optimizer (in this order); ``trained[ema_of]``
    is averaged into ``ema``; ``critics`` share the objective's critic optimizer."""
    trained: dict[str, nn.Module]
    ema: nn.Module
    ema_of: str
    critics: dict[str, nn.Module] = field(default_factory=dict)


@dataclass
class StepOut:
    loss: torch.Tensor                      # scalar to back-propagate into the trained modules
    terms: dict[str, torch.Tensor]          # per-sample (N,) diagnostics, "loss" among them
    t: torch.Tensor | None = None           # per-sample timesteps (logs bin the terms by t)
    critic_inputs: Any = None               # handed to objective.critic_loss after the main step (None: skip)


class Objective(Protocol):
    name: str                               # "flow" | "kd" | "ladd" | "decoder"
    resume_keys: tuple[str, ...]            # config fields a resumed run must share with its checkpoint

    def build(self) -> Parts: ...           # called right after torch.manual_seed(seed)
    def critic_optimizer(self, params) -> torch.optim.Optimizer: ...
    def setup(self, device: torch.device) -> None: ...   # data, caches, frozen helpers
    def batch(self, micro_step: int, rank: int, world: int, g: torch.Generator) -> dict: ...
    def loss(self, net: nn.Module, batch: dict, g: torch.Generator, step: int) -> StepOut: ...
    def critic_loss(self, critic: nn.Module, inputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def record(self) -> dict: ...           # extra entries for train_config.json
    def finalize(self, parts: Parts, out: Path) -> None: ...


class Trainable(nn.ModuleDict):
    """Named modules under one root, so one DDP wrapper averages all their gradients. ``net(fn, *args)``
    runs ``fn(modules, *args)`` inside the (DDP, autocast) wrapper: objectives call their trained
    modules through it, which is what arms DDP's gradient hooks."""

    def forward(self, fn: Callable, *args, **kwargs):
        return fn(self, *args, **kwargs)


@dataclass
class RunResult:
    out: Path
    step: int                               # optimizer steps done
    finished: bool                          # False when stopped at stop_at
    last: dict[str, float]                  # mean terms of the last step run
    modules: dict[str, nn.Module]           # trained, critics and "ema", unwrapped


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """The generator of every random draw in micro-step ``micro_step`` (= step * grad_accum + micro)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + micro_step * 7919 + rank)


def lr_at(step: int, cfg) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``lr_min`` at ``steps``."""
    lr_min = cfg.lr if cfg.lr_min is None else cfg.lr_min
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return lr_min + 0.5 * (cfg.lr - lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


def make_accelerator(cfg: LoopConfig):
    """The accelerate ``Accelerator`` for a run (CPU when asked or when no CUDA device exists)."""
    from accelerate import Accelerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return Accelerator(cpu=cfg.cpu or not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                       gradient_accumulation_steps=cfg.grad_accum)


def close_distributed() -> None:
    """Destroy the process group at the end of a CLI run (torchrun / accelerate launch)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def frozen(modules: dict[str, nn.Module]):
    """Critics take no gradient from the generator's loss (they are called unwrapped, outside DDP)."""
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# ------------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Run:
    acc: Any
    parts: Parts
    net: nn.Module                          # prepared Trainable of parts.trained
    critic: nn.Module | None                # prepared Trainable of parts.critics
    opt: Any
    critic_opt: Any
    sched: Any
    params: list                            # the main optimizer's parameters (clipped together)
    start: int


def preflight(objective, loop: LoopConfig, config: dict, resume: bool = True) -> Path | None:
    """The checks made before any model is built (also by a command before it launches its ranks, so that a bad
    --out or a changed config is one clear error, not one per rank): a writable output folder, and a checkpoint
    there that may be resumed with ``config``. ``objective`` needs only ``name``, ``resume_keys`` (and optionally
    ``legacy_values``). Returns the checkpoint to resume from, or None."""
    check_writable_dir(loop.out)
    ck = latest_checkpoint(Path(loop.out)) if resume else None
    if ck is not None:
        legacy = getattr(objective, "legacy_values", None)
        check_not_finished_elsewise(ck, config, loop.steps, legacy)
        check_resumable(ck, config, objective.resume_keys, objective.name, legacy)
    return ck


def _prepare(objective: Objective, loop: LoopConfig, config: dict, resume: bool) -> _Run:
    ck = preflight(objective, loop, config, resume)     # refuse before any model is built
    acc = make_accelerator(loop)
    torch.manual_seed(loop.seed)
    parts = objective.build()
    opt, params = build_optimizer(loop.optimizer, parts.trained, loop.lr, loop.betas, loop.weight_decay,
                                  loop.muon_momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, loop) / loop.lr)
    critic_params = [p for m in parts.critics.values() for p in m.parameters()]
    critic_opt = objective.critic_optimizer(critic_params) if critic_params else None
    start = 0
    if ck is not None:
        state = load_checkpoint(ck, {**parts.trained, "ema": parts.ema, **parts.critics},
                                {"optimizer": opt, "scheduler": sched, "critic_optimizer": critic_opt})
        start = int(state["step"])
        acc.print(f"resumed from {ck} at step {start}")
    net, critic = Trainable(parts.trained), (Trainable(parts.critics) if parts.critics else None)
    if critic is None:
        net, opt = acc.prepare(net, opt)
    else:
        net, opt, critic, critic_opt = acc.prepare(net, opt, critic, critic_opt)
    parts.ema.to(acc.device)
    return _Run(acc, parts, net, critic, opt, critic_opt, sched, params, start)


def _micro_step(objective: Objective, run: _Run, loop: LoopConfig, step: int, micro: int) -> StepOut:
    acc = run.acc
    micro_step = step * loop.grad_accum + micro
    g = step_generator(loop.seed, micro_step, acc.process_index)
    batch = objective.batch(micro_step, acc.process_index, acc.num_processes, g)
    with acc.accumulate(*[m for m in (run.net, run.critic) if m is not None]):
        with frozen(run.parts.critics):
            res = objective.loss(run.net, batch, g, step)
        acc.backward(res.loss)
        if acc.sync_gradients and loop.grad_clip > 0:
            acc.clip_grad_norm_(run.params, loop.grad_clip)
        run.opt.step()
        run.opt.zero_grad(set_to_none=True)
        if run.critic is not None and res.critic_inputs is not None:
            d_loss, d_terms = objective.critic_loss(run.critic, res.critic_inputs)
            acc.backward(d_loss)
            run.critic_opt.step()
            run.critic_opt.zero_grad(set_to_none=True)
            res.terms.update({k: v.detach() for k, v in d_terms.items()})
    return res


def _log_record(objective: Objective, run: _Run, step: int, dt: float, outs: list[StepOut]) -> dict:
    names = [k for k in outs[0].terms if all(k in o.terms for o in outs)]
    cat = {k: torch.cat([o.terms[k].detach().reshape(-1) for o in outs]).float() for k in names}
    rec = {"step": step, "objective": objective.name, "loss": float(cat["loss"].mean()),
           "terms": {k: float(v.mean()) for k, v in cat.items()}}
    if outs[0].t is not None:
        t = torch.cat([o.t for o in outs])
        rec["loss_by_t"] = loss_by_t_bins(t, cat["loss"])
        if len(cat) > 1:
            rec["terms_by_t"] = {k: loss_by_t_bins(t, v) for k, v in cat.items() if v.numel() == t.numel()}
    n = run.acc.num_processes
    return {**rec, "lr": run.sched.get_last_lr()[0], "step_time_s": dt, "images_per_s": len(cat["loss"]) * n / dt,
            "memory_mb": memory_mb(run.acc.device), "processes": n, "threads": torch.get_num_threads()}


def _save(objective: Objective, run: _Run, loop: LoopConfig, config: dict, step: int) -> None:
    acc = run.acc
    acc.wait_for_everyone()
    if acc.is_main_process:
        net, critic = acc.unwrap_model(run.net), (acc.unwrap_model(run.critic) if run.critic is not None else {})
        meta = {"objective": objective.name, "config": config, "torch_threads": torch.get_num_threads(),
                "processes": acc.num_processes}
        save_checkpoint(Path(loop.out), step, {**net, "ema": run.parts.ema, **critic},
                        {"optimizer": run.opt, "scheduler": run.sched, "critic_optimizer": run.critic_opt},
                        meta, loop.keep_ckpts)


def _write_run_files(objective: Objective, run: _Run, loop: LoopConfig, config: dict) -> None:
    out = Path(loop.out)
    out.mkdir(parents=True, exist_ok=True)
    from snapgen.env import environment

    atomic_write_json(out / "train_config.json", {**config, **objective.record(), "objective": objective.name,
                                                  "torch_threads": torch.get_num_threads(),
                                                  "processes": run.acc.num_processes,
                                                  "environment": environment(run.acc.device)})
    trim_log(out / "log.jsonl", run.start)


def train_loop(objective: Objective, loop: LoopConfig, config: dict, progress: bool = True,
               resume: bool = True) -> RunResult:
    """Run (or resume from ``OUT/checkpoints/latest``) ``objective`` for ``loop.steps`` optimizer steps.

    ``config`` is the user-facing config (a JSON-able dict): saved in train_config.json and every
    checkpoint, and compared on resume (``objective.resume_keys``). ``resume=False`` starts from step 0
    even when OUT holds checkpoints (they are overwritten as the run proceeds)."""
    from tqdm import tqdm

    run = _prepare(objective, loop, config, resume)
    acc, out = run.acc, Path(loop.out)
    objective.setup(acc.device)
    if acc.is_main_process:
        _write_run_files(objective, run, loop, config)
    last: dict[str, float] = {}
    t_start = time.perf_counter()
    bar = tqdm(range(run.start, loop.steps), initial=run.start, total=loop.steps, unit="step", desc=objective.name,
               disable=not (progress and acc.is_main_process))
    for step in bar:
        t0 = time.perf_counter()
        outs = [_micro_step(objective, run, loop, step, micro) for micro in range(loop.grad_accum)]
        run.sched.step()
        ema_update(run.parts.ema, acc.unwrap_model(run.net)[run.parts.ema_of], ema_decay_at(step, loop.ema_decay))
        final = step == loop.steps - 1
        if acc.is_main_process and (step % loop.log_every == 0 or final):
            rec = _log_record(objective, run, step, time.perf_counter() - t0, outs)
            rec["elapsed_s"] = time.perf_counter() - t_start      # wall time since this process's first step
            rec["elapsed_from_step"] = run.start                  # (0, or the step a resumed run started at)
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            last = rec["terms"]
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        stopping = loop.stop_at is not None and step + 1 >= loop.stop_at and not final
        if (step + 1) % loop.ckpt_every == 0 or final or stopping:
            _save(objective, run, loop, config, step + 1)
        if stopping:
            acc.print(f"stopped at step {step + 1} (stop_at); rerun without stop_at to resume")
            return _result(run, out, step + 1, False, last)
    acc.wait_for_everyone()
    if acc.is_main_process:
        objective.finalize(run.parts, out)
    acc.wait_for_everyone()  # OUT/pipeline exists on return, for every rank (a next stage may load it)
    return _result(run, out, max(run.start, loop.steps), True, last)


def _result(run: _Run, out: Path, step: int, finished: bool, last: dict) -> RunResult:
    net = run.acc.unwrap_model(run.net)
    critic = run.acc.unwrap_model(run.critic) if run.critic is not None else {}
    return RunResult(out, step, finished, last, {**net, **critic, "ema": run.parts.ema})
