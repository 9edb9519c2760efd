"""A small DiT of the paper's teacher family (SD3 / SD3.5 MMDiT, diffusers ``SD3Transformer2DModel``) for the
synthetic world, behind the SnapGen U-Net's call so that the one training engine, the pipeline, the harness and the
distillation objectives use it unchanged.

    dit = WorldDiT(get_preset("world-dit-s"))
    v = dit(x_t, t, context, pooled)            # snapgen's flow convention: t=0 data, t=1 noise, v = noise - x0

Flow mapping (the one ``snapgen.teachers.SD3Teacher`` documents and tests against diffusers'
``FlowMatchEulerDiscreteScheduler``): SD3's sigma is our t, the transformer receives ``timestep = t * 1000``
(``num_train_timesteps``) and its output is dx/dsigma = noise - x0 = our v, with no sign flip or rescaling. So the
adapter only scales t; ``tests/test_world_dit.py`` checks it on a hand-made case against ``snapgen.flow``.

Save / load: ``snapgen.models.pretrained.PretrainedMixin`` (diffusers' ``ModelMixin`` + ``ConfigMixin``), as the
U-Net: ``<dir>/config.json`` (``DiTConfig.to_dict()`` + ``config_hash`` + ``_class_name: "WorldDiT"``) and
``<dir>/diffusion_pytorch_model.safetensors`` (the wrapped transformer's weights under ``transformer.``). A pipeline
folder names the class in ``model_index.json`` (``["snapgen.models.dit", "WorldDiT"]``), which is how
``DiffusionPipeline.from_pretrained`` finds it.

What the pipeline and the trainers read from ``unet.config`` is duck-typed here: ``cond`` ("text"),
``in_channels``, ``out_channels``, ``sample_size``, ``context_dim`` / ``pooled_dim`` (the text stack's widths),
``num_classes`` (None: text only), ``to_dict()``, ``hash``, and ``latent_downsample`` (the side must divide by the
patch size).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from snapgen.io import sha256_json
from snapgen.models.pretrained import ModelMixin, PretrainedMixin  # noqa: F401  ModelMixin: DiffusionPipeline finds the load method in this module

DIT_INITS = ("adaln_zero", "diffusers")
QK_NORMS = (None, "rms_norm", "layer_norm")


@dataclass(frozen=True)
class DiTConfig:
    """``SD3Transformer2DModel``'s constructor arguments (same names) + the adapter's own fields. The caption
    projection width is the transformer width (``num_attention_heads * attention_head_dim``), as in every SD3
    checkpoint (the joint attention needs it)."""

    in_channels: int = 3                    # pixel space of the synthetic world (SD3: 16 latent channels)
    out_channels: int = 3                   # predicted velocity channels
    sample_size: int = 32                   # reference side (pixels here, latents in SD3)
    patch_size: int = 2                     # SD3: 2
    num_layers: int = 4                     # JointTransformerBlocks (SD3.5-Large: 38)
    attention_head_dim: int = 32            # SD3: 64
    num_attention_heads: int = 4            # width = heads * head_dim (SD3.5-Large: 38 x 64)
    joint_attention_dim: int = 384          # text token width (MiniLM here; SD3: 4096, the T5 width)
    pooled_projection_dim: int = 384        # pooled text width (SD3: 2048 = CLIP-L || CLIP-G)
    pos_embed_max_size: int = 16            # sin-cos position grid side, in patches (SD3: 96 / 192, centre-cropped)
    qk_norm: str | None = "rms_norm"        # SD3.5: "rms_norm" (SD3.0: None)
    dual_attention_layers: tuple[int, ...] = ()  # SD3.5-Medium's MMDiT-X layers; SD3.5-Large: none
    num_train_timesteps: int = 1000         # timestep = t * num_train_timesteps (SD3's scheduler)
    # PAPER-UNKNOWN: how the teacher was initialised (SD3 does not say; diffusers' class keeps PyTorch's defaults).
    # "adaln_zero" = DiT's recipe (xavier linears, N(0, 0.02) timestep MLP, zero adaLN modulations and output layer,
    # so a fresh model outputs v = 0 and each block starts as the identity); "diffusers" = the class's own init.
    init: Literal["adaln_zero", "diffusers"] = "adaln_zero"
    cond: Literal["text"] = "text"          # text tokens + pooled embedding (no class-conditional twin)

    def __post_init__(self):
        object.__setattr__(self, "dual_attention_layers", tuple(self.dual_attention_layers))
        if self.init not in DIT_INITS:
            raise ValueError(f"init={self.init!r}: expected one of {DIT_INITS}")
        if self.qk_norm not in QK_NORMS:
            raise ValueError(f"qk_norm={self.qk_norm!r}: expected one of {QK_NORMS}")
        if self.cond != "text":
            raise ValueError(f"cond={self.cond!r}: the world DiT is text-conditional only")
        if self.sample_size % self.patch_size:
            raise ValueError(f"sample_size={self.sample_size} is not divisible by patch_size={self.patch_size}")
        if self.pos_embed_max_size < self.sample_size // self.patch_size:
            raise ValueError(f"pos_embed_max_size={self.pos_embed_max_size} < sample_size / patch_size "
                             f"= {self.sample_size // self.patch_size}")
        if min(self.num_layers, self.attention_head_dim, self.num_attention_heads, self.patch_size) < 1:
            raise ValueError("num_layers, attention_head_dim, num_attention_heads and patch_size must be >= 1")

    # --- what the pipeline / trainers read (the U-Net config's names) ------------------------------------
    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def context_dim(self) -> int:
        return self.joint_attention_dim

    @property
    def pooled_dim(self) -> int:
        return self.pooled_projection_dim

    @property
    def num_classes(self) -> None:
        return None

    @property
    def latent_downsample(self) -> int:
        """The input side must be divisible by this (the patch size)."""
        return self.patch_size

    # --- serialisation (as UNetConfig) --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"_class_name", "_diffusers_version", "config_hash"})
        if unknown:
            raise ValueError(f"unknown DiTConfig fields {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @property
    def hash(self) -> str:
        """Short content hash of the config (12 hex digits)."""
        return sha256_json(self.to_dict())[:12]

    def replace(self, **changes) -> "DiTConfig":
        return dataclasses.replace(self, **changes)


def is_dit_config_dict(d: dict[str, Any]) -> bool:
    """A config.json / preset JSON of this family (vs a ``UNetConfig``)."""
    return d.get("_class_name") == "WorldDiT" or "patch_size" in d


class WorldDiT(PretrainedMixin, nn.Module):
    """``SD3Transformer2DModel`` behind ``forward(x, t, context, pooled)`` in snapgen's flow convention."""

    config_class = DiTConfig
    what = "world DiT checkpoint"
    how = "Pass a directory written by WorldDiT.save_pretrained (config.json + safetensors), e.g. OUT/pipeline/unet."

    def __init__(self, config: DiTConfig):
        super().__init__()
        from diffusers import SD3Transformer2DModel

        self.config = c = config
        self.transformer = SD3Transformer2DModel(
            sample_size=c.sample_size, patch_size=c.patch_size, in_channels=c.in_channels, num_layers=c.num_layers,
            attention_head_dim=c.attention_head_dim, num_attention_heads=c.num_attention_heads,
            joint_attention_dim=c.joint_attention_dim, caption_projection_dim=c.inner_dim,
            pooled_projection_dim=c.pooled_projection_dim, out_channels=c.out_channels,
            pos_embed_max_size=c.pos_embed_max_size, dual_attention_layers=c.dual_attention_layers,
            qk_norm=c.qk_norm)
        if c.init == "adaln_zero":
            self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's (Peebles & Xie, ``models.py``) applied to the MMDiT: xavier-uniform linears with zero biases, the
        patch embedding like a linear, N(0, 0.02) on the timestep MLP, zero adaLN modulation in every block (image
        and text streams) and in the output norm, zero output projection."""
        tr = self.transformer
        for m in tr.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = tr.pos_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(tr.pos_embed.proj.bias)
        emb = tr.time_text_embed.timestep_embedder
        nn.init.normal_(emb.linear_1.weight, std=0.02)
        nn.init.normal_(emb.linear_2.weight, std=0.02)
        for block in tr.transformer_blocks:
            for norm in (block.norm1, block.norm1_context):
                nn.init.zeros_(norm.linear.weight)
                nn.init.zeros_(norm.linear.bias)
        nn.init.zeros_(tr.norm_out.linear.weight)
        nn.init.zeros_(tr.norm_out.linear.bias)
        nn.init.zeros_(tr.proj_out.weight)
        nn.init.zeros_(tr.proj_out.bias)

    def sd3_timestep(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """snapgen's t in [0, 1] (scalar, (1,) or (N,)) -> SD3's timestep = sigma * num_train_timesteps, (N,)."""
        return t.float().reshape(-1).expand(n) * self.config.num_train_timesteps

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                pooled: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W) at time t -> v = noise - x0 (N, C, H, W). ``context`` (N, L, joint_attention_dim) and
        ``pooled`` (N, pooled_projection_dim) are required; ``class_labels`` is refused (text only)."""
        if class_labels is not None:
            raise ValueError("WorldDiT is text-conditional: pass context and pooled, not class_labels")
        if context is None or pooled is None:
            raise ValueError("WorldDiT needs context (N, L, D) and pooled (N, P)")
        n = x.shape[0]
        return self.transformer(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled,
                                timestep=self.sd3_timestep(t, n).to(x.device), return_dict=False)[0]
