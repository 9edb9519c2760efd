"""Configuration of the SnapGen U-Net family: one frozen dataclass covers the SDXL-like thinned
baseline, every step of the paper's architecture ablation, and the final SnapGen model.

The network is a tuple of typed per-level specs (``StageSpec``, after k-diffusion's ``LevelSpec``) plus
global switches. Saved as JSON (with a short hash) beside every checkpoint and inside every result
record; the JSON keeps the flat per-stage lists of the first format (see ``UNetConfig.to_dict``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from snapgen.io import sha256_json

AttentionKind = Literal["none", "cross", "self", "self_cross"]
AttnBlock = Literal["add", "replace"]
PooledRoute = Literal["time_embedding", "context_token", "none"]
SepExpansionAt = Literal["depthwise", "pointwise"]

ATTENTION_KINDS = ("none", "cross", "self", "self_cross")
ATTN_BLOCKS = ("add", "replace")
POOLED_ROUTES = ("time_embedding", "context_token", "none")
SEP_EXPANSION_AT = ("depthwise", "pointwise")


@dataclass(frozen=True)
class StageSpec:
    """One resolution level of the U-Net: its width and its units. A unit is a residual block followed by a
    transformer block (``attn_block="add"``), or the transformer block alone (``"replace"``); the encoder has
    ``res_blocks`` units per level, the decoder one more, and down/upsampling sits between levels."""

    width: int                              # channels of the level (SDXL: 320 / 640 / 1280)
    res_blocks: int = 2                     # encoder units at this level; the decoder has res_blocks + 1
    depth: int = 0                          # transformer layers in each unit's transformer block (0 = none)
    attention: AttentionKind = "none"       # attention in those layers; "none" iff depth 0
    # PAPER-UNKNOWN: step 6 says the first stage's residual block "becomes" CA+FFN; "add" keeps the residual
    # block (the reading behind our 379M count), "replace" drops it (docs/architecture.md).
    attn_block: AttnBlock = "add"           # "add": residual block then transformer block; "replace": transformer block only

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention={self.attention!r}: expected one of {'|'.join(ATTENTION_KINDS)}")
        if (self.attention == "none") != (self.depth == 0):
            raise ValueError(f"attention={self.attention!r} with depth={self.depth}: 'none' iff depth 0")
        if self.attn_block not in ATTN_BLOCKS:
            raise ValueError(f"attn_block={self.attn_block!r}: expected 'add' or 'replace'")
        if self.attn_block == "replace" and self.depth == 0:
            raise ValueError("attn_block='replace' needs a transformer block (depth > 0) to replace the residual block")
        if self.width < 1 or self.res_blocks < 0:
            raise ValueError(f"width={self.width}, res_blocks={self.res_blocks}: expected width >= 1, res_blocks >= 0")


# Per-stage columns of the JSON form: key -> StageSpec field. "channels" is the width (the first format's name).
STAGE_COLUMNS = {"channels": "width", "res_blocks": "res_blocks", "depth": "depth", "attention": "attention",
                 "attn_block": "attn_block"}
_REQUIRED_COLUMNS = ("channels", "res_blocks", "depth", "attention")   # the first format's columns
_SPARSE = {"sparse": True}  # field metadata: written to JSON only when not at its default (see to_dict)

SDXL_LIKE_STAGES = (StageSpec(256, 2, 0, "none"), StageSpec(512, 2, 2, "self_cross"), StageSpec(896, 2, 4, "self_cross"))


def stages_from_columns(columns: dict[str, Any]) -> tuple[StageSpec, ...]:
    """Flat per-stage lists (``channels``, ``res_blocks``, ``depth``, ``attention``[, ``attn_block``]) -> stages.

    ``attn_block`` may be left out (all "add"), and an all-"add" column of another length is refilled, so a
    change of the number of stages needs only the first format's four columns."""
    missing = [k for k in _REQUIRED_COLUMNS if k not in columns]
    if missing:
        raise ValueError(f"per-stage columns {missing} missing; give all of {list(_REQUIRED_COLUMNS)}")
    n = len(columns["channels"])
    for key in _REQUIRED_COLUMNS[1:]:
        if len(columns[key]) != n:
            raise ValueError(f"UNetConfig.{key} has {len(columns[key])} entries, channels has {n}")
    blocks = tuple(columns.get("attn_block") or ("add",) * n)
    if len(blocks) != n:
        if set(blocks) != {"add"}:
            raise ValueError(f"UNetConfig.attn_block has {len(blocks)} entries, channels has {n}")
        blocks = ("add",) * n
    return tuple(StageSpec(*row) for row in zip(columns["channels"], columns["res_blocks"], columns["depth"],
                                                 columns["attention"], blocks))


