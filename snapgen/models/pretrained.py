"""One save/load convention for every snapgen model: ``save_pretrained(dir)`` / ``from_pretrained(dir)``.

    <dir>/config.json               the config's ``to_dict()`` + ``_class_name`` + ``config_hash``
    <dir>/<weights_name>            safetensors (absent when the model saves no tensors)

Used by ``SnapGenUNet``, ``TinyDecoder`` and ``TextEncoderStack``; a subclass names its files, its config class
and what it saves. Kept small on purpose: diffusers' ``ModelMixin`` is meant to take its place (a later
issue). Modules without a config of their own (the KD projector, LADD heads, discriminators) are saved as plain
state dicts by the training engine's checkpoints (``snapgen.training.checkpoint``), not by this mixin.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch

from snapgen.io import atomic_write_bytes, atomic_write_json, require_path


class CorruptCheckpointError(ValueError):
    """A checkpoint folder exists but its config or weights cannot be read or do not match."""


class PretrainedMixin:
    """``cls(config)`` builds the model; ``self.config`` is a frozen dataclass with ``to_dict``, ``from_dict``
    and ``hash``."""

    config_class: ClassVar[type]                     # the config dataclass
    config_name: ClassVar[str] = "config.json"
    weights_name: ClassVar[str] = "model.safetensors"
    weights_metadata: ClassVar[dict[str, str] | None] = {"format": "pt"}  # safetensors header metadata
    legacy_names: ClassVar[tuple[tuple[str, str], ...]] = ()  # (config, weights) names of older saves, still read
    what: ClassVar[str] = "checkpoint"               # for error messages: "<what>: '<path>' does not exist"
    how: ClassVar[str] = "Pass a folder written by save_pretrained (config.json + safetensors)."

    # --- what is saved (overridable) ------------------------------------------------------------------
    def config_json(self) -> dict[str, Any]:
        return {"_class_name": type(self).__name__, **self.config.to_dict(), "config_hash": self.config.hash}

    def saved_state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_saved_state(self, state: dict[str, torch.Tensor], path: Path) -> None:
        expected = self.saved_state()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        bad = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
        if missing or unexpected or bad:
            raise CorruptCheckpointError(f"weights in '{path}' do not match {self.config_name}: missing={missing[:5]} "
                                         f"unexpected={unexpected[:5]} shape_mismatch={bad[:5]}")
        with torch.no_grad():
            for k, v in state.items():
                expected[k].copy_(v)

    # --- save / load -----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.saved_state().items()}
        if state:
            atomic_write_bytes(d / self.weights_name, save(state, metadata=self.weights_metadata))
        atomic_write_json(d / self.config_name, self.config_json())
        return d

    @classmethod
    def _names(cls, d: Path) -> tuple[str, str]:
        for names in ((cls.config_name, cls.weights_name),) + cls.legacy_names:
            if (d / names[0]).exists():
                return names
        return cls.config_name, cls.weights_name

    @classmethod
    def read_config(cls, directory: str | Path):
        d = require_path(directory, cls.what, cls.how)
        config_name, _ = cls._names(d)
        path = require_path(d / config_name, cls.what, cls.how)
        try:
            return cls.config_class.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError) as e:
            raise CorruptCheckpointError(f"{cls.what} config '{path}' is unreadable: {e}") from e

    @classmethod
    def from_pretrained(cls, directory: str | Path, expected=None, map_location: str | torch.device = "cpu"):
        """Build from ``directory``; ``expected``: refuse a checkpoint of another config."""
        from safetensors.torch import load_file

        config = cls.read_config(directory)
        d = Path(directory).expanduser()
        if expected is not None and expected != config:
            ex, got = expected.to_dict(), config.to_dict()                 # None: not written (at its default)
            diff = {k: (ex.get(k), got.get(k)) for k in sorted(set(ex) | set(got)) if ex.get(k) != got.get(k)}
            raise ValueError(f"checkpoint {d} is another variant: differs in {diff} (expected, found)")
        model = cls(config)
        if model.saved_state():
            path = require_path(d / cls._names(d)[1], cls.what, cls.how)
            try:
                state = load_file(str(path))
            except Exception as e:  # safetensors raises its own error types for truncated or garbled files
                raise CorruptCheckpointError(f"{cls.what} weights '{path}' are unreadable (corrupted: truncated or "
                                             f"not safetensors): {e}") from e
            model.load_saved_state(state, path)
        return model.to(map_location)
