"""evals.layout_probe: does the prompt or the starting noise decide a world model's layout?"""
import json

import numpy as np
import pytest
from PIL import Image

from evals import layout_probe as lp


def _masks(follow: str, p: int = 4, s: int = 5, side: int = 16) -> np.ndarray:
    """(P, S, side, side): one 4x4 square per image, placed by the prompt index, the seed index, or both."""
    m = np.zeros((p, s, side, side), bool)
    for i in range(p):
        for j in range(s):
            k = {"seed": j, "prompt": i, "both": i * s + j}[follow] % 9
            r, c = divmod(k, 3)
            m[i, j, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = True
    return m


def test_layout_that_follows_the_seed_or_the_prompt():
    seed = lp.layout_stats(lp.iou_matrix(_masks("seed")))
    assert seed["iou_same_seed"] == 1.0 and seed["iou_same_prompt"] == 0.0 and seed["seed_dominance"] == 1.0
    prompt = lp.layout_stats(lp.iou_matrix(_masks("prompt")))
    assert prompt["iou_same_prompt"] == 1.0 and prompt["iou_same_seed"] == 0.0 and prompt["seed_dominance"] == -1.0
    assert prompt["iou_neither"] == 0.0


def test_iou_matrix_values():
    m = np.zeros((1, 3, 4, 4), bool)
    m[0, 0, :2] = True             # 8 pixels
    m[0, 1, :1] = True             # 4 pixels, inside the first
    iou = lp.iou_matrix(m)         # image 2 is empty
    assert iou[0, 0, 0, 1] == pytest.approx(0.5)
    assert iou[0, 0, 0, 2] == 0.0 and iou[0, 2, 0, 2] == 1.0      # empty vs empty: identical


def test_bootstrap_leaves_out_copies_of_one_unit():
    iou = lp.iou_matrix(_masks("both"))
    # a draw that repeats one prompt has no 'other prompt' pairs: those statistics are undefined, not 1.0 (self-IoU)
    st = lp.layout_stats(iou, np.array([2, 2, 2, 2]), np.arange(5))
    assert np.isnan(st["iou_same_seed"]) and np.isnan(st["iou_neither"])
    assert st["iou_same_prompt"] == lp.layout_stats(iou, np.array([2]), np.arange(5))["iou_same_prompt"]
    ci = lp.bootstrap(lp.iou_matrix(_masks("seed")), 200, 0)
    assert ci["iou_same_seed"] == (1.0, 1.0) and ci["seed_dominance"] == (1.0, 1.0)


def test_paired_bootstrap_of_two_checkpoints():
    seed, prompt = lp.iou_matrix(_masks("seed")), lp.iou_matrix(_masks("prompt"))
    same = lp.paired_bootstrap(seed, seed, 100, 0)
    assert all(v == (0.0, 0.0, 0.0) for v in same.values())
    d = lp.paired_bootstrap(seed, prompt, 100, 0)
    assert d["seed_dominance"] == (-2.0, -2.0, -2.0) and d["iou_same_prompt"][0] == 1.0


def test_foreground_reads_the_world_background():
    im = Image.new("RGB", (4, 4), (128, 128, 128))
    im.putpixel((1, 2), (128, 128, 180))          # 52/255 = 0.20 away
    im.putpixel((3, 3), (140, 128, 128))          # 12/255 = 0.05 away
    fg = lp.foreground([im], (128, 128, 128), 0.15)
    assert fg.shape == (1, 4, 4) and fg.sum() == 1 and fg[0, 2, 1]


def test_cli_writes_a_record(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path))
    assert lp.main(["--ckpt", "world-oracle", "--ckpt", "world-noise", "--prompts", "4", "--seeds", "3",
                    "--n-boot", "50", "--threads", "1", "--name", "t"]) == 0
    rec = json.loads((tmp_path / "world" / "layout_probe-t.json").read_text())
    assert rec["kind"] == "sweep" and rec["details"]["checkpoints"] == ["world-oracle", "world-noise"]
    assert len(rec["protocol"]["prompts"]) == 4 and rec["protocol"]["split"] == "in_distribution"
    # pure noise images: the seed is the whole image
    assert rec["scores"]["world-noise/iou_same_seed"]["value"] == 1.0
    assert set(k.split("/")[0] for k in rec["scores"]) == {"world-oracle", "world-noise", "world-data"}
    assert "world-data/iou_same_seed" not in rec["scores"]
    assert "world-noise/delta_seed_dominance" in rec["scores"] and "world-oracle/delta_seed_dominance" not in rec["scores"]
    assert rec["protocol"]["delta_against"] == "world-oracle"
    lo, hi = rec["scores"]["world-oracle/iou_same_prompt"]["ci95"]
    assert lo <= rec["scores"]["world-oracle/iou_same_prompt"]["value"] <= hi


def test_cli_refuses_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNAPGEN_RESULTS", str(tmp_path))
    with pytest.raises(ValueError, match="--prompts 10000"):
        lp.main(["--ckpt", "world-oracle", "--prompts", "10000"])
    with pytest.raises(SystemExit) as e:
        lp.main(["--ckpt", "world-oracle", "--threshold", "1.5"])
    assert e.value.code == 2 and "--threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lp.main(["--ckpt", "world-oracle", "--seeds", "1"])
    assert not (tmp_path / "world").exists()