# PAPER-UNKNOWN (reasons in docs/architecture.md): residual blocks per stage (SDXL's 2 down / 3 up), the mid
# block, head_dim (128: puts both presets within 1% of 379M / 372M), multi-query attention also in
# cross-attention, step 6's reading (StageSpec.attn_block), the text merge width (context_dim 2048), the
# pooled-text route, where the separable expansion happens, class-token conditioning of the ImageNet twin,
# time-embedding width, GroupNorm groups. Each is a field below so it can be changed.
@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 16                       # latent channels (16 for the SD3 VAE)
    out_channels: int = 16                      # predicted velocity channels (= latent channels)
    sample_size: int = 128                      # reference latent side (128 -> 1024 px); names blocks
    stages: tuple[StageSpec, ...] = SDXL_LIKE_STAGES  # per level, highest resolution first (SDXL: 320/640/1280, depths 0/2/10)
    mid_block: bool = True                      # res -> transformer(last stage's depth) -> res at the lowest resolution
    conv: Literal["full", "separable"] = "full"  # 3x3 convs: full, or depthwise 3x3 + pointwise 1x1
    sep_expansion: int = 1                      # separable convs: intermediate channels / input channels (paper: 2)
    # PAPER-UNKNOWN: "expand the intermediate channels" of a separable conv; see layers.SeparableConv2d.
    sep_expansion_at: SepExpansionAt = field(default="depthwise", metadata=_SPARSE)  # depthwise multiplier, or a pointwise hidden layer
    ffn_ratio: float = 4.0                      # GEGLU hidden width / channels (paper: 4 -> 3)
    head_dim: int = 128                         # channels per attention head (see docs/architecture.md)
    kv_heads: int | None = None                 # self-attention K/V heads: None = multi-head, 1 = multi-query
    cross_kv_heads: int | None = None           # cross-attention K/V heads (None = multi-head)
    qk_norm: bool = False                       # RMSNorm on queries and keys (per head)
    rope: bool = False                          # 2-D rotary position embedding in self-attention
    cond: Literal["text", "class"] = "text"     # text tokens + pooled embedding, or ImageNet class labels
    context_dim: int = 2048                     # width of the merged text tokens (cross-attention K/V input)
    pooled_dim: int = 2048                      # width of the pooled text embedding (CLIP-L 768 + CLIP-G 1280)
    # PAPER-UNKNOWN: the paper does not say where the pooled text goes; "time_embedding" is SDXL's route.
    pooled_route: PooledRoute = field(default="time_embedding", metadata=_SPARSE)  # MLP added to the time embedding | one extra context token | unused
    num_classes: int = 1000                     # class-conditional mode: classes (+1 null class for CFG)
    class_tokens: int = 1                       # class mode: cross-attention attends to this many class tokens
    # a space-to-depth stem (a world lever, not the paper's: its U-Net runs on a VAE latent): the input is pixel-
    # unshuffled into patch_size^2 x in_channels channels at 1/patch_size the side, the output shuffled back, so the
    # model maps (C, H, W) to (C, H, W) as before while its first level runs at H / patch_size (1 = none)
    patch_size: int = field(default=1, metadata=_SPARSE)
    emb_mult: int = 4                           # time-embedding width = emb_mult * stages[0].width
    norm_groups: int = 32                       # GroupNorm groups
    dropout: float = 0.0                        # dropout inside residual blocks

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages or not all(isinstance(s, StageSpec) for s in self.stages):
            raise ValueError(f"stages must be a non-empty tuple of StageSpec, got {self.stages!r}")
        choices = {"conv": ("full", "separable"), "cond": ("text", "class"), "pooled_route": POOLED_ROUTES,
                   "sep_expansion_at": SEP_EXPANSION_AT}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {'|'.join(allowed)}")
        if self.patch_size < 1 or self.sample_size % self.patch_size:
            raise ValueError(f"patch_size={self.patch_size}: expected a divisor of sample_size={self.sample_size} "
                             "(1 = no space-to-depth stem)")

    @property
    def grid_size(self) -> int:
        """Side of the first level's feature map at the reference ``sample_size`` (after the space-to-depth stem)."""
        return self.sample_size // self.patch_size

    # --- flat per-stage views (the first format's fields) --------------------------------------
    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    @property
    def res_blocks(self) -> tuple[int, ...]:
        return tuple(s.res_blocks for s in self.stages)

    @property
    def depth(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def attention(self) -> tuple[str, ...]:
        return tuple(s.attention for s in self.stages)

    def columns(self) -> dict[str, tuple]:
        """The stages as flat per-stage tuples, keyed as in the JSON form (``channels``, ..., ``attn_block``)."""
        return {key: tuple(getattr(s, attr) for s in self.stages) for key, attr in STAGE_COLUMNS.items()}

    # --- serialisation ------------------------------------------------------------------------
    def to_dict(self, sparse: bool = True) -> dict[str, Any]:
        """JSON form. Stages are written column-wise (``channels``, ``res_blocks``, ``depth``, ``attention``),
        ``attn_block`` only when some stage is "replace", and fields marked sparse only when not at their
        default: a config that the first format could express keeps its JSON, and so its hash.
        ``sparse=False`` writes every column and field (for diffs)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "stages":
                cols = self.columns()
                if sparse and set(cols["attn_block"]) == {"add"}:
                    del cols["attn_block"]
                out.update({k: list(v) for k, v in cols.items()})
            elif not (sparse and f.metadata.get("sparse") and value == f.default):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        """From ``to_dict``'s form (any version: sparse fields may be absent), or with ``stages`` as a list of
        StageSpec mappings."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - set(STAGE_COLUMNS) - {"_class_name", "_snapgen_version", "config_hash",
                                                                 "_diffusers_version", "_name_or_path"})
        if unknown:
            raise ValueError(f"unknown UNetConfig fields {unknown}; known: {sorted(known | set(STAGE_COLUMNS))}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known and k != "stages"}
        columns = {k: v for k, v in d.items() if k in STAGE_COLUMNS}
        if "stages" in d and columns:
            raise ValueError(f"give either 'stages' or the per-stage columns {sorted(columns)}, not both")
        if "stages" in d:
            kw["stages"] = tuple(s if isinstance(s, StageSpec) else StageSpec(**s) for s in d["stages"])
        elif columns:
            kw["stages"] = stages_from_columns(columns)
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @property
    def hash(self) -> str:
        """Short content hash of the config (12 hex digits)."""
        return sha256_json(self.to_dict())[:12]

    def replace(self, **changes) -> "UNetConfig":
        """A copy with ``changes``; per-stage columns (``channels=(...)``, ``depth=(...)``, ``attn_block=(...)``)
        rewrite ``stages`` column-wise, e.g. ``cfg.replace(channels=(32, 64, 96))``."""
        columns = {k: changes.pop(k) for k in list(changes) if k in STAGE_COLUMNS}
        if columns:
            if "stages" in changes:
                raise ValueError(f"give either 'stages' or the per-stage columns {sorted(columns)}, not both")
            changes["stages"] = stages_from_columns({**self.columns(), **columns})
        return dataclasses.replace(self, **changes)

    def replace_stage(self, index: int, **changes) -> "UNetConfig":
        """A copy with stage ``index``'s fields changed, e.g. ``cfg.replace_stage(0, attn_block="replace")``."""
        stages = list(self.stages)
        stages[index] = dataclasses.replace(stages[index], **changes)
        return dataclasses.replace(self, stages=tuple(stages))

    @property
    def latent_downsample(self) -> int:
        return 2 ** (len(self.stages) - 1)
