"""Teachers for distillation: one interface over a diffusers SD3/SD3.5 transformer and any snapgen pipeline.

    teacher(x_t, t, prompts) -> (v, {name: feature map (N, C, h, w)})

``x_t`` and ``t`` follow snapgen's convention (t=0 data, t=1 noise, x_t = (1-t) x0 + t noise) and ``v``
is returned in it (v = noise - x0). ``prompts`` are the student's captions; ``None`` marks a sample
whose condition the student dropped (classifier-free-guidance training), for which the teacher uses
its own null condition. Teachers are frozen (eval, no parameter gradients) but do not force
``no_grad``: LADD back-propagates through the teacher's features into its input.

SD3 flow convention (verified in diffusers 0.42 ``FlowMatchEulerDiscreteScheduler`` and
``pipeline_stable_diffusion_3.py``): ``scale_noise`` builds x = sigma * noise + (1 - sigma) * x0, so
sigma = our t; the transformer is called with ``timestep = sigma * num_train_timesteps`` (1000); the
Euler step is ``x_next = x + (sigma_next - sigma) * model_output``, so model_output = dx/dsigma =
noise - x0 = our v, with no sign flip. The scheduler's ``shift`` (3.0 for SD3) only reshapes the
sampling schedule, not this mapping. Latents are the SD3 VAE's ((z - shift_factor) * scaling_factor),
so the student must train in that latent space (``TrainConfig.vae``) with the same channel count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from snapgen.io import require_path
from snapgen.models.taps import tap


class Teacher(Protocol):  # SnapGenTeacher, SD3Teacher, DiTTeacher
    feature_names: tuple[str, ...]  # names this teacher can return, in depth order
    kd_feature: str                 # the name used by feature distillation (the last layer)
    feature_channels: dict[str, int]

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, prompts: list[str | None],
                 features: tuple[str, ...] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ...

    def feature_grid(self, height: int, width: int) -> tuple[int, int]:
        ...


# ------------------------------------------------------------------------------------------------
# A snapgen pipeline as teacher


class SnapGenTeacher(nn.Module):
    """A snapgen pipeline's U-Net + text stack. Features: the U-Net's tap points (``SnapGenUNet.tap_points``):
    every encoder/mid/decoder block's output by its ModuleDict key (``"enc.16x16_block0"``, ``"mid.8x8_res1"``,
    ``"dec.32x32_block1"``) and ``"last"`` (after the mid block, (N, C_last, H/4, W/4))."""

    kd_feature = "last"

    def __init__(self, unet, text):
        super().__init__()
        from snapgen.text import CachedText

        self.unet, self.text = unet.eval().requires_grad_(False), text
        self.cached = CachedText(text) if text is not None else None
        self._points = unet.tap_points()
        self.feature_names = tuple(self._points)
        self.feature_channels = self._channels()

    @classmethod
    def from_pretrained(cls, pipeline_dir: str | Path) -> "SnapGenTeacher":
        from snapgen.pipeline import SnapGenPipeline

        pipe = SnapGenPipeline.from_pretrained(pipeline_dir)
        if pipe.unet.config.cond != "text":
            raise ValueError(f"{pipeline_dir}: distillation needs a text-conditional teacher")
        return cls(pipe.unet, pipe.text)

    @torch.no_grad()
    def _channels(self) -> dict[str, int]:
        c = self.unet.config
        x = torch.zeros(1, c.in_channels, c.sample_size, c.sample_size)
        with tap(self._points, self.feature_names) as feats:
            self.unet(x, torch.full((1,), 0.5), torch.zeros(1, 1, c.context_dim), torch.zeros(1, c.pooled_dim))
        self._grid_div = c.sample_size // feats["last"].shape[-1]
        return {k: v.shape[1] for k, v in feats.items()}

    def feature_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self._grid_div, width // self._grid_div

    def condition(self, prompts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        return snapgen_condition(self.cached, self.text, prompts, self.unet.conv_in.weight.device)

    def forward(self, x_t, t, prompts, features=None):
        ctx, pooled = self.condition(prompts)
        names = tuple(features) if features is not None else (self.kd_feature,)
        with tap(self._points, names) as feats:
            v = self.unet(x_t, t, ctx, pooled)                               # (N, C, H, W)
        return v, {n: feats[n] for n in names}


def snapgen_condition(cached, text, prompts: list[str | None], device) -> tuple[torch.Tensor, torch.Tensor]:
    """A snapgen text stack's (context, pooled) for the student's ``prompts``; ``None`` -> the null condition (every
    encoder dropped: the zero embedding the pipeline's guidance uses)."""
    null = torch.tensor([p is None for p in prompts])
    drop = {e.name: null for e in text.config.encoders}
    ctx, pooled = cached([p or "" for p in prompts], drop=drop)
    return ctx.to(device), pooled.to(device)


# ------------------------------------------------------------------------------------------------
# SD3 / SD3.5 (diffusers) as teacher

_SD3_HOW = ("Pass a local Stable Diffusion 3 / 3.5 diffusers folder (transformer/, text_encoder/, "
            "text_encoder_2/, tokenizer/, tokenizer_2/; text_encoder_3/ + tokenizer_3/ optional), e.g. "
            "`huggingface-cli download stabilityai/stable-diffusion-3.5-large --local-dir DIR` on a machine with access.")


class SD3TextEncoder(nn.Module):
    """SD3's prompt encoding (re-implemented from the pipeline's documented behaviour): CLIP-L and
    CLIP-G penultimate hidden states (77 tokens) concatenated on channels and zero-padded to the T5
    width, followed on the sequence by T5's last hidden state (``t5_tokens``); pooled = projected
    CLIP-L || CLIP-G. Without a T5 encoder the T5 tokens are zeros of width ``joint_attention_dim``
    (what the diffusers pipeline does when ``text_encoder_3`` is None). The null prompt is "" (SD3's
    negative prompt), not zeros."""

    def __init__(self, clip_l, tok_l, clip_g, tok_g, t5=None, tok_t5=None, joint_dim: int = 4096,
                 t5_tokens: int = 256):
        super().__init__()
        self.clip_l, self.clip_g, self.t5 = clip_l, clip_g, t5
        self.tok_l, self.tok_g, self.tok_t5 = tok_l, tok_g, tok_t5
        self.joint_dim, self.t5_tokens = joint_dim, t5_tokens
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.requires_grad_(False).eval()

    def _clip(self, model, tok, prompts):
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(model.device)
        out = model(ids, output_hidden_states=True)
        return out.hidden_states[-2], out.text_embeds                     # (N, 77, W), (N, P)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hl, pl = self._clip(self.clip_l, self.tok_l, prompts)
        hg, pg = self._clip(self.clip_g, self.tok_g, prompts)
        if self.t5 is not None:
            ids = self.tok_t5(prompts, padding="max_length", max_length=self.t5_tokens, truncation=True,
                              return_tensors="pt").input_ids.to(self.t5.device)
            t5 = self.t5(ids).last_hidden_state                           # (N, L5, 4096)
        else:
            t5 = hl.new_zeros(len(prompts), self.t5_tokens, self.joint_dim)
        clip = torch.cat([hl, hg], dim=-1)                                # (N, 77, 2048)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5.to(clip.dtype)], dim=1), torch.cat([pl, pg], dim=-1)

    def forward(self, prompts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [p or "" for p in prompts]
        todo = sorted(set(texts) - set(self.cache))
        if todo:
            ctx, pooled = self._encode(todo)
            self.cache.update({p: (ctx[i], pooled[i]) for i, p in enumerate(todo)})
        return (torch.stack([self.cache[p][0] for p in texts]), torch.stack([self.cache[p][1] for p in texts]))


class SD3Teacher(nn.Module):
    """``SD3Transformer2DModel`` + SD3 text encoders. Features: ``"block{i}"`` = image tokens after
    transformer block i, reshaped (N, L, C) -> (N, C, H/p, W/p) (row-major token order, as PatchEmbed
    flattens); ``"last"`` = after the final block (before the output norm)."""

    kd_feature = "last"

    def __init__(self, transformer, text: SD3TextEncoder, num_train_timesteps: int = 1000):
        super().__init__()
        self.transformer, self.text = transformer.eval().requires_grad_(False), text
        self.num_train_timesteps = num_train_timesteps
        self.patch = transformer.config.patch_size
        self._points = {f"block{i}": b for i, b in enumerate(transformer.transformer_blocks)}
        self._points["last"] = transformer.transformer_blocks[-1]
        self.feature_names = tuple(self._points)
        inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        self.feature_channels = {n: inner for n in self.feature_names}

    @classmethod
    def from_pretrained(cls, sd3_dir: str | Path, t5_tokens: int = 256, dtype: torch.dtype = torch.float32
                        ) -> "SD3Teacher":
        import json

        import transformers as tf
        from diffusers import SD3Transformer2DModel

        d = require_path(sd3_dir, "SD3 teacher", _SD3_HOW, ("transformer", "text_encoder", "text_encoder_2",
                                                            "tokenizer", "tokenizer_2"))
        transformer = SD3Transformer2DModel.from_pretrained(d / "transformer", torch_dtype=dtype)
        enc = lambda sub: tf.CLIPTextModelWithProjection.from_pretrained(d / sub, torch_dtype=dtype)
        t5 = tok_t5 = None
        if (d / "text_encoder_3").exists():
            t5 = tf.T5EncoderModel.from_pretrained(d / "text_encoder_3", torch_dtype=dtype)
            tok_t5 = tf.AutoTokenizer.from_pretrained(d / "tokenizer_3")
        text = SD3TextEncoder(enc("text_encoder"), tf.CLIPTokenizer.from_pretrained(d / "tokenizer"),
                              enc("text_encoder_2"), tf.CLIPTokenizer.from_pretrained(d / "tokenizer_2"),
                              t5, tok_t5, transformer.config.joint_attention_dim, t5_tokens)
        sched = d / "scheduler" / "scheduler_config.json"
        n_train = json.loads(sched.read_text()).get("num_train_timesteps", 1000) if sched.exists() else 1000
        return cls(transformer, text, n_train)

    def feature_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch, width // self.patch

    def _to_map(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        h, w = self.feature_grid(height, width)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)   # (N, C, H/p, W/p)

    def forward(self, x_t, t, prompts, features=None):
        ctx, pooled = self.text(prompts)
        dev, dtype = x_t.device, self.transformer.dtype
        names = tuple(features) if features is not None else (self.kd_feature,)
        sigma_timestep = t.float() * self.num_train_timesteps                  # timestep = sigma * 1000, sigma = t
        with tap(self._points, names, convert=_image_tokens) as store:
            v = self.transformer(hidden_states=x_t.to(dtype), encoder_hidden_states=ctx.to(dev, dtype),
                                 pooled_projections=pooled.to(dev, dtype), timestep=sigma_timestep.to(dev),
                                 return_dict=False)[0]                         # noise - x0 = our v
        height, width = x_t.shape[-2:]
        return v.to(x_t.dtype), {n: self._to_map(store[n], height, width) for n in names}


def _image_tokens(out):
    """A JointTransformerBlock returns (text tokens, image tokens); the last block only image tokens."""
    return out[1] if isinstance(out, tuple) else out


# ------------------------------------------------------------------------------------------------
# The synthetic world's DiT (snapgen.models.dit.WorldDiT, an SD3Transformer2DModel) as teacher


class _WorldText:
    """SD3Teacher's ``text(prompts) -> (context, pooled)`` over a snapgen text stack (MiniLM on the world), with
    snapgen's null condition for ``None``; its output goes to the denoiser's device."""

    def __init__(self, stack, device_of):
        from snapgen.text import CachedText

        self.stack, self.cached, self.device_of = stack, CachedText(stack), device_of

    def __call__(self, prompts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        return snapgen_condition(self.cached, self.stack, prompts, self.device_of())


class DiTTeacher(SD3Teacher):
    """A world DiT pipeline (``WorldDiT`` + its snapgen text stack) with ``SD3Teacher``'s features: ``"block{i}"`` =
    image tokens after JointTransformerBlock i as (N, C, H/p, W/p) maps (row-major, as PatchEmbed flattens),
    ``"last"`` = after the final block (before the output norm); C = the transformer width, p = the patch size.
    v comes from the adapter's own call (timestep = t * 1000, output = our v; ``snapgen.models.dit``), so teacher and
    trained model share one mapping. Null condition: the zero embedding, as ``SnapGenTeacher``."""

    def __init__(self, dit, text):
        super().__init__(dit.transformer, _WorldText(text, lambda: dit.transformer.pos_embed.proj.weight.device),
                         dit.config.num_train_timesteps)
        self.dit = dit.eval().requires_grad_(False)
        self.stack = text                                 # the text stack (a module: moves with .to())

    @classmethod
    def from_pretrained(cls, pipeline_dir: str | Path) -> "DiTTeacher":
        from snapgen.models.dit import WorldDiT
        from snapgen.pipeline import SnapGenPipeline

        pipe = SnapGenPipeline.from_pretrained(pipeline_dir)
        if not isinstance(pipe.unet, WorldDiT):
            raise ValueError(f"{pipeline_dir}: its denoiser is a {type(pipe.unet).__name__}, not a WorldDiT")
        return cls(pipe.unet, pipe.text)

    def forward(self, x_t, t, prompts, features=None):
        ctx, pooled = self.text(prompts)
        names = tuple(features) if features is not None else (self.kd_feature,)
        with tap(self._points, names, convert=_image_tokens) as store:
            v = self.dit(x_t, t, ctx, pooled)                                  # noise - x0 = our v
        height, width = x_t.shape[-2:]
        return v, {n: self._to_map(store[n], height, width) for n in names}


def teacher_from_pipeline(pipe, where: str = "the pipeline") -> nn.Module:
    """The teacher of an in-memory ``SnapGenPipeline``: ``DiTTeacher`` for a world DiT, else ``SnapGenTeacher``."""
    from snapgen.models.dit import WorldDiT

    if pipe.unet.config.cond != "text":
        raise ValueError(f"{where}: distillation needs a text-conditional teacher")
    return DiTTeacher(pipe.unet, pipe.text) if isinstance(pipe.unet, WorldDiT) else SnapGenTeacher(pipe.unet, pipe.text)


def load_teacher(path: str | Path) -> nn.Module:
    """A snapgen pipeline dir (``pipeline.json``: a ``SnapGenTeacher``, or a ``DiTTeacher`` when its denoiser is a
    world DiT) or an SD3 diffusers dir (``transformer/``)."""
    p = require_path(path, "distillation teacher", "Pass a snapgen pipeline dir or a local SD3/SD3.5 diffusers dir.")
    if (p / "pipeline.json").exists():
        from snapgen.pipeline import SnapGenPipeline

        return teacher_from_pipeline(SnapGenPipeline.from_pretrained(p), str(p))
    if (p / "transformer").exists():
        return SD3Teacher.from_pretrained(p)
    raise ValueError(f"{p} is neither a snapgen pipeline (pipeline.json) nor an SD3 diffusers dir (transformer/)")
