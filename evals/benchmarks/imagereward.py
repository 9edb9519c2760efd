"""ImageReward-v1.0 (THUDM, BLIP-based human-preference reward), rebuilt on transformers; local weights.

    python -m evals.run imagereward --ckpt PIPE --prompts prompts.txt --ir-ckpt ImageReward.pt \\
        --ir-med-config med_config.json --ir-tokenizer /models/bert-base-uncased
    python -m evals.run imagereward --images DIR --ir-ckpt ImageReward.pt --ir-med-config med_config.json \\
        --ir-tokenizer /models/bert-base-uncased                          # DIR/images.jsonl or --captions

Per-sample standardised rewards in the JSONL; the score is the mean over prompts (each prompt = mean of
its images) with a bootstrap 95% CI resampling prompts. Parity with THUDM's package is NOT checked
(no official weights offline); see ``evals.metrics.imagereward``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from evals.api import Metric, Scored, register
from evals.benchmarks.clip import SampleBenchmark, add_prompt_args, base_protocol, sample_row
from evals.benchmarks.common import slug

NAME = "imagereward"
HELP = "ImageReward-v1.0 human-preference reward (BLIP rebuild on transformers; local ImageReward.pt)"


def add_arguments(p) -> None:
    add_prompt_args(p)
    e = p.add_argument_group("ImageReward")
    e.add_argument("--ir-ckpt", default=None, help="ImageReward.pt (huggingface.co/THUDM/ImageReward), local")
    e.add_argument("--ir-med-config", default=None, help="med_config.json from the same repository, local")
    e.add_argument("--ir-tokenizer", default=None, help="local bert-base-uncased tokenizer folder (vocab.txt)")
    e.add_argument("--ir-config", default=None, help="JSON of ImageRewardConfig overrides (other sizes, tiny test "
                   "models); default: ImageReward-v1.0")


def load_model(args):
    from evals.metrics.imagereward import IMAGEREWARD_V1, ImageRewardModel

    config = IMAGEREWARD_V1
    if args.ir_config:
        fields = {f.name for f in dataclasses.fields(config)}
        overrides = json.loads(args.ir_config)
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"--ir-config: unknown ImageRewardConfig fields {unknown}; known {sorted(fields)}")
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        config = dataclasses.replace(config, **overrides)
    return ImageRewardModel.from_pretrained(args.ir_ckpt, args.ir_med_config, args.ir_tokenizer, config=config,
                                            device=args.device)


def score_samples(model, samples, batch_size: int) -> list[dict]:
    """One reward per sample; images of one prompt are scored together (one text encoding)."""
    groups: dict = {}
    for s in samples:
        groups.setdefault((s.prompt_id, s.prompt), []).append(s)
    rows = []
    for (_, prompt), group in groups.items():
        rewards = model.score(prompt, [s.file for s in group], batch_size=batch_size)
        rows.extend({**sample_row(s), model.metric_key: r} for s, r in zip(group, rewards))
    return rows


class ImageReward(SampleBenchmark):
    """ImageReward-v1.0 human-preference reward per image (local ImageReward.pt), mean over prompts.

    python -m evals.run imagereward --ckpt PIPE --prompts captions.txt --ir-ckpt ImageReward.pt \
        --ir-med-config med_config.json --ir-tokenizer bert-base-uncased/
    """

    name, help = NAME, HELP
    metrics = (Metric("imagereward*", True, "reward", "mean over prompts of the per-image reward"),)

    def add_arguments(self, p) -> None:
        add_arguments(p)

    def load_scorer(self, args):
        return load_model(args)

    def record_name(self, args, gen, scorer) -> str:
        return f"{slug(gen.name if gen else Path(args.images).name)}-imagereward"

    def score(self, plan, args) -> Scored:
        model, samples = plan.state["scorer"], plan.state["samples"]
        rows = score_samples(model, samples, args.score_batch_size)
        plan.protocol.update(base_protocol(args, plan.state["gen"], plan.folder, plan.state["info"], samples,
                                           model.protocol))
        return self.sample_scores(rows, [model.metric_key])


BENCHMARK = register(ImageReward())
