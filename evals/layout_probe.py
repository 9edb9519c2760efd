"""Does the prompt or the starting noise decide where a world model puts its objects? One record.

    python -m evals.layout_probe --ckpt world-tiny                                  # position prompts, 8 x 8 images
    python -m evals.layout_probe --ckpt world-tiny --ckpt RUN/pipeline --name cmp   # several checkpoints, same images
    python -m evals.layout_probe --ckpt world-tiny --tag color_attr --split heldout

A diagnostic for GenEval-world's position and colour-attribution failures. ``--prompts`` prompts of one task are
each sampled with the same ``--seeds`` seeds (so image (prompt p, seed s) and (prompt q, seed s) start from the same
noise). Each image's foreground is the set of pixels farther than ``--threshold`` (max over RGB, images in [0, 1])
from the world's flat background. Reported per checkpoint, as mean foreground IoU over pairs of images:

* ``iou_same_seed``: other prompt, same seed. High means the layout follows the noise, whatever the prompt says.
* ``iou_same_prompt``: same prompt, other seed. High means the prompt fixes the layout.
* ``iou_neither``: other prompt, other seed (the level two unrelated images reach by chance).
* ``seed_dominance`` = ``iou_same_seed - iou_same_prompt``.

With several ``--ckpt``, every later checkpoint also gets ``delta_<statistic>``: its difference to the first
checkpoint on the same prompts and seeds, with a paired bootstrap CI (the same prompt and seed draws for both).

95% CIs by a two-way bootstrap that resamples prompts and seeds together (pairs of a resampled unit with a copy of
itself are left out). A ``world-data`` row gives the renderer's own ``iou_same_prompt`` and ``iou_neither`` (each
(prompt, seed) an independent layout of the prompt): the level a model that followed the prompt as the data does
would reach. The record goes to ``results/world/layout_probe-<name>.json``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from snapgen.cli import positive_int
from snapgen.paths import display, results_dir
from snapgen.records import make_record, score, write_record

STATS = ("iou_same_seed", "iou_same_prompt", "iou_neither", "seed_dominance")


def foreground(images, background: tuple[int, int, int], threshold: float) -> np.ndarray:
    """(N, H, W) bool: pixels whose largest RGB difference from ``background`` (0-255) exceeds ``threshold`` (0-1)."""
    x = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])     # (N, H, W, 3)
    bg = np.asarray(background, dtype=np.float32) / 255.0
    return np.abs(x - bg).max(-1) > threshold


def iou_matrix(masks: np.ndarray) -> np.ndarray:
    """masks (P, S, H, W) bool -> IoU of every pair of images, (P, S, P, S); two empty masks count as identical."""
    p, s = masks.shape[:2]
    flat = masks.reshape(p * s, -1).astype(np.float64)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)
    return iou.reshape(p, s, p, s)


def layout_stats(iou: np.ndarray, pi: np.ndarray | None = None, si: np.ndarray | None = None) -> dict[str, float]:
    """The probe's statistics over prompts ``pi`` and seeds ``si`` (indices, repeats allowed: a bootstrap draw);
    a pair counts as 'other prompt' / 'other seed' only when the original indices differ."""
    p, s = iou.shape[:2]
    pi = np.arange(p) if pi is None else np.asarray(pi)
    si = np.arange(s) if si is None else np.asarray(si)
    m = iou[np.ix_(pi, si, pi, si)]                                   # (P', S', P', S')
    dp, ds = pi[:, None] != pi[None, :], si[:, None] != si[None, :]
    k, j = np.arange(len(si)), np.arange(len(pi))
    same_seed = m[:, k, :, k]                                         # (S', P', P'): prompt pairs at one seed
    same_prompt = m[j, :, j, :]                                       # (P', S', S'): seed pairs of one prompt
    neither = dp[:, None, :, None] & ds[None, :, None, :]
    out = {"iou_same_seed": float(same_seed[:, dp].mean()) if dp.any() else float("nan"),
           "iou_same_prompt": float(same_prompt[:, ds].mean()) if ds.any() else float("nan"),
           "iou_neither": float(m[neither].mean()) if neither.any() else float("nan")}
    out["seed_dominance"] = out["iou_same_seed"] - out["iou_same_prompt"]
    return out


def _resampled(ious: list[np.ndarray], n_boot: int, seed: int):
    """Per bootstrap draw, the statistics of every IoU matrix over the same resampled prompts and seeds."""
    rng = np.random.default_rng(seed)
    p, s = ious[0].shape[:2]
    for _ in range(n_boot):
        pi, si = rng.integers(0, p, p), rng.integers(0, s, s)
        yield [layout_stats(iou, pi, si) for iou in ious]


def _ci(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def bootstrap(iou: np.ndarray, n_boot: int, seed: int, stats: tuple[str, ...] = STATS) -> dict[str, tuple[float, float]]:
    """Percentile 95% CI of each statistic, resampling prompts and seeds together."""
    draws = list(_resampled([iou], n_boot, seed))
    per = {k: [d[k] for (d,) in draws if np.isfinite(d[k])] for k in stats}
    return {k: _ci(v) for k, v in per.items() if v}


def paired_bootstrap(iou_a: np.ndarray, iou_b: np.ndarray, n_boot: int, seed: int,
                     stats: tuple[str, ...] = STATS) -> dict[str, tuple[float, float, float]]:
    """B - A for each statistic of two checkpoints probed on the same prompts and seeds: (point, 95% CI low, high),
    both resampled with the same prompt and seed draws."""
    a, b = layout_stats(iou_a), layout_stats(iou_b)
    draws = list(_resampled([iou_a, iou_b], n_boot, seed))
    per = {k: [db[k] - da[k] for da, db in draws if np.isfinite(da[k]) and np.isfinite(db[k])] for k in stats}
    return {k: (b[k] - a[k], *_ci(v)) for k, v in per.items() if v}


def _scores(iou: np.ndarray, n_boot: int, seed: int, stats: tuple[str, ...]) -> dict[str, dict]:
    point, ci = layout_stats(iou), bootstrap(iou, n_boot, seed, stats)
    p, s = iou.shape[:2]
    return {k: score(point[k], ci.get(k), p * s, None, "IoU") for k in stats}


def data_masks(metas: list[dict], n_seeds: int, cfg, threshold: float) -> np.ndarray:
    """The renderer's own images of the prompts: an independent layout per (prompt, seed)."""
    from snapgen.data.world import render, scene_from_metadata

    images = [render(scene_from_metadata(m, np.random.default_rng([p, s]), cfg), cfg)[0]
              for p, m in enumerate(metas) for s in range(n_seeds)]
    return foreground(images, cfg.background, threshold).reshape(len(metas), n_seeds, cfg.resolution, cfg.resolution)


