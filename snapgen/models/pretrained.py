"""One save/load convention for every snapgen model: diffusers' ``ModelMixin`` + ``ConfigMixin``.

    <dir>/config.json                          the typed config's ``to_dict()`` + ``config_hash`` (+ diffusers'
                                               ``_class_name`` / ``_diffusers_version``), via ``ConfigMixin``
    <dir>/diffusion_pytorch_model.safetensors  the weights, via ``ModelMixin.save_pretrained``

so ``save_pretrained`` / ``from_pretrained`` are diffusers' own (offloading, dtype, ``DiffusionPipeline`` loading
all work), and ``model.config`` stays the project's frozen, typed dataclass (``UNetConfig`` with its
``StageSpec`` stages, ``TinyDecoderConfig``, ...): the flat JSON form is what diffusers registers and writes,
``config_class.from_dict`` rebuilds the typed form on load (``from_config``). The raw diffusers dict is
``model.config_dict``.

What is still ours, and why:
* ``from_pretrained`` is strict: a checkpoint with missing, unexpected or mis-shaped weights is a
  ``CorruptCheckpointError`` (diffusers only warns and leaves the weights randomly initialised), and
  ``expected=`` refuses a checkpoint of another config.
* Integrity: ``save_pretrained`` (every subclass's, wrapped by ``__init_subclass__`` when it has its own, e.g. the
  text stack's) writes ``<dir>/weights.sha256.json`` (``snapgen.io.write_weights_manifest``) after the weights, and
  ``from_pretrained`` (ours and, through it, ``DiffusionPipeline.from_pretrained``'s) checks the weights against
  it before it returns the model (``snapgen.io.verify_weights_folder``; after reading them, so a missing or
  truncated file keeps its own error): a flipped byte anywhere in a tensor is a ``CorruptWeightsError`` naming the
  file, where safetensors alone only checks the header. A folder with no
  manifest of its own is checked against a manifest above it that lists its files (a training checkpoint's, the
  shipped world's ``manifest.json``); one that none lists (written before manifests) loads unchecked, with one
  ``UnverifiedWeightsWarning`` per process (docs/reproducibility.md).
* Folders written before this convention still load: the U-Net's files already had diffusers' names; the tiny
  decoder's ``model.safetensors`` and the text stack's ``text_config.json`` / ``text_proj.safetensors`` are read
  by the legacy path (``legacy_names``); ``python -m snapgen.convert`` rewrites a whole pipeline folder.
Modules without a config of their own (the KD projector, LADD heads, discriminators) are saved as plain state
dicts by the training engine's checkpoints (``snapgen.training.checkpoint``), not by this mixin.
"""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import ConfigMixin, ModelMixin

__all__ = ["CorruptCheckpointError", "CorruptWeightsError", "ModelMixin", "PretrainedMixin",
           "UnverifiedWeightsWarning", "WEIGHTS_NAME"]

from snapgen.io import (WEIGHTS_MANIFEST, CorruptCheckpointError, CorruptWeightsError, require_path,
                        verify_weights_folder, weights_files, write_weights_manifest)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # diffusers' file name (SAFETENSORS_WEIGHTS_NAME)
_DIFFUSERS_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values", "config_hash")


class UnverifiedWeightsWarning(UserWarning):
    """Weights loaded from a folder that no sha256 manifest covers (written before manifests existed)."""


_warned_unverified = False


def write_manifest(directory: str | Path) -> None:
    """``weights.sha256.json`` for the weights just saved in ``directory`` (none when it holds no weights file:
    a text stack without trainable projections saves only its config)."""
    if weights_files(directory):
        write_weights_manifest(directory)


