"""Train SnapGen's tiny decoder against a frozen VAE encoder (SD3 VAE in the paper).

Loss: ``mse_weight * MSE + lpips_weight * LPIPS(VGG) + adv_weight * hinge-GAN`` on random crops;
the generator's adversarial term and the discriminator start at ``adv_start_step``. EMA of the
decoder weights is the deliverable. The decoder consumes the *unscaled* VAE latent (see
``snapgen.models.decoder``), so no scaling/shift is applied between encoder and decoder here.

Randomness is counter-based: the batch (indices, crops) and the latent noise of step ``s`` come from
a generator seeded by ``(seed, s, rank)``. Resuming from a checkpoint therefore replays exactly the
same stream (tested: straight run == run + resume, bit for bit, on CPU).

Examples::

    python -m snapgen.train_decoder --encoder-dir /models/sd3/vae --image-dir /data/photos \\
        --out runs/tiny_decoder --steps 100000 --batch-size 32 \\
        --vgg16-weights /models/vgg16-397923af.pth --lpips-weights /models/lpips_vgg_v0.1.pth
    python -m snapgen.train_decoder --world --out runs/decoder_world   # CPU proof (~6 min, 2 cores)
    accelerate launch -m snapgen.train_decoder --encoder-dir ... --image-dir ...   # multi-GPU
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from snapgen.io import (MissingWeightsError, atomic_write_bytes, atomic_write_json, atomic_write_text, require_path,
                        sha256_json)
from snapgen.models.decoder import TINY_DECODER_PRESETS, TinyDecoder, TinyDecoderConfig
from snapgen.recon_metrics import try_load_lpips

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class TrainDecoderConfig:
    decoder: TinyDecoderConfig = TinyDecoderConfig()  # architecture of the trained decoder
    encoder_dir: str | None = None      # local diffusers AutoencoderKL folder (config.json + weights); its encoder is frozen
    image_dir: str | None = None        # folder of training images (searched recursively)
    world: bool = False                 # train on the built-in synthetic world instead of image_dir
    world_length: int = 512             # number of world scenes pre-rendered as the training pool
    world_resolution: int = 64          # side of rendered world scenes
    crop_size: int = 256                # random square crops (paper: 256x256 patches)
    batch_size: int = 8                 # global batch, split over processes (paper: 256)
    steps: int = 100_000                # optimizer steps (paper: 1M)
    lr: float = 2e-4                    # AdamW learning rate of the decoder
    # PAPER-UNKNOWN: chose AdamW(2e-4, betas (0.9, 0.99), no decay, constant LR) because it is the usual VAE-decoder recipe
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW betas (decoder and discriminator)
    weight_decay: float = 0.0           # AdamW weight decay
    grad_clip: float = 1.0              # max grad norm (0 = off)
    mse_weight: float = 1.0             # weight of the pixel MSE
    lpips_weight: float = 0.1           # weight of LPIPS(VGG); the term is off when its weights are absent
    # PAPER-UNKNOWN: chose lpips 0.1 / adv 0.05 because MSE should dominate PSNR; the paper gives no weights
    adv_weight: float = 0.05            # weight of the generator's hinge loss -D(x_hat)
    adv_start_step: int = 20_000        # step at which the adversarial loss and discriminator start
    disc_lr: float = 2e-4               # AdamW learning rate of the discriminator
    disc_channels: int = 64             # width of the first discriminator conv (doubles per layer, max 8x)
    disc_layers: int = 3                # stride-2 conv layers of the patch discriminator
    ema_decay: float = 0.999            # EMA decay of the decoder weights
    latent_sampling: Literal["sample", "mode"] = "sample"  # posterior sample (what the diffusion model saw) or mean
    seed: int = 0                       # base seed of init, batches and latent noise
    log_every: int = 50                 # steps between JSONL log lines
    ckpt_every: int = 1000              # steps between checkpoints (and at the end)
    vgg16_weights: str | None = None    # local torchvision vgg16 state dict (LPIPS trunk)
    lpips_weights: str | None = None    # local LPIPS v0.1 linear layers (vgg.pth)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainDecoderConfig":
        d = dict(d)
        d["decoder"] = TinyDecoderConfig.from_dict(d["decoder"])
        d["betas"] = tuple(d["betas"])
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


# ---- data: a pool of images, random crops chosen by (seed, step, rank) --------------------------------
class FolderImages:
    """Images from a folder, decoded lazily; ``get(i) -> (3, H, W)`` in [-1, 1]."""

    def __init__(self, root: str | Path):
        root = require_path(root, "training image folder", "Pass --image-dir with PNG/JPEG images.")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under '{root}'")

    def __len__(self) -> int:
        return len(self.files)

    def get(self, i: int) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        with Image.open(self.files[i]) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


class TensorImages:
    """A pre-rendered pool ``(N, 3, H, W)`` in [-1, 1]."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def get(self, i: int) -> torch.Tensor:
        return self.images[i]


