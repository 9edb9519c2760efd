"""The architecture-variant registry: the paper's ablation as one derived line per step.

A variant is a name, its parent, a config and a one-line note of what changed (paper order,
SPEC.md section 2 / the paper's architecture-evolution figure). The registry knows only configs;
building models and measuring costs live in ``ablations.models`` / ``snapgen.cost``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from snapgen.config import UNetConfig

Family = Literal["snapgen", "sdxl"]

# the two ablation ladders of the paper (variant names t2i-* / in256-*, ending in snapgen-<ladder>)
LADDERS = {"t2i": "text-to-image (world captions, MiniLM)", "in256": "class-conditional (world shape x colour)"}


@dataclass(frozen=True)
class Variant:
    name: str
    parent: str | None              # None at a root
    config: UNetConfig | None       # None for external reference models (family != "snapgen")
    note: str                       # what changed relative to the parent (paper step)
    family: Family = "snapgen"      # "sdxl": diffusers UNet2DConditionModel with SDXL's config
    resolution: int = 1024          # reference resolution in pixels (FLOPs are counted there)
    context_tokens: int = 333       # text tokens seen by cross-attention (77 CLIP + 256 Gemma)
    paper: dict[str, Any] = field(default_factory=dict)  # the paper's numbers for this row, if any

    @property
    def latent_size(self) -> int:
        return self.resolution // 8


class RegistryError(KeyError):
    pass


class Registry:
    def __init__(self):
        self._variants: dict[str, Variant] = {}

    def register(self, variant: Variant) -> Variant:
        if variant.name in self._variants:
            raise RegistryError(f"variant {variant.name!r} is already registered")
        if variant.parent is not None and variant.parent not in self._variants:
            raise RegistryError(f"variant {variant.name!r}: unknown parent {variant.parent!r}"
                                + self._suggest(variant.parent))
        self._variants[variant.name] = variant
        return variant

    def derive(self, parent: str, name: str, note: str, **changes) -> Variant:
        """Register ``name`` = ``parent`` with config fields ``changes`` (one line per paper step)."""
        if parent not in self._variants:
            raise RegistryError(f"cannot derive {name!r}: unknown parent {parent!r}" + self._suggest(parent))
        base = self._variants[parent]
        if base.config is None:
            raise RegistryError(f"cannot derive {name!r} from external model {parent!r}")
        extra = {k: changes.pop(k) for k in ("resolution", "context_tokens", "paper") if k in changes}
        extra.setdefault("paper", {})
        v = Variant(name, parent, base.config.replace(**changes), note, base.family,
                    extra.get("resolution", base.resolution), extra.get("context_tokens", base.context_tokens),
                    extra["paper"])
        return self.register(v)

    def get(self, name: str) -> Variant:
        try:
            return self._variants[name]
        except KeyError:
            raise RegistryError(f"unknown variant {name!r}" + self._suggest(name)) from None

    def _suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._variants, n=3, cutoff=0.4)
        return f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(self._variants)}"

    def names(self) -> list[str]:
        return list(self._variants)

    def __iter__(self):
        return iter(self._variants.values())

    def __contains__(self, name: str) -> bool:
        return name in self._variants

    def lineage(self, name: str) -> list[Variant]:
        chain, v = [], self.get(name)
        while v is not None:
            chain.append(v)
            v = self._variants.get(v.parent) if v.parent else None
        return chain[::-1]


def config_diff(a: UNetConfig, b: UNetConfig) -> dict[str, tuple[Any, Any]]:
    da, db = a.to_dict(sparse=False), b.to_dict(sparse=False)   # every field, also those at their default
    return {k: (da[k], db[k]) for k in da if da[k] != db[k]}
