"""The tiny SnapGen learns the synthetic world on a CPU: after training, the requested objects appear in
the image measurably more often than before (decided by the world's exact reader)."""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from snapgen.env import environment
from snapgen.io import atomic_write_json
from snapgen.data.world import WorldConfig, all_metadata, detect
from snapgen.models.unet import SnapGenUNet
from snapgen.pipeline import SnapGenPipeline, sample_seed
from snapgen.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parents[1] / "results"
STEPS = int(os.environ.get("SNAPGEN_LEARNING_STEPS", "400"))


def presence_rates(pipe: SnapGenPipeline, metas: list[dict], seeds_per_prompt: int = 2) -> tuple[float, float]:
    """(share of images in which every requested (class, colour) appears at least `count` times,
        share of images in which every requested colour appears)."""
    prompts = [m["prompt"] for m in metas for _ in range(seeds_per_prompt)]
    seeds = [sample_seed(i, k, 99) for i in range(len(metas)) for k in range(seeds_per_prompt)]
    images = pipe.generate(prompts, seeds, steps=20, guidance=3.0, batch_size=32)
    objects, colours = [], []
    for img, meta in zip(images, [m for m in metas for _ in range(seeds_per_prompt)]):
        found = detect(img, WorldConfig())
        objects.append(all(sum(d["class"] == r["class"] and r.get("color", d["color"]) == d["color"] for d in found)
                           >= r["count"] for r in meta["include"]))
        colours.append(all(any(d["color"] == r["color"] for d in found) for r in meta["include"] if "color" in r))
    return float(np.mean(objects)), float(np.mean(colours))


@pytest.mark.slow
def test_training_puts_the_requested_objects_in_the_image(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "run"), steps=STEPS, ckpt_every=10**6, log_every=50, threads=None)
    t0 = time.perf_counter()
    train(cfg, progress=False)
    train_wall_s = time.perf_counter() - t0
    trained = SnapGenPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    torch.manual_seed(0)
    untrained = SnapGenPipeline(SnapGenUNet(trained.unet.config), trained.text, None, trained.config)
    metas = all_metadata("colors", WorldConfig())            # "a photo of a <colour> <shape>": 40 prompts
    before, after = presence_rates(untrained, metas), presence_rates(trained, metas)
    print(f"requested object / colour present: untrained {before}, trained {after} ({STEPS} steps)")
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    atomic_write_json(RESULTS / "world" / "learning_test.json", {
        "kind": "learning_test", "train_config": cfg.to_dict(), "steps": STEPS, "prompts": "world colors task (40)",
        "seeds_per_prompt": 2, "sampler": {"steps": 20, "guidance": 3.0},
        "untrained": {"object_present": before[0], "colour_present": before[1]},
        "trained": {"object_present": after[0], "colour_present": after[1]},
        "final_loss": log[-1]["loss"], "train_wall_s": train_wall_s,
        "images_per_s": log[-1]["images_per_s"], "environment": environment("cpu")})
    assert after[1] >= before[1] + 0.3, (before, after)      # the requested colour appears far more often
    assert after[0] > before[0], (before, after)             # and so does the requested coloured shape