def render_world(n: int, resolution: int, seed: int) -> torch.Tensor:
    """``n`` scenes of the built-in synthetic world -> (n, 3, R, R) in [-1, 1] (lazy import)."""
    try:
        from snapgen.data import world as W
    except ImportError as e:
        raise ImportError("the synthetic world (snapgen.data.world) is not available in this checkout") from e
    ds = W.WorldDataset(_world_config(W, resolution), seed=seed, length=n)
    imgs = torch.stack([ds[i]["image"].float() for i in range(n)])
    if imgs.shape[-1] != resolution:
        imgs = F.interpolate(imgs, size=(resolution, resolution), mode="bicubic", antialias=True).clamp(-1, 1)
    return imgs


def _world_config(W, resolution: int):
    # PAPER-DEVIATION: the paper trains on natural images; the CPU proof uses the synthetic world with
    # object sizes scaled from its 32 px defaults (8-12 px) and antialiased edges (less trivial to code).
    return W.WorldConfig(resolution=resolution, min_size=max(4, resolution * 8 // 32),
                         max_size=resolution * 12 // 32, antialias=True)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)


def sample_batch(pool, batch: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    """``batch`` random crops of random pool images -> (B, 3, crop, crop) in [-1, 1]."""
    idx = torch.randint(len(pool), (batch,), generator=gen).tolist()
    out = []
    for i in idx:
        img = pool.get(i)                                        # (3, H, W)
        h, w = img.shape[-2:]
        if min(h, w) < crop:  # upscale so the short side fits the crop
            s = crop / min(h, w)
            img = F.interpolate(img[None], size=(max(crop, round(h * s)), max(crop, round(w * s))),
                                mode="bicubic", antialias=True)[0].clamp(-1, 1)
            h, w = img.shape[-2:]
        top = int(torch.randint(h - crop + 1, (1,), generator=gen))
        left = int(torch.randint(w - crop + 1, (1,), generator=gen))
        out.append(img[:, top:top + crop, left:left + crop])
    return torch.stack(out)


# ---- frozen encoder, discriminator, losses --------------------------------------------------------
def load_frozen_encoder(encoder_dir: str | Path):
    """A diffusers AutoencoderKL from a local folder, frozen, eval; only its encoder is used."""
    how = ("Pass --encoder-dir: a local diffusers AutoencoderKL folder, e.g. the 'vae/' folder of "
           "stabilityai/stable-diffusion-3-medium-diffusers downloaded beforehand.")
    root = require_path(encoder_dir, "frozen VAE encoder", how, must_contain=("config.json",))
    if not any((root / n).exists() for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")):
        raise MissingWeightsError(f"frozen VAE encoder: no diffusion_pytorch_model.safetensors in '{root}'. {how}")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(root))
    return vae.requires_grad_(False).eval()


@torch.no_grad()
def encode(vae, x: torch.Tensor, sampling: str, gen: torch.Generator | None) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> unscaled latent (N, Cz, H/8, W/8)."""
    dist = vae.encode(x).latent_dist
    if sampling == "mode":
        return dist.mode()
    noise = torch.randn(dist.mean.shape, generator=gen, dtype=dist.mean.dtype).to(dist.mean.device)
    return dist.mean + dist.std * noise


class PatchDiscriminator(nn.Module):
    """PatchGAN-style: stride-2 4x4 convs + GroupNorm + LeakyReLU, 1-channel logit map."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers):
            c_next = channels * min(2 ** i, 8)
            mods += [nn.Conv2d(c, c_next, 4, 2, 1), nn.GroupNorm(min(32, c_next // 4), c_next), nn.LeakyReLU(0.2)]
            c = c_next
        mods += [nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 1, H/2^L, W/2^L)
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - decay)


# ---- checkpoints ------------------------------------------------------------------------------------
def save_checkpoint(out: Path, step: int, cfg: TrainDecoderConfig, decoder: TinyDecoder, ema: TinyDecoder,
                    disc: nn.Module, opt_g, opt_d) -> Path:
    """``out/checkpoints/step_XXXXXXX/`` (decoder/, decoder_ema/, train_state.pt), renamed into place."""
    final = out / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    decoder.save_pretrained(tmp / "decoder")
    ema.save_pretrained(tmp / "decoder_ema")
    import io

    buf = io.BytesIO()
    torch.save({"step": step, "config": cfg.to_dict(), "disc": disc.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()}, buf)
    atomic_write_bytes(tmp / "train_state.pt", buf.getvalue())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(out / "checkpoints" / "latest", final.name + "\n")
    return final


def latest_checkpoint(out: Path) -> Path | None:
    marker = out / "checkpoints" / "latest"
    return out / "checkpoints" / marker.read_text().strip() if marker.exists() else None


def _check_resumable(saved: dict, cfg: TrainDecoderConfig) -> None:
    ignore = {"steps", "log_every", "ckpt_every", "encoder_dir", "image_dir", "vgg16_weights", "lpips_weights"}
    a = {k: v for k, v in json.loads(json.dumps(saved)).items() if k not in ignore}
    b = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k not in ignore}
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        raise ValueError(f"cannot resume: the checkpoint's config differs in {diff}")


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be replayed)."""
    if log_path.exists():
        keep = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        atomic_write_text(log_path, "".join(ln + "\n" for ln in keep))


# ---- training ---------------------------------------------------------------------------------------
@dataclass
class TrainState:
    decoder: nn.Module
    ema: TinyDecoder
    disc: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0


def build_state(cfg: TrainDecoderConfig, out: Path, accelerator, resume: bool) -> TrainState:
    torch.manual_seed(cfg.seed)  # init only; batches use step_generator
    decoder = TinyDecoder(cfg.decoder)
    disc = PatchDiscriminator(cfg.disc_channels, cfg.disc_layers)
    step = 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        state = torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=False)
        _check_resumable(state["config"], cfg)
        decoder.load_state_dict(TinyDecoder.from_pretrained(ckpt / "decoder").state_dict())
        ema = TinyDecoder.from_pretrained(ckpt / "decoder_ema")
        disc.load_state_dict(state["disc"])
        step = state["step"]
    else:
        ema = copy.deepcopy(decoder)
    opt_g = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if ckpt is not None:
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
    decoder, disc, opt_g, opt_d = accelerator.prepare(decoder, disc, opt_g, opt_d)
    ema.requires_grad_(False).to(accelerator.device)
    return TrainState(decoder, ema, disc, opt_g, opt_d, step)


def train_step(st: TrainState, cfg: TrainDecoderConfig, x: torch.Tensor, z: torch.Tensor, lpips_model,
               accelerator) -> dict:
    """One generator (+ discriminator after adv_start_step) update; returns the loss terms."""
    adv_on = cfg.adv_weight > 0 and st.step >= cfg.adv_start_step
    x_hat = st.decoder(z)                                        # (N, 3, H, W)
    terms = {"mse": F.mse_loss(x_hat, x)}
    loss = cfg.mse_weight * terms["mse"]
    if lpips_model is not None and cfg.lpips_weight > 0:
        terms["lpips"] = lpips_model(x_hat, x).mean()
        loss = loss + cfg.lpips_weight * terms["lpips"]
    disc_raw = accelerator.unwrap_model(st.disc)
    if adv_on:  # frozen discriminator (no DDP hooks) for the generator's term
        disc_raw.requires_grad_(False)
        terms["g_adv"] = hinge_g_loss(disc_raw(x_hat))
        disc_raw.requires_grad_(True)
        loss = loss + cfg.adv_weight * terms["g_adv"]
    st.opt_g.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    if cfg.grad_clip > 0:
        accelerator.clip_grad_norm_(st.decoder.parameters(), cfg.grad_clip)
    st.opt_g.step()
    if adv_on:
        logits = st.disc(torch.cat([x, x_hat.detach()]))       # one pass: real then fake
        terms["d_hinge"] = hinge_d_loss(*logits.chunk(2))
        st.opt_d.zero_grad(set_to_none=True)
        accelerator.backward(terms["d_hinge"])
        st.opt_d.step()
    ema_update(st.ema, accelerator.unwrap_model(st.decoder), cfg.ema_decay)
    terms["loss"] = loss
    return {k: float(v.detach()) for k, v in terms.items()}


def train(cfg: TrainDecoderConfig, out: str | Path, vae=None, pool=None, resume: bool = True,
          progress: bool = True, cpu: bool | None = None) -> dict:
    """Train (or resume) the tiny decoder; returns {"out", "step", "lpips", "lpips_reason", "last"}."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    out = Path(out)
    accelerator = Accelerator(cpu=(not torch.cuda.is_available()) if cpu is None else cpu)
    vae = (vae if vae is not None else load_frozen_encoder(cfg.encoder_dir)).to(accelerator.device)
    pool = pool if pool is not None else (TensorImages(render_world(cfg.world_length, cfg.world_resolution, cfg.seed))
                                          if cfg.world else FolderImages(cfg.image_dir))
    lpips_model, lpips_reason = (try_load_lpips(cfg.vgg16_weights, cfg.lpips_weights) if cfg.lpips_weight > 0
                                 else (None, "lpips_weight is 0"))
    lpips_model = lpips_model.to(accelerator.device) if lpips_model is not None else None
    st = build_state(cfg, out, accelerator, resume)
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} not divisible by {world} processes")
    if accelerator.is_main_process:
        atomic_write_json(out / "config.json", {**cfg.to_dict(), "config_hash": sha256_json(cfg.to_dict())[:12]})
        _truncate_log(out / "log.jsonl", st.step)
    t0, last = time.perf_counter(), {}
    bar = tqdm(total=cfg.steps, initial=st.step, disable=not (progress and accelerator.is_main_process), desc="decoder")
    while st.step < cfg.steps:
        gen = step_generator(cfg.seed, st.step, 0)
        x = sample_batch(pool, cfg.batch_size, cfg.crop_size, gen)[rank::world].to(accelerator.device)
        z = encode(vae, x, cfg.latent_sampling, step_generator(cfg.seed, st.step, 1 + rank))
        last = train_step(st, cfg, x, z, lpips_model, accelerator)
        st.step += 1
        bar.update(1)
        if accelerator.is_main_process and (st.step % cfg.log_every == 0 or st.step == cfg.steps):
            line = {"step": st.step, **last, "lr": cfg.lr, "wall_s": round(time.perf_counter() - t0, 3)}
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            bar.set_postfix(loss=f"{last['loss']:.4f}")
        if accelerator.is_main_process and (st.step % cfg.ckpt_every == 0 or st.step == cfg.steps):
            save_checkpoint(out, st.step, cfg, accelerator.unwrap_model(st.decoder), st.ema,
                            accelerator.unwrap_model(st.disc), st.opt_g, st.opt_d)
        accelerator.wait_for_everyone()
    bar.close()
    return {"out": str(out), "step": st.step, "lpips": None if lpips_model is None else "vgg",
            "lpips_reason": lpips_reason, "last": last, "ema": st.ema, "decoder": accelerator.unwrap_model(st.decoder)}


# ---- CLI --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m snapgen.train_decoder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/tiny_decoder", help="run folder (config, log.jsonl, checkpoints/)")
    p.add_argument("--encoder-dir", help="local diffusers AutoencoderKL folder (frozen encoder)")
    p.add_argument("--image-dir", help="folder of training images")
    p.add_argument("--world", action="store_true",
                   help="CPU proof: train a stand-in VAE then the tiny decoder on the synthetic world, write a record")
    p.add_argument("--preset", default="snapgen", choices=sorted(TINY_DECODER_PRESETS), help="decoder preset")
    p.add_argument("--vgg16-weights", help="local torchvision vgg16 state dict (LPIPS trunk)")
    p.add_argument("--lpips-weights", help="local LPIPS v0.1 linear layers (vgg.pth)")
    p.add_argument("--no-resume", action="store_true", help="start fresh even if --out has checkpoints")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave as is)")
    p.add_argument("--results-dir", default="results/decoder", help="--world: where the JSON record goes")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    for f in fields(TrainDecoderConfig):  # every scalar config field is a flag
        if f.name in ("decoder", "encoder_dir", "image_dir", "world", "vgg16_weights", "lpips_weights", "betas"):
            continue
        kind = {"int": int, "float": float}.get(str(f.type), str)
        choices = ["sample", "mode"] if f.name == "latent_sampling" else None
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None, choices=choices,
                       help=f"(config) default {f.default}")
    return p


