"""Ship a trained world model as the built-in ``world-tiny``: weights + config + log + sha256 manifest + scores.

    python -m snapgen.train --out runs/world-tiny                 # the project's recipe (TrainConfig defaults)
    python -m evals.ship_world runs/world-tiny                    # -> snapgen/weights/world-tiny/ (+ held-out scores)
    python -m evals.ship_world --refresh-manifest                 # list files added to pipeline/ since shipping
    python -m evals.ship_world --rescore                          # held-out scores again, under today's protocol

The folder holds ``pipeline/`` (the EMA pipeline the run wrote), ``train_config.json`` and ``log.jsonl`` of the
run, ``manifest.json`` (sha256 of every shipped file, checked on every load of ``--ckpt world-tiny``) and
``heldout_scores.json`` (the GenEval-world record's summary on held-out prompts, made by the harness on the
shipped files). Everything in it is written by this command or by code (``--refresh-manifest`` after
``python -m snapgen.convert --index-only snapgen/weights/world-tiny/pipeline`` added the diffusers index files);
nothing is edited by hand.

``--refresh-manifest`` only adds: every file the manifest lists must still match its sha256 (a changed or missing
file is an error, never re-hashed), files new under ``pipeline/`` are added with their sha256, and the manifest's
``refreshed`` list records which files were added, by which command, at which git commit.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from evals.generators import SHIPPED_WORLD, verify_manifest
from snapgen.io import atomic_write_json, sha256_file


def ship(run: Path, dest: Path) -> dict:
    """Copy the run's pipeline, config and log into ``dest`` and write its manifest; returns the manifest."""
    for need in ("pipeline/pipeline.json", "train_config.json", "log.jsonl"):
        if not (run / need).is_file():
            raise FileNotFoundError(f"'{run / need}' is missing: pass a finished training run folder")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run / "pipeline", tmp / "pipeline")
    for name in ("train_config.json", "log.jsonl"):
        shutil.copy2(run / name, tmp / name)
    files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    train_cfg = json.loads((run / "train_config.json").read_text())
    from evals.learning_curve import wall_time_at

    last_step = train_cfg["steps"]
    manifest = {"name": "world-tiny", "files": files, "source_run": str(run),
                # wall clock from writing train_config.json (models built, before step 0) to the checkpoint of the
                # last step; and the log's own estimate (sum of step times)
                "train_wall_s": (run / "checkpoints" / f"step-{last_step:07d}").stat().st_mtime
                                - (run / "train_config.json").stat().st_mtime,
                "train_wall_s_from_log": wall_time_at(run, last_step),
                "train_command": f"python -m snapgen.train --out {run}",
                "train_config": {k: v for k, v in train_cfg.items() if k != "unet_config"}}
    atomic_write_json(tmp / "manifest.json", manifest)
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def refresh_manifest(dest: Path, command: str = "python -m evals.ship_world --refresh-manifest") -> list[str]:
    """Add the files new under ``dest/pipeline`` to ``dest/manifest.json``; returns their names (none: unchanged).
    Files already listed are verified first and never re-hashed: a changed weight stays an error."""
    from snapgen.env import git_commit

    manifest = verify_manifest(dest)
    listed = manifest["files"]
    new = {str(p.relative_to(dest)): sha256_file(p) for p in sorted((dest / "pipeline").rglob("*"))
           if p.is_file() and str(p.relative_to(dest)) not in listed}
    if new:
        manifest["files"] = dict(sorted({**listed, **new}.items()))
        manifest["refreshed"] = [*manifest.get("refreshed", []),
                                 {"added": sorted(new), "command": command, "git_commit": git_commit()}]
        atomic_write_json(dest / "manifest.json", manifest)
    return sorted(new)