def verify_loaded(directory: Path, what: str) -> None:
    """Check ``directory``'s weights against their manifest (a clear ``CorruptWeightsError`` naming the file);
    a folder that no manifest covers loads, with one warning per process."""
    global _warned_unverified
    if verify_weights_folder(directory) is None and weights_files(directory) and not _warned_unverified:
        _warned_unverified = True
        warnings.warn(f"{what} '{directory}' has no {WEIGHTS_MANIFEST} (written before weights manifests): loaded "
                      "without a sha256 check; save it again (save_pretrained, or `python -m snapgen.convert` for a "
                      "pipeline) to add one. Further folders without one load without this warning.",
                      UnverifiedWeightsWarning, stacklevel=3)


class PretrainedMixin(ModelMixin, ConfigMixin):
    """``cls(config)`` builds the model and assigns ``self.config = config`` (a frozen dataclass with
    ``to_dict``, ``from_dict`` and ``hash``); the assignment registers the flat form with diffusers."""

    config_class: ClassVar[type]                     # the config dataclass
    config_name = "config.json"                      # ConfigMixin's file name
    legacy_names: ClassVar[tuple[tuple[str, str], ...]] = ()  # (config, weights) names of older saves, still read
    diffusers_loader: ClassVar[bool] = True          # False: saved_state() is not the whole state_dict()
    what: ClassVar[str] = "checkpoint"               # for error messages: "<what>: '<path>' does not exist"
    how: ClassVar[str] = "Pass a folder written by save_pretrained (config.json + safetensors)."

    def __init_subclass__(cls, **kwargs):
        """A subclass with its own ``save_pretrained`` (the text stack's) still writes the weights manifest."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("save_pretrained")
        if own is not None and not getattr(own, "_writes_manifest", False):
            @functools.wraps(own)
            def save_pretrained(self, directory, *args, **kw):
                out = own(self, directory, *args, **kw)
                write_manifest(directory)
                return out

            save_pretrained._writes_manifest = True
            cls.save_pretrained = save_pretrained

    # --- the typed config over diffusers' registered dict -----------------------------------------------
    @property
    def config(self):
        return self.__dict__["_typed_config"]

    @config.setter
    def config(self, value) -> None:
        self.__dict__["_typed_config"] = value
        self.register_to_config(**value.to_dict(), config_hash=value.hash)

    def __getattr__(self, name: str):
        # Submodules and parameters first: diffusers' ModelMixin.__getattr__ would hand out a config field of the
        # same name instead (the text stack's ``encoders`` ModuleDict vs its ``encoders`` config list).
        return torch.nn.Module.__getattr__(self, name)

    @property
    def config_dict(self) -> dict[str, Any]:
        """diffusers' registered config (what ``config.json`` holds)."""
        return dict(self._internal_dict)

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' entry point (``ModelMixin.from_pretrained`` calls it): flat dict -> typed config -> model."""
        typed = cls.config_class.from_dict({k: v for k, v in dict(config).items() if k not in _DIFFUSERS_KEYS})
        model = cls(typed)
        return (model, kwargs) if return_unused_kwargs else model

    # --- what is saved (overridable) ------------------------------------------------------------------
    def saved_state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def _check_state(self, state: dict[str, torch.Tensor], path: Path) -> None:
        expected = self.saved_state()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        bad = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
        if missing or unexpected or bad:
            raise CorruptCheckpointError(f"weights in '{path}' do not match {self.config_name}: missing={missing[:5]} "
                                         f"unexpected={unexpected[:5]} shape_mismatch={bad[:5]}")

    def load_saved_state(self, state: dict[str, torch.Tensor], path: Path) -> None:
        self._check_state(state, path)
        expected = self.saved_state()
        with torch.no_grad():
            for k, v in state.items():
                expected[k].copy_(v)

    # --- save / load -----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """diffusers' ``ModelMixin.save_pretrained`` (safetensors), then ``weights.sha256.json``; returns the folder."""
        super().save_pretrained(str(directory), **kwargs)
        write_manifest(directory)
        return Path(directory)

    save_pretrained._writes_manifest = True

    @classmethod
    def _names(cls, d: Path) -> tuple[str, str]:
        """(config, weights) file names found in ``d``: the current ones first, then the legacy ones."""
        for names in ((cls.config_name, WEIGHTS_NAME),) + cls.legacy_names:
            if (d / names[0]).exists() and (d / names[1]).exists():
                return names
        for names in ((cls.config_name, WEIGHTS_NAME),) + cls.legacy_names:
            if (d / names[0]).exists():
                return names
        return cls.config_name, WEIGHTS_NAME

    @classmethod
    def read_config(cls, directory: str | Path):
        d = require_path(directory, cls.what, cls.how)
        config_name, _ = cls._names(d)
        path = require_path(d / config_name, cls.what, cls.how)
        try:
            raw = json.loads(path.read_text())
            return cls.config_class.from_dict({k: v for k, v in raw.items() if k not in _DIFFUSERS_KEYS})
        except (ValueError, TypeError, KeyError) as e:
            raise CorruptCheckpointError(f"{cls.what} config '{path}' is unreadable: {e}") from e

    @classmethod
    def from_pretrained(cls, directory: str | Path, expected=None, map_location: str | torch.device = "cpu", **kwargs):
        """Build from ``directory`` (diffusers' loader; the legacy path for older file names). ``expected``: refuse a
        checkpoint of another config. ``kwargs`` go to ``ModelMixin.from_pretrained`` (``torch_dtype``, ...)."""
        d = Path(directory).expanduser()
        config = cls.read_config(d)
        if expected is not None and expected != config:
            ex, got = expected.to_dict(), config.to_dict()                 # None: not written (at its default)
            diff = {k: (ex.get(k), got.get(k)) for k in sorted(set(ex) | set(got)) if ex.get(k) != got.get(k)}
            raise ValueError(f"checkpoint {d} is another variant: differs in {diff} (expected, found)")
        weights = d / cls._names(d)[1]
        if weights.name == WEIGHTS_NAME and cls.diffusers_loader and weights.exists():
            model = cls._load_diffusers(d, kwargs)
        else:
            model = cls._load_legacy(config, weights)
        verify_loaded(d, cls.what)         # not before: a missing or truncated file keeps its own, plainer error
        return model.to(map_location)

    @classmethod
    def _load_diffusers(cls, d: Path, kwargs: dict):
        try:
            model, info = super().from_pretrained(str(d), output_loading_info=True, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:  # safetensors' own errors for truncated or garbled files
            if isinstance(e, CorruptCheckpointError):
                raise
            raise CorruptCheckpointError(f"{cls.what} weights in '{d}' are unreadable or do not match {cls.config_name} "
                                         f"(corrupted: truncated, not safetensors, or of another shape): {e}") from e
        bad = {k: info[k][:5] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs") if info[k]}
        if bad:
            raise CorruptCheckpointError(f"weights in '{d / WEIGHTS_NAME}' do not match {cls.config_name}: {bad}")
        # diffusers leaves the parameters as views into the file's buffer, most of them not 64-byte aligned; CPU
        # kernels then take other paths and outputs move by ~3e-8 (images would stop being bit-identical to the
        # ones the committed scores come from). One copy each gives freshly allocated, aligned storage.
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                t.data = t.data.clone()
        return model.eval()

    @classmethod
    def _load_legacy(cls, config, weights: Path):
        """Older file names (and models that save only part of their state): build, then copy the tensors in."""
        from safetensors.torch import load_file

        model = cls(config)
        if model.saved_state():
            require_path(weights, cls.what, cls.how)
            try:
                state = load_file(str(weights))
            except Exception as e:  # safetensors raises its own error types for truncated or garbled files
                raise CorruptCheckpointError(f"{cls.what} weights '{weights}' are unreadable (corrupted: truncated or "
                                             f"not safetensors): {e}") from e
            model.load_saved_state(state, weights)
        return model.eval()
