"""One override syntax for every training config: ``--set key=value``, typed by the frozen dataclass.

    apply_overrides(TrainConfig(), ["steps=20", "cpu=true", "vae=none", "betas=0.9,0.99", "decoder.norm_groups=4"])

Values are parsed by the field's annotation: ``int``, ``float``, ``str``, ``bool`` (only
true/false, 1/0, yes/no, on/off, any case; anything else is an error), ``Literal`` choices,
``X | None`` (``none``/``null`` give None), tuples (comma-separated) and nested config dataclasses
(dotted keys). Unknown keys raise with the closest field names (difflib). Config files (JSON or YAML)
go through the same typing: ``load_config(TrainConfig, "my.json", ["steps=10"])``.

Ranges are checked in one place, :func:`check_ranges` (``RANGES`` below, by field name), which every
training config calls from ``__post_init__``: ``steps=0``, ``keep_ckpts=0``, ``lr=nan`` or a
``text_drop_prob`` of 2 is an error naming the field, never a silently different run. Every float field
must be finite.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Sequence

BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


# field name -> (lowest allowed, highest allowed, whether the lowest is excluded, why); None = unbounded
RANGES: dict[str, tuple[float | None, float | None, bool, str]] = {
    **{k: (1, None, False, "a count") for k in (
        "steps", "batch_size", "grad_accum", "keep_ckpts", "log_every", "ckpt_every", "sample_steps", "resolution",
        "world_length", "world_resolution", "crop_size", "ladd_head_hidden", "disc_channels", "disc_layers",
        "threads", "stop_at", "proj_hidden", "processes", "lowres_factor")},
    **{k: (0, None, False, "a step or seed") for k in ("warmup", "seed", "world_seed", "adv_start_step",
                                                        "lowres_steps")},
    "lowres_batch_size": (0, None, False, "a batch size, 0 = batch_size"),
    **{k: (0, None, True, "a rate or scale") for k in ("lr", "disc_lr", "ladd_disc_lr", "logit_std", "shift",
                                                       "ladd_disc_logit_std")},
    **{k: (0, None, False, "a weight") for k in (
        "lr_min", "weight_decay", "grad_clip", "mse_weight", "lpips_weight", "adv_weight", "kd_output_weight",
        "kd_feature_weight", "kd_max_ratio", "ladd_adv_weight", "ladd_distill_weight", "sample_guidance")},
    **{k: (0, 1, False, "a probability") for k in ("text_drop_prob", "kd_w_max", "kd_w_min")},
    "ema_decay": (0, 1, False, "an EMA decay"),
    "muon_momentum": (0, 1, False, "a momentum"),
}


def check_ranges(cfg) -> None:
    """Every field of ``cfg`` named in ``RANGES`` lies in its range; every float is finite (else ValueError)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name}={value}: must be a finite number")
        lo, hi, open_lo, what = RANGES.get(f.name, (None, None, False, ""))
        if lo is not None and (value <= lo if open_lo else value < lo):
            raise ValueError(f"{f.name}={value}: must be {'>' if open_lo else '>='} {lo} ({what})")
        if hi is not None and value > hi:
            raise ValueError(f"{f.name}={value}: must be <= {hi} ({what})")


def parse_bool(text: str, key: str = "value") -> bool:
    """``true/false, 1/0, yes/no, on/off`` (any case) -> bool; any other spelling is an error."""
    word = str(text).strip().lower()
    if word not in BOOL_WORDS:
        raise ValueError(f"{key}={text!r} is not a boolean; use one of {', '.join(BOOL_WORDS)}")
    return BOOL_WORDS[word]