def choose_prompts(tag: str, split: str, n: int, seed: int, cfg) -> list[dict]:
    from snapgen.data.world import all_metadata

    pool = all_metadata(tag, cfg, "train" if split == "in_distribution" else split)
    if n > len(pool):
        raise ValueError(f"--prompts {n}: the world's {split} split has only {len(pool)} {tag} prompts; pass "
                         f"--prompts {len(pool)} or less")
    idx = np.random.default_rng(seed).choice(len(pool), n, replace=False)
    return [pool[i] for i in sorted(idx)]


def default_name(ckpt: str) -> str:
    """``world-tiny`` -> itself; ``runs/x/pipeline`` -> ``x``; ``runs/x`` -> ``x``."""
    from pathlib import Path

    p = Path(ckpt)
    return ckpt if ckpt.startswith("world-") else (p.parent.name if p.name == "pipeline" else p.name)


def main(argv: list[str] | None = None) -> int:
    import torch

    from evals.benchmarks.geneval import TASKS
    from evals.generators import load_generator
    from snapgen.data.world import WorldConfig

    ap = argparse.ArgumentParser(prog="python -m evals.layout_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", action="append", required=True,
                    help="world-tiny or a snapgen world pipeline folder (repeat to compare checkpoints)")
    ap.add_argument("--tag", default="position", choices=[t for t in TASKS if t != "single_object"],
                    help="GenEval-world task whose prompts are probed (default position)")
    ap.add_argument("--split", default="in_distribution", choices=("in_distribution", "heldout"),
                    help="world prompt split (default in_distribution: the training compositions)")
    ap.add_argument("--prompts", type=positive_int, default=8, help="prompts of the task (default 8)")
    ap.add_argument("--seeds", type=positive_int, default=8, help="seeds per prompt, shared by the prompts (default 8)")
    ap.add_argument("--base-seed", type=int, default=1000, help="seeds are base-seed + 0 .. seeds-1 (default 1000)")
    ap.add_argument("--threshold", type=float, default=0.15,
                    help="foreground: max RGB difference from the background above this, in [0, 1] (default 0.15)")
    ap.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the pipeline's)")
    ap.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    ap.add_argument("--threads", type=positive_int, default=torch.get_num_threads(), help="torch CPU threads")
    ap.add_argument("--n-boot", type=positive_int, default=1000, help="bootstrap draws (default 1000)")
    ap.add_argument("--name", default=None, help="record name (default: the first --ckpt's folder name)")
    a = ap.parse_args(argv)
    if not 0 < a.threshold < 1:
        ap.error(f"--threshold {a.threshold}: must lie in (0, 1)")
    if a.prompts < 2 or a.seeds < 2:
        ap.error("--prompts and --seeds must both be >= 2 (the probe compares pairs)")
    torch.set_num_threads(a.threads)
    cfg = WorldConfig()
    metas = choose_prompts(a.tag, a.split, a.prompts, a.base_seed, cfg)
    prompts = [m["prompt"] for m in metas for _ in range(a.seeds)]
    seeds = [a.base_seed + s for _ in metas for s in range(a.seeds)]
    t0 = time.perf_counter()
    rows, protocols, ious = {}, {}, {}
    for ckpt in a.ckpt:
        gen = load_generator(ckpt, steps=a.steps, guidance=a.guidance)
        if gen.domain != "world" or gen.resolution != cfg.resolution:
            raise ValueError(f"--ckpt {ckpt}: not a world model at {cfg.resolution} px (the probe reads the world's "
                             "flat background); pass world-tiny or a pipeline trained by python -m snapgen.train")
        gen.threads = a.threads
        images = gen.generate(prompts, seeds, [m for m in metas for _ in range(a.seeds)])
        masks = foreground(images, cfg.background, a.threshold).reshape(a.prompts, a.seeds, cfg.resolution,
                                                                        cfg.resolution)
        label = ckpt if ckpt.startswith("world-") else display(ckpt)
        ious[label] = iou_matrix(masks)
        rows[label] = _scores(ious[label], a.n_boot, 0, STATS)
        if len(ious) > 1:
            first = next(iter(ious))
            for k, (d, lo, hi) in paired_bootstrap(ious[first], ious[label], a.n_boot, 0).items():
                rows[label][f"delta_{k}"] = score(d, (lo, hi), a.prompts * a.seeds, None, "IoU")
        protocols[label] = gen.protocol()
        print(f"{label}: " + ", ".join(f"{k} {v['value']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
                                       for k, v in rows[label].items()), flush=True)
    data = _scores(iou_matrix(data_masks(metas, a.seeds, cfg, a.threshold)), a.n_boot, 0,
                   ("iou_same_prompt", "iou_neither"))
    print("world-data: " + ", ".join(f"{k} {v['value']:.3f}" for k, v in data.items()))
    scores = {f"{label}/{k}": v for label, st in {**rows, "world-data": data}.items() for k, v in st.items()}
    name = a.name or default_name(a.ckpt[0])
    protocol = {"tag": a.tag, "split": a.split, "prompts": [m["prompt"] for m in metas], "seeds": a.seeds,
                "base_seed": a.base_seed, "threshold": a.threshold, "background": list(cfg.background),
                "bootstrap": {"method": "two-way (prompts x seeds); deltas paired (same draws)", "n": a.n_boot,
                              "seed": 0},
                "delta_against": list(rows)[0] if len(rows) > 1 else None,
                "threads": a.threads, "generators": protocols}
    rec = make_record("sweep", f"layout_probe-{name}", protocol, scores,
                      {"wall_time_s": time.perf_counter() - t0, "checkpoints": list(rows)})
    out = write_record(results_dir("world") / f"layout_probe-{name}.json", rec)
    print(f"wrote {display(out)}")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
