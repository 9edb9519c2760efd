"""The generation contract shared by every benchmark.

* seeds per sample from (prompt id, sample index, base seed) (``snapgen.pipeline.sample_seed``), so images
  do not depend on batch size, order or process count;
* resumable: an image that exists is not generated again; every file is written atomically, so a kill
  loses at most the batch in flight;
* shardable: under ``torchrun``/``accelerate launch`` each process takes every world_size-th sample;
* the benchmark's official layout (GenEval: ``NNNNN/metadata.jsonl`` + ``NNNNN/samples/NNNN.png``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from snapgen.io import atomic_save_image, atomic_write_text
from snapgen.pipeline import sample_seed


@dataclass(frozen=True)
class Job:
    prompt_index: int
    sample_index: int
    prompt: str
    seed: int
    path: Path
    metadata: dict | None = None


def shard_info() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed / accelerate launchers; (0, 1) otherwise."""
    import os

    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def geneval_jobs(metadata: list[dict], out_dir: Path, n_per_prompt: int, base_seed: int) -> list[Job]:
    jobs = []
    for i, meta in enumerate(metadata):
        folder = out_dir / f"{i:05d}"
        for k in range(n_per_prompt):
            jobs.append(Job(i, k, meta["prompt"], sample_seed(i, k, base_seed), folder / "samples" / f"{k:04d}.png", meta))
    return jobs


def write_geneval_metadata(metadata: list[dict], out_dir: Path) -> None:
    for i, meta in enumerate(metadata):
        f = out_dir / f"{i:05d}" / "metadata.jsonl"
        text = json.dumps(meta) + "\n"
        if not f.exists() or f.read_text() != text:
            atomic_write_text(f, text)


def run_jobs(jobs: list[Job], generate: Callable[[list[str], list[int], list[dict] | None], list[Image.Image]],
             batch_size: int, progress: bool = True, rank: int | None = None, world: int | None = None) -> dict:
    """Generate the missing images of this process's shard. Returns counts (done before, generated)."""
    from tqdm import tqdm

    r, w = shard_info() if rank is None else (rank, world or 1)
    mine = [j for n, j in enumerate(jobs) if n % w == r]
    todo = [j for j in mine if not j.path.exists()]
    bar = tqdm(total=len(todo), desc=f"generate[{r}/{w}]", unit="img", disable=not progress or not todo)
    for s in range(0, len(todo), batch_size):
        chunk = todo[s:s + batch_size]
        metas = [j.metadata for j in chunk] if all(j.metadata is not None for j in chunk) else None
        images = generate([j.prompt for j in chunk], [j.seed for j in chunk], metas)
        for j, img in zip(chunk, images):
            atomic_save_image(j.path, img)
        bar.update(len(chunk))
    bar.close()
    return {"assigned": len(mine), "existing": len(mine) - len(todo), "generated": len(todo), "rank": r, "world": w}


def wait_for_shards(jobs: list[Job]) -> None:
    """In a multi-process run, block until every process has finished its shard."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    missing = [str(j.path) for j in jobs if not j.path.exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} images are missing after generation (e.g. {missing[:2]}); "
                           "rerun the same command with every shard to complete them")
