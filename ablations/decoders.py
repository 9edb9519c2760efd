"""The decoder records: SnapGen's tiny decoder vs the SD3 and SDXL VAE decoders.

One record per decoder (``snapgen.records`` envelope, kind "decoder") under ``results/decoders/<name>.json``:

    name       "tiny" | "sd3_vae" | "sdxl_vae"
    protocol   DecoderTableSettings (flops_latent, latency_latent, latency_warmup, latency_repeats, batch, dtype,
               threads), flops_resolution_px, latency_resolution_px, device, weights ("random"), flop counter
    scores     params; gflops_<px> (decode to <px>, FLOPs = 2 x MACs); cpu_ms_median_<px>px and cpu_ms_p90_<px>px
    details    label, paper (the paper's claim for the row), config, exact integer FLOPs (and per op), the FLOPs
               of the timed size, the remaining latency statistics

``results/tables/decoders.md`` is written from these records by ``ablations.tables.decoders`` and the figure
``results/figures/decoders.png`` by ``paper_figures.decoders``.

    python -m ablations.decoders               # measure, write the records and the table
    python -m ablations.decoders --no-measure  # only rewrite the table from the existing records
    python -m paper_figures.decoders           # the figure
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ablations.tables import write_table
from ablations.tables.decoders import ROWS, load, render
from snapgen.cli import positive_int
from snapgen.cost import count_flops, count_params, time_fn
from snapgen.env import environment
from snapgen.models.decoder import DECODERS, SD3_VAE_CONFIG, SDXL_VAE_CONFIG, TinyDecoder
from snapgen.paths import results_root
from snapgen.records import RecordError, make_record, score, write_record

KIND = "decoder"
FLOP_COUNTER = "FLOPs (2 x MACs), meta-device dispatcher count, attention included"
LABELS = {"tiny": "SnapGen tiny decoder (ours)", "sd3_vae": "SD3 VAE decoder", "sdxl_vae": "SDXL VAE decoder"}
PAPER = {"tiny": "~1.38M params, ~36x fewer params, ~54x faster (iPhone)",  # SPEC.md section 1-2
         "sd3_vae": "baseline", "sdxl_vae": "—"}
LATENCY_DETAILS = ("mean_ms", "std_ms", "min_ms", "max_ms", "times_ms")   # the statistics that are not scores


@dataclass(frozen=True)
class DecoderTableSettings:
    flops_latent: int = 128      # latent side for FLOPs: 128 -> 1024 px (the paper's resolution)
    latency_latent: int = 16     # latent side for CPU latency: 16 -> 128 px, so `pytest ablations` stays < 60 s
    # (an SD3-decoder run at 32 -> 256 px took 17-21 s on 1 shared thread here; use --latent 32 by hand)
    latency_warmup: int = 1      # untimed runs before timing
    latency_repeats: int = 3     # timed runs; the median is reported
    batch: int = 1               # images per call
    dtype: str = "float32"       # weights and activations
    threads: int = 1             # torch.set_num_threads during timing (the machine is shared)


def _latent_channels(name: str) -> int:
    return 4 if name == "sdxl_vae" else 16


def _config_of(name: str, model) -> dict:
    if isinstance(model, TinyDecoder):
        return model.cfg.to_dict()
    return json.loads(json.dumps(SD3_VAE_CONFIG if name == "sd3_vae" else SDXL_VAE_CONFIG))


def decoder_envelope(name: str, settings: dict, params: int, flops: int, latency: dict, details: dict,
                     environment_: dict) -> dict:
    """The record of one decoder (shared by a new measurement and ``migrate_v1``). ``settings``: the fields of
    ``DecoderTableSettings``; ``latency``: ``LatencyStats.to_dict()``; ``details``: label, paper, config, ..."""
    if latency["n"] != settings["latency_repeats"] or latency["warmup"] != settings["latency_warmup"]:
        raise RecordError(f"{name}: latency n/warmup {latency['n']}/{latency['warmup']} differ from the settings")
    flops_px, lat_px = settings["flops_latent"] * 8, settings["latency_latent"] * 8
    protocol = {**settings, "flops_resolution_px": flops_px, "latency_resolution_px": lat_px, "device": "cpu",
                "weights": "random", "flop_counter": FLOP_COUNTER}
    scores = {"params": score(params, higher_is_better=None, unit="params"),
              f"gflops_{flops_px}": score(flops / 1e9, higher_is_better=False, unit="GFLOPs")}
    for stat in ("median", "p90"):
        scores[f"cpu_ms_{stat}_{lat_px}px"] = score(latency[f"{stat}_ms"], n=latency["n"], higher_is_better=False,
                                                    unit="ms")
    details = {**details, "flops": flops, "latency_cpu": {k: latency[k] for k in LATENCY_DETAILS}}
    return make_record(KIND, name, protocol, scores, details, environment_)


def measure_decoder(name: str, s: DecoderTableSettings = DecoderTableSettings()) -> dict:
    """Params + FLOPs (meta) + CPU latency of one decoder -> its record."""
    cz = _latent_channels(name)
    meta = DECODERS[name]("meta")
    flops = count_flops(meta, torch.empty(s.batch, cz, s.flops_latent, s.flops_latent, device="meta"))
    lat_flops = count_flops(meta, torch.empty(s.batch, cz, s.latency_latent, s.latency_latent, device="meta")).total
    prev = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        torch.manual_seed(0)
        model = DECODERS[name]("cpu").eval().to(getattr(torch, s.dtype))
        z = torch.randn(s.batch, cz, s.latency_latent, s.latency_latent, dtype=getattr(torch, s.dtype))
        with torch.inference_mode():
            lat = time_fn(lambda: model(z), warmup=s.latency_warmup, repeats=s.latency_repeats)
        env = environment("cpu")
    finally:
        torch.set_num_threads(prev)
    details = {"label": LABELS[name], "paper": PAPER[name], "config": _config_of(name, meta),
               "flops_per_op": flops.per_op, "latency_flops": lat_flops}
    return decoder_envelope(name, asdict(s), count_params(meta), flops.total, lat.to_dict(), details, env)


def write_records(root: Path | None = None, s: DecoderTableSettings = DecoderTableSettings(),
                  names: tuple[str, ...] = ROWS) -> list[Path]:
    root = root or results_root()
    return [write_record(root / "decoders" / f"{n}.json", measure_decoder(n, s)) for n in names]


def load_records(root: Path | None = None) -> dict[str, dict]:
    """Decoder records by name (validated)."""
    return load(root or results_root())


def regenerate(root: Path | None = None, s: DecoderTableSettings = DecoderTableSettings(),
               measure: bool = True) -> dict:
    """Measure (optional), then write the table from whatever records exist."""
    root = root or results_root()
    if measure:
        write_records(root, s)
    return {"records": load_records(root), "table": write_table("decoders", render(root), root)}


def migrate_v1(old: dict, path: Path) -> dict:
    """A schema-1 "decoder_cost" record in the envelope: ``env`` becomes ``environment``, every number is carried
    over; the old records have no ``created`` (it is set to null)."""
    if old["latency_resolution_px"] != old["settings"]["latency_latent"] * 8 or \
            old["flops_resolution_px"] != old["settings"]["flops_latent"] * 8:
        raise RecordError(f"{path}: resolutions disagree with the settings")
    details = {"label": old["label"], "paper": PAPER.get(old["decoder"], "—"), "config": old["config"],
               "flops_per_op": old["flops_per_op"], "latency_flops": old["latency_flops"]}
    env = {"versions": None, "threads": old["settings"].get("threads"), "git_commit": None, **old["env"]}
    rec = decoder_envelope(old["decoder"], old["settings"], old["params"], old["flops_1024"], old["latency_cpu"],
                           details, env)
    return {**rec, "created": old.get("created")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations.decoders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=None, help="results root (default: snapgen.paths.results_root())")
    p.add_argument("--no-measure", action="store_true", help="only rebuild the table from existing records")
    d = DecoderTableSettings()
    p.add_argument("--repeats", type=positive_int, default=None, help=f"timed runs (default {d.latency_repeats})")
    p.add_argument("--latent", type=positive_int, default=None,
                   help=f"latency latent side (default {d.latency_latent})")
    p.add_argument("--threads", type=positive_int, default=None,
                   help=f"torch threads while timing (default {d.threads})")
    a = p.parse_args(argv)
    given = [f"--{k}" for k in ("repeats", "latent", "threads") if getattr(a, k) is not None]
    if a.no_measure and given:
        p.error(f"{', '.join(given)}: timing options do nothing with --no-measure (the table is rebuilt from the "
                "existing records); drop them, or measure again without --no-measure")
    s = DecoderTableSettings(latency_latent=a.latent or d.latency_latent,
                             latency_repeats=a.repeats or d.latency_repeats, threads=a.threads or d.threads)
    out = regenerate(a.results, s, not a.no_measure)
    print(out["table"].read_text())
    print("figure: python -m paper_figures.decoders  (draws results/figures/decoders.png)")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
