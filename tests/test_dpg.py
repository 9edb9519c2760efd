"""DPG-Bench port: official vs fixed scoring on a hand-written case, grids, VQA backends, world."""
from __future__ import annotations

import copy
import csv
import importlib.util

import pytest
from PIL import Image

from evals.dpg import (
    CSV_COLUMNS, MissingQuestionsError, answer_score, load_questions, score_folder, score_prompt,
    split_grid, summarize, to_yes_no,
)
from snapgen.io import MissingWeightsError

# ----------------------------------------------------------------------------- hand-written case
# (item, qid, dependency, tuple, question). Row 0 (p0 q1) is the row the official scorer skips.
QUESTIONS = [
    ("p0", 1, "0", "entity - whole (cat)", "Is there a cat?"),
    ("p0", 2, "1", "attribute - color (cat, black)", "Is the cat black?"),
    ("p0", 3, "0", "global - (photo)", "Is this a photo?"),
    ("p1", 1, "0", "entity - whole (dog)", "Is there a dog?"),
    ("p1", 2, "0", "entity - whole (ball)", "Is there a ball?"),
    ("p1", 3, "1", "attribute - color (dog, brown)", "Is the dog brown?"),
    ("p1", 4, "1,2", "relation - spatial (dog, ball, left of)", "Is the dog left of the ball?"),
    ("p1", 5, "2", "other - count (ball, ==2)", "Are there two balls?"),
    # p2 lists a child (q2) before its parent (q3): the official in-place scan is order dependent.
    ("p2", 1, "0", "entity - whole (tree)", "Is there a tree?"),
    ("p2", 2, "3", "attribute - color (leaves, green)", "Are the leaves green?"),
    ("p2", 3, "1", "entity - part (tree, leaves)", "Does the tree have leaves?"),
]
# ANSWERS[item][tile] = answers for qid 1, 2, ... ("Yes" / "yes." count only in fixed mode)
ANSWERS = {
    "p0": [["yes", "yes", "yes"], ["no", "yes", "yes"], ["yes", "no", "no"], ["Yes", "yes.", "no"]],
    "p1": [["yes"] * 5,
           ["no", "yes", "yes", "yes", "yes"],
           ["yes", "no", "yes", "yes", "yes"],
           ["yes", "yes", "no", "yes", "no"]],
    "p2": [["no", "yes", "yes"], ["yes", "yes", "yes"], ["yes", "no", "yes"], ["yes", "yes", "no"]],
}
TILE_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]  # TL, TR, BL, BR


def write_csv(path, questions=QUESTIONS):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for item, qid, dep, tup, question in questions:
            broad, detailed = (s.strip() for s in tup.split("(")[0].split("-"))
            writer.writerow([item, f"prompt {item}, with a comma", "kw", qid, dep, broad, detailed,
                             tup, question])
    return path


def answers_for(item, questions):
    """{qid: answer} per tile for the questions that survived parsing."""
    return [{q.qid: ANSWERS[item][t][q.qid - 1] for q in questions} for t in range(4)]


@pytest.fixture
def csv_path(tmp_path):
    return write_csv(tmp_path / "dpg_bench.csv")


def score_all(csv_path, mode):
    questions = load_questions(csv_path, mode)
    rows = [score_prompt(qs, answers_for(item, qs), mode) for item, qs in questions.items()]
    return questions, rows, summarize(rows, mode)


