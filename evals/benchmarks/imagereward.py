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

from evals.benchmarks.clip import add_prompt_args, base_protocol, collect_samples, dry_run, load_gen, sample_row
from evals.benchmarks.common import record_path, slug
from evals.records import build_record, write_record

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


def run(args) -> int:
    from evals.metrics.clip_score import aggregate_rows

    t0 = time.time()
    model = load_model(args)              # missing weights fail before any image is generated
    gen = load_gen(args)
    out = record_path(args, "imagereward", f"{slug(gen.name if gen else Path(args.images).name)}-imagereward")
    if args.dry_run:
        return dry_run(args, gen, "imagereward", out)
    samples, folder, counts, info = collect_samples(args, gen)
    from evals.generate import shard_info

    if shard_info()[0] != 0:
        return 0
    rows = score_samples(model, samples, args.score_batch_size)
    key = model.metric_key
    scores = aggregate_rows(rows, [key])
    protocol = base_protocol(args, gen, folder, info, samples, model.protocol)
    record = build_record("imagereward", scores, protocol, None, None, time.time() - t0, args.device,
                          higher_is_better={key: True})
    record["generation"] = counts
    write_record(out, record, rows)
    print(f"{key} {scores[key]:.4f} [95% CI {scores[key + '_ci95_low']:.4f}, {scores[key + '_ci95_high']:.4f}]  "
          f"({scores['n_samples']} images, {scores['n_prompts']} prompts)")
    print(f"record: {out}")
    return 0
