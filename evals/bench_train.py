"""Training throughput of a world preset under each speed lever, in one interleaved run: a record.

    python -m evals.bench_train                                  # tiny-world, 2 threads, fp32/bf16 x contiguous/channels_last
    python -m evals.bench_train --batch-sizes 16 32 --threads 1 --steps 20
    python -m evals.bench_train --threads 1 --mixed-precision no --split-depthwise    # + the split-depthwise lever
    python -m evals.bench_train --launch 1x2 2x1 --mixed-precision no --split-depthwise  # 2 cores: 1 process x 2
                                                 # threads vs 2 torchrun ranks x 1 thread (gloo DDP, global batch 2x)
    python -m evals.bench_train --launch 2x1 --mixed-precision no --optimizers adamw muon  # + the optimizer lever

Each setting trains ``--steps`` optimizer steps of the real engine (``snapgen.train``) in a temporary folder,
``--rounds`` times, settings interleaved round by round so a load change on a shared machine hits them
all alike; the throughput of a setting is the median over its rounds of the median step time after
``--warmup`` steps. Writes ``results/bench/train_throughput_<preset>_t<threads>.json``, or with ``--launch``
``train_throughput_<preset>_launch_<PxT-...>.json``. A launch ``PxT`` runs ``P`` processes of ``T`` threads each
(``P`` > 1 under ``torch.distributed.run`` on gloo, as ``torchrun --nproc_per_node P -m snapgen.train`` does); its
images/s counts every rank's images (``P`` x batch per step), so layouts of the same cores compare directly.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

from snapgen.cli import nonnegative_int, positive_int
from snapgen.paths import results_dir
from snapgen.records import make_record, score, write_record


def parse_launch(text: str) -> tuple[int, int]:
    """``"2x1"`` -> (2 processes, 1 thread each)."""
    p, sep, t = text.lower().partition("x")
    if not sep or not p.isdigit() or not t.isdigit() or int(p) < 1 or int(t) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PROCESSESxTHREADS with both >= 1, e.g. 1x2 or 2x1")
    return int(p), int(t)


def _one(preset: str, batch: int, mp: str, cl: bool, split: bool, threads: int, steps: int, warmup: int,
         processes: int = 1, optimizer: str = "adamw") -> float:
    """Median seconds per optimizer step after warm-up (a fresh process per setting: accelerate's state,
    e.g. its mixed precision, is fixed once per process). With ``processes`` > 1 ``snapgen.train`` launches that many
    gloo ranks itself under ``torch.distributed.run`` (rank 0 writes the log; every rank runs the same step)."""
    import os
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        sets = [f"unet={preset}", f"batch_size={batch}", f"steps={steps}", f"mixed_precision={mp}",
                f"channels_last={str(cl).lower()}", f"split_depthwise={str(split).lower()}", f"threads={threads}",
                f"processes={processes}", f"optimizer={optimizer}", "cpu=true", "log_every=1",
                f"ckpt_every={10**9}", "keep_ckpts=1", "sample_steps=1"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, "-m", "snapgen.train", "--out", tmp, "--no-progress", "--set", *sets],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"snapgen.train exited {done.returncode} for {processes}x{threads}, batch {batch}, {mp}, "
                               f"channels_last={cl}, split_depthwise={split}, optimizer={optimizer}: {last}")
        rows = [json.loads(x) for x in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    return statistics.median(r["step_time_s"] for r in rows if r["step"] >= warmup)


def throughput_record(name: str, rows: list[dict], protocol: dict, rounds: int, wall_time_s: float | None,
                      environment: dict | None = None, created: str | None = None) -> dict:
    """Kind "benchmark": training images/s of every setting as scores (n = interleaved rounds)."""
    scores = {f"train_images_per_s_{setting_key(r)}": score(r["images_per_s"], None, rounds, True, "images/s")
              for r in rows}
    best = max(rows, key=lambda r: r["images_per_s"])
    rec = make_record("benchmark", name, {"benchmark": "train_throughput", **protocol}, scores,
                      {"rows": rows, "fastest": best, "wall_time_s": wall_time_s}, environment)
    return {**rec, "created": created} if created else rec


def setting_key(r: dict) -> str:
    """``b16_no_contig``, ``b16_bf16_cl``, ``b16_no_cl_split`` (split only where the row has it on, the optimizer
    only where it is not AdamW: ``b16_no_contig_split_muon``), prefixed by the launch (``2x1_b16_no_contig``) in
    records made with ``--launch``."""
    opt = r.get("optimizer", "adamw")
    return ((f"{r['processes']}x{r['threads']}_" if "processes" in r else "")
            + f"b{r['batch_size']}_{r['mixed_precision']}_{'cl' if r['channels_last'] else 'contig'}"
            + ("_split" if r.get("split_depthwise") else "") + ("" if opt == "adamw" else f"_{opt}"))


def migrate_v1(old: dict, path: Path) -> dict:
    proto = {k: v for k, v in old["protocol"].items() if k != "benchmark"}
    return throughput_record(Path(path).stem, old["rows"], proto, old["protocol"]["rounds"], old.get("wall_time_s"),
                             old["environment"], old["created"])


def record_name(a) -> str:
    tail = f"launch_{'-'.join(f'{p}x{t}' for p, t in a.launch)}" if a.launch else f"t{a.threads}"
    return f"train_throughput_{a.preset}_{tail}"


def out_path(a) -> Path:
    return Path(a.out) if a.out else results_dir("bench") / f"{record_name(a)}.json"


def check_args(a) -> None:
    """Everything that would otherwise fail after the timed training runs, or inside each of them."""
    from evals.api import check_record_path
    from snapgen.train import load_config
    from snapgen.training.t2i import unet_config

    if a.warmup >= a.steps:
        raise ValueError(f"--warmup {a.warmup}: must be below --steps {a.steps} (the step times after the warm-up are "
                         "the measurement); lower --warmup or raise --steps")
    dup = sorted({b for b in a.batch_sizes if a.batch_sizes.count(b) > 1})
    if dup:
        raise ValueError(f"--batch-sizes: {', '.join(map(str, dup))} given more than once; pass each size once")
    if "adamw" not in a.optimizers:
        raise ValueError(f"--optimizers {' '.join(a.optimizers)}: include adamw (the baseline of every ratio)")
    if len(set(a.optimizers)) < len(a.optimizers):
        raise ValueError("--optimizers: an optimizer given more than once; pass each once")
    if a.launch:
        dup = sorted({f"{p}x{t}" for p, t in a.launch if a.launch.count((p, t)) > 1})
        if dup:
            raise ValueError(f"--launch: {', '.join(dup)} given more than once; pass each layout once")
        if a.threads_given:
            raise ValueError("--threads and --launch both given: a launch PxT sets the threads of each process; "
                             "drop --threads")
    try:
        unet_config(load_config(None, [f"unet={a.preset}"]).validate())
    except (KeyError, ValueError) as e:
        raise ValueError(f"--preset {a.preset}: {e.args[0] if isinstance(e, KeyError) else e}") from None
    check_record_path(out_path(a), "--out")
    out = out_path(a)
    if a.out is None and out.is_file():              # the default name holds one grid of settings: never swap it
        from snapgen.records import read_record

        old = sorted(_setting_of_row(r, a.threads) for r in read_record(out)["details"]["rows"])
        if old != sorted(settings_of(a)):
            raise ValueError(f"{out} holds another set of settings ({len(old)} rows; this run times "
                             f"{len(settings_of(a))}); pass --out PATH for this grid, or the same --batch-sizes, "
                             "--mixed-precision, --split-depthwise and --optimizers to re-measure that record")


def settings_of(a) -> list[tuple]:
    """(batch, mixed precision, channels_last, split_depthwise, optimizer, processes, threads) of every timed
    setting, in timing order (without ``--launch``: one process of ``--threads``)."""
    mps = list(dict.fromkeys(["no", *a.mixed_precision]))          # fp32 contiguous is the baseline of every ratio
    splits = (False, True) if a.split_depthwise else (False,)
    grid = list(itertools.product(a.batch_sizes, mps, (False, True), splits, a.optimizers))
    return [(*g, *layout) for layout in (a.launch or [(1, a.threads)]) for g in grid]


def _setting_of_row(r: dict, threads: int) -> tuple:
    """A record row as ``settings_of`` gives it (rows of records made without ``--launch``: 1 x ``threads``)."""
    return (r["batch_size"], r["mixed_precision"], r["channels_last"], r.get("split_depthwise", False),
            r.get("optimizer", "adamw"), r.get("processes", 1), r.get("threads", threads))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.bench_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny-world")
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[16])
    p.add_argument("--mixed-precision", nargs="+", choices=("no", "bf16"), default=["no", "bf16"],
                   help="autocast settings to time (no = fp32; the baseline is no + contiguous)")
    p.add_argument("--split-depthwise", action="store_true",
                   help="also time every setting with split_depthwise=true (snapgen.models.layers.set_split_depthwise)")
    p.add_argument("--optimizers", nargs="+", choices=("adamw", "muon"), default=["adamw"],
                   help="main optimizers to time (snapgen.training.optim; the baseline is adamw)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads of the one process (default 2)")
    p.add_argument("--launch", type=parse_launch, nargs="+", default=None, metavar="PxT",
                   help="process layouts to time, e.g. 1x2 2x1 (P processes of T threads; P > 1 as gloo ranks under "
                        "torch.distributed.run); images/s counts every rank's images")
    p.add_argument("--steps", type=positive_int, default=16)
    p.add_argument("--warmup", type=nonnegative_int, default=4)
    p.add_argument("--rounds", type=positive_int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    a.threads_given = a.threads is not None
    a.threads = 2 if a.threads is None else a.threads
    check_args(a)                                   # before minutes of training, not after
    t0 = time.time()
    settings = settings_of(a)
    times: dict[tuple, list[float]] = {s: [] for s in settings}
    for r in range(a.rounds):
        for s in settings:
            procs, threads = s[5:]
            times[s].append(_one(a.preset, *s[:4], threads, a.steps, a.warmup, procs, optimizer=s[4]))
            print(f"round {r}: {procs}x{threads} batch {s[0]} {s[1]:4s} channels_last={s[2]!s:5s} "
                  f"split_depthwise={s[3]!s:5s} optimizer={s[4]} {times[s][-1] * 1000:.0f} ms/step", flush=True)
    rows = []
    for s, ts in times.items():
        batch, mp, cl, split, opt, procs, threads = s
        med = statistics.median(ts)
        rows.append({"batch_size": batch, "mixed_precision": mp, "channels_last": cl, "split_depthwise": split,
                     **({"optimizer": opt} if opt != "adamw" or len(a.optimizers) > 1 else {}),
                     **({"processes": procs, "threads": threads} if a.launch else {}),
                     "step_time_s": med, "step_time_rounds_s": ts, "images_per_s": batch * procs / med})
    for r in rows:   # the baseline: fp32 contiguous, same batch (and, with --launch, the first layout given)
        base = next(b for b in rows if b["batch_size"] == r["batch_size"] and b["mixed_precision"] == "no"
                    and not b["channels_last"] and not b["split_depthwise"]
                    and _setting_of_row(b, a.threads)[4:] == ("adamw", *settings[0][5:]))   # the first layout
        r["speedup_vs_fp32_contiguous_same_batch"] = r["images_per_s"] / base["images_per_s"]
    protocol = {"preset": a.preset, "threads": None if a.launch else a.threads,
                **({"launch": [f"{p}x{t}" for p, t in a.launch], "baseline_launch": f"{a.launch[0][0]}x{a.launch[0][1]}",
                    "distributed": "torch.distributed.run, gloo, one CPU process per rank; images/s counts every rank"}
                   if a.launch else {}),
                "steps": a.steps, "warmup_steps": a.warmup,
                "rounds": a.rounds, "timing": "median step time after warm-up, median over interleaved rounds",
                "optimizers": a.optimizers,
                "engine": "snapgen.train (rectified flow, world data, EMA; the row's optimizer, AdamW unless named)"}
    record = throughput_record(record_name(a), rows, protocol, a.rounds, time.time() - t0)
    out = out_path(a)
    write_record(out, record)
    for r in rows:
        print(f"{setting_key(r):28s} batch {r['batch_size']:3d} {r['mixed_precision']:4s} channels_last={r['channels_last']!s:5s} "
              f"split_depthwise={r['split_depthwise']!s:5s} {r.get('optimizer', 'adamw'):5s} {r['images_per_s']:6.1f} img/s  "
              f"x{r['speedup_vs_fp32_contiguous_same_batch']:.2f}")
    print(f"record: {out}")
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
