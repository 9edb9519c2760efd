"""One checkpoint and resume format for every objective, and the log trimming that goes with resume.

    OUT/checkpoints/step-0000600/
        unet/ ema/ decoder/ ...      modules that have ``save_pretrained`` keep their own format (loadable alone,
                                     with their own weights.sha256.json, checked by ``from_pretrained``)
        text_proj.safetensors ...    every other module's state dict (KD projector, LADD heads, discriminator)
        optimizer.pt                 {"optimizer", "scheduler", "critic_optimizer"} state dicts
        weights.sha256.json          sha256 of every weights file above (``snapgen.io``), checked on load
        state.json                   {"step", "objective", "config", "config_hash", "torch_threads", "processes",
                                      "weights_manifest"}
    OUT/checkpoints/latest           name of the newest complete checkpoint

A checkpoint is written into ``step-XXXXXXX.partial``, renamed into place, and only then is ``latest``
rewritten (atomically); the oldest checkpoints beyond ``keep`` (and any of a later step, left by an
abandoned run) are deleted after that. A kill at any moment leaves either the previous or the new
checkpoint as ``latest``, never a half-written one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from snapgen.io import (WEIGHTS_MANIFEST, CorruptCheckpointError, atomic_write_json, atomic_write_text, sha256_json,
                        verify_weights_manifest, write_weights_manifest)

STATE = "state.json"
OPTIMIZERS = "optimizer.pt"


def _has_own_format(module: nn.Module) -> bool:
    return callable(getattr(module, "save_pretrained", None))


def save_checkpoint(out: Path, step: int, modules: dict[str, nn.Module], states: dict[str, object], meta: dict,
                    keep: int) -> Path:
    """Write ``modules`` (weights) and ``states`` (objects with ``state_dict``) as checkpoint ``step``."""
    from safetensors.torch import save_file

    root = Path(out) / "checkpoints"
    ck = root / f"step-{step:07d}"
    tmp = ck.with_name(ck.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        if _has_own_format(module):
            module.save_pretrained(tmp / name)
        else:
            save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()},
                      str(tmp / f"{name}.safetensors"))
    torch.save({k: s.state_dict() for k, s in states.items() if s is not None}, tmp / OPTIMIZERS)
    write_weights_manifest(tmp)
    atomic_write_json(tmp / STATE, {**meta, "step": step, "config_hash": sha256_json(meta.get("config", {}))[:12],
                                    "weights_manifest": WEIGHTS_MANIFEST})
    shutil.rmtree(ck, ignore_errors=True)
    os.replace(tmp, ck)
    atomic_write_text(root / "latest", ck.name + "\n")
    done = sorted(p for p in root.glob("step-*") if not p.name.endswith(".partial"))
    stale = [p for p in done if p.name > ck.name]          # from an abandoned run (restarted with resume=False)
    kept = [p for p in done if p.name <= ck.name]
    for old in stale + (kept[:-keep] if keep > 0 else []):
        shutil.rmtree(old, ignore_errors=True)
    return ck


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint ``OUT/checkpoints/latest`` names, or None for a fresh run."""
    f = Path(out) / "checkpoints" / "latest"
    if not f.exists():
        return None
    ck = f.parent / f.read_text().strip()
    if not (ck / STATE).exists():
        raise FileNotFoundError(f"{f} points at {ck}, which is incomplete; delete it or the 'latest' file to restart")
    return ck


def read_state(ck: Path) -> dict:
    return json.loads((Path(ck) / STATE).read_text())


def check_resumable(ck: Path, config: dict, keys: tuple[str, ...], objective: str,
                    legacy: dict | None = None) -> dict:
    """Refuse to resume when the objective or any of ``keys`` changed; returns state.json. ``legacy``: the value
    a field added since the checkpoint was written had then (a saved config without it meant that value)."""
    state = read_state(ck)
    saved = json.loads(json.dumps({**(legacy or {}), **state.get("config", {})}))
    now = json.loads(json.dumps(config))
    changed = {k: (saved.get(k), now.get(k)) for k in keys if saved.get(k) != now.get(k)}
    if state.get("objective", objective) != objective:
        changed["objective"] = (state.get("objective"), objective)
    if changed:
        raise ValueError(f"cannot resume {ck}: the config changed in {changed} (saved, now); use another --out")
    return state


# settings that may differ when a finished run is pointed at again (they change no weights)
HARMLESS_KEYS = ("out", "threads", "stop_at", "log_every", "cpu")


def check_not_finished_elsewise(ck: Path, config: dict, total_steps: int, legacy: dict | None = None) -> None:
    """A run whose latest checkpoint reached its ``steps`` is finished: pointing a command with other settings
    at it refuses (naming the differing keys) instead of rewriting its train_config.json over the old weights.
    Raising ``steps`` alone extends it (an ordinary resume); ``HARMLESS_KEYS`` may differ. ``legacy`` as in
    :func:`check_resumable` (a field the saved config lacks meant that value)."""
    state = read_state(ck)
    saved = json.loads(json.dumps({**(legacy or {}), **state.get("config", {})}))
    if int(state.get("step", 0)) < int(saved.get("steps", total_steps)):
        return
    now = json.loads(json.dumps(config))
    extend = isinstance(now.get("steps"), int) and now["steps"] > int(state["step"])   # more steps: a resume
    diff = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
            if k not in HARMLESS_KEYS and saved.get(k) != now.get(k) and not (k == "steps" and extend)}
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:8])
        raise ValueError(f"--out {ck.parent.parent}: cannot resume a finished run with other settings ({shown}); "
                         "choose another --out, delete that folder to retrain, or only raise steps to extend it")


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several error types on truncated or garbled files
        raise CorruptCheckpointError(f"checkpoint file '{path}' is corrupted (truncated or not safetensors): {e}; "
                                     "resume from an older checkpoint or retrain") from e


def load_checkpoint(ck: Path, modules: dict[str, nn.Module], states: dict[str, object]) -> dict:
    """Load weights into ``modules`` and state dicts into ``states`` (in place); returns state.json."""
    ck = Path(ck)
    verify_weights_manifest(ck, required=bool(read_state(ck).get("weights_manifest")))
    for name, module in modules.items():
        if (ck / name).is_dir():
            files = sorted((ck / name).glob("*.safetensors"))
            if len(files) != 1:
                raise ValueError(f"checkpoint {ck / name} should hold one .safetensors file, found {len(files)}")
            weights = _load_weights(files[0])
        elif (ck / f"{name}.safetensors").exists():
            weights = _load_weights(ck / f"{name}.safetensors")
        else:
            raise FileNotFoundError(f"checkpoint {ck} has no weights for {name!r}")
        missing, unexpected = module.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {ck / name} does not match the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    blob = torch.load(ck / OPTIMIZERS, map_location="cpu", weights_only=False)
    for key, obj in states.items():
        if obj is not None:
            obj.load_state_dict(blob[key])
    return read_state(ck)


def trim_log(path: Path, step: int) -> None:
    """Keep only the JSONL records of steps before ``step`` (a resumed run rewrites the later ones)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and _step_of(ln) < step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut by a kill: drop it
