"""CPU-scale proof of the tiny decoder on the synthetic world, with a stand-in VAE.

The SD3 VAE is not available offline, so a toy ``AutoencoderKL`` with SD3's latent layout (16 channels,
8x down, mid attention) is trained on world scenes first; its frozen encoder then feeds the tiny decoder,
trained by the engine (``snapgen.train_decoder.train``). Held-out PSNR/SSIM (and LPIPS when its weights
are given) of both decoders and their CPU latency go into one record (``snapgen.records`` envelope) at
``results/decoder/world_proof_<hash of the proof config>.json``.

The record's kind is "decoder" (what it measures is the decoder: reconstruction quality and latency of the tiny
decoder against the stand-in VAE decoder; the training that produced it is its provenance, in ``details``):

    name       "tiny-decoder-world-proof"
    protocol   proof_config, standin_vae_config, latency_settings, metric_settings (image range, SSIM settings)
    scores     psnr_heldout_<decoder> (dB), ssim_heldout_<decoder>, lpips_vgg_heldout_<decoder> (when computed),
               n = held-out images; cpu_ms_median_<px>px_<decoder> (n = repeats); speedup_<px>px (stand-in / tiny);
               params_<decoder>_decoder                       <decoder> in {tiny, standin_vae}
    details    decoder_train_config, metrics_detail, final_losses, wall_s, lpips_reason

    python -m snapgen.experiments.decoder_world_proof --out runs/decoder_world --threads 1
    python -m snapgen.train_decoder --world --out runs/decoder_world          # the same, from the trainer's CLI
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from snapgen.cli import nonnegative_int
from snapgen.io import check_writable_dir, sha256_json
from snapgen.models.decoder import TINY_DECODER_PRESETS, TinyDecoder
from snapgen.recon_metrics import try_load_lpips
from snapgen.train_decoder import TrainDecoderConfig, train
from snapgen.training.decoder_data import TensorImages, load_frozen_encoder, render_world, sample_batch

KIND = "decoder"
NAME = "tiny-decoder-world-proof"
DECODERS = ("standin_vae", "tiny")  # the two decoders compared, as named in scores and details

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


def _lat_px(key: str) -> int:
    """``"latent32_px256"`` -> 256."""
    return int(key.rsplit("_px", 1)[1])


def world_proof_envelope(proof_config: dict, standin_vae_config: dict, params: dict, metrics: dict, latency: dict,
                         latency_settings: dict, details: dict, environment_: dict) -> dict:
    """The record (shared by a new run and ``migrate_v1``). ``metrics``: decoder -> reconstruction_metrics dict;
    ``latency``: ``"latent<s>_px<p>"`` -> {standin_vae_ms, tiny_ms, speedup}; ``params``: <decoder>_decoder -> count."""
    from snapgen.records import make_record, score

    scores = {}
    for dec in DECODERS:
        m = metrics[dec]
        scores[f"psnr_heldout_{dec}"] = score(m["psnr"], n=m["n_images"], unit="dB")
        scores[f"ssim_heldout_{dec}"] = score(m["ssim"], n=m["n_images"])
        if m.get("lpips") is not None:
            scores[f"lpips_vgg_heldout_{dec}"] = score(m["lpips"], n=m["n_images"], higher_is_better=False)
    for key, row in sorted(latency.items(), key=lambda kv: _lat_px(kv[0])):
        px = _lat_px(key)
        for dec in DECODERS:
            scores[f"cpu_ms_median_{px}px_{dec}"] = score(row[f"{dec}_ms"], n=latency_settings["repeats"],
                                                          higher_is_better=False, unit="ms")
        scores[f"speedup_{px}px"] = score(row["speedup"], higher_is_better=None, unit="x")
    for k, n in params.items():
        scores[f"params_{k}"] = score(n, higher_is_better=None, unit="params")
    some = metrics[DECODERS[0]]
    protocol = {"proof_config": proof_config, "standin_vae_config": standin_vae_config,
                "latency_settings": latency_settings,
                "metric_settings": {"image_range": some["image_range"], "ssim_settings": some["ssim_settings"]}}
    return make_record(KIND, NAME, protocol, scores, {**details, "metrics_detail": metrics}, environment_)


def record_path(results_dir: Path, proof_config: dict) -> Path:
    return results_dir / f"world_proof_{sha256_json(proof_config)[:10]}.json"


def run_world_proof(out: Path, results_dir: Path | None = None, pc: WorldProofConfig = WorldProofConfig(),
                    threads: int = 1, vgg16_weights=None, lpips_weights=None, progress: bool = True) -> dict:
    """Stand-in VAE -> frozen encoder -> tiny decoder; held-out PSNR/SSIM + CPU latency -> a record written to
    ``record_path(results_dir or results/decoder, ...)``; returns ``{"record", "record_path"}``."""
    from snapgen.cost import count_params
    from snapgen.env import environment
    from snapgen.paths import results_dir as results_folder
    from snapgen.recon_metrics import reconstruction_metrics
    from snapgen.io import write_weights_manifest
    from snapgen.records import write_record

    t0 = time.perf_counter()
    train_pool = TensorImages(render_world(pc.n_train, pc.resolution, pc.seed))
    held_out = render_world(pc.n_eval, pc.resolution, pc.eval_seed)          # (n_eval, 3, R, R)
    vae = train_standin_vae(pc, train_pool, progress)
    vae.save_pretrained(str(out / "standin_vae"))                             # then reload as a user would
    write_weights_manifest(out / "standin_vae")                               # checked by load_frozen_encoder
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
    lat = latency(frozen, tiny, pc)                                           # before wall_s: "total" includes it
    latency_settings = {"device": "cpu", "dtype": "float32", "batch": 1, "warmup": 2, "repeats": pc.latency_repeats,
                        "stat": "median", "torch_threads": torch.get_num_threads()}
    details = {"decoder_train_config": cfg.to_dict(), "final_losses": res["last"], "lpips_reason": lp[1],
               "wall_s": {"standin_vae": t_vae, "tiny_decoder": t_dec, "total": time.perf_counter() - t0}}
    params = {"standin_vae_decoder": count_params(frozen.decoder), "tiny_decoder": count_params(tiny)}
    env = {**environment("cpu"), "torch": torch.__version__, "threads_requested": threads}
    record = world_proof_envelope(asdict(pc), STANDIN_VAE_CONFIG, params, {"standin_vae": m_vae, "tiny": m_tiny},
                                  lat, latency_settings, details, env)
    path = write_record(record_path(results_dir or results_folder("decoder"), asdict(pc)), record)
    return {"record": record, "record_path": str(path)}


def migrate_v1(old: dict, path: Path) -> dict:
    """A schema-1 "tiny_decoder_world_proof" record in the envelope: ``env`` becomes ``environment``; every number
    is carried over (the top-level psnr/ssim/lpips were copies of ``metrics_detail``); the old record has no
    ``created`` (set to null)."""
    from snapgen.records import RecordError

    for metric in ("psnr", "ssim"):
        for dec in DECODERS:
            if old[metric][dec] != old["metrics_detail"][dec][metric]:
                raise RecordError(f"{path}: {metric}.{dec} differs from metrics_detail.{dec}.{metric}")
    details = {"decoder_train_config": old["decoder_train_config"], "final_losses": old["final_losses"],
               "lpips_reason": old["lpips_reason"], "wall_s": old["wall_s"]}
    env = {"versions": None, "threads": old["latency_settings"].get("torch_threads"), "git_commit": None, **old["env"]}
    rec = world_proof_envelope(old["proof_config"], old["standin_vae_config"], old["params"], old["metrics_detail"],
                               old["latency"], old["latency_settings"], details, env)
    return {**rec, "created": old.get("created")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snapgen.experiments.decoder_world_proof", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/decoder_world", help="run folder (standin_vae/, tiny_decoder/)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where the record goes (default: results/decoder under snapgen.paths.results_root())")
    p.add_argument("--threads", type=nonnegative_int, default=0,
                   help="torch CPU threads (default 0 = torch's own choice; the count used is recorded)")
    p.add_argument("--vgg16-weights", help="local torchvision vgg16 state dict (LPIPS trunk)")
    p.add_argument("--lpips-weights", help="local LPIPS v0.1 linear layers (vgg.pth)")
    p.add_argument("--dry-run", action="store_true", help="print the proof and decoder configs, then exit")
    args = p.parse_args(argv)
    pc = WorldProofConfig()
    if args.dry_run:
        print(json.dumps({"proof_config": asdict(pc), "decoder_train_config": pc.decoder_train_config().to_dict()},
                         indent=2))
        return 0
    check_writable_dir(args.out)
    if args.results_dir is not None:
        check_writable_dir(args.results_dir, "--results-dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run_world_proof(Path(args.out), args.results_dir, pc, threads=torch.get_num_threads(),
                          vgg16_weights=args.vgg16_weights, lpips_weights=args.lpips_weights)
    print(json.dumps({"record_path": out["record_path"],
                      "scores": {k: s["value"] for k, s in out["record"]["scores"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
