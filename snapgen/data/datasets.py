"""Loaders for the data users have: image + caption folders, WebDataset tar shards, ImageNet-style
class folders; plus latent caching through a local ``AutoencoderKL`` (e.g. the SD3 VAE).

Every dataset is map-style and returns ``dict(image=(3, R, R) float in [-1, 1], caption=str)`` or
``dict(image=..., label=int)`` so the trainer can pick samples by a deterministic index (exact resume).
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_image(source, resolution: int, crop: str = "center") -> torch.Tensor:
    """Open, resize the short side to ``resolution`` (bicubic), crop square -> (3, R, R) in [-1, 1].

    # PAPER-UNKNOWN: resize filter and crop. Chose bicubic + center crop (random crop optional).
    """
    img = Image.open(source).convert("RGB")
    w, h = img.size
    s = resolution / min(w, h)
    img = img.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
    w, h = img.size
    if crop == "center":
        left, top = (w - resolution) // 2, (h - resolution) // 2
    elif crop == "random":
        left, top = np.random.randint(0, w - resolution + 1), np.random.randint(0, h - resolution + 1)
    else:
        raise ValueError(f"crop={crop!r}: center | random")
    arr = np.asarray(img.crop((left, top, left + resolution, top + resolution)), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def _nonempty(items: list, what: str, root) -> list:
    if not items:
        raise ValueError(f"empty dataset: no {what} found under {root}")
    return items


class CaptionFolder(Dataset):
    """A folder of images with captions in ``captions.jsonl`` ({"file", "caption"}) or ``captions.csv``
    (columns file, caption), or one ``<image stem>.txt`` per image."""

    def __init__(self, root: str | Path, resolution: int, crop: str = "center"):
        self.root, self.resolution, self.crop = Path(root), resolution, crop
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if (self.root / "captions.jsonl").exists():
            rows = [json.loads(line) for line in (self.root / "captions.jsonl").read_text().splitlines() if line.strip()]
            self.items = [(self.root / r["file"], r["caption"]) for r in rows]
        elif (self.root / "captions.csv").exists():
            with open(self.root / "captions.csv", newline="") as f:
                self.items = [(self.root / r["file"], r["caption"]) for r in csv.DictReader(f)]
        else:
            imgs = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
            self.items = [(p, p.with_suffix(".txt").read_text().strip()) for p in imgs if p.with_suffix(".txt").exists()]
        _nonempty(self.items, "captioned images (captions.jsonl, captions.csv or <name>.txt)", self.root)
        missing = [str(p) for p, _ in self.items if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} captioned images are missing, e.g. {missing[:3]}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, caption = self.items[i]
        return {"image": load_image(path, self.resolution, self.crop), "caption": caption}


class ClassFolder(Dataset):
    """ImageNet-style ``root/<class name>/<image>``; labels are the sorted class folder indices."""

    def __init__(self, root: str | Path, resolution: int, crop: str = "center"):
        self.root, self.resolution, self.crop = Path(root), resolution, crop
        if not self.root.is_dir():
            raise FileNotFoundError(f"class folder root {self.root} does not exist")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.items = [(p, i) for i, c in enumerate(self.classes) for p in sorted((self.root / c).iterdir())
                      if p.suffix.lower() in IMAGE_EXTS]
        _nonempty(self.items, "images in class sub-folders", self.root)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return {"image": load_image(path, self.resolution, self.crop), "label": label}


class WebDatasetShards(Dataset):
    """WebDataset tar shards (``key.jpg|png|webp`` + ``key.txt`` or ``key.json`` with "caption"), indexed
    once so samples can be read by index (exact resume) without the webdataset package."""

    def __init__(self, shards: list[str | Path], resolution: int, crop: str = "center"):
        self.resolution, self.crop, self.items = resolution, crop, []
        for shard in map(Path, shards):
            if not shard.exists():
                raise FileNotFoundError(f"WebDataset shard {shard} does not exist")
            groups: dict[str, dict[str, tarfile.TarInfo]] = {}
            with tarfile.open(shard) as tar:
                for m in tar.getmembers():
                    if m.isfile() and "." in Path(m.name).name:
                        key, ext = m.name.split(".", 1) if "/" not in m.name else m.name.rsplit("/", 1)[1].split(".", 1)
                        groups.setdefault(m.name[: m.name.rfind(key)] + key, {})["." + ext.lower()] = m
            for key, parts in groups.items():
                img = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
                cap = parts.get(".txt") or parts.get(".json")
                if img is not None and cap is not None:
                    self.items.append((shard, img, cap))
        _nonempty(self.items, "image+caption pairs in the shards", shards)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        shard, img, cap = self.items[i]
        with tarfile.open(shard) as tar:
            image = load_image(io.BytesIO(tar.extractfile(img).read()), self.resolution, self.crop)
            raw = tar.extractfile(cap).read().decode()
        caption = json.loads(raw)["caption"] if cap.name.endswith(".json") else raw.strip()
        return {"image": image, "caption": caption}


class LatentCache(Dataset):
    """Latents of a dataset encoded once by a frozen ``AutoencoderKL`` from a local dir, stored as one
    safetensors file per sample under ``cache_dir`` (atomic; a rerun skips what exists).

    Latents are stored normalised as SD3 does: ``(mean - shift_factor) * scaling_factor``.
    """

    def __init__(self, base: Dataset, vae_dir: str | Path, cache_dir: str | Path, batch_size: int = 8):
        from safetensors.torch import load_file

        self.base, self.cache_dir = base, Path(cache_dir)
        self._load = load_file
        todo = [i for i in range(len(base)) if not self._path(i).exists()]
        if todo:
            self._encode(todo, vae_dir, batch_size)

    def _path(self, i: int) -> Path:
        return self.cache_dir / f"{i:08d}.safetensors"

    @torch.no_grad()
    def _encode(self, indices: list[int], vae_dir, batch_size: int) -> None:
        from diffusers import AutoencoderKL
        from safetensors.torch import save

        from snapgen.io import atomic_write_bytes, require_path

        vae_dir = require_path(vae_dir, "VAE for latent caching", "Pass a local diffusers AutoencoderKL folder "
                               "(e.g. the SD3 VAE: config.json + diffusion_pytorch_model.safetensors).", ("config.json",))
        vae = AutoencoderKL.from_pretrained(vae_dir).eval()
        scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
        for s in range(0, len(indices), batch_size):
            chunk = indices[s:s + batch_size]
            items = [self.base[i] for i in chunk]
            mean = vae.encode(torch.stack([it["image"] for it in items])).latent_dist.mean
            for i, it, z in zip(chunk, items, (mean - shift) * scale):
                extra = {k: v for k, v in it.items() if k != "image"}
                atomic_write_bytes(self._path(i), save({"latent": z.contiguous()}, metadata={"extra": json.dumps(extra)}))

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        from safetensors import safe_open

        with safe_open(str(self._path(i)), "pt") as f:
            extra = json.loads(f.metadata()["extra"])
            return {"image": f.get_tensor("latent"), **extra}
