"""Data of the tiny-decoder objective: image pools, random square crops, and the frozen VAE encoder
whose latents the decoder learns to decode."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from snapgen.io import MissingWeightsError, require_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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
    ds = W.WorldDataset(world_config(W, resolution), seed=seed, length=n)
    imgs = torch.stack([ds[i]["image"].float() for i in range(n)])
    if imgs.shape[-1] != resolution:
        imgs = F.interpolate(imgs, size=(resolution, resolution), mode="bicubic", antialias=True).clamp(-1, 1)
    return imgs


def world_config(W, resolution: int):
    # PAPER-DEVIATION: the paper trains on natural images; the CPU proof uses the synthetic world with
    # object sizes scaled from its 32 px defaults (8-12 px) and antialiased edges (less trivial to code).
    return W.WorldConfig(resolution=resolution, min_size=max(4, resolution * 8 // 32),
                         max_size=resolution * 12 // 32, antialias=True)


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


def load_frozen_encoder(encoder_dir: str | Path):
    """A diffusers AutoencoderKL from a local folder, frozen, eval; only its encoder is used."""
    how = ("Pass --encoder-dir: a local diffusers AutoencoderKL folder, e.g. the 'vae/' folder of "
           "stabilityai/stable-diffusion-3-medium-diffusers downloaded beforehand.")
    root = require_path(encoder_dir, "frozen VAE encoder", how, must_contain=("config.json",))
    if not any((root / n).exists() for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")):
        raise MissingWeightsError(f"frozen VAE encoder: no diffusion_pytorch_model.safetensors in '{root}'. {how}")
    from diffusers import AutoencoderKL

    from snapgen.io import verify_weights_folder

    verify_weights_folder(root)           # one this project wrote carries a manifest; a downloaded VAE has none
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