def score(dest: Path, extra: list[str]) -> dict:
    """Held-out GenEval-world of the shipped files through the harness (the README main job's protocol)."""
    from evals.run import main as run_main

    if dest.resolve() != SHIPPED_WORLD.resolve():
        raise ValueError(f"scores are measured through --ckpt world-tiny, which reads {SHIPPED_WORLD}")
    verify_manifest(dest)
    rc = run_main(["geneval", "--ckpt", "world-tiny", "--no-progress", *extra])
    if rc != 0:
        raise RuntimeError(f"GenEval on the shipped model exited {rc}")
    from snapgen.paths import REPO_ROOT, display, results_dir
    from snapgen.records import read_record

    rec_path = results_dir("geneval") / "world-tiny-geneval.json"
    rec = read_record(rec_path)
    summary = {"record": display(rec_path), "overall": rec["scores"]["geneval_overall"]["value"],
               "overall_ci95": rec["scores"]["geneval_overall"]["ci95"],
               "tasks": {t: v["accuracy"] for t, v in rec["details"]["tasks"].items()},
               "prompts": rec["protocol"].get("prompts"), "images_per_prompt": rec["protocol"].get("images_per_prompt"),
               "ci": rec["protocol"].get("bootstrap"), "sampler": rec["protocol"].get("sampler"),
               "git_commit": rec["environment"].get("git_commit")}
    atomic_write_json(dest / "heldout_scores.json", summary)
    sample_figure(REPO_ROOT / rec["details"]["samples_jsonl"], results_dir("figures") / "world_tiny_heldout_samples.png")
    return summary


def sample_figure(samples_jsonl: Path, out: Path, per_task: int = 4) -> Path:
    """Grid of the first sample of ``per_task`` prompts of every task, captioned with the reader's verdict."""
    from PIL import Image

    from snapgen.io import atomic_save_image
    from snapgen.pipeline import image_grid

    rows = [json.loads(x) for x in samples_jsonl.read_text().splitlines() if x.strip()]
    picked, seen = [], {}
    for r in rows:
        if r["sample_index"] == 0 and seen.get(r["tag"], 0) < per_task:
            seen[r["tag"]] = seen.get(r["tag"], 0) + 1
            picked.append(r)
    images = [Image.open(r["filename"]).convert("RGB") for r in picked]
    captions = [("OK " if r["correct"] else "NO ") + r["prompt"].replace("a photo of ", "") for r in picked]
    return atomic_save_image(out, image_grid(images, cols=per_task * 2, captions=captions, scale=5))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.ship_world", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="finished training run folder (pipeline/, train_config.json, log.jsonl)")
    p.add_argument("--dest", default=str(SHIPPED_WORLD), help="where to ship (default: the built-in world-tiny)")
    p.add_argument("--no-score", action="store_true", help="skip the held-out GenEval run")
    p.add_argument("--refresh-manifest", action="store_true",
                   help="no run: add files new under DEST/pipeline to DEST/manifest.json (listed files must still "
                        "match their sha256)")
    p.add_argument("--rescore", action="store_true",
                   help="no run: measure the shipped files' held-out scores again (heldout_scores.json and the sample "
                        "figure) with the harness's current protocol; the weights and the manifest are not touched")
    a, extra = p.parse_known_args(argv)
    if extra:                                     # a typo would fail only after shipping
        from evals.api import get_benchmark, parser_for

        geneval = parser_for(get_benchmark("geneval"))
        geneval.prog = "python -m evals.ship_world (options passed to python -m evals.run geneval)"
        geneval.parse_args(["--ckpt", "world-tiny", *extra])
    if a.rescore and (a.run is not None or a.refresh_manifest or a.no_score):
        p.error("--rescore measures the shipped files: pass no run folder, --refresh-manifest or --no-score with it")
    if not a.rescore and (a.refresh_manifest == (a.run is not None) or (a.refresh_manifest and extra)):
        p.error("pass a run folder (and GenEval options), --refresh-manifest alone, or --rescore")
    if a.run is not None:                         # before the copy replaces DEST, not after
        if a.no_score and extra:
            p.error(f"{' '.join(extra)}: GenEval options do nothing with --no-score; drop them, or drop --no-score")
        if not a.no_score and Path(a.dest).resolve() != SHIPPED_WORLD.resolve():
            p.error(f"--dest {a.dest}: the held-out scores are measured through --ckpt world-tiny, which reads "
                    f"{SHIPPED_WORLD}; pass --no-score to ship elsewhere, or leave --dest out")
    try:
        if a.rescore:
            s = score(Path(a.dest), extra)
            print(f"held-out GenEval-world {s['overall']:.3f} {s['overall_ci95']} -> {a.dest}/heldout_scores.json")
            return 0
        if a.refresh_manifest:
            added = refresh_manifest(Path(a.dest))
            print(f"{a.dest}/manifest.json: added {added}" if added else f"{a.dest}/manifest.json: nothing new")
            return 0
        manifest = ship(Path(a.run), Path(a.dest))
        print(f"shipped {len(manifest['files'])} files -> {a.dest}")
        if not a.no_score:
            s = score(Path(a.dest), extra)
            print(f"held-out GenEval-world {s['overall']:.3f} {s['overall_ci95']}")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
