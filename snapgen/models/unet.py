"""The SnapGen U-Net: one class from the SDXL-like thinned baseline to final SnapGen, by config alone.

Blocks live in ``nn.ModuleDict``s keyed by resolution at the reference ``sample_size`` (over ``patch_size``)
(``enc["64x64_block1"]``, ``dec["128x128_block2"]``), so state-dict keys, feature hooks and per-block
FLOP tables read naturally. The model predicts the rectified-flow velocity ``v = noise - x0``
(see ``snapgen.flow``); it holds no losses, no device calls and no logging.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snapgen.config import StageSpec, UNetConfig
from snapgen.models.layers import (Downsample, ResBlock, SkipMerge, TransformerBlock, Upsample, group_norm,
                                   timestep_embedding)
from snapgen.models.pretrained import ModelMixin, PretrainedMixin  # ModelMixin: DiffusionPipeline finds the load method in this module
from snapgen.models.taps import block_points


class Unit(nn.Module):
    """One skip-producing U-Net unit: a residual block (or, where the transformer block replaced it, an
    optional 1x1 skip merge) followed by an optional transformer block."""

    def __init__(self, res: nn.Module | None, attn: nn.Module | None):
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x, emb, context):
        x = x if self.res is None else self.res(x, emb, context)
        return x if self.attn is None else self.attn(x, emb, context)


class SnapGenUNet(PretrainedMixin, nn.Module):
    """A diffusers model (``snapgen.models.pretrained``: ``ModelMixin`` + ``ConfigMixin``): ``<dir>/config.json`` (the
    flat JSON form of ``UNetConfig``) + ``<dir>/diffusion_pytorch_model.safetensors``; ``self.config`` is the typed
    ``UNetConfig``. Folders written before the move load unchanged (they already had diffusers' file names)."""

    config_class = UNetConfig
    what = "SnapGen U-Net checkpoint"
    how = "Pass a directory written by SnapGenUNet.save_pretrained (config.json + safetensors)."

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        width0 = c.stages[0].width
        emb_dim = c.emb_mult * width0
        self.time_embed = nn.Sequential(nn.Linear(width0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if c.cond == "text":
            # PAPER-UNKNOWN: pooled-text use (``pooled_route``). Default SDXL's route: pooled CLIP-L||CLIP-G
            # (2048) -> MLP added to the time embedding; no size/crop micro-conditioning (not in the paper).
            if c.pooled_route == "time_embedding":
                self.cond_embed = nn.Sequential(nn.Linear(c.pooled_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            elif c.pooled_route == "context_token":
                self.pooled_token = nn.Linear(c.pooled_dim, c.context_dim)
            context_dim = c.context_dim
        else:
            # Class mode: a label embedding (index num_classes = null class for CFG) added to the time
            # embedding, and projected to ``class_tokens`` tokens that the cross-attention attends to.
            # PAPER-UNKNOWN: how the ImageNet twin feeds cross-attention; chose class tokens of width
            # emb_dim so the text model's topology is kept (see docs/architecture.md).
            self.class_embed = nn.Embedding(c.num_classes + 1, emb_dim)
            self.class_tokens = nn.Linear(emb_dim, c.class_tokens * emb_dim)
            context_dim = emb_dim
        p2 = c.patch_size ** 2                                      # space-to-depth stem (1: none)
        self.conv_in = nn.Conv2d(c.in_channels * p2, width0, 3, padding=1)
        self.enc, self.dec = nn.ModuleDict(), nn.ModuleDict()
        self.mid = nn.ModuleDict()
        skips = self._build_encoder(emb_dim, context_dim)
        self._build_mid(emb_dim, context_dim)
        self._build_decoder(emb_dim, context_dim, skips)
        self.norm_out = group_norm(width0, c.norm_groups)
        self.conv_out = nn.Conv2d(width0, c.out_channels * p2, 3, padding=1)
        self.initialize_weights()

    # --- construction -------------------------------------------------------------------------
    def _attn(self, stage: StageSpec, context_dim: int) -> TransformerBlock | None:
        c = self.config
        if stage.attention == "none":
            return None
        return TransformerBlock(stage.width, stage.depth, context_dim, self_attn="self" in stage.attention,
                                cross_attn="cross" in stage.attention, head_dim=c.head_dim, kv_heads=c.kv_heads,
                                cross_kv_heads=c.cross_kv_heads, qk_norm=c.qk_norm, rope=c.rope,
                                ffn_ratio=c.ffn_ratio, groups=c.norm_groups)

    def _res(self, cin: int, cout: int, emb_dim: int) -> ResBlock:
        c = self.config
        return ResBlock(cin, cout, emb_dim, c.conv, c.sep_expansion, c.norm_groups, c.dropout, c.sep_expansion_at)

    def _unit(self, stage: StageSpec, cin: int, emb_dim: int, context_dim: int) -> Unit:
        if stage.attn_block == "replace":  # the transformer block takes the residual block's place
            merge = None if cin == stage.width else SkipMerge(cin, stage.width)
            return Unit(merge, self._attn(stage, context_dim))
        return Unit(self._res(cin, stage.width, emb_dim), self._attn(stage, context_dim))

    def _resample(self, cls, channels: int) -> nn.Module:
        c = self.config
        return cls(channels, c.conv, c.sep_expansion, c.sep_expansion_at)

    def _build_encoder(self, emb_dim: int, context_dim: int) -> list[int]:
        c, cin = self.config, self.config.stages[0].width
        skips = [cin]
        for i, stage in enumerate(c.stages):
            r = c.grid_size >> i
            for j in range(stage.res_blocks):
                self.enc[f"{r}x{r}_block{j}"] = self._unit(stage, cin, emb_dim, context_dim)
                cin = stage.width
                skips.append(cin)
            if i < len(c.stages) - 1:
                self.enc[f"{r}x{r}_down"] = self._resample(Downsample, stage.width)
                skips.append(stage.width)
        return skips

    def _build_mid(self, emb_dim: int, context_dim: int) -> None:
        """res -> transformer block of the last stage's depth and attention -> res (its attn_block does not apply)."""
        c = self.config
        if not c.mid_block:
            return
        last, r = c.stages[-1], c.grid_size >> (len(c.stages) - 1)
        self.mid[f"{r}x{r}_res0"] = self._res(last.width, last.width, emb_dim)
        attn = self._attn(last, context_dim)
        if attn is not None:
            self.mid[f"{r}x{r}_attn"] = attn
        self.mid[f"{r}x{r}_res1"] = self._res(last.width, last.width, emb_dim)

    def _build_decoder(self, emb_dim: int, context_dim: int, skips: list[int]) -> None:
        c, cin = self.config, self.config.stages[-1].width
        for i in reversed(range(len(c.stages))):
            stage, r = c.stages[i], c.grid_size >> i
            for j in range(stage.res_blocks + 1):
                self.dec[f"{r}x{r}_block{j}"] = self._unit(stage, cin + skips.pop(), emb_dim, context_dim)
                cin = stage.width
            if i > 0:
                self.dec[f"{r}x{r}_up"] = self._resample(Upsample, stage.width)

    def initialize_weights(self) -> None:
        """Default PyTorch init, except zero-initialised output layers of every residual branch and of
        the network (as in ADM/SDXL), so a fresh model starts as a near-identity of its skips."""
        for m in self.modules():
            if isinstance(m, ResBlock):
                last = m.conv2.pointwise if hasattr(m.conv2, "pointwise") else m.conv2
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
            elif isinstance(m, TransformerBlock):
                nn.init.zeros_(m.proj_out.weight)
                nn.init.zeros_(m.proj_out.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    # --- forward ------------------------------------------------------------------------------
    def embed(self, t, pooled=None, class_labels=None, context=None):
        """Returns (emb (N, E), context (N, L, D)) from the timestep and the condition."""
        c = self.config
        emb = self.time_embed(timestep_embedding(t, c.stages[0].width).to(self.conv_in.weight.dtype))
        if c.cond == "text":
            if context is None or (pooled is None and c.pooled_route != "none"):
                raise ValueError("text-conditional U-Net needs `context` (N, L, D) and `pooled` (N, P)")
            if c.pooled_route == "time_embedding":
                return emb + self.cond_embed(pooled), context
            if c.pooled_route == "context_token":
                return emb, torch.cat([context, self.pooled_token(pooled)[:, None]], dim=1)  # (N, L+1, D)
            return emb, context
        if class_labels is None:
            raise ValueError("class-conditional U-Net needs `class_labels` (N,) (null class = num_classes)")
        cls = self.class_embed(class_labels)                                          # (N, E)
        tokens = self.class_tokens(cls).view(cls.shape[0], self.config.class_tokens, -1)  # (N, T, E)
        return emb + cls, tokens

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                pooled: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, H, W) noisy latent x_t; t: (N,) in [0, 1] (t=0 data, t=1 noise) -> velocity (N, C, H, W).

        Intermediate features: ``snapgen.models.taps.tap(self.tap_points(), names)``.
        """
        emb, context = self.embed(t, pooled, class_labels, context)
        p = self.config.patch_size
        if p > 1:
            x = F.pixel_unshuffle(x, p)                             # (N, C p^2, H/p, W/p)
        h = self.conv_in(x)                                         # (N, C0, H/p, W/p)
        skips = [h]
        for block in self.enc.values():
            h = block(h, emb, context)
            skips.append(h)
        for block in self.mid.values():
            h = block(h, emb, context)                              # (N, C_last, H/4, W/4): the "last" tap
        for name, block in self.dec.items():
            if name.endswith("_up"):
                h = block(h, emb, context)
            else:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, p) if p > 1 else out

    def tap_points(self) -> dict[str, nn.Module]:
        """Named blocks for ``snapgen.models.taps.tap``: every encoder/mid/decoder block by its key
        (``"enc.16x16_block0"``, ``"mid.8x8_res1"``, ``"dec.32x32_block1"``), then ``"last"``: the block whose
        output is the lowest-resolution feature map after the mid block, (N, C_last, H/4, W/4), the tap of
        feature distillation."""
        points = block_points(self, ("enc", "mid", "dec"))
        encoder_side = [m for name, m in points.items() if not name.startswith("dec.")]
        points["last"] = encoder_side[-1] if encoder_side else self.conv_in
        return points