def _optional(hint) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config annotation {hint!r}")
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def parse_value(text: str, hint, key: str = "value") -> Any:
    """One ``--set`` value (a string) -> the field's type."""
    base, nullable = _optional(hint)
    if nullable and str(text).strip().lower() in ("none", "null"):
        return None
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        choices = typing.get_args(base)
        for c in choices:
            if str(c) == text:
                return c
        raise ValueError(f"{key}={text!r} is not one of {choices}")
    if base is bool:
        return parse_bool(text, key)
    if base in (int, float):
        try:
            return base(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not {'an int' if base is int else 'a number'}") from None
    if base is str:
        return text
    if origin is tuple:
        return coerce([s.strip() for s in str(text).strip("()[] ").split(",") if s.strip()], base, key)
    if dataclasses.is_dataclass(base):
        return coerce(json.loads(text), base, key)
    raise TypeError(f"{key}: unsupported config annotation {hint!r}")


def coerce(value: Any, hint, key: str = "value") -> Any:
    """A value from a config file (already JSON-typed) -> the field's type, with the same checks."""
    if isinstance(value, str):
        return parse_value(value, hint, key)
    base, nullable = _optional(hint)
    if value is None:
        if nullable:
            return None
        raise ValueError(f"{key}: None is not allowed")
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(value):
            raise ValueError(f"{key}: expected {len(kinds)} values, got {len(value)}")
        return tuple(coerce(v, k, key) for v, k in zip(value, kinds))
    if dataclasses.is_dataclass(base):
        if isinstance(value, base):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping of {base.__name__} fields")
        return from_mapping(base(), value, prefix=f"{key}.")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}={value!r} is not a boolean")
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typing.get_origin(base) is typing.Literal:
        return parse_value(str(value), base, key)
    raise ValueError(f"{key}={value!r} does not fit the field's type {hint}")


def _field_hints(cfg) -> dict[str, Any]:
    hints = typing.get_type_hints(type(cfg))
    return {f.name: hints[f.name] for f in dataclasses.fields(cfg)}


def _unknown(prefix: str, key: str, known) -> ValueError:
    close = [prefix + c for c in difflib.get_close_matches(key, list(known), n=3)]
    return ValueError(f"unknown config field {prefix + key!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                                  f"; known: {', '.join(known)}"))


def _set(cfg, key: str, raw: Any, prefix: str, from_text: bool):
    head, _, rest = key.partition(".")
    hints = _field_hints(cfg)
    if head not in hints:
        raise _unknown(prefix, head, hints)
    if rest:
        inner = getattr(cfg, head)
        if not dataclasses.is_dataclass(inner):
            raise ValueError(f"{prefix}{head} is not a nested config; cannot set {prefix}{key}")
        return dataclasses.replace(cfg, **{head: _set(inner, rest, raw, f"{prefix}{head}.", from_text)})
    current = getattr(cfg, head)
    if not from_text and isinstance(raw, dict) and dataclasses.is_dataclass(current):
        return dataclasses.replace(cfg, **{head: from_mapping(current, raw, f"{prefix}{head}.")})
    value = parse_value(raw, hints[head], prefix + head) if from_text else coerce(raw, hints[head], prefix + head)
    return dataclasses.replace(cfg, **{head: value})


def apply_overrides(cfg, items: Sequence[str]):
    """``["key=value", "nested.key=value", ...]`` -> a new config (the input is frozen and unchanged)."""
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        cfg = _set(cfg, key.strip(), value, "", from_text=True)
    return cfg


def from_mapping(cfg, mapping: dict, prefix: str = ""):
    """Fields from a parsed config file (JSON types; strings parse like ``--set`` values)."""
    for key, value in mapping.items():
        cfg = _set(cfg, key, value, prefix, from_text=False)
    return cfg


def read_config_file(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        if p.suffix == ".json":
            data = json.loads(p.read_text())
        else:
            import yaml

            data = yaml.safe_load(p.read_text()) or {}
    except (ValueError, UnicodeDecodeError) as e:       # JSONDecodeError, yaml.YAMLError are ValueErrors or wrapped
        raise ValueError(f"--config {p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'} ({e})") from None
    except Exception as e:
        if type(e).__module__.startswith("yaml"):
            raise ValueError(f"--config {p}: not valid YAML ({e})") from None
        raise
    if not isinstance(data, dict):
        raise ValueError(f"--config {p}: expected a mapping of config fields, got {type(data).__name__}")
    return data


def load_config(base, path: str | Path | None, overrides: Sequence[str] = ()):
    """``base`` (a config instance) <- config file fields <- ``--set`` overrides, in that order; a bad field of the
    file is an error naming the file."""
    cfg = base
    if path:
        try:
            cfg = from_mapping(base, read_config_file(path))
        except ValueError as e:
            if str(path) in str(e):
                raise
            raise ValueError(f"--config {path}: {e}; fix the field in the file, or drop it and use --set") from None
    return apply_overrides(cfg, overrides)


def config_to_dict(cfg) -> dict:
    """JSON-ready dict of a (nested) config dataclass: tuples become lists via json round trip."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