def test_official_mode_reproduces_the_official_numbers_and_bugs(csv_path):
    questions, rows, summary = score_all(csv_path, "official")
    assert [q.qid for q in questions["p0"]] == [2, 3]          # first data row skipped
    by_item = {r["item_id"]: r for r in rows}
    # p0: q2 depends on the skipped q1 -> KeyError in the official script -> prompt dropped.
    assert by_item["p0"]["status"] == "failed" and "parent question 1" in by_item["p0"]["error"]
    # p1 tiles: [1,1,1,1,1]=1; q1 no -> q3,q4 zeroed: [0,1,0,0,1]=2/5;
    #           q2 no -> q4,q5 zeroed: [1,0,1,0,0]=2/5; [1,1,0,1,0]=3/5. prompt = 2.4/4 = 0.6
    assert by_item["p1"]["tile_scores"] == pytest.approx([1, 0.4, 0.4, 0.6])
    assert by_item["p1"]["prompt_score"] == pytest.approx(0.6)
    # p2 tile 0 (q1 no, q2 yes, q3 yes), CSV order q1,q2,q3: q2 sees q3 still 1 -> kept; q3 zeroed
    #   -> [0,1,0] = 1/3. tiles [1,1,1]=1, [1,0,1]=2/3, [1,0,0]=1/3 -> prompt = (7/3)/4 = 7/12
    assert by_item["p2"]["tile_scores"] == pytest.approx([1 / 3, 1, 2 / 3, 1 / 3])
    # overall = mean(0.6, 7/12) x 100 = 59.1666..
    assert summary["overall_x100"] == pytest.approx((0.6 + 7 / 12) / 2 * 100)
    assert summary["n_scored"] == 2 and summary["failed"] == {"p0": by_item["p0"]["error"]}
    # categories: raw answers of the LAST tile only, no dependency rule, scored prompts only:
    # p1 t3 raw: entity q1=1 q2=1, attribute q3=0, relation q4=1, other q5=0
    # p2 t3 raw: entity-whole q1=1, attribute q2=1, entity-part q3=0
    cats = summary["categories_x100"]
    assert cats["entity"] == pytest.approx(75.0)      # [1,1,1,0]
    assert cats["attribute"] == pytest.approx(50.0)   # [0,1]
    assert cats["relation"] == pytest.approx(100.0)   # [1]
    assert cats["other"] == pytest.approx(0.0)        # [0]
    assert cats["global"] is None                     # only p0 had one, and p0 failed
    assert summary["l2_categories_x100"]["entity - part"] == pytest.approx(0.0)
    assert summary["mode"] == "official" and all(r["mode"] == "official" for r in rows)


def test_fixed_mode_numbers(csv_path):
    questions, rows, summary = score_all(csv_path, "fixed")
    assert [q.qid for q in questions["p0"]] == [1, 2, 3]
    by_item = {r["item_id"]: r for r in rows}
    assert all(r["status"] == "ok" for r in rows)
    # p0 tiles: [1,1,1]=1; q1 no -> [0,0,1]=1/3; [1,0,0]=1/3; "Yes","yes." count -> [1,1,0]=2/3
    assert by_item["p0"]["tile_scores"] == pytest.approx([1, 1 / 3, 1 / 3, 2 / 3])  # prompt 7/12
    assert by_item["p1"]["prompt_score"] == pytest.approx(0.6)                        # as official
    # p2 tile 0: q1 no -> q3 zeroed AND its child q2 zeroed whatever the row order -> 0
    assert by_item["p2"]["tile_scores"] == pytest.approx([0, 1, 2 / 3, 1 / 3])       # prompt 1/2
    # overall = mean(7/12, 0.6, 0.5) x 100 = 56.111..
    assert summary["overall_x100"] == pytest.approx((7 / 12 + 0.6 + 0.5) / 3 * 100)
    # categories: dependency-applied scores of all 4 tiles of all prompts
    # entity: p0q1 [1,0,1,1] p1q1 [1,0,1,1] p1q2 [1,1,0,1] p2q1 [0,1,1,1] p2q3 [0,1,1,0] = 14/20
    # attribute: p0q2 [1,0,0,1] p1q3 [1,0,1,0] p2q2 [0,1,0,0] = 5/12
    # relation p1q4 [1,0,0,1] = 2/4; other p1q5 [1,1,0,0] = 2/4; global p0q3 [1,1,0,0] = 2/4
    assert summary["categories_x100"] == pytest.approx(
        {"entity": 70.0, "attribute": 500 / 12, "relation": 50.0, "global": 50.0, "other": 50.0})
    assert summary["category_counts"] == {"entity": 20, "attribute": 12, "relation": 4,
                                          "global": 4, "other": 4}


