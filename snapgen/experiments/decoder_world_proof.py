"""CPU-scale proof of the tiny decoder on the synthetic world, with a stand-in VAE.

The SD3 VAE is not available offline, so a toy ``AutoencoderKL`` with SD3's latent layout (16 channels,
8x down, mid attention) is trained on world scenes first; its frozen encoder then feeds the tiny decoder,
trained by the engine (``snapgen.train_decoder.train``). Held-out PSNR/SSIM (and LPIPS when its weights
are given) of both decoders and their CPU latency go into one JSON record.

    python -m snapgen.experiments.decoder_world_proof --out runs/decoder_world --threads 1
    python -m snapgen.train_decoder --world --out runs/decoder_world          # the same, from the trainer's CLI
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from snapgen.io import atomic_write_json, sha256_json
from snapgen.models.decoder import TINY_DECODER_PRESETS, TinyDecoder
from snapgen.recon_metrics import try_load_lpips
from snapgen.train_decoder import TrainDecoderConfig, train
from snapgen.training.decoder_data import TensorImages, load_frozen_encoder, render_world, sample_batch

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


def vae_step_generator(seed: int, step: int) -> torch.Generator:
    """The stand-in VAE's batches (its own stream, independent of the decoder's)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009)


def train_standin_vae(pc: WorldProofConfig, pool: TensorImages, progress: bool = True):
    """Train a toy AutoencoderKL (the SD3 VAE's stand-in) with MSE + KL on world scenes."""
    from diffusers import AutoencoderKL
    from tqdm.auto import tqdm

    torch.manual_seed(pc.seed)
    vae = AutoencoderKL(**STANDIN_VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=pc.vae_lr, betas=(0.9, 0.99))
    for step in tqdm(range(pc.vae_steps), disable=not progress, desc="stand-in VAE"):
        gen = vae_step_generator(pc.seed + 1, step)
        x = sample_batch(pool, pc.vae_batch, pc.resolution, gen)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        loss = F.mse_loss(vae.decode(z).sample, x) + pc.kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def latency(vae, tiny: TinyDecoder, pc: WorldProofConfig) -> dict:
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
    record = {
        "kind": "tiny_decoder_world_proof", "proof_config": asdict(pc), "decoder_train_config": cfg.to_dict(),
        "standin_vae_config": STANDIN_VAE_CONFIG,
        "params": {"standin_vae_decoder": count_params(frozen.decoder), "tiny_decoder": count_params(tiny)},
        "psnr": {"standin_vae": m_vae["psnr"], "tiny": m_tiny["psnr"]},
        "ssim": {"standin_vae": m_vae["ssim"], "tiny": m_tiny["ssim"]},
        "lpips": None if lp[0] is None else {"standin_vae": m_vae["lpips"], "tiny": m_tiny["lpips"]},
        "lpips_reason": lp[1], "metrics_detail": {"standin_vae": m_vae, "tiny": m_tiny},
        "latency": latency(frozen, tiny, pc),
        "latency_settings": {"device": "cpu", "dtype": "float32", "batch": 1, "warmup": 2,
                             "repeats": pc.latency_repeats, "stat": "median", "torch_threads": torch.get_num_threads()},
        "final_losses": res["last"], "wall_s": {"standin_vae": t_vae, "tiny_decoder": t_dec,
                                                "total": time.perf_counter() - t0},
        "env": {**environment("cpu"), "torch": torch.__version__, "threads_requested": threads},
    }
    path = results_dir / f"world_proof_{sha256_json(record['proof_config'])[:10]}.json"
    atomic_write_json(path, record)
    record["record_path"] = str(path)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snapgen.experiments.decoder_world_proof", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/decoder_world", help="run folder (standin_vae/, tiny_decoder/)")
    p.add_argument("--results-dir", default="results/decoder", help="where the JSON record goes")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave as is)")
    p.add_argument("--vgg16-weights", help="local torchvision vgg16 state dict (LPIPS trunk)")
    p.add_argument("--lpips-weights", help="local LPIPS v0.1 linear layers (vgg.pth)")
    p.add_argument("--dry-run", action="store_true", help="print the proof and decoder configs, then exit")
    args = p.parse_args(argv)
    pc = WorldProofConfig()
    if args.dry_run:
        print(json.dumps({"proof_config": asdict(pc), "decoder_train_config": pc.decoder_train_config().to_dict()},
                         indent=2))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = run_world_proof(Path(args.out), Path(args.results_dir), pc, threads=torch.get_num_threads(),
                          vgg16_weights=args.vgg16_weights, lpips_weights=args.lpips_weights)
    print(json.dumps({k: rec[k] for k in ("record_path", "psnr", "ssim", "latency", "wall_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
