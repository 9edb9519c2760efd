"""One feature-tap mechanism: the outputs of named blocks during one forward call.

    with tap(unet.tap_points(), ("enc.16x16_block0", "last")) as feats:
        v = unet(x_t, t, context, pooled)
    feats["last"]                               # (N, C_last, H/4, W/4)

Forward hooks are registered on entry and removed on exit: no model edits, no state kept between calls,
autograd intact (the stored tensors are the blocks' own outputs, so losses on them back-propagate into the
model). Used by feature distillation (student and teacher), the LADD discriminator's teacher features and
anything else that reads intermediate features; a model names its tap points (``SnapGenUNet.tap_points``).
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn


def block_points(model: nn.Module, parts: Iterable[str]) -> dict[str, nn.Module]:
    """Every block of ``model``'s ModuleDicts ``parts``, named ``"<part>.<key>"`` (``"enc.16x16_block0"``)."""
    return {f"{part}.{key}": m for part in parts for key, m in getattr(model, part).items()}


def _keeper(store: dict, name: str, convert: Callable[[Any], torch.Tensor] | None):
    def hook(_module, _inputs, output):
        store[name] = output if convert is None else convert(output)
    return hook


@contextmanager
def tap(points: Mapping[str, nn.Module], names: Iterable[str],
        convert: Callable[[Any], torch.Tensor] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict that, after a forward call inside the ``with`` block, maps each of ``names`` to the
    output of ``points[name]`` (passed through ``convert``, e.g. to pick one tensor of a tuple)."""
    names = tuple(dict.fromkeys(names))
    unknown = [n for n in names if n not in points]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(points), n=3)
        raise KeyError(f"unknown feature taps {unknown}" + (f"; did you mean {', '.join(close)}?" if close else
                                                            f"; known: {', '.join(points)}"))
    store: dict[str, torch.Tensor] = {}
    handles = [points[n].register_forward_hook(_keeper(store, n, convert)) for n in names]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