def test_summarize_refuses_rows_of_another_mode(csv_path):
    _, rows, _ = score_all(csv_path, "official")
    with pytest.raises(ValueError, match="official"):
        summarize(rows, "fixed")
    with pytest.raises(ValueError, match="unknown DPG-Bench mode"):
        load_questions(csv_path, "offical")


def test_answer_rules():
    assert answer_score("yes", "official") == 1.0
    assert answer_score("Yes", "official") == 0.0 and answer_score("yes ", "official") == 0.0
    assert [to_yes_no(a) for a in ["Yes.", " yes, it is", "YES", "no", "yeah", "", "yes!"]] == [
        True, True, True, False, False, False, True]


def test_csv_grouping_quirks(tmp_path):
    rows = [("a", 1, "0", "entity - whole (x)", "Is there x?"),
            ("b", 1, "0", "entity - whole (y)", "Is there y?"),
            ("b", 2, "1", "attribute - color (y, red)", "Is y red?"),
            ("a", 2, "0", "entity - whole (z)", "Is there z?")]   # "a" again, not contiguous
    path = write_csv(tmp_path / "q.csv", rows)
    official = load_questions(path, "official")
    assert {k: [q.qid for q in v] for k, v in official.items()} == {"b": [1, 2], "a": [2]}
    fixed = load_questions(path, "fixed")
    assert {k: [q.qid for q in v] for k, v in fixed.items()} == {"a": [1, 2], "b": [1, 2]}
    # b's q2 repeated contiguously: official overwrites it in place; fixed refuses
    dup = write_csv(tmp_path / "dup.csv", rows[:3] + [("b", 2, "0", "global - (p)", "Photo?")] + rows[3:])
    with pytest.raises(ValueError, match="repeats proposition_id 2"):
        load_questions(dup, "fixed")
    assert [q.question for q in load_questions(dup, "official")["b"]] == ["Is there y?", "Photo?"]
    cyc = write_csv(tmp_path / "cyc.csv", [("c", 1, "2", "entity - whole (x)", "x?"),
                                           ("c", 2, "1", "entity - whole (y)", "y?")])
    with pytest.raises(ValueError, match="cycle"):
        load_questions(cyc, "fixed")


def test_missing_csv_says_where_to_get_it(tmp_path):
    with pytest.raises(MissingQuestionsError, match=r"not shipped.*dpg_bench/dpg_bench\.csv.*ELLA"):
        load_questions(tmp_path / "nope.csv", "fixed")


# ----------------------------------------------------------------------------- grids and folders


