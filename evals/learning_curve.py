"""Learning curve of a training run: every kept checkpoint's EMA weights scored on held-out world prompts.

    python -m evals.learning_curve runs/world-tiny                       # GenEval-world + FID-world per checkpoint
    python -m evals.learning_curve runs/world-tiny --no-fid --every 2    # every other checkpoint, GenEval only
    python -m paper_figures.learning_curve results/world/learning_curve-world-tiny.json

For each ``RUN/checkpoints/step-*`` the EMA U-Net and the text stack become a pipeline under
``RUN/curve/step-N/pipeline`` (written once), which ``python -m evals.run geneval`` / ``fid`` then score
with the protocol given here (held-out split by default). The per-checkpoint records go to
``RUN/curve/step-N/*.json``; the curve record (one point per checkpoint: step, images seen, training
wall time from the run's log, GenEval-world overall with its 95% CI and per-task accuracy, FID-world)
goes to ``results/world/learning_curve-<name>.json``. Rerunning resumes: finished points are reused.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from snapgen.cli import nonnegative_float, positive_int
from snapgen.io import atomic_write_json, check_writable_dir
from snapgen.paths import results_dir
from snapgen.records import make_record, read_record, score, write_record


def checkpoint_pipeline(ck: Path, run: Path, dest: Path) -> Path:
    """EMA weights + text stack of checkpoint ``ck`` -> a snapgen pipeline folder at ``dest/pipeline``,
    with the run's train_config.json beside it (so the harness recognises a world model)."""
    from snapgen.models.unet import SnapGenUNet
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline

    pipe_dir = dest / "pipeline"
    if (pipe_dir / "pipeline.json").exists():
        return pipe_dir
    train_cfg = json.loads((run / "train_config.json").read_text())
    ema_dir = ck / "ema" if (ck / "ema").exists() else ck / "unet"
    unet = SnapGenUNet.from_pretrained(ema_dir)
    text = None
    if unet.config.cond == "text":                         # the engine saves only the stack's trainable projection
        text = finished_text_stack(run / "pipeline")                        # (text_proj), so take the stack from
        if (ck / "text_proj.safetensors").exists():                          # the finished run, its projection
            from safetensors.torch import load_file                           # from this checkpoint

            from snapgen.io import verify_weights_manifest
            from snapgen.training.checkpoint import read_state

            # the checkpoint's manifest lists text_proj.safetensors: a changed byte is a clear error
            verify_weights_manifest(ck, required=bool(read_state(ck).get("weights_manifest")))
            text.proj.load_state_dict(load_file(str(ck / "text_proj.safetensors")))
    pcfg = PipelineConfig(resolution=train_cfg["resolution"], steps=train_cfg.get("sample_steps", 20),
                          guidance=train_cfg.get("sample_guidance", 3.0))
    tmp = dest / "pipeline.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    SnapGenPipeline(unet, text, None, pcfg).save_pretrained(tmp)
    atomic_write_json(dest / "train_config.json", train_cfg)
    tmp.rename(pipe_dir)
    return pipe_dir


def images_seen(train_cfg: dict, step: int) -> int:
    """Training images before ``step``, every process's: the dataset position where the step's first micro-batch
    starts (``TrainConfig.micro_batch``, which also knows a progressive-resolution run's low-res batch); fields a
    stored config lacks take their ``LEGACY_VALUES``."""
    from snapgen.training.t2i import TrainConfig, stored_recipe

    fields = stored_recipe(train_cfg)
    cfg = TrainConfig(**{**fields, "tag_weights": tuple(fields["tag_weights"])})
    return cfg.micro_batch(step * cfg.grad_accum, cfg.processes)[1]


def finished_text_stack(pipe: Path):
    """The text stack of a finished run's pipeline, in either layout (diffusers ``text_encoder/``, or the legacy
    ``text/``; the error names the legacy folder when neither exists)."""
    from snapgen.text import TextEncoderStack

    return TextEncoderStack.from_pretrained(pipe / "text_encoder" if (pipe / "text_encoder").is_dir() else pipe / "text")


def wall_time_at(run: Path, step: int) -> float | None:
    """Training seconds up to ``step``, from the run's log.jsonl: each logged step's time stands for the steps
    until the next logged one (an estimate when log_every > 1; resumed runs count only their kept rows)."""
    log = run / "log.jsonl"
    if not log.exists():
        return None
    rows = sorted({r["step"]: r for r in map(json.loads, filter(str.strip, log.read_text().splitlines()))}.values(),
                  key=lambda r: r["step"])
    if rows and all("elapsed_s" in r and r.get("elapsed_from_step") == 0 for r in rows):
        done = [r for r in rows if r["step"] < step]           # measured: wall clock at the last logged step
        if done:                                               # before ``step``, plus its step time per missing step
            return done[-1]["elapsed_s"] + done[-1]["step_time_s"] * (step - 1 - done[-1]["step"])
    starts = [r["step"] for r in rows] + [step]
    return sum(r["step_time_s"] * max(0, min(starts[i + 1], step) - r["step"]) for i, r in enumerate(rows)
               if r["step"] < step)


def _score(bench: str, pipe: Path, out: Path, extra: list[str]) -> dict:
    from evals.migrate_records import convert
    from evals.run import main as run_main

    if not out.exists():
        rc = run_main([bench, "--ckpt", str(pipe), "--out", str(out), "--no-progress", *extra])
        if rc != 0:
            raise RuntimeError(f"{bench} on {pipe} exited {rc}")
    return convert(out) or read_record(out)         # a point scored before the envelope is converted in memory


