"""The dpg / fid / fid-ref / clip / imagereward plugins, run in-process through ``evals.run.main``.

World generators (oracle = ceiling, noise = floor) and the exact world VQA give known DPG numbers;
FID runs the real Inception weights on small 64 px sets and is checked against torch-fidelity;
CLIP and ImageReward run tiny random-weight models saved to tmp and loaded by the user-facing CLI.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evals.run
from evals.metrics.bench_fid import photo_crops, write_pngs

MINE = ("dpg", "fid", "fid-ref", "clip", "imagereward")
WORLD = ["--world-prompts-per-tag", "2", "--no-progress"]     # 2 prompts per task: 12 prompts, 48 tiles


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


def cli(*argv) -> int:
    return evals.run.main([str(a) for a in argv])


def load(path: Path) -> tuple[dict, list[dict]]:
    from evals.records import read_rows
    from snapgen.records import read_record

    record = read_record(path)
    rows = read_rows(record, path) if record["details"].get("samples_jsonl") else []
    return record, rows


def value(record: dict, key: str) -> float:
    return record["scores"][key]["value"]


# ----------------------------------------------------------------------------------------------- DPG


@pytest.fixture(scope="module")
def dpg_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpg")
    out = {}
    for ckpt in ("world-oracle", "world-noise"):
        assert cli("dpg", "--ckpt", ckpt, "--images-root", root / "img", "--out", root / f"{ckpt}.json", *WORLD) == 0
        out[ckpt] = load(root / f"{ckpt}.json")
    return root, out


def test_dpg_world_oracle_scores_100_and_noise_scores_low_in_both_modes(dpg_runs):
    _, runs = dpg_runs
    oracle, noise = runs["world-oracle"][0], runs["world-noise"][0]
    assert set(oracle["details"]["modes"]) == set(noise["details"]["modes"]) == {"official", "fixed"}
    for mode in ("official", "fixed"):
        key = f"dpg_{mode}_overall_x100"
        assert oracle["details"]["modes"][mode]["mode"] == mode and oracle["scores"][key]["n"] == 12
        assert value(oracle, key) == 100.0 and oracle["scores"][key]["ci95"] == [100.0, 100.0]
        assert oracle["scores"][key]["higher_is_better"] is True
        assert all(v["value"] == 100.0 for k, v in oracle["scores"].items() if k.startswith(f"dpg_{mode}_"))
        assert value(noise, key) < 10.0
        lo, hi = noise["scores"][key]["ci95"]
        assert lo <= value(noise, key) <= hi
        assert set(noise["details"]["modes"][mode]["prompt_scores_x100"]) == {f"world{i}" for i in range(12)}


def test_dpg_record_carries_protocol_and_per_question_answers(dpg_runs):
    root, runs = dpg_runs
    record, rows = runs["world-oracle"]
    p = record["protocol"]
    assert p["scoring_mode"] == "official+fixed" and p["grid"] == "2x2" and p["images_per_prompt"] == 4
    assert p["evaluator"]["vqa"]["name"] == "world-exact" and set(p["evaluator"]["answer_rules"]) == {"official", "fixed"}
    assert p["seed_scheme"].startswith("sha256(item_id") and p["n_prompts"] == 12
    assert Path(p["questions_csv"]).name == "dpg_bench.csv" and Path(p["questions_csv"]).parent == Path(p["images_dir"]).parent
    assert {r["mode"] for r in rows} == {"official", "fixed"} and len(rows) == 24
    question = rows[-1]["questions"][0]
    assert question["answers"] == ["yes"] * 4 and question["scores"] == [1.0] * 4
    grid = Image.open(rows[0]["image"])
    assert grid.size == (64, 64)                                           # 2x2 tiles of 32 px
    tile = Image.open(Path(p["images_dir"]).parent / "tiles" / "world0" / "3.png")
    assert np.array_equal(np.asarray(grid.crop((32, 32, 64, 64))), np.asarray(tile))   # tile 3 = bottom right


def test_dpg_resume_generates_nothing_the_second_time(dpg_runs):
    root, runs = dpg_runs
    first = runs["world-oracle"][0]
    assert first["details"]["generation"]["generated"] == 48 and first["details"]["generation"]["grids_written"] == 12
    grids = sorted(Path(first["protocol"]["images_dir"]).glob("*.png"))
    stamps = [g.stat().st_mtime_ns for g in grids]
    assert cli("dpg", "--ckpt", "world-oracle", "--images-root", root / "img", "--out", root / "again.json", *WORLD) == 0
    again, _ = load(root / "again.json")
    gen = again["details"]["generation"]
    assert gen["generated"] == 0 and gen["grids_written"] == 0 and gen["grids_reused"] == 12
    assert [g.stat().st_mtime_ns for g in grids] == stamps
    assert value(again, "dpg_fixed_overall_x100") == 100.0


def test_dpg_images_mode_single_mode_and_missing_csv(dpg_runs, tmp_path, capsys):
    root, runs = dpg_runs
    p = runs["world-noise"][0]["protocol"]
    out = tmp_path / "images.json"
    assert cli("dpg", "--images", p["images_dir"], "--dpg-csv", p["questions_csv"], "--vqa", "world",
               "--mode", "fixed", "--out", out, "--no-progress") == 0
    record, _ = load(out)
    assert record["protocol"]["scoring_mode"] == "fixed" and set(record["details"]["modes"]) == {"fixed"}
    assert all(k.startswith("dpg_fixed_") for k in record["scores"])
    assert value(record, "dpg_fixed_overall_x100") == value(runs["world-noise"][0], "dpg_fixed_overall_x100")
    assert record["protocol"]["prompt_set_sha256"] == p["prompt_set_sha256"]     # same questions, same items
    capsys.readouterr()
    assert cli("dpg", "--images", p["images_dir"], "--vqa", "world", "--out", tmp_path / "x.json") == 2
    err = capsys.readouterr().err
    assert "dpg_bench.csv" in err and "ELLA" in err


# ----------------------------------------------------------------------------------------------- FID


@pytest.fixture(scope="module")
def fid_setup(tmp_path_factory):
    from evals.metrics import fid

    root = tmp_path_factory.mktemp("fid")
    cache = root / "cache"
    fid.converted_weights(cache)
    a = write_pngs(root / "a", photo_crops(20, seed=1, size=64))
    b = write_pngs(root / "b", photo_crops(24, seed=2, size=64))
    return root, cache, a, b


@pytest.fixture(scope="module")
def fid_runs(fid_setup):
    """fid A vs folder B, then fid-ref B, then fid A vs the printed .npz; counts Inception passes."""
    import contextlib
    import io

    from evals.metrics import fid

    root, cache, a, b = fid_setup
    calls, real = [], fid.extract_features
    common = ("--fid-cache", cache, "--spread-subsets", "3", "--no-progress", "--threads", "1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fid, "extract_features", lambda files, *x, **k: calls.append(len(files)) or real(files, *x, **k))
        assert cli("fid", "--images", a, "--ref", b, *common, "--out", root / "first.json") == 0
        after_first = list(calls)
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert cli("fid-ref", b, "--fid-cache", cache, "--no-progress") == 0
        after_ref = list(calls)
        npz = Path(stdout.getvalue().strip().splitlines()[-1])
        assert cli("fid", "--images", a, "--ref", npz, *common, "--tag", "ab", "--out", root / "second.json") == 0
    return {"calls": [after_first, after_ref, calls], "npz": npz,
            "first": load(root / "first.json")[0], "second": load(root / "second.json")[0]}


def test_fid_cli_reuses_reference_stats_and_records_protocol(fid_setup, fid_runs):
    from evals.metrics import fid

    _, cache, _, _ = fid_setup
    after_first, after_ref, after_second = fid_runs["calls"]
    assert after_first == [24, 20]                                          # reference, then generated
    assert after_ref == [24, 20]                                            # fid-ref: statistics already cached
    assert after_second == [24, 20, 20]                                     # .npz: only the generated set again
    first, second, npz = fid_runs["first"], fid_runs["second"], fid_runs["npz"]
    assert npz.suffix == ".npz" and npz.parent == cache / "fid_reference"
    assert npz == Path(first["protocol"]["reference"]["path"])
    s = first["details"]["raw"]
    assert s["n_gen"] == 20 and s["n_ref"] == 24 and s["fid"] > 1.0 and s["fid_spread"]["n_subsets"] == 3
    assert value(first, "fid") == s["fid"] and first["scores"]["fid"]["n"] == 20
    assert s["fid_spread"]["ci95"][0] <= s["fid_spread"]["mean"] <= s["fid_spread"]["ci95"][1]
    assert value(second, "fid_ab") == pytest.approx(s["fid"], rel=1e-9) and "kid_ab_mean" in second["scores"]
    ev = first["protocol"]["evaluator"]
    assert ev["weights_sha256"] == fid.converted_weights(cache)[1] and ev["resize_filter"] == "tf1x_bilinear"
    assert first["protocol"]["reference"]["key"] == second["protocol"]["reference"]["key"] == ev["reference_key"]
    assert {k: v["higher_is_better"] for k, v in first["scores"].items()} == {
        "fid": False, "kid_mean": False, "precision": True, "recall": True, "density": True, "coverage": True}
    assert first["protocol"]["runtime"]["torch_threads"] == 1


@pytest.mark.slow   # torch-fidelity re-extracts both sets and runs its own 2048-d matrix square root (~30 s)
def test_fid_cli_equals_torch_fidelity_directly(fid_setup, fid_runs):
    from evals.metrics import fid

    _, cache, a, b = fid_setup
    direct = fid.torch_fidelity_direct(a, b, cache_dir=cache)
    s = fid_runs["first"]["details"]["raw"]
    assert s["fid"] == pytest.approx(direct["fid"], rel=1e-3)
    assert s["kid_mean"] == pytest.approx(direct["kid_mean"], rel=1e-3, abs=1e-6)
    assert (s["n_gen"], s["n_ref"]) == (direct["n_gen"], direct["n_ref"])


def test_fid_generates_world_images_against_world_reference(fid_setup, tmp_path):
    root, cache, _, _ = fid_setup
    args = ("fid", "--ckpt", "world-oracle", "--ref", "world", "--n", 8, "--images-root", tmp_path / "img",
            "--fid-cache", cache, "--spread-subsets", "0", "--no-progress")
    assert cli(*args, "--out", tmp_path / "w.json") == 0
    record, _ = load(tmp_path / "w.json")
    s, p = record["details"]["raw"], record["protocol"]
    assert set(record["scores"]) == {"fid_world32", "kid_world32_mean", "precision_world32", "recall_world32",
                                     "density_world32", "coverage_world32"} and "kid_world32_std" in s
    assert s["n_gen"] == s["n_ref"] == 8
    assert p["reference"]["world_seed"] == 10_000_019 and p["tag"] == "world32"
    gen_dir = Path(p["images_dir"])
    assert len(list(gen_dir.glob("*.png"))) == 8 and (gen_dir / "images.jsonl").exists()
    assert record["details"]["generation"]["generated"] == 8
    assert 0.0 < s["fid_world32"] < 300.0     # oracle renders of the reference captions: same distribution


# ------------------------------------------------------------------------------------------ CLIP score


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip
    from test_clip_score import TINY, TINY_CFG

    tmp = tmp_path_factory.mktemp("clip")
    config = tmp / f"{TINY}.json"
    config.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    weights = tmp / "tiny_clip.pt"
    torch.save(open_clip.create_model(TINY).state_dict(), weights)
    return ["--clip-weights", weights, "--clip-model", TINY, "--clip-model-config", config]


def test_clip_cli_on_world_prompts_writes_per_sample_rows(tiny_clip, tmp_path):
    out = tmp_path / "clip.json"
    assert cli("clip", "--ckpt", "world-oracle", "--world-prompts-per-tag", 1, "--n-per-prompt", 2,
               "--images-root", tmp_path / "img", "--out", out, "--no-progress", *tiny_clip) == 0
    record, rows = load(out)
    cos_key, x100_key = "clip_score_snapgentinyclip_cos", "clip_score_snapgentinyclip_x100"
    assert {k: v["higher_is_better"] for k, v in record["scores"].items()} == {cos_key: True, x100_key: True}
    assert len(rows) == 12 and record["scores"][cos_key]["n"] == 6 and record["details"]["aggregate"]["n_samples"] == 12
    assert all(-1.0 <= r[cos_key] <= 1.0 and r[x100_key] == pytest.approx(100 * max(r[cos_key], 0)) for r in rows)
    per_prompt = {}
    for r in rows:
        per_prompt.setdefault(r["prompt_id"], []).append(r[cos_key])
    assert value(record, cos_key) == pytest.approx(sum(sum(v) / len(v) for v in per_prompt.values()) / 6)
    assert record["protocol"]["evaluator"]["weights_sha256"] and record["protocol"]["evaluator"]["scale"] == 100.0
    # the same images scored again through --images and the folder's manifest give the same numbers
    again = tmp_path / "again.json"
    assert cli("clip", "--images", record["protocol"]["images_dir"], "--out", again, "--no-progress", *tiny_clip) == 0
    assert value(load(again)[0], cos_key) == pytest.approx(value(record, cos_key), abs=1e-6)


def test_clip_prompts_file_and_captions_pairing(tiny_clip, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square on the left\n")
    out = tmp_path / "noise.json"
    assert cli("clip", "--ckpt", "world-noise", "--prompts", prompts, "--images-root", tmp_path / "img",
               "--out", out, "--no-progress", *tiny_clip) == 0
    record, rows = load(out)
    assert [r["prompt"] for r in rows] == ["a red circle", "a blue square on the left"]
    folder = Path(record["protocol"]["images_dir"])
    bad = tmp_path / "bad.txt"
    bad.write_text("only one caption\n")
    assert cli("clip", "--images", folder, "--captions", bad, "--out", tmp_path / "x.json", *tiny_clip) == 2


def test_missing_clip_weights_exit_2_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "ViT-L-14.safetensors"
    capsys.readouterr()
    assert cli("clip", "--ckpt", "world-noise", "--clip-weights", missing, "--images-root", tmp_path / "img",
               "--out", tmp_path / "x.json") == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "img").exists()                                  # failed before generating


# ---------------------------------------------------------------------------------------- ImageReward


@pytest.fixture(scope="module")
def tiny_imagereward(tmp_path_factory):
    from test_imagereward import TINY, TINY_MED, WORDS, official_state_dict
    from transformers import BertTokenizer

    tmp = tmp_path_factory.mktemp("imagereward")
    vocab = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tmp / "vocab.txt"), do_lower_case=True).save_pretrained(str(tmp / "tokenizer"))
    torch.save(official_state_dict(TINY, TINY_MED), tmp / "ImageReward.pt")
    (tmp / "med_config.json").write_text(json.dumps(TINY_MED))
    return ["--ir-ckpt", tmp / "ImageReward.pt", "--ir-med-config", tmp / "med_config.json",
            "--ir-tokenizer", tmp / "tokenizer", "--ir-config", json.dumps(dataclasses.asdict(TINY))]


def test_imagereward_cli_writes_per_sample_rewards_and_ci(tiny_imagereward, tmp_path):
    out = tmp_path / "ir.json"
    assert cli("imagereward", "--ckpt", "world-oracle", "--world-prompts-per-tag", 1, "--n-per-prompt", 2,
               "--images-root", tmp_path / "img", "--out", out, "--no-progress", *tiny_imagereward) == 0
    record, rows = load(out)
    s = record["scores"]["imagereward_v1"]
    assert len(rows) == 12 and s["n"] == 6 and s["higher_is_better"] is True and list(record["scores"]) == ["imagereward_v1"]
    values = [r["imagereward_v1"] for r in rows]
    assert len(set(values)) > 1                                             # images differ -> rewards differ
    assert s["ci95"][0] <= s["value"] <= s["ci95"][1]
    assert record["protocol"]["evaluator"]["weights_file"] == "ImageReward.pt"
    # same rewards as the metric library called directly on the same files
    from evals.metrics.imagereward import ImageRewardModel
    from test_imagereward import TINY

    args = dict(zip(tiny_imagereward[0:6:2], tiny_imagereward[1:6:2]))
    model = ImageRewardModel.from_pretrained(args["--ir-ckpt"], args["--ir-med-config"], args["--ir-tokenizer"],
                                             config=TINY)
    assert model.score(rows[0]["prompt"], [rows[0]["file"]])[0] == pytest.approx(values[0], abs=1e-5)


def test_missing_imagereward_checkpoint_exit_2_naming_the_file(tiny_imagereward, tmp_path, capsys):
    args = list(tiny_imagereward)
    args[1] = tmp_path / "ImageReward.pt"
    capsys.readouterr()
    assert cli("imagereward", "--ckpt", "world-noise", "--images-root", tmp_path / "img", "--out",
               tmp_path / "x.json", *args) == 2
    assert str(tmp_path / "ImageReward.pt") in capsys.readouterr().err
