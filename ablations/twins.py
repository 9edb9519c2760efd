"""World-scale twins of every step of the paper's ablation: the same ladder, small enough to train on a CPU.

One scaling rule (``world_twin``) maps a full-size variant to its twin for the synthetic world (32 px pixel space,
MiniLM text or the world's 40 shape x colour classes):

    width        w -> max(32, 32 * floor(w / 8 / 32))      (256/512/896 -> 32/64/96; SDXL 320/640/1280 -> 32/64/160)
    head_dim     h -> h / 4                                 (128 -> 32: a twin has 1-5 heads per level)
    res_blocks   b -> max(1, b // 2)
    depth        d -> ceil(d / 2)                           (0/2/4 -> 0/1/2; SnapGen 1/2/4 -> 1/1/2; SDXL 10 -> 5)
    norm_groups  32 -> 8;   emb_mult kept;   in/out channels -> 3 (pixels);   sample_size -> 32
    text         context_dim / pooled_dim -> 384 (MiniLM), 16 tokens;   class mode: num_classes -> 40

Every other field (conv kind, separable expansion, FFN ratio, K/V heads, QK-norm, RoPE, attention kinds, the
first-stage block reading) is copied, so a twin differs from its parent's twin by exactly the paper's change
(``tests/test_twins.py`` checks this for every step), and the twin of final SnapGen is the shipped
``tiny-world`` preset. # PAPER-UNKNOWN: the paper ablates at full size on ImageNet 256; the divisors are ours,
chosen so the twin of final SnapGen is the ``tiny-world`` recipe model (about 2.3M parameters).

    python -m ablations.twins            # every twin: name, parent, params, the full-size variant it scales
    python -m ablations.twins --json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace

from ablations.registry import LADDERS, Registry, Variant  # noqa: F401  (LADDERS re-exported)
from ablations.variants import REGISTRY
from snapgen.config import StageSpec, UNetConfig

SCALE = {"width_divisor": 8, "width_multiple": 32, "head_dim_divisor": 4, "res_blocks_divisor": 2,
         "depth_divisor": 2, "norm_groups": 8, "resolution_px": 32, "text_dim": 384, "text_tokens": 16,
         "num_classes": 40}


def _width(w: int) -> int:
    m = SCALE["width_multiple"]
    return max(m, m * (w // SCALE["width_divisor"] // m))


def world_twin(cfg: UNetConfig) -> UNetConfig:
    """The world-scale twin of a full-size config (the rule in the module docstring)."""
    stages = tuple(StageSpec(_width(s.width), max(1, s.res_blocks // SCALE["res_blocks_divisor"]),
                             math.ceil(s.depth / SCALE["depth_divisor"]), s.attention, s.attn_block)
                   for s in cfg.stages)
    text = {} if cfg.cond == "class" else {"context_dim": SCALE["text_dim"], "pooled_dim": SCALE["text_dim"]}
    cls = {"num_classes": SCALE["num_classes"]} if cfg.cond == "class" else {}
    return replace(cfg, stages=stages, head_dim=cfg.head_dim // SCALE["head_dim_divisor"], in_channels=3,
                   out_channels=3, sample_size=SCALE["resolution_px"], norm_groups=SCALE["norm_groups"], **text, **cls)


def twin_name(name: str) -> str:
    return f"world-{name}"


def ladder_of(name: str) -> str | None:
    """"t2i" or "in256" for the variants of the two ladders (snapgen-t2i / snapgen-in256 end them)."""
    for ladder in LADDERS:
        if name.startswith(f"{ladder}-") or name == f"snapgen-{ladder}":
            return ladder
    return None


def build_twins(source: Registry = REGISTRY) -> Registry:
    """A registry of the twins of every SnapGen-family variant of both ladders, in the source's order."""
    twins = Registry()
    for v in source:
        if v.config is None or ladder_of(v.name) is None:
            continue
        parent = twin_name(v.parent) if v.parent and v.parent in source and source.get(v.parent).config else None
        twins.register(Variant(twin_name(v.name), parent, world_twin(v.config), v.note, v.family,
                               SCALE["resolution_px"], 0 if v.config.cond == "class" else SCALE["text_tokens"],
                               {"full_size": v.name}))
    return twins


TWINS = build_twins()


def summary(v: Variant, quality: dict | None = None) -> dict:
    """The twin's JSON row; ``quality`` (from ``ablations.quality.twin_quality``) adds its measured quality
    (FID-world and GenEval-world: value, 95% CI, seeds) when it has ablation records."""
    import torch

    from snapgen.models.unet import SnapGenUNet

    with torch.device("meta"):
        params = sum(p.numel() for p in SnapGenUNet(v.config).parameters())
    return {"name": v.name, "parent": v.parent, "full_size": v.paper["full_size"], "ladder": ladder_of(v.paper["full_size"]),
            "note": v.note, "params": params, "resolution": v.resolution, "config_hash": v.config.hash,
            "scale": SCALE, **({"quality": quality[v.name]} if quality and v.name in quality else {})}


def main(argv: list[str] | None = None, quality: dict | None = None) -> int:
    """``quality``: per-twin quality (``ablations.quality.twin_quality``) to attach to the JSON rows; ``python -m
    ablations ls --twins --json`` passes it (this module does not read results, to keep the import graph acyclic)."""
    p = argparse.ArgumentParser(prog="python -m ablations.twins", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON list: name, parent, full_size, ladder, params, scale "
                   "(`python -m ablations ls --twins --json` adds each twin's quality)")
    p.add_argument("--ladder", choices=tuple(LADDERS), default=None, help="only one ladder")
    a = p.parse_args(argv)
    rows = [summary(v, quality) for v in TWINS if a.ladder is None or ladder_of(v.paper["full_size"]) == a.ladder]
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']:42s} <- {str(r['parent']):36s} {r['params'] / 1e6:6.2f}M  {r['note']}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BrokenPipeError:
        sys.exit(0)
