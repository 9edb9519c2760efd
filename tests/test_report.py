"""The static HTML report (evals.report): every sample present, every referenced image on disk, no external URL,
detections and DPG questions drawn, the compare view's flipped samples and paired differences; and, where
headless Chromium exists, the rendered page (evals.report.screenshot)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evals.report import build_report
from snapgen.records import make_record, write_record

ENV = {"git_commit": "0" * 40, "threads": 1, "versions": {}}


def _png(path: Path, seed: int, side: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def _score(value, ci=None, n=4):
    return {"value": float(value), "ci95": ci, "n": n, "higher_is_better": True, "unit": "fraction"}


def _geneval(tmp: Path, name: str, correct: list[bool], seed: int) -> Path:
    """A GenEval record of 2 prompts x 2 samples; sample (0, 1)'s image is gone from the cache."""
    images = tmp / f"{name}-images"
    rows = []
    for k, ok in enumerate(correct):
        pi, si = divmod(k, 2)
        path = images / f"{pi:05d}" / "samples" / f"{si:04d}.png"
        if (pi, si) != (0, 1):
            _png(path, seed + k)
        kept = {"circle": [{"box": [2.0, 3.0, 12.0, 14.0], "score": 0.91, "color": "red"}]} if ok else {}
        rows.append({"prompt_index": pi, "sample_index": si, "tag": ("single_object", "colors")[pi],
                     "prompt": ("a photo of a circle", "a photo of a red circle")[pi], "correct": ok,
                     "reason": "" if ok else "expected circle>=1, found 0 <b>", "filename": str(path),
                     "details": {"kept": kept, "colors": {}, "matched": [ok], "threshold": 0.3,
                                 "image_size": [32, 32]}})
    protocol = {"benchmark": "geneval", "prompt_set_sha256": "ab" * 32, "base_seed": 0, "images_per_prompt": 2,
                "seed_scheme": "sha256(prompt_index, sample_index, base_seed)", "images_dir": str(images),
                "sampler": {"steps": 4}}
    rec = make_record("evaluation", name, protocol, {"geneval_overall": _score(np.mean(correct), [0.0, 1.0])},
                      {"tasks": {}}, environment=ENV)
    return write_record(tmp / f"{name}.json", rec, rows)


def _dpg(tmp: Path) -> Path:
    grid = _png(tmp / "dpg" / "grids" / "p0.png", 7, side=64)
    csv = tmp / "dpg" / "dpg_bench.csv"
    csv.write_text("item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,"
                   "question_natural_language\np0,a red circle,c,1,0,entity,whole,entity - whole (circle),"
                   "Is there a circle?\n")
    q = [{"qid": 1, "question": "Is there a circle?", "answers": ["yes", "no", "yes", "yes"], "raw": [1, 0, 1, 1],
          "scores": [1.0, 0.0, 1.0, 1.0], "dependency": [0], "tuple": "entity - whole (circle)"},
         {"qid": 2, "question": "Is it red?", "answers": ["yes", "yes", "no", "yes"], "raw": [1, 1, 0, 1],
          "scores": [1.0, 0.0, 0.0, 1.0], "dependency": [1], "tuple": "attribute - color (circle, red)"}]
    rows = [{"item_id": "p0", "mode": "fixed", "status": "ok", "error": None, "image": str(grid),
             "prompt_score": 0.625, "tile_scores": [1.0, 0.0, 0.5, 1.0], "questions": q, "category_scores": {}}]
    rec = make_record("evaluation", "toy-dpg", {"benchmark": "dpg", "questions_csv": str(csv)},
                      {"dpg_fixed_overall_x100": _score(62.5)}, {}, environment=ENV)
    return write_record(tmp / "toy-dpg.json", rec, rows)


def _fid(tmp: Path) -> Path:
    for i in range(5):
        _png(tmp / "gen" / f"{i:05d}_00.png", 100 + i)
        _png(tmp / "ref" / f"{i:05d}.png", 200 + i)
    protocol = {"benchmark": "fid", "images_dir": str(tmp / "gen"), "reference": {"ref_dir": str(tmp / "ref")}}
    rec = make_record("evaluation", "toy-fid", protocol, {"precision_world32": _score(0.5)}, {}, environment=ENV)
    return write_record(tmp / "toy-fid.json", rec)