def config_from_args(args) -> TrainDecoderConfig:
    base = TrainDecoderConfig(decoder=TINY_DECODER_PRESETS[args.preset])
    changes = {f.name: getattr(args, f.name) for f in fields(base)
               if hasattr(args, f.name) and getattr(args, f.name) is not None and f.name != "world"}
    return replace(base, world=args.world, **changes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    if args.dry_run:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if args.world:
        rec = run_world_proof(Path(args.out), Path(args.results_dir), threads=torch.get_num_threads(),
                              vgg16_weights=args.vgg16_weights, lpips_weights=args.lpips_weights)
        print(json.dumps({k: rec[k] for k in ("record_path", "psnr", "ssim", "latency", "wall_s")}, indent=2))
        return 0
    res = train(cfg, args.out, resume=not args.no_resume)
    print(json.dumps({k: res[k] for k in ("out", "step", "lpips", "lpips_reason", "last")}, indent=2))
    return 0


# ---- CPU proof on the synthetic world (--world) -------------------------------------------------------
STANDIN_VAE_CONFIG = dict(  # SD3-like latent space (16 ch, 8x, mid attention) at toy widths
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(16, 32, 32, 64),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1, norm_num_groups=8, act_fn="silu", sample_size=64, mid_block_add_attention=True,
    use_quant_conv=False, use_post_quant_conv=False,
)


@dataclass(frozen=True)
class WorldProofConfig:
    resolution: int = 64                # world scene side; latent = resolution / 8
    n_train: int = 384                  # pre-rendered training scenes (seed `seed`)
    n_eval: int = 48                    # held-out scenes (seed `eval_seed`, disjoint stream)
    vae_steps: int = 400                # stand-in AutoencoderKL steps (MSE + kl_weight * KL)
    vae_batch: int = 8                  # stand-in VAE batch
    vae_lr: float = 1e-3                # stand-in VAE AdamW learning rate
    kl_weight: float = 1e-6             # KL weight of the stand-in VAE (SD-VAE-like tiny KL)
    decoder_steps: int = 800            # tiny decoder steps against the frozen stand-in encoder
    decoder_preset: str = "cpu_proof"   # TINY_DECODER_PRESETS entry
    seed: int = 0                       # training seed
    eval_seed: int = 12_345             # held-out world seed
    latency_latent: tuple[int, ...] = (8, 32)  # latent sides timed (64 px and 256 px out), batch 1, fp32
    latency_repeats: int = 10           # timed runs after 2 warm-up runs (median reported)

    def decoder_train_config(self, vgg16_weights=None, lpips_weights=None) -> TrainDecoderConfig:
        return TrainDecoderConfig(
            decoder=TINY_DECODER_PRESETS[self.decoder_preset], world=True, world_length=self.n_train,
            world_resolution=self.resolution, crop_size=self.resolution, batch_size=8, steps=self.decoder_steps,
            lr=2e-3, adv_start_step=self.decoder_steps * 2 // 3, adv_weight=0.02, disc_channels=16, disc_layers=2,
            ema_decay=0.99, latent_sampling="mode", seed=self.seed, log_every=25, ckpt_every=self.decoder_steps,
            vgg16_weights=vgg16_weights, lpips_weights=lpips_weights)


def train_standin_vae(pc: WorldProofConfig, pool: TensorImages, progress: bool = True):
    """Train a toy AutoencoderKL (the SD3 VAE's stand-in) with MSE + KL on world scenes."""
    from diffusers import AutoencoderKL
    from tqdm.auto import tqdm

    torch.manual_seed(pc.seed)
    vae = AutoencoderKL(**STANDIN_VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=pc.vae_lr, betas=(0.9, 0.99))
    for step in tqdm(range(pc.vae_steps), disable=not progress, desc="stand-in VAE"):
        gen = step_generator(pc.seed + 1, step, 0)
        x = sample_batch(pool, pc.vae_batch, pc.resolution, gen)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        loss = F.mse_loss(vae.decode(z).sample, x) + pc.kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def _latency(vae, tiny: TinyDecoder, pc: WorldProofConfig) -> dict:
    from snapgen.cost import time_fn

    out = {}
    for side in pc.latency_latent:
        z = torch.randn(1, 16, side, side)
        t_vae = time_fn(lambda: vae.decode(z), warmup=2, repeats=pc.latency_repeats)
        t_tiny = time_fn(lambda: tiny(z), warmup=2, repeats=pc.latency_repeats)
        out[f"latent{side}_px{side * 8}"] = {"standin_vae_ms": t_vae.median_ms, "tiny_ms": t_tiny.median_ms,
                                            "speedup": t_vae.median_ms / t_tiny.median_ms}
    return out


def run_world_proof(out: Path, results_dir: Path, pc: WorldProofConfig = WorldProofConfig(), threads: int = 1,
                    vgg16_weights=None, lpips_weights=None, progress: bool = True) -> dict:
    """Stand-in VAE -> frozen encoder -> tiny decoder; held-out PSNR/SSIM + CPU latency -> JSON record."""
    from snapgen.cost import count_params
    from snapgen.env import environment
    from snapgen.recon_metrics import reconstruction_metrics

    t0 = time.perf_counter()
    train_pool = TensorImages(render_world(pc.n_train, pc.resolution, pc.seed))
    held_out = render_world(pc.n_eval, pc.resolution, pc.eval_seed)          # (n_eval, 3, R, R)
    vae = train_standin_vae(pc, train_pool, progress)
    vae.save_pretrained(str(out / "standin_vae"))                             # then reload as a user would
    t_vae = time.perf_counter() - t0
    frozen = load_frozen_encoder(out / "standin_vae")
    cfg = pc.decoder_train_config(vgg16_weights, lpips_weights)
    res = train(cfg, out / "tiny_decoder", vae=frozen, pool=train_pool, resume=False, progress=progress, cpu=True)
    t_dec = time.perf_counter() - t0 - t_vae
    tiny = res["ema"].eval()
    with torch.no_grad():
        z = frozen.encode(held_out).latent_dist.mode()
        rec_vae, rec_tiny = frozen.decode(z).sample, tiny(z)
    lp = try_load_lpips(vgg16_weights, lpips_weights)
    m_vae = reconstruction_metrics(rec_vae, held_out, *lp).to_dict()
    m_tiny = reconstruction_metrics(rec_tiny, held_out, *lp).to_dict()
    latency = _latency(frozen, tiny, pc)
    record = {
        "kind": "tiny_decoder_world_proof", "proof_config": asdict(pc), "decoder_train_config": cfg.to_dict(),
        "standin_vae_config": STANDIN_VAE_CONFIG,
        "params": {"standin_vae_decoder": count_params(frozen.decoder), "tiny_decoder": count_params(tiny)},
        "psnr": {"standin_vae": m_vae["psnr"], "tiny": m_tiny["psnr"]},
        "ssim": {"standin_vae": m_vae["ssim"], "tiny": m_tiny["ssim"]},
        "lpips": None if lp[0] is None else {"standin_vae": m_vae["lpips"], "tiny": m_tiny["lpips"]},
        "lpips_reason": lp[1], "metrics_detail": {"standin_vae": m_vae, "tiny": m_tiny},
        "latency": latency, "latency_settings": {"device": "cpu", "dtype": "float32", "batch": 1, "warmup": 2,
                                                 "repeats": pc.latency_repeats, "stat": "median",
                                                 "torch_threads": torch.get_num_threads()},
        "final_losses": res["last"], "wall_s": {"standin_vae": t_vae, "tiny_decoder": t_dec,
                                                "total": time.perf_counter() - t0},
        "env": {**environment("cpu"), "torch": torch.__version__, "threads_requested": threads},
    }
    path = results_dir / f"world_proof_{sha256_json(record['proof_config'])[:10]}.json"
    atomic_write_json(path, record)
    record["record_path"] = str(path)
    return record


if __name__ == "__main__":
    sys.exit(main())
