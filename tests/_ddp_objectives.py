"""Run by tests/test_training_engine.py under ``torchrun --nproc_per_node 2``: trains every objective
(flow, KD, LADD, decoder) a few steps on tiny models in one 2-process gloo group and writes, per rank,
the sha256 of every module it trained (text projection, KD projector, LADD heads, discriminator
included) to ``ROOT/hashes-rank{R}.json``.

    torchrun --nproc_per_node 2 tests/_ddp_objectives.py SPEC.json
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch


def module_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(spec_path: str) -> None:
    import snapgen.training.objectives.distill as distill_objectives
    import snapgen.training.objectives.flow as flow_objective
    from snapgen.text import EncoderSpec, TextEncoderStack, TextStackConfig
    from snapgen.train_decoder import TrainDecoderConfig, TensorImages, load_frozen_encoder
    from snapgen.training.engine import train_loop
    from snapgen.training.objectives.decoder import TinyDecoderObjective
    from snapgen.training.objectives.distill import DistillConfig
    from snapgen.training.objectives.flow import RectifiedFlow
    from snapgen.training.objectives.kd import KnowledgeDistillation
    from snapgen.training.objectives.ladd import LADD
    from snapgen.training.t2i import TrainConfig
    from snapgen.models.decoder import TinyDecoderConfig

    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"])
    text_cfg = TextStackConfig(tuple(EncoderSpec(n, spec[n], t, 0.3) for n, t in (("clip_l", 77), ("clip_g", 77),
                                                                                   ("gemma", 8))), 64, 40)
    tiny_text = lambda cfg: TextEncoderStack(text_cfg)             # CLIP-L + CLIP-G + Gemma (its projection trains)
    flow_objective.build_text = distill_objectives.build_text = tiny_text
    common = dict(unet=spec["student"], data=f"folder:{spec['images']}", steps=3, batch_size=2, warmup=1,
                  log_every=1, ckpt_every=2, sample_steps=1, sample_guidance=1.0, threads=1, cpu=True, processes=2)
    runs = {}
    cfg = TrainConfig(out=str(root / "flow"), **common)
    runs["flow"] = train_loop(RectifiedFlow(cfg), cfg.loop, cfg.to_dict(), progress=False)
    cfg = DistillConfig(out=str(root / "kd"), stage="kd", teacher=spec["teacher"], **common)
    runs["kd"] = train_loop(KnowledgeDistillation(cfg), cfg.loop, cfg.to_dict(), progress=False)
    cfg = replace(cfg, out=str(root / "ladd"), stage="ladd", init=str(root / "kd" / "pipeline"), ladd_head_hidden=8)
    runs["ladd"] = train_loop(LADD(cfg), cfg.loop, cfg.to_dict(), progress=False)
    dcfg = TrainDecoderConfig(decoder=TinyDecoderConfig(stage_channels=(16, 12, 8, 8), blocks_per_stage=(1, 1, 1, 1),
                                                        norm_groups=4), crop_size=32, batch_size=4, steps=3,
                              adv_start_step=0, disc_channels=8, disc_layers=2, log_every=1, ckpt_every=2,
                              out=str(root / "decoder"), threads=1, cpu=True, lr=3e-3)
    pool = TensorImages(torch.load(spec["pool"]))
    objective = TinyDecoderObjective(dcfg, vae=load_frozen_encoder(spec["encoder"]), pool=pool)
    runs["decoder"] = train_loop(objective, dcfg.loop, dcfg.to_dict(), progress=False)
    rank = torch.distributed.get_rank()
    hashes = {name: {m: module_hash(mod) for m, mod in res.modules.items()} for name, res in runs.items()}
    (root / f"hashes-rank{rank}.json").write_text(json.dumps(hashes, indent=1))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