@pytest.fixture()
def records(tmp_path) -> dict[str, Path]:
    return {"a": _geneval(tmp_path, "model-a-geneval", [True, False, True, False], seed=0),
            "b": _geneval(tmp_path, "model-b-geneval", [True, True, False, False], seed=50),
            "dpg": _dpg(tmp_path), "fid": _fid(tmp_path)}


def _refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)


def test_report_holds_every_sample_local_images_and_no_external_url(records, tmp_path):
    out = tmp_path / "report"
    index = build_report([records["a"], records["dpg"], records["fid"]], out)
    html = index.read_text()
    for pi, si in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        assert f"id='model-a-geneval-{pi}-{si}'" in html
    assert "id='toy-dpg-fixed-p0'" in html
    assert html.count("class='card ") == 5
    assert html.count("image missing") == 1                                  # sample (0, 1) has no image
    refs = [r for r in _refs(html) if not r.startswith("#")]
    assert refs and all((out / r).is_file() for r in refs), refs
    assert not re.search(r"https?:|//[a-z]|url\(|@import", html, re.I)
    assert "&lt;b&gt;" in html and "<b>" not in html                          # reasons are escaped
    assert {r.split("/")[-1] for r in refs} >= {"fid_generated.png", "fid_reference.png", "p0.png"}


def test_detections_verdicts_and_dpg_questions_are_drawn(records, tmp_path):
    html = build_report([records["a"], records["dpg"]], tmp_path / "r").read_text()
    card = re.search(r"<div class='card correct' id='model-a-geneval-0-0'.*?</div></div>", html, re.S).group(0)
    assert card.count("<rect") == 2 and "circle 0.91 red" in card and "✓ correct" in card
    assert "expected circle&gt;=1, found 0" in html and "kept: score &gt; 0.3" in html
    dpg = html[html.index("id='toy-dpg-fixed-p0'"):]
    assert "Is it red?" in dpg and "tile 2: 0.50" in dpg and "a red circle" in dpg
    assert dpg.count("class='zeroed'") == 1 and "score 0.625" in dpg        # raw yes, dependency-zeroed


def test_compare_view_lists_flipped_samples_and_paired_differences(records, tmp_path):
    html = build_report([records["a"], records["b"]], tmp_path / "ab").read_text()
    assert "A = model-a-geneval, B = model-b-geneval" in html
    assert "2 sample(s) whose verdict flipped" in html                       # (0, 1) and (1, 0) flipped
    assert html.count("class='pair'") == 2 and html.count("class='flip ") == 4
    assert re.search(r"geneval_overall</td>.*?units\)", html)               # paired B - A with its CI
    assert html.count("class='card ") == 8                                    # flips are not counted as cards
    ids = re.findall(r"id='([^']+)'", html)
    assert len(ids) == len(set(ids))                                         # flip copies do not reuse ids


def test_cli_writes_the_report(records, tmp_path, capsys):
    from evals.run import main

    assert main(["report", str(records["a"]), "--out", str(tmp_path / "cli"), "--thumb", "16"]) == 0
    assert "report:" in capsys.readouterr().out
    with Image.open(next((tmp_path / "cli" / "images").rglob("*.png"))) as im:
        assert max(im.size) <= 16


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed "
                    "(apt-get install -y chromium); the committed results/figures/report_screenshot.png shows a run")
def test_rendered_page_in_headless_chromium(records, tmp_path):
    from evals.report.screenshot import check, expected_cards

    paths = [records["a"], records["b"], records["dpg"], records["fid"]]
    index = build_report(paths, tmp_path / "render")
    result = check(index, tmp_path / "shot.png", expected_cards(paths), window="1200,1600")
    assert result["failed"] == [] and result["cards"] == 9 == expected_cards(paths)
    assert json.dumps(result)
