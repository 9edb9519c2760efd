"""A catalogue of careless inputs, one per row, across every command line (issue 20).

Each row runs the CLI's ``main`` in-process under ``snapgen.cli.run_cli`` (what ``python -m ...`` does) and asserts
the exit code, that stderr names the flag or file at fault, and that no traceback is printed. None of them trains,
generates or times anything: each is refused at the edge, before long work starts.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from snapgen.cli import run_cli

TMP = "{tmp}"   # replaced by the test's tmp_path


def _finished_run(tmp: Path) -> Path:
    """A run folder whose latest checkpoint reached its steps (only the files the refusal reads)."""
    run = tmp / "done"
    ck = run / "checkpoints" / "step-0000002"
    ck.mkdir(parents=True)
    from snapgen.train import TrainConfig

    cfg = TrainConfig(out=str(run), steps=2).to_dict()
    (ck / "state.json").write_text(json.dumps({"step": 2, "objective": "flow", "config": cfg}))
    (run / "checkpoints" / "latest").write_text("step-0000002\n")
    return run


def _files(tmp: Path) -> None:
    (tmp / "bad.json").write_text("{not json")
    (tmp / "empty.json").write_text("")
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "imgs").mkdir()
    rec = {"schema_version": 2, "kind": "evaluation", "name": "x", "protocol": {}, "details": {},
           "scores": "0.5", "environment": {"threads": 1, "git_commit": None, "versions": {}}, "created": None}
    (tmp / "strscores.json").write_text(json.dumps(rec))
    (tmp / "nan.json").write_text(json.dumps({**rec, "scores": {}}).replace('"details": {}', '"details": {"x": NaN}'))
    (tmp / "caps.txt").write_text("a photo of a red circle\n")
    (tmp / "bad_steps.yaml").write_text('steps: "ten"\n')
    _finished_run(tmp)
    _fresh_files(tmp)


ENV = {"threads": 1, "git_commit": None, "versions": {}}


def _fresh_files(tmp: Path) -> None:
    """Files of the fresh bad inputs (issue 20, third pass): records of several kinds, a one-image folder."""
    import numpy as np
    from PIL import Image

    from snapgen.records import make_record, score, write_record

    (tmp / "trunc.json").write_text('{"schema_version": 2, "kind": "evaluation", "name": "x"')
    (tmp / "bad.yaml").write_text('steps: "ten"\n')
    (tmp / "one").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp / "one" / "00000_00.png")
    scores = {"m": score(0.5, None, 2, True, "fraction")}
    write_record(tmp / "rec.json", make_record("evaluation", "r", {"benchmark": "clip"}, scores, {}, ENV),
                 [{"i": 0}, {"i": 1}])
    write_record(tmp / "rec-latency.json", make_record("latency", "r", {"benchmark": "clip"}, scores, {}, ENV))
    write_record(tmp / "rec-other.json", make_record("evaluation", "o", {"benchmark": "clip"},
                                                     {"x": score(1.0, None, 2, True, "fraction")}, {}, ENV))
    write_record(tmp / "curve.json", make_record("curve", "c", {}, {}, {"points": []}, ENV))
    (tmp / "wrongres" / "geneval").mkdir(parents=True)
    write_record(tmp / "wrongres" / "geneval" / "arch.json", make_record("architecture", "a", {}, {}, {}, ENV))


R, LAT, EXP, TR, DIS, DEC, AB = ("evals.run", "evals.latency", "evals.latency.export", "snapgen.train",
                                 "snapgen.train_distill", "snapgen.train_decoder", "ablations.__main__")
TEACH = ["--stage", "kd", "--teacher", "{tmp}/teacher"]
LADDER_DRY = ["--runs", "{tmp}/runs", "--results", "{tmp}/res", "--dry-run"]
CLS = "{cls}"   # replaced by the class_pipeline fixture's folder

# (id, module, argv, exit code, text stderr must contain)
CASES = [
    # --- python -m evals.run: dispatch and generation flags
    ("run-unknown", R, ["nope"], 2, "unknown benchmark"),
    ("run-typo", R, ["genevl"], 2, "geneval"),
    ("geneval-steps-0", R, ["geneval", "--ckpt", "world-tiny", "--steps", "0"], 2, "--steps"),
    ("geneval-steps-neg", R, ["geneval", "--ckpt", "world-tiny", "--steps", "-1"], 2, "--steps"),
    ("geneval-steps-word", R, ["geneval", "--ckpt", "world-tiny", "--steps", "x"], 2, "--steps"),
    ("geneval-guidance-nan", R, ["geneval", "--ckpt", "world-tiny", "--guidance", "nan"], 2, "--guidance"),
    ("geneval-guidance-inf", R, ["geneval", "--ckpt", "world-tiny", "--guidance", "inf"], 2, "--guidance"),
    ("geneval-guidance-neg", R, ["geneval", "--ckpt", "world-tiny", "--guidance", "-1"], 2, "--guidance"),
    ("geneval-limit-0", R, ["geneval", "--ckpt", "world-tiny", "--limit", "0"], 2, "--limit"),
    ("geneval-limit-neg", R, ["geneval", "--ckpt", "world-tiny", "--limit", "-1"], 2, "--limit"),
    ("geneval-npp-0", R, ["geneval", "--ckpt", "world-tiny", "--n-per-prompt", "0"], 2, "--n-per-prompt"),
    ("geneval-batch-0", R, ["geneval", "--ckpt", "world-tiny", "--batch-size", "0"], 2, "--batch-size"),
    ("geneval-resolution-0", R, ["geneval", "--ckpt", "world-tiny", "--resolution", "0"], 2, "--resolution"),
    ("geneval-threads-0", R, ["geneval", "--ckpt", "world-tiny", "--threads", "0"], 2, "--threads"),
    ("geneval-seed-neg", R, ["geneval", "--ckpt", "world-tiny", "--seed", "-3"], 2, "--seed"),
    ("geneval-images-missing", R, ["geneval", "--images", "{tmp}/nowhere"], 2, "nowhere"),
    ("geneval-ckpt-missing", R, ["geneval", "--ckpt", "{tmp}/nockpt"], 2, "nockpt"),
    ("geneval-images-and-steps", R, ["geneval", "--images", "{tmp}/imgs", "--steps", "4"], 2, "--steps"),
    ("geneval-images-and-guidance", R, ["geneval", "--images", "{tmp}/imgs", "--guidance", "2"], 2, "--guidance"),
    ("geneval-both-sources", R, ["geneval", "--images", "{tmp}/imgs", "--ckpt", "world-tiny"], 2, "--ckpt"),
    ("dpg-steps-0", R, ["dpg", "--ckpt", "world-tiny", "--steps", "0"], 2, "--steps"),
    ("dpg-limit-0", R, ["dpg", "--ckpt", "world-tiny", "--limit", "0"], 2, "--limit"),
    ("fid-guidance-nan", R, ["fid", "--ckpt", "world-tiny", "--guidance", "nan"], 2, "--guidance"),
    ("clip-limit-neg", R, ["clip", "--ckpt", "world-tiny", "--limit", "-1"], 2, "--limit"),
    ("imagereward-resolution-neg", R, ["imagereward", "--ckpt", "world-tiny", "--resolution", "-64"], 2,
     "--resolution"),
    ("report-missing", R, ["report", "{tmp}/none.json", "--out", "{tmp}/rep"], 2, "none.json"),
    ("report-thumb-0", R, ["report", "{tmp}/none.json", "--out", "{tmp}/rep", "--thumb", "0"], 2, "--thumb"),
    # --- compare
    ("compare-one", R, ["compare", "{tmp}/bad.json"], 2, "two records"),
    ("compare-missing", R, ["compare", "{tmp}/a.json", "{tmp}/b.json"], 2, "a.json"),
    ("compare-not-json", R, ["compare", "{tmp}/bad.json", "{tmp}/bad.json"], 2, "bad.json"),
    ("compare-empty", R, ["compare", "{tmp}/empty.json", "{tmp}/empty.json"], 2, "empty.json"),
    ("compare-list", R, ["compare", "{tmp}/list.json", "{tmp}/list.json"], 2, "list.json"),
    ("compare-string-scores", R, ["compare", "{tmp}/strscores.json", "{tmp}/strscores.json"], 2, "strscores.json"),
    ("compare-nan", R, ["compare", "{tmp}/nan.json", "{tmp}/nan.json"], 2, "nan.json"),
    # --- latency
    ("latency-resolution-0", R, ["latency", "--variant", "snapgen-t2i", "--resolution", "0"], 2, "--resolution"),
    ("latency-resolution-odd", R, ["latency", "--variant", "snapgen-t2i", "--tiny", "--resolution", "100"], 2,
     "--resolution"),
    ("latency-steps-0", R, ["latency", "--variant", "snapgen-t2i", "--steps", "0"], 2, "--steps"),
    ("latency-repeats-0", LAT, ["--variant", "snapgen-t2i", "--repeats", "0"], 2, "--repeats"),
    ("latency-warmup-neg", LAT, ["--variant", "snapgen-t2i", "--warmup", "-1"], 2, "--warmup"),
    ("latency-threads-neg", LAT, ["--variant", "snapgen-t2i", "--threads", "-2"], 2, "--threads"),
    ("latency-batch-0", LAT, ["--variant", "snapgen-t2i", "--batch", "0"], 2, "--batch"),
    ("latency-ckpt-missing", LAT, ["--ckpt", "{tmp}/nopipe", "--resolution", "64"], 2, "nopipe"),
    ("latency-no-source", LAT, ["--target", "cpu"], 2, "--variant"),
    ("latency-tiny-sdxl", LAT, ["--variant", "sdxl-unet", "--tiny", "--out", "{tmp}/lat"], 2, "--tiny"),
    # --- Core ML export
    ("export-no-out", EXP, ["--dry-run"], 2, "--out"),
    ("export-resolution-neg", EXP, ["--out", "{tmp}/x", "--resolution", "-8", "--dry-run"], 2, "--resolution"),
    ("export-resolution-odd", EXP, ["--out", "{tmp}/x", "--resolution", "1000", "--dry-run"], 2, "--resolution"),
    ("export-ckpt-missing", EXP, ["--out", "{tmp}/x", "--ckpt", "{tmp}/nopipe", "--dry-run"], 2, "nopipe"),
    ("export-nothing", EXP, ["--out", "{tmp}/x", "--no-unet", "--dry-run"], 2, "--no-unet"),
    ("export-batch-0", EXP, ["--out", "{tmp}/x", "--batch", "0", "--dry-run"], 2, "--batch"),
    ("export-threads-0", EXP, ["--out", "{tmp}/x", "--threads", "0", "--dry-run"], 2, "--threads"),
    ("export-out-is-file", EXP, ["--out", "{tmp}/bad.json/pk", "--dry-run"], 2, "--out"),
    # --- snapgen.train
    ("train-steps-0", TR, ["--set", "steps=0", "--dry-run"], 2, "steps"),
    ("train-cpu-maybe", TR, ["--set", "cpu=maybe", "--dry-run"], 2, "cpu"),
    ("train-keep-0", TR, ["--set", "keep_ckpts=0", "--dry-run"], 2, "keep_ckpts"),
    ("train-lr-nan", TR, ["--set", "lr=nan", "--dry-run"], 2, "lr"),
    ("train-lr-0", TR, ["--set", "lr=0", "--dry-run"], 2, "lr"),
    ("train-unknown-key", TR, ["--set", "stepz=3", "--dry-run"], 2, "steps"),
    ("train-resolution-odd", TR, ["--set", "resolution=30", "--dry-run"], 2, "resolution"),
    ("train-batch-neg", TR, ["--set", "batch_size=-1", "--dry-run"], 2, "batch_size"),
    ("train-not-key-value", TR, ["--set", "steps", "--dry-run"], 2, "steps"),
    ("train-steps-float", TR, ["--set", "steps=1.5", "--dry-run"], 2, "steps"),
    ("train-drop-prob-2", TR, ["--set", "text_drop_prob=2", "--dry-run"], 2, "text_drop_prob"),
    ("train-config-missing", TR, ["--config", "{tmp}/none.json", "--dry-run"], 2, "none.json"),
    ("train-config-bad-json", TR, ["--config", "{tmp}/bad.json", "--dry-run"], 2, "bad.json"),
    ("train-config-list", TR, ["--config", "{tmp}/list.json", "--dry-run"], 2, "list.json"),
    ("train-threads-0", TR, ["--threads", "0", "--dry-run"], 2, "--threads"),
    ("train-unet-unknown", TR, ["--set", "unet=tiny-wrld", "--dry-run"], 2, "tiny-wrld"),
    ("train-finished-other-settings", TR, ["--out", "{tmp}/done", "--set", "steps=3", "lr=1e-3", "threads=1",
                                           "--no-progress"], 2, "finished run"),
    ("train-out-is-file", TR, ["--out", "{tmp}/bad.json/run", "--set", "steps=1", "threads=1", "--no-progress"], 2,
     "--out"),
    # --- snapgen.train_distill
    ("distill-ladd-no-init", DIS, ["--stage", "ladd", "--teacher", "{tmp}/teacher", "--dry-run"], 2, "--init"),
    ("distill-kd-w-max", DIS, [*TEACH, "--set", "kd_w_max=2", "--dry-run"], 2, "kd_w_max"),
    ("distill-bad-stage", DIS, ["--stage", "sft", "--teacher", "x"], 2, "--stage"),
    ("distill-set-twice", DIS, [*TEACH, "--set", "steps=2", "steps=3", "--dry-run"], 2, "steps is given twice"),
    ("distill-out-and-set-out", DIS, [*TEACH, "--out", "{tmp}/a", "--set", "out={tmp}/b", "--dry-run"], 2,
     "out is given twice"),
    ("distill-teacher-missing-dry-run", DIS, [*TEACH, "--dry-run"], 2, "--teacher"),
    ("distill-config-bad-field", DIS, [*TEACH, "--config", "{tmp}/bad_steps.yaml", "--dry-run"], 2, "bad_steps.yaml"),
    ("latency-compress-on-cpu", LAT, ["--variant", "snapgen-t2i", "--compress", "int8", "--dry-run"], 2, "--compress"),
    ("latency-compute-units-on-cuda", LAT, ["--variant", "snapgen-t2i", "--target", "cuda", "--compute-units",
                                            "CPU_ONLY", "--dry-run"], 2, "--compute-units"),
    ("latency-ckpt-run-folder-dry-run", LAT, ["--ckpt", "{tmp}/done", "--dry-run"], 2, "--ckpt"),
    ("distill-no-teacher", DIS, ["--stage", "kd"], 2, "--teacher"),
    ("distill-disc-lr-neg", DIS, [*TEACH, "--set", "ladd_disc_lr=-1", "--dry-run"], 2, "ladd_disc_lr"),
    ("distill-unknown-key", DIS, [*TEACH, "--set", "kd_wieght=1", "--dry-run"], 2, "kd_"),
    # --- snapgen.train_decoder and its experiment
    ("decoder-steps-0", DEC, ["--steps", "0", "--dry-run"], 2, "steps"),
    ("decoder-world", DEC, ["--world", "--steps", "7"], 2, "--world"),
    ("decoder-lr-nan", DEC, ["--lr", "nan", "--dry-run"], 2, "lr"),
    ("decoder-batch-word", DEC, ["--batch-size", "x", "--dry-run"], 2, "batch_size"),
    ("decoder-no-images", DEC, ["--encoder-dir", "{tmp}/vae", "--out", "{tmp}/dec"], 2, "--image-dir"),
    ("decoder-threads-neg", DEC, ["--threads", "-1", "--dry-run"], 2, "--threads"),
    ("decoder-sampling-choice", DEC, ["--latent-sampling", "median", "--dry-run"], 2, "--latent-sampling"),
    ("decoder-keep-0", DEC, ["--set", "keep_ckpts=0", "--dry-run"], 2, "keep_ckpts"),
    ("decoder-config-bad", DEC, ["--config", "{tmp}/bad.json", "--dry-run"], 2, "bad.json"),
    ("world-proof-threads", "snapgen.experiments.decoder_world_proof", ["--threads", "-1"], 2, "--threads"),
    # --- ablations
    ("ablations-bench-latent-0", AB, ["bench", "--latent", "0"], 2, "--latent"),
    ("ablations-bench-latent-odd", AB, ["bench", "--latent", "30"], 2, "--latent"),
    ("ablations-bench-repeats-0", AB, ["bench", "--repeats", "0"], 2, "--repeats"),
    ("ablations-table-latent-neg", AB, ["table", "--latent", "-4", "--dry-run"], 2, "--latent"),
    ("ablations-show-unknown", AB, ["show", "snapgen-t3i"], 2, "NAME"),
    ("ablations-no-command", AB, [], 2, "cmd"),
    ("tables-unknown-flag", "ablations.tables.__main__", ["--results-dir", "x"], 2, "--results-dir"),
    # --- evals side CLIs
    ("curve-no-run", "evals.learning_curve", ["{tmp}/norun"], 2, "norun"),
    ("curve-every-0", "evals.learning_curve", ["{tmp}/norun", "--every", "0"], 2, "--every"),
    ("sweep-cells", "evals.sampler_sweep", ["--cells", "3"], 2, "--cells"),
    ("probe-prompts", "evals.layout_probe", ["--ckpt", "world-oracle", "--prompts", "10000"], 2, "--prompts 10000"),
    ("probe-threshold", "evals.layout_probe", ["--ckpt", "world-oracle", "--threshold", "1.5"], 2, "--threshold"),
    ("probe-ckpt-missing", "evals.layout_probe", ["--ckpt", "{tmp}/nockpt"], 2, "nockpt"),
    ("sweep-default", "evals.sampler_sweep", ["--default", "3", "x"], 2, "--default"),
    ("sweep-steps-0", "evals.sampler_sweep", ["--steps", "0"], 2, "--steps"),
    ("bench-train-batch-0", "evals.bench_train", ["--batch-sizes", "0"], 2, "--batch-sizes"),
    ("ship-no-run", "evals.ship_world", ["{tmp}/norun", "--dest", "{tmp}/dest", "--no-score"], 2, "norun"),
    ("migrate-no-results", "evals.migrate_records", ["--results", "{tmp}/nores", "--check"], 2, "nores"),
    ("figure-curve-missing", "paper_figures.learning_curve", ["{tmp}/none.json"], 2, "none.json"),
    ("figure-curve-bad", "paper_figures.learning_curve", ["{tmp}/bad.json"], 2, "bad.json"),
    # --- issue 20 item 3, second pass ({cls}: a saved tiny class-conditional pipeline, diffusers layout)
    ("ladder-variant-unknown", AB, ["ladder", "--variants", "world-t2i-s9-nope", *LADDER_DRY], 2, "world-t2i-s9-nope"),
    ("ladder-variant-other-ladder", AB, ["ladder", "--ladder", "in256", "--variants", "world-t2i-s4-ffn3",
                                        *LADDER_DRY], 2, "--variants"),
    ("ladder-in256-geneval", AB, ["ladder", "--ladder", "in256", "--benchmarks", "geneval", *LADDER_DRY], 2,
     "--benchmarks"),
    ("ladder-seeds-word", AB, ["ladder", "--seeds", "one", *LADDER_DRY], 2, "--seeds"),
    ("ladder-budget-unknown", AB, ["ladder", "--budget", "gpu", *LADDER_DRY], 2, "--budget"),
    ("tables-unknown-name", "ablations.tables.__main__", ["geneval", "nosuchtable", "--results", "{tmp}"], 2,
     "nosuchtable"),
    ("tables-results-missing", "ablations.tables.__main__", ["ladder_t2i", "--results", "{tmp}/nores"], 2,
     "--results"),
    ("compare-folder", "evals.compare", ["{tmp}/imgs", "{tmp}/imgs"], 2, "is a folder"),
    ("geneval-class-ckpt", R, ["geneval", "--ckpt", "{cls}", "--limit", "1", "--threads", "1"], 2, "fid --ref world"),
    ("dpg-class-ckpt", R, ["dpg", "--ckpt", "{cls}", "--limit", "1", "--threads", "1"], 2, "class-conditional"),
    ("geneval-ckpt-is-unet", R, ["geneval", "--ckpt", "{cls}/unet", "--limit", "1"], 2, "model_index.json"),
    ("fid-ref-typo", R, ["fid", "--images", "{tmp}/imgs", "--ref", "wrld"], 2, "did you mean world"),
    ("fid-ref-missing", R, ["fid", "--images", "{tmp}/imgs", "--ref", "{tmp}/none.npz"], 2, "none.npz"),
    ("fid-class-ckpt-captions", R, ["fid", "--ckpt", "{cls}", "--ref", "world", "--captions", "{tmp}/caps.txt",
                                    "--threads", "1", "--dry-run"], 2, "--captions"),
    ("bench-fid-n-0", "evals.metrics.bench_fid", ["--n", "0", "--dry-run"], 2, "--n"),
    ("bench-fid-n-1", "evals.metrics.bench_fid", ["--n", "1", "--dry-run"], 2, "--n"),
    ("bench-fid-threads-0", "evals.metrics.bench_fid", ["--threads", "0", "--dry-run"], 2, "--threads"),
    ("bench-fid-size-neg", "evals.metrics.bench_fid", ["--size", "-5", "--dry-run"], 2, "--size"),
    ("decoders-repeats-0", "ablations.decoders", ["--repeats", "0", "--results", "{tmp}"], 2, "--repeats"),
    ("decoders-latent-neg", "ablations.decoders", ["--latent", "-8", "--results", "{tmp}"], 2, "--latent"),
    ("decoders-no-measure-timing", "ablations.decoders", ["--no-measure", "--repeats", "5", "--results", "{tmp}"], 2,
     "--repeats"),
    ("ladder-seeds-duplicate", AB, ["ladder", "--seeds", "0", "0", *LADDER_DRY], 2, "--seeds"),
    ("ladder-variant-duplicate", AB, ["ladder", "--variants", "world-t2i-s4-ffn3", "world-t2i-s4-ffn3",
                                      *LADDER_DRY], 2, "--variants"),
    ("ladder-variant-typo", AB, ["ladder", "--variants", "world-t2i-s4-ffn", *LADDER_DRY], 2, "world-t2i-s4-ffn3"),
    ("ladder-verify-not-a-job", AB, ["ladder", "--verify", "world-t2i-s4-ffn3", *LADDER_DRY], 2, "--verify"),
    ("ladder-verify-no-record", AB, ["ladder", "--verify", "world-t2i-s4-ffn3-s7", *LADDER_DRY], 2, "no record"),
    ("levers-no-cell", AB, ["levers", "--study", "lr", *LADDER_DRY], 2, "--cell"),
    ("levers-no-study", AB, ["levers", "--cell", "lr=4e-3", *LADDER_DRY], 2, "--study"),
    ("levers-study-path", AB, ["levers", "--study", "../lr", "--cell", "lr=4e-3", *LADDER_DRY], 2, "--study"),
    ("levers-cell-unknown-field", AB, ["levers", "--study", "lr", "--cell", "lrr=4e-3", *LADDER_DRY], 2, "lrr"),
    ("levers-cell-fixed-field", AB, ["levers", "--study", "s", "--cell", "seed=3", *LADDER_DRY], 2, "seed"),
    ("levers-base-fixed-field", AB, ["levers", "--study", "s", "--cell", "lr=4e-3", "--base", "seed=3", *LADDER_DRY], 2,
     "--base"),
    ("levers-train-device-bad", AB, ["levers", "--study", "s", "--cell", "lr=4e-3", "--train-device", "tpu",
                                     *LADDER_DRY], 2, "--train-device"),
    ("levers-cell-bad-value", AB, ["levers", "--study", "lr", "--cell", "lr=fast", *LADDER_DRY], 2, "lr"),
    ("levers-cell-is-default", AB, ["levers", "--study", "lr", "--cell", "lr=2e-3", *LADDER_DRY], 2, "default"),
    ("levers-no-geneval", AB, ["levers", "--study", "lr", "--cell", "lr=4e-3", "--benchmarks", "fid", *LADDER_DRY], 2,
     "--benchmarks"),
    ("levers-seeds-duplicate", AB, ["levers", "--study", "lr", "--cell", "lr=4e-3", "--seeds", "1", "1",
                                    *LADDER_DRY], 2, "--seeds"),
    ("figure-ladder-results-missing", "paper_figures.ladder", ["--results", "{tmp}/nores"], 2, "--results"),
    ("figure-decoders-results-missing", "paper_figures.decoders", ["--results", "{tmp}/nores"], 2, "--results"),
    ("figure-decoders-no-records", "paper_figures.decoders", ["--results", "{tmp}/imgs", "--out", "{tmp}/d.png"], 2,
     "no decoder record"),
    ("convert-src-missing", "snapgen.convert", ["{tmp}/nosrc", "{tmp}/dst"], 2, "nosrc"),
    ("convert-src-is-unet", "snapgen.convert", ["{cls}/unet", "{tmp}/dst"], 2, "pipeline.json"),
    ("convert-dst-is-file", "snapgen.convert", ["{cls}", "{tmp}/bad.json"], 2, "bad.json"),
    ("curve-run-without-checkpoints", "evals.learning_curve", ["{tmp}/imgs"], 2, "checkpoints"),
    # --- issue 20, third pass: fresh careless inputs (empty strings, options a mode ignores, conflicting flags,
    # records of the wrong kind, outputs that cannot be written: all refused before any work)
    ("geneval-ckpt-empty", R, ["geneval", "--ckpt", "", "--limit", "1"], 2, "--ckpt ''"),
    ("fid-images-dtype", R, ["fid", "--images", "{tmp}/imgs", "--ref", "world", "--dtype", "bfloat16", "--dry-run"],
     2, "--dtype"),
    ("fid-images-n", R, ["fid", "--images", "{tmp}/imgs", "--ref", "world", "--n", "5", "--dry-run"], 2, "--n"),
    ("fid-images-captions", R, ["fid", "--images", "{tmp}/imgs", "--ref", "world", "--captions", "{tmp}/caps.txt",
                                "--dry-run"], 2, "--captions"),
    ("fid-images-limit", R, ["fid", "--images", "{tmp}/imgs", "--ref", "world", "--limit", "3", "--dry-run"], 2,
     "--limit"),
    ("fid-n-1", R, ["fid", "--ckpt", "world-oracle", "--ref", "world", "--n", "1", "--threads", "1", "--dry-run"], 2,
     "--n 1"),
    ("fid-one-image", R, ["fid", "--images", "{tmp}/one", "--ref", "world", "--threads", "1"], 2, "holds 1 image"),
    ("geneval-out-is-folder", R, ["geneval", "--ckpt", "world-oracle", "--limit", "1", "--n-per-prompt", "1",
                                  "--threads", "1", "--out", "{tmp}/imgs"], 2, "--out {tmp}/imgs: is a folder"),
    ("geneval-out-under-file", R, ["geneval", "--ckpt", "world-oracle", "--limit", "1", "--n-per-prompt", "1",
                                   "--threads", "1", "--out", "{tmp}/bad.json/x.json"], 2, "--out"),
    ("geneval-images-root-file", R, ["geneval", "--ckpt", "world-oracle", "--limit", "1", "--n-per-prompt", "1",
                                     "--threads", "1", "--images-root", "{tmp}/bad.json", "--out", "{tmp}/g.json"], 2,
     "--images-root"),
    ("dpg-csv-missing-dry-run", R, ["dpg", "--ckpt", "world-oracle", "--dpg-csv", "{tmp}/none.csv", "--limit", "1",
                                    "--threads", "1", "--dry-run"], 2, "--dpg-csv"),
    ("report-truncated", R, ["report", "{tmp}/trunc.json", "--out", "{tmp}/rep"], 2, "trunc.json: not valid JSON"),
    ("report-list", R, ["report", "{tmp}/list.json", "--out", "{tmp}/rep"], 2, "list.json"),
    ("report-out-is-file", R, ["report", "{tmp}/rec.json", "--out", "{tmp}/bad.json"], 2, "--out"),
    ("report-out-empty", R, ["report", "{tmp}/rec.json", "--out", ""], 2, "--out ''"),
    ("report-samples-jsonl", R, ["report", "{tmp}/rec.samples.jsonl", "--out", "{tmp}/rep"], 2,
     "pass the record itself"),
    ("compare-samples-jsonl", "evals.compare", ["{tmp}/rec.json", "{tmp}/rec.samples.jsonl"], 2, "rec.json"),
    ("train-lowres-whole-run", TR, ["--set", "steps=10", "lowres_steps=10", "--dry-run"], 2, "lowres_steps"),
    ("train-lowres-factor-odd", TR, ["--set", "lowres_steps=5", "lowres_factor=3", "--dry-run"], 2, "lowres_factor"),
    ("train-lowres-factor-0", TR, ["--set", "lowres_factor=0", "--dry-run"], 2, "lowres_factor"),
    ("train-lowres-batch-neg", TR, ["--set", "lowres_batch_size=-2", "--dry-run"], 2, "lowres_batch_size"),
    ("train-optimizer-unknown", TR, ["--set", "optimizer=sgd", "--dry-run"], 2, "optimizer"),
    ("train-muon-momentum-big", TR, ["--set", "optimizer=muon", "muon_momentum=1.5", "--dry-run"], 2, "muon_momentum"),
    ("train-set-twice", TR, ["--set", "steps=3", "steps=5", "--dry-run"], 2, "steps is given twice"),
    ("train-out-and-set-out", TR, ["--out", "{tmp}/r1", "--set", "out={tmp}/r2", "--dry-run"], 2, "--out {tmp}/r1"),
    ("train-threads-and-set-threads", TR, ["--threads", "1", "--set", "threads=2", "--dry-run"], 2, "--threads 1"),
    ("train-config-bad-field", TR, ["--config", "{tmp}/bad.yaml", "--dry-run"], 2, "--config {tmp}/bad.yaml"),
    ("decoder-flag-and-set", DEC, ["--steps", "5", "--set", "steps=7", "--dry-run"], 2, "--steps 5"),
    ("decoder-set-twice", DEC, ["--set", "steps=3", "steps=4", "--dry-run"], 2, "given twice"),
    ("decoder-config-bad-field", DEC, ["--config", "{tmp}/bad.yaml", "--dry-run"], 2, "--config {tmp}/bad.yaml"),
    ("ablations-table-variants-empty", AB, ["table", "--variants", "--dry-run"], 2, "--variants: no name"),
    ("ablations-table-variants-twice", AB, ["table", "--variants", "t2i-baseline", "t2i-baseline", "--dry-run"], 2,
     "--variants"),
    ("tables-wrong-kind", "ablations.tables.__main__", ["geneval", "--results", "{tmp}/wrongres"], 2,
     "kind 'architecture'"),
    ("figure-curve-wrong-kind", "paper_figures.learning_curve", ["{tmp}/rec.json"], 2, "kind 'evaluation'"),
    ("figure-curve-jpg", "paper_figures.learning_curve", ["{tmp}/curve.json", "--out", "{tmp}/c.jpg"], 2, ".png"),
    ("figure-curve-no-suffix", "paper_figures.learning_curve", ["{tmp}/curve.json", "--out", "{tmp}/c"], 2, ".png"),
    ("sweep-cells-and-grid", "evals.sampler_sweep", ["--cells", "3:10", "--guidance", "5"], 2, "--guidance"),
    ("sweep-ckpt-empty", "evals.sampler_sweep", ["--ckpt", ""], 2, "--ckpt ''"),
    ("curve-fid-n-1", "evals.learning_curve", ["{tmp}/norun", "--fid-n", "1"], 2, "--fid-n 1"),
    ("curve-no-fid-and-fid-n", "evals.learning_curve", ["{tmp}/norun", "--no-fid", "--fid-n", "50"], 2, "--no-fid"),
    ("bench-train-preset-typo", "evals.bench_train", ["--preset", "tiny-wrld"], 2, "did you mean tiny-world"),
    ("bench-train-warmup", "evals.bench_train", ["--steps", "2", "--warmup", "5"], 2, "--warmup 5"),
    ("bench-train-out-folder", "evals.bench_train", ["--out", "{tmp}/imgs"], 2, "--out"),
    ("bench-train-batch-twice", "evals.bench_train", ["--batch-sizes", "4", "4"], 2, "--batch-sizes"),
    ("bench-train-launch-typo", "evals.bench_train", ["--launch", "2by1"], 2, "PROCESSESxTHREADS"),
    ("bench-train-launch-twice", "evals.bench_train", ["--launch", "2x1", "2x1"], 2, "--launch: 2x1"),
    ("bench-train-launch-threads", "evals.bench_train", ["--launch", "2x1", "--threads", "1"], 2, "drop --threads"),
    ("bench-train-optimizers-no-adamw", "evals.bench_train", ["--optimizers", "muon"], 2, "include adamw"),
    ("ship-dest-elsewhere-scored", "evals.ship_world", ["{tmp}/done", "--dest", "{tmp}/dest"], 2, "--no-score"),
    ("ship-no-score-options", "evals.ship_world", ["{tmp}/done", "--dest", "{tmp}/dest", "--no-score", "--limit", "1"],
     2, "--limit 1"),
    ("ship-option-typo", "evals.ship_world", ["{tmp}/norun", "--limt", "1"], 2, "--limt"),
    ("ship-rescore-with-run", "evals.ship_world", ["{tmp}/done", "--rescore"], 2, "--rescore"),
    ("ship-rescore-elsewhere", "evals.ship_world", ["--rescore", "--dest", "{tmp}/dest"], 2, "--ckpt world-tiny"),
    ("ship-rescore-typo", "evals.ship_world", ["--rescore", "--n-per-promt", "8"], 2, "--n-per-promt"),
    ("convert-dst-is-src", "snapgen.convert", ["{cls}", "{cls}"], 2, "--index-only"),
    ("convert-dst-empty", "snapgen.convert", ["{cls}", ""], 2, "DST ''"),
    ("convert-src-is-parent", "snapgen.convert", ["{cls}/..", "{tmp}/dst"], 2, "Did you mean"),
]


def _main(module: str):
    mod = importlib.import_module(module)
    return mod.main


@pytest.fixture(scope="session")
def class_pipeline(tmp_path_factory) -> Path:
    """A tiny class-conditional pixel-space pipeline (random weights), saved once."""
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline

    d = tmp_path_factory.mktemp("cls") / "pipe"
    return SnapGenPipeline(_tiny_unet(), None, None, PipelineConfig(resolution=32, steps=2, guidance=1.0,
                                                                    null_class=4)).save_pretrained(d)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(case, tmp_path, capsys, monkeypatch, request):
    name, module, argv, code, needle = case
    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("SNAPGEN_DEBUG", raising=False)
    _files(tmp_path)
    argv = [a.replace(TMP, str(tmp_path)) for a in argv]
    if any(CLS in a for a in argv):
        argv = [a.replace(CLS, str(request.getfixturevalue("class_pipeline"))) for a in argv]
    threads = torch.get_num_threads()
    try:
        got = run_cli(_main(module), argv)
    except SystemExit as e:            # argparse usage errors exit from parse_args
        got = e.code
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert got == code, f"{name}: exit {got}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert needle.replace(TMP, str(tmp_path)) in err, f"{name}: stderr does not name {needle!r}: {err[-2000:]}"
    assert "Traceback" not in err + out
    assert "internal error" not in err


def test_catalogue_covers_every_cli():
    modules = {c[1] for c in CASES}
    assert len(CASES) >= 60 and {R, LAT, EXP, TR, DIS, DEC, AB} <= modules


ROOT = Path(__file__).resolve().parents[1]
# command lines whose ``__main__`` does not (yet) go through run_cli, and why
NOT_RUN_CLI = {
    "ablations/twins.py": "argparse is its only input; it exits 0 on a closed pipe (run_cli would call that exit 2)",
}


def test_every_command_line_goes_through_run_cli():
    import re

    mains = [p for d in ("snapgen", "evals", "ablations", "paper_figures") for p in (ROOT / d).rglob("*.py")
             if re.search(r'^if __name__ == "__main__":', p.read_text(), re.M)]
    assert len(mains) > 20
    missing = sorted(str(p.relative_to(ROOT)) for p in mains if "run_cli" not in p.read_text())
    assert missing == sorted(NOT_RUN_CLI), f"use snapgen.cli.run_cli in: {sorted(set(missing) - set(NOT_RUN_CLI))}"


def test_convert_command_line_has_no_traceback(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "snapgen.convert", str(tmp_path / "nosrc"), str(tmp_path / "dst")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "nosrc" in out.stderr and "Traceback" not in out.stderr


def test_unknown_table_writes_no_table(tmp_path, capsys):
    from ablations.tables.__main__ import main

    assert main(["geneval", "nosuchtable", "--results", str(tmp_path)]) == 2
    assert "unknown table 'nosuchtable'" in capsys.readouterr().err
    assert not (tmp_path / "tables").exists()                 # geneval, named first, was not written either


def test_compare_refuses_records_of_other_kinds_and_no_shared_metric(tmp_path, capsys):
    """An evaluation against a latency record is a protocol mismatch (exit 3), and two records without a shared
    metric say so (exit 3, even with --force) instead of printing an empty table."""
    from evals.compare import main

    _fresh_files(tmp_path)
    assert main([str(tmp_path / "rec.json"), str(tmp_path / "rec-latency.json")]) == 3
    assert "kind: 'evaluation' != 'latency'" in capsys.readouterr().out
    assert main([str(tmp_path / "rec.json"), str(tmp_path / "rec-other.json"), "--force"]) == 3
    assert "NO SHARED METRIC" in capsys.readouterr().out
    assert main([str(tmp_path / "rec.json"), str(tmp_path / "rec.json")]) == 0


def test_decoder_set_out_is_not_replaced_by_the_default(tmp_path, capsys):
    from snapgen.train_decoder import main

    assert main(["--set", f"out={tmp_path / 'dec'}", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "dec")


def test_negative_zero_is_zero():
    """``--guidance -0`` is 0.0: "-0.0" would be another protocol value and image-cache key."""
    import math

    from snapgen.cli import finite_float, nonnegative_float

    for parse in (finite_float, nonnegative_float):
        assert math.copysign(1.0, parse("-0")) == 1.0


def test_a_path_through_a_file_is_named(tmp_path):
    from snapgen.cli import describe

    f = tmp_path / "a.txt"
    f.write_text("x")
    assert "is a file where a folder is expected" in describe(FileExistsError(17, "File exists", str(f)))


def test_diff_of_a_variant_with_itself_says_so(capsys):
    from ablations.__main__ import main

    assert main(["diff", "t2i-baseline", "t2i-baseline"]) == 0
    assert "same config" in capsys.readouterr().out


def test_ship_world_refuses_before_copying(tmp_path, capsys):
    from evals.ship_world import main

    _finished_run(tmp_path)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "done"), "--dest", str(tmp_path / "dest")])
    assert not (tmp_path / "dest").exists() and not (tmp_path / "dest.partial").exists()


def test_debug_shows_the_traceback(tmp_path):
    from evals.compare import main

    with pytest.raises(Exception):
        run_cli(main, [str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--debug"])


def test_a_bug_is_an_internal_error_with_exit_1(capsys):
    def main(argv):
        raise TypeError("boom")

    assert run_cli(main, []) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "--debug" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# integrity: weights, checkpoints, records


def test_flipped_byte_in_a_checkpoint_is_a_clear_error(tmp_path):
    from snapgen.io import CorruptWeightsError
    from snapgen.training.checkpoint import load_checkpoint, save_checkpoint

    head = torch.nn.Linear(3, 2)
    ck = save_checkpoint(tmp_path, 1, {"head": head}, {}, {"objective": "x", "config": {}}, keep=1)
    assert (ck / "weights.sha256.json").is_file()
    f = ck / "head.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01                                   # inside the tensor data: safetensors alone would load it
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptWeightsError, match="head.safetensors"):
        load_checkpoint(ck, {"head": torch.nn.Linear(3, 2)}, {})


def test_weights_manifest_helpers(tmp_path):
    from snapgen.io import CorruptWeightsError, verify_weights_manifest, write_weights_manifest

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.safetensors").write_bytes(b"abc")
    manifest = write_weights_manifest(tmp_path)
    assert list(manifest["files"]) == ["unet/model.safetensors"]
    assert verify_weights_manifest(tmp_path)["files"] == manifest["files"]
    (tmp_path / "unet" / "model.safetensors").unlink()
    with pytest.raises(CorruptWeightsError, match="missing"):
        verify_weights_manifest(tmp_path)
    assert verify_weights_manifest(tmp_path / "unet") is None      # folders written before manifests
    with pytest.raises(CorruptWeightsError, match="weights.sha256.json"):
        verify_weights_manifest(tmp_path / "unet", required=True)


def _flip_tensor_byte(f: Path) -> None:
    """Flip one bit in the middle of the tensor data of safetensors file ``f`` (past its header): safetensors
    itself still loads the file, with one silently different weight."""
    from safetensors.torch import load_file

    data = bytearray(f.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")     # u64 header length, the JSON header, then the tensor data
    data[start + (len(data) - start) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    load_file(str(f))                                  # the header is intact: only the sha256 can tell


def _tiny_unet(cond: str = "class", channels: int = 3, size: int = 32):
    from snapgen.config import UNetConfig
    from snapgen.models.unet import SnapGenUNet

    extra = dict(cond="text", context_dim=384, pooled_dim=384) if cond == "text" else dict(cond="class", num_classes=4)
    torch.manual_seed(0)
    return SnapGenUNet(UNetConfig.from_dict(dict(in_channels=channels, out_channels=channels, sample_size=size,
                                                 channels=[32, 32], res_blocks=[1, 1], depth=[1, 1],
                                                 attention=["cross", "self_cross"], head_dim=16, norm_groups=8,
                                                 **extra))).eval()


def _tiny_decoder():
    from snapgen.models.decoder import TinyDecoder, TinyDecoderConfig

    torch.manual_seed(1)
    return TinyDecoder(TinyDecoderConfig(stage_channels=(16, 8), blocks_per_stage=(1, 1))).eval()


@pytest.mark.parametrize("make", [_tiny_unet, _tiny_decoder], ids=["unet", "tiny-decoder"])
def test_flipped_byte_in_a_saved_model_is_a_clear_error(make, tmp_path):
    """save_pretrained writes weights.sha256.json; from_pretrained round-trips an untouched save and refuses a
    flipped byte inside a tensor (which safetensors alone loads), naming the file and the fix."""
    from snapgen.io import CorruptWeightsError

    model = make()
    d = model.save_pretrained(tmp_path / "m")
    assert (d / "weights.sha256.json").is_file()
    again = type(model).from_pretrained(d)
    assert again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    f = d / "diffusion_pytorch_model.safetensors"
    _flip_tensor_byte(f)
    with pytest.raises(CorruptWeightsError, match=f"'{f}' is corrupted.*restore it from a copy or retrain"):
        type(model).from_pretrained(d)


def test_flipped_byte_in_a_saved_pipeline_is_a_clear_error(tmp_path):
    """Through the user's code paths: SnapGenPipeline / DiffusionPipeline.from_pretrained, and `evals.run geneval`
    (exit 2, one line naming the file, no traceback); the untouched save generates the same images."""
    import os
    import shutil
    import subprocess
    import sys

    from diffusers import DiffusionPipeline

    from snapgen.io import CorruptWeightsError
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline
    from snapgen.text import TextEncoderStack

    pipe = SnapGenPipeline(_tiny_unet("text"), TextEncoderStack(), None, PipelineConfig(resolution=32, steps=2))
    good = pipe.save_pretrained(tmp_path / "good")
    assert (good / "unet" / "weights.sha256.json").is_file()
    kw = dict(prompts=["a photo of a red circle"], seeds=[3], output="tensor")
    assert torch.equal(SnapGenPipeline.from_pretrained(good).generate(**kw), pipe.generate(**kw))
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    f = bad / "unet" / "diffusion_pytorch_model.safetensors"
    _flip_tensor_byte(f)
    for load in (SnapGenPipeline.from_pretrained, DiffusionPipeline.from_pretrained):
        with pytest.raises(CorruptWeightsError, match=f"'{f}' is corrupted"):
            load(bad)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SNAPGEN_RESULTS": str(tmp_path / "results")}
    env.pop("SNAPGEN_DEBUG", None)
    out = subprocess.run([sys.executable, "-m", "evals.run", "geneval", "--ckpt", str(bad), "--limit", "1",
                          "--threads", "1", "--out", str(tmp_path / "res")], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"error: weights file '{f}' is corrupted" in out.stderr and "restore it" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_flipped_byte_in_a_pipeline_decoder_is_a_clear_error(tmp_path):
    from snapgen.io import CorruptWeightsError
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline

    pcfg = PipelineConfig(decoder="tiny", resolution=64, steps=2, guidance=1.0, null_class=4)
    d = SnapGenPipeline(_tiny_unet(channels=16, size=16), None, _tiny_decoder(), pcfg).save_pretrained(tmp_path / "p")
    assert (d / "vae" / "weights.sha256.json").is_file()
    SnapGenPipeline.from_pretrained(d)
    _flip_tensor_byte(d / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CorruptWeightsError, match="vae/diffusion_pytorch_model.safetensors' is corrupted"):
        SnapGenPipeline.from_pretrained(d)


def test_flipped_byte_in_a_pipeline_autoencoderkl_is_a_clear_error(tmp_path):
    """diffusers' AutoencoderKL saves and loads without a manifest of its own: the pipeline writes one for its
    vae/ and checks it through both loaders (SnapGenPipeline and DiffusionPipeline.from_pretrained)."""
    from diffusers import AutoencoderKL, DiffusionPipeline

    from snapgen.io import CorruptWeightsError
    from snapgen.pipeline import PipelineConfig, SnapGenPipeline

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, layers_per_block=1).eval()
    pcfg = PipelineConfig(decoder="vae", resolution=32, steps=2, guidance=1.0, null_class=4)
    d = SnapGenPipeline(_tiny_unet(channels=4, size=16), None, vae, pcfg).save_pretrained(tmp_path / "p")
    assert "diffusion_pytorch_model.safetensors" in json.loads((d / "vae" / "weights.sha256.json").read_text())["files"]
    SnapGenPipeline.from_pretrained(d)
    _flip_tensor_byte(d / "vae" / "diffusion_pytorch_model.safetensors")
    for load in (SnapGenPipeline.from_pretrained, DiffusionPipeline.from_pretrained):
        with pytest.raises(CorruptWeightsError, match="vae/diffusion_pytorch_model.safetensors' is corrupted"):
            load(d)


def test_flipped_byte_in_a_checkpoint_text_projection_is_a_clear_error(tmp_path):
    """The learning curve rebuilds a pipeline from a checkpoint's EMA and text_proj.safetensors: the checkpoint's
    manifest is checked first."""
    from evals.learning_curve import checkpoint_pipeline
    from snapgen.io import CorruptWeightsError
    from snapgen.text import TextEncoderStack
    from snapgen.training.checkpoint import save_checkpoint

    run = tmp_path / "run"
    TextEncoderStack().save_pretrained(run / "pipeline" / "text")
    (run / "train_config.json").write_text(json.dumps({"resolution": 32}))
    ck = save_checkpoint(run, 5, {"ema": _tiny_unet("text"), "text_proj": torch.nn.Linear(4, 4)}, {},
                         {"objective": "flow", "config": {}}, keep=1)
    _flip_tensor_byte(ck / "text_proj.safetensors")
    with pytest.raises(CorruptWeightsError, match="text_proj.safetensors' is corrupted"):
        checkpoint_pipeline(ck, run, tmp_path / "curve")
    assert not (tmp_path / "curve" / "pipeline").exists()


def test_flipped_byte_in_the_decoder_proofs_standin_vae_is_a_clear_error(tmp_path):
    from diffusers import AutoencoderKL

    from snapgen.io import CorruptWeightsError, write_weights_manifest
    from snapgen.training.decoder_data import load_frozen_encoder

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, layers_per_block=1)
    vae.save_pretrained(str(tmp_path / "standin_vae"))
    write_weights_manifest(tmp_path / "standin_vae")          # as decoder_world_proof writes it
    load_frozen_encoder(tmp_path / "standin_vae")
    _flip_tensor_byte(tmp_path / "standin_vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CorruptWeightsError, match="standin_vae/diffusion_pytorch_model.safetensors' is corrupted"):
        load_frozen_encoder(tmp_path / "standin_vae")


def test_model_folders_without_their_own_manifest(tmp_path, monkeypatch, recwarn):
    """A module folder of a checkpoint (or the shipped world) is checked against the manifest above it; a folder
    written before manifests loads unchecked with one warning per process (docs/reproducibility.md)."""
    import shutil

    from snapgen.io import CorruptWeightsError
    from snapgen.models import pretrained
    from snapgen.models.unet import SnapGenUNet
    from snapgen.training.checkpoint import save_checkpoint

    unet = _tiny_unet()
    ck = save_checkpoint(tmp_path / "run", 1, {"ema": unet}, {}, {"objective": "x", "config": {}}, keep=1)
    (ck / "ema" / "weights.sha256.json").unlink()                  # as checkpoints were written before this change
    SnapGenUNet.from_pretrained(ck / "ema")
    _flip_tensor_byte(ck / "ema" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CorruptWeightsError, match=f"recorded in '{ck / 'weights.sha256.json'}'"):
        SnapGenUNet.from_pretrained(ck / "ema")

    shipped = Path(__file__).resolve().parents[1] / "snapgen" / "weights" / "world-tiny"
    world = tmp_path / "world-tiny"
    shutil.copytree(shipped, world)
    SnapGenUNet.from_pretrained(world / "pipeline" / "unet")
    _flip_tensor_byte(world / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CorruptWeightsError, match="weights.sha256.json"):         # its own manifest (today's engine)
        SnapGenUNet.from_pretrained(world / "pipeline" / "unet")
    (world / "pipeline" / "unet" / "weights.sha256.json").unlink()                 # as folders shipped before it
    with pytest.raises(CorruptWeightsError, match="manifest.json"):                # the shipping manifest above
        SnapGenUNet.from_pretrained(world / "pipeline" / "unet")

    monkeypatch.setattr(pretrained, "_warned_unverified", False)
    old = tmp_path / "old"
    shutil.copytree(shipped / "pipeline" / "unet", old)              # no manifest here or above: an older folder
    (old / "weights.sha256.json").unlink()
    recwarn.clear()
    for _ in range(2):
        assert SnapGenUNet.from_pretrained(old).config == unet.__class__.read_config(old)
    warned = [w for w in recwarn if issubclass(w.category, pretrained.UnverifiedWeightsWarning)]
    assert len(warned) == 1 and str(old) in str(warned[0].message)


def test_torn_record_and_samples_pair_is_refused(tmp_path):
    from evals.records import read_rows
    from snapgen.records import RecordError, make_record, read_record, score, write_record

    rec = make_record("evaluation", "r", {"benchmark": "clip"}, {"m": score(0.5, None, 2, True, "fraction")},
                      {}, {"threads": 1, "git_commit": None, "versions": {}})
    path = write_record(tmp_path / "r.json", rec, [{"i": 0}, {"i": 1}])
    assert read_rows(read_record(path), path) == [{"i": 0}, {"i": 1}]
    path.with_suffix(".samples.jsonl").write_text('{"i": 0}\n')      # a kill between the two writes, or another run
    with pytest.raises(RecordError, match="samples.jsonl"):
        read_rows(read_record(path), path)


def test_resume_never_duplicates_log_lines(tmp_path):
    from snapgen.training.checkpoint import trim_log

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(5)))
    trim_log(log, 3)
    trim_log(log, 3)                                   # a second resume at the same step
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [0, 1, 2]


def test_truncated_images_are_named_by_every_scorer_reader(tmp_path):
    """FID features, CLIP / ImageReward and DPG grids read images through one helper that names a corrupt file."""
    import numpy as np
    from PIL import Image

    from snapgen.io import open_image_rgb

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])
    assert open_image_rgb(good).size == (8, 8)
    with pytest.raises(ValueError, match="bad.png"):
        open_image_rgb(bad)
    from evals.metrics.features import _to_uint8_chw

    with pytest.raises(ValueError, match="bad.png"):
        _to_uint8_chw(bad)