def curve(run: Path, name: str, every: int, geneval_args: list[str], fid_args: list[str] | None) -> dict:
    cks = sorted((run / "checkpoints").glob("step-*[0-9]"))[::-1][::every][::-1]
    if not cks:
        raise FileNotFoundError(f"no checkpoints under {run / 'checkpoints'}: train with keep_ckpts large enough "
                                "to keep the points of the curve")
    train_cfg = json.loads((run / "train_config.json").read_text())
    points = []
    for ck in cks:
        step = int(ck.name.split("-")[1])
        dest = run / "curve" / ck.name
        pipe = checkpoint_pipeline(ck, run, dest)
        reused = (dest / "geneval.json").exists() and (fid_args is None or (dest / "fid.json").exists())
        g = _score("geneval", pipe, dest / "geneval.json", geneval_args)
        point = {"step": step, "images_seen": images_seen(train_cfg, step),
                 "train_wall_s": wall_time_at(run, step), "geneval_overall": g["scores"]["geneval_overall"]["value"],
                 "geneval_ci95": g["scores"]["geneval_overall"]["ci95"],
                 "geneval_tasks": {t: v["accuracy"] for t, v in g["details"]["tasks"].items()},
                 "geneval_record": str(dest / "geneval.json"), "reused": reused}
        if fid_args is not None:
            f = _score("fid", pipe, dest / "fid.json", fid_args)
            key = next(k for k in f["scores"] if k.startswith("fid"))
            point |= {"fid_key": key, "fid": f["scores"][key]["value"],
                      "fid_spread": f["details"]["raw"].get(f"{key}_spread"), "fid_record": str(dest / "fid.json")}
        points.append(point)
        print(f"step {step:6d}: GenEval {point['geneval_overall']:.3f} {point['geneval_ci95']}"
              + (f"  FID {point['fid']:.1f}" if "fid" in point else ""), flush=True)
    print(f"{sum(p['reused'] for p in points)} of {len(points)} points reused from earlier runs of this command "
          "(their scoring time is not in this record's wall_time_s)", flush=True)
    return {"run": str(run), "name": name, "train_config": train_cfg, "points": points,
            "protocol_geneval": g["protocol"], "protocol_fid": f["protocol"] if fid_args is not None else None}


def curve_record(name: str, points: list[dict], protocol: dict, wall_time_s: float | None,
                 environment: dict | None = None, created: str | None = None) -> dict:
    """Kind "curve": the last point's GenEval overall (and FID) as scores, every point in details."""
    last = points[-1]
    n = protocol["geneval"].get("n_prompts") if protocol.get("geneval") else None
    scores = {"final_geneval_overall": score(last["geneval_overall"], last["geneval_ci95"], n, True, "fraction")}
    if "fid" in last:
        scores[f"final_{last['fid_key']}"] = score(last["fid"], None, (protocol.get("fid") or {}).get("n_gen"), False,
                                                   "FID")
    rec = make_record("curve", f"learning_curve-{name}", protocol, scores,
                      {"points": points, "wall_time_s": wall_time_s}, environment)
    return {**rec, "created": created} if created else rec


def migrate_v1(old: dict, path: Path) -> dict:
    return curve_record(Path(path).stem.removeprefix("learning_curve-"), old["points"], old["protocol"],
                        old.get("wall_time_s"), old["environment"], old["created"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.learning_curve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a training run folder (checkpoints/, log.jsonl, train_config.json)")
    p.add_argument("--name", default=None, help="curve name (default: the run folder's name)")
    p.add_argument("--every", type=positive_int, default=1, help="score every k-th checkpoint (the last one always)")
    p.add_argument("--n-per-prompt", type=positive_int, default=4, help="GenEval images per prompt")
    p.add_argument("--steps", type=positive_int, default=20, help="sampling steps")
    p.add_argument("--guidance", type=nonnegative_float, default=None, help="CFG scale (default: the pipeline's)")
    p.add_argument("--threads", type=positive_int, default=2, help="generation threads")
    p.add_argument("--fid-n", type=positive_int, default=None, help="FID-world: generated images (= reference renders; "
                   "default 500, at least 2)")
    p.add_argument("--no-fid", action="store_true", help="GenEval only")
    p.add_argument("--out", default=None, help="curve record (default results/world/learning_curve-<name>.json)")
    a = p.parse_args(argv)
    if a.no_fid and a.fid_n is not None:
        raise ValueError(f"--fid-n {a.fid_n}: ignored with --no-fid; drop one of them")
    if a.fid_n is not None and a.fid_n < 2:         # FID would fail after the first checkpoint's GenEval
        raise ValueError(f"--fid-n {a.fid_n}: FID needs at least 2 images (a covariance); pass 2 or more, or --no-fid")
    a.fid_n = a.fid_n or 500
    run = Path(a.run)
    name = a.name or run.name
    common = ["--steps", str(a.steps), "--threads", str(a.threads)] + (["--guidance", str(a.guidance)]
                                                                       if a.guidance is not None else [])
    geneval_args = common + ["--n-per-prompt", str(a.n_per_prompt)]
    fid_args = None if a.no_fid else common + ["--ref", "world", "--n", str(a.fid_n)]
    out = Path(a.out) if a.out else results_dir("world") / f"learning_curve-{name}.json"
    if not (run / "checkpoints").is_dir():
        raise FileNotFoundError(f"{run}: not a training run folder (no checkpoints/); pass the --out of snapgen.train")
    check_writable_dir(out.parent, "--out")               # before hours of scoring, not after
    t0 = time.time()
    try:
        result = curve(run, name, max(1, a.every), geneval_args, fid_args)
    except RuntimeError as e:
        raise ValueError(f"{run}: {e}") from e
    record = curve_record(name, result["points"], {"geneval": result["protocol_geneval"], "fid": result["protocol_fid"],
                                                   "run": result["run"], "train_config": result["train_config"]},
                          time.time() - t0)
    write_record(out, record)
    print(f"record: {out}")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