def make_grid(tile=8):
    image = Image.new("RGB", (2 * tile, 2 * tile))
    for i, color in enumerate(TILE_COLORS):
        image.paste(color, ((i % 2) * tile, (i // 2) * tile, (i % 2 + 1) * tile, (i // 2 + 1) * tile))
    return image


def test_split_grid_order_and_refusals():
    tiles = split_grid(make_grid(8), 2)
    assert [t.size for t in tiles] == [(8, 8)] * 4
    assert [t.getpixel((3, 3)) for t in tiles] == TILE_COLORS          # TL, TR, BL, BR
    for bad in [(16, 18), (17, 17)]:
        with pytest.raises(ValueError, match="square with a side divisible by 2"):
            split_grid(Image.new("RGB", bad), 2)
    with pytest.raises(ValueError, match="expected 2x2 tiles of 16px"):
        split_grid(make_grid(8), 2, tile_size=16)


class ScriptedVQA:
    """Answers from ANSWERS, finding the tile by its colour and the item by the question."""

    def __init__(self, questions):
        self.lookup = {q.question: (item, q.qid) for item, qs in questions.items() for q in qs}

    def answer(self, image, question):
        tile = TILE_COLORS.index(image.getpixel((0, 0)))
        item, qid = self.lookup[question]
        return ANSWERS[item][tile][qid - 1]


@pytest.mark.parametrize("mode", ["official", "fixed"])
def test_score_folder_matches_direct_scoring(tmp_path, csv_path, mode):
    questions = load_questions(csv_path, mode)
    for item in ["p0", "p1", "p2"]:
        make_grid(8).save(tmp_path / f"{item}.png")
    rows, summary = score_folder(tmp_path, questions, ScriptedVQA(questions), mode, tile_size=8)
    _, _, expected = score_all(csv_path, mode)
    assert summary["overall_x100"] == pytest.approx(expected["overall_x100"])
    assert summary["categories_x100"] == expected["categories_x100"]
    assert summary["grid"] == 2 and summary["mode"] == mode
    (tmp_path / "p1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 DPG-Bench images are missing.*p1\.png"):
        score_folder(tmp_path, questions, ScriptedVQA(questions), mode)


# ----------------------------------------------------------------------------- VQA backends


def build_tiny_blip(folder):
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForQuestionAnswering,
                              BlipImageProcessor, BlipProcessor)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "yes", "no", "is", "there",
             "a", "the", "cat", "dog", "ball", "tree", "black", "brown", "?"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    config = BlipConfig(
        text_config=dict(vocab_size=len(words), encoder_hidden_size=32, max_position_embeddings=64,
                         bos_token_id=5, pad_token_id=0, sep_token_id=3, **tiny),
        vision_config=dict(image_size=32, patch_size=8, **tiny), projection_dim=32)
    torch.manual_seed(0)
    BlipForQuestionAnswering(config).save_pretrained(folder / "blip")
    processor.save_pretrained(folder / "blip")
    return folder / "blip"


def test_tiny_blip_vqa_loads_from_a_folder_and_scores(tmp_path, csv_path):
    import torch

    from evals.dpg import TransformersVQA

    torch.set_num_threads(1)
    vqa = TransformersVQA.from_pretrained(build_tiny_blip(tmp_path), max_new_tokens=3)
    answer = vqa.answer(Image.new("RGB", (64, 64), "red"), "is there a cat?")
    assert isinstance(answer, str) and answer
    assert vqa.info()["weights_sha256"] and vqa.info()["name"].startswith("blip:")
    questions = {"p1": load_questions(csv_path, "fixed")["p1"]}
    make_grid(16).save(tmp_path / "p1.png")
    rows, summary = score_folder(tmp_path, questions, vqa, "fixed")
    assert len(rows[0]["questions"][0]["answers"]) == 4 and 0 <= summary["overall_x100"] <= 100
    with pytest.raises(MissingWeightsError, match="does-not-exist"):
        TransformersVQA.from_pretrained(tmp_path / "does-not-exist")


@pytest.mark.skipif(importlib.util.find_spec("modelscope") is not None, reason="modelscope installed")
def test_mplug_without_modelscope_says_so(tmp_path):
    from evals.dpg import MPlugVQA

    with pytest.raises(ImportError, match="modelscope"):
        MPlugVQA(tmp_path)


# ----------------------------------------------------------------------------- synthetic world


def test_world_questions_follow_the_official_format():
    from evals.dpg.world import make_world_dpg

    meta = [{"tag": "position", "prompt": "a photo of a circle left of a square",
             "include": [{"class": "square", "count": 1},
                         {"class": "circle", "count": 1, "position": ["left of", 0]}]},
            {"tag": "counting", "prompt": "a photo of three crosses",
             "include": [{"class": "cross", "count": 3}], "exclude": [{"class": "cross", "count": 4}]},
            {"tag": "colors", "prompt": "a photo of a red triangle",
             "include": [{"class": "triangle", "count": 1, "color": "red"}]}]
    prompts, rows = make_world_dpg(meta)
    assert prompts == {"world0": meta[0]["prompt"], "world1": meta[1]["prompt"],
                       "world2": meta[2]["prompt"]}
    assert list(rows[0]) == list(CSV_COLUMNS)
    got = [(r["item_id"], r["proposition_id"], r["dependency"], r["tuple"],
            r["question_natural_language"]) for r in rows]
    assert got == [
        ("world0", "1", "0", "entity - whole (square)", "Is there a square?"),
        ("world0", "2", "0", "entity - whole (circle)", "Is there a circle?"),
        ("world0", "3", "2,1", "relation - spatial (circle, square, left of)",
         "Is the circle left of the square?"),
        ("world0", "4", "0", "global - scene (shapes)", "Are there any shapes?"),
        ("world1", "1", "0", "entity - whole (cross)", "Is there a cross?"),
        ("world1", "2", "1", "other - count (cross, ==3)", "Are there exactly 3 crosses?"),
        ("world1", "3", "0", "global - scene (shapes)", "Are there any shapes?"),
        ("world2", "1", "0", "entity - whole (triangle)", "Is there a triangle?"),
        ("world2", "2", "1", "attribute - color (triangle, red)", "Is the triangle red?"),
        ("world2", "3", "0", "global - scene (shapes)", "Are there any shapes?"),
    ]


def world_grid(meta, cfg, seed):
    """2x2 grid of four ground-truth renders of ``meta`` (different layouts)."""
    import numpy as np

    from snapgen.data import world

    r = cfg.resolution
    grid = Image.new("RGB", (2 * r, 2 * r))
    for t in range(4):
        scene = world.scene_from_metadata(meta, np.random.default_rng([seed, t]), cfg)
        tile = world.render(scene, cfg)[0]
        grid.paste(tile, ((t % 2) * r, (t // 2) * r))
    return grid


@pytest.fixture(scope="module")
def world_bench(tmp_path_factory):
    from snapgen.data import world

    from evals.dpg.world import make_world_dpg, write_dpg_csv

    cfg = world.WorldConfig()
    metadata = world.make_prompt_set(2, seed=0, cfg=cfg)   # 2 prompts per tag, 12 in all
    prompts, rows = make_world_dpg(metadata)
    root = tmp_path_factory.mktemp("world_dpg")
    write_dpg_csv(rows, root / "dpg_bench.csv")
    return cfg, metadata, prompts, root


@pytest.mark.parametrize("mode", ["fixed", "official"])
def test_world_ground_truth_grids_score_100(world_bench, mode):
    from evals.dpg.world import WorldVQA

    cfg, metadata, prompts, root = world_bench
    images = root / f"truth_{mode}"
    images.mkdir()
    for i, (item_id, meta) in enumerate(zip(prompts, metadata)):
        world_grid(meta, cfg, seed=i).save(images / f"{item_id}.png")
    questions = load_questions(root / "dpg_bench.csv", mode)
    rows, summary = score_folder(images, questions, WorldVQA(cfg), mode, tile_size=cfg.resolution)
    assert summary["n_scored"] == 12 and summary["overall_x100"] == 100.0
    assert all(v == 100.0 for v in summary["categories_x100"].values())  # all five present


def test_world_flat_and_flipped_images_score_low(world_bench):
    from evals.dpg.world import WorldVQA

    cfg, metadata, prompts, root = world_bench
    questions = load_questions(root / "dpg_bench.csv", "fixed")
    flat, flipped = root / "flat", root / "flipped"
    flat.mkdir(), flipped.mkdir()
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    for i, (item_id, meta) in enumerate(zip(prompts, metadata)):
        Image.new("RGB", (2 * cfg.resolution,) * 2, cfg.background).save(flat / f"{item_id}.png")
        if meta["tag"] == "position":  # render the opposite relation (same objects)
            meta = copy.deepcopy(meta)
            meta["include"][1]["position"][0] = opposite[meta["include"][1]["position"][0]]
        world_grid(meta, cfg, seed=i).save(flipped / f"{item_id}.png")
    vqa = WorldVQA(cfg)
    _, summary = score_folder(flat, questions, vqa, "fixed")
    assert summary["overall_x100"] == 0.0                 # no shapes: every root says no
    rows, summary = score_folder(flipped, questions, vqa, "fixed")
    position = [r for r, m in zip(rows, metadata) if m["tag"] == "position"]
    # per tile: 2 entities yes, relation no, global yes -> 3/4
    assert position and all(r["prompt_score"] == 0.75 for r in position)
    assert summary["categories_x100"]["relation"] == 0.0
    with pytest.raises(ValueError, match="cannot parse"):
        vqa.answer(Image.new("RGB", (32, 32)), "Is the circle happy?")
