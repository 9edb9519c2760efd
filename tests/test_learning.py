"""The tiny SnapGen learns the synthetic world on a CPU: after training, the requested objects appear in
the image measurably more often than before (decided by the world's exact reader)."""
import os

import numpy as np
import pytest
import torch

from snapgen.data.world import WorldConfig, all_metadata, detect
from snapgen.models.unet import SnapGenUNet
from snapgen.pipeline import SnapGenPipeline, sample_seed
from snapgen.train import TrainConfig, train

STEPS = int(os.environ.get("SNAPGEN_LEARNING_STEPS", "300"))


def presence_rate(pipe: SnapGenPipeline, metas: list[dict], seeds_per_prompt: int = 2) -> float:
    """Share of images in which every requested (class, colour) appears at least `count` times."""
    prompts = [m["prompt"] for m in metas for _ in range(seeds_per_prompt)]
    seeds = [sample_seed(i, k, 99) for i in range(len(metas)) for k in range(seeds_per_prompt)]
    images = pipe.generate(prompts, seeds, steps=20, guidance=3.0, batch_size=32)
    hits = []
    for img, meta in zip(images, [m for m in metas for _ in range(seeds_per_prompt)]):
        found = detect(img, WorldConfig())
        ok = all(sum(d["class"] == r["class"] and r.get("color", d["color"]) == d["color"] for d in found) >= r["count"]
                 for r in meta["include"])
        hits.append(ok)
    return float(np.mean(hits))


@pytest.mark.slow
def test_training_puts_the_requested_objects_in_the_image(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "run"), steps=STEPS, ckpt_every=10**6, log_every=50, threads=None)
    train(cfg, progress=False)
    trained = SnapGenPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    torch.manual_seed(0)
    untrained = SnapGenPipeline(SnapGenUNet(trained.unet.config), trained.text, None, trained.config)
    metas = all_metadata("single_object", WorldConfig()) + all_metadata("colors", WorldConfig())
    before, after = presence_rate(untrained, metas), presence_rate(trained, metas)
    print(f"object presence: untrained {before:.3f}, trained {after:.3f} ({STEPS} steps)")
    assert after >= before + 0.2, (before, after)
