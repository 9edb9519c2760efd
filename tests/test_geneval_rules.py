"""Golden tests of GenEval's official rules (djghosh13/geneval evaluate_images.py + summary_scores.py).

Every expected value below was worked out by hand from the official protocol (SPEC.md section 4).
"""
import json

import numpy as np
import pytest
from PIL import Image

from evals.geneval.rules import (OFFICIAL, TASKS, GenEvalRules, box_iou, evaluate_image, filter_detections,
                                 relations, summarize)
from evals.geneval.score import list_samples, score_folder

SIZE = (256, 256)


def det(cls, box=(0, 0, 10, 10), score=1.0, color=None, mask=None):
    return {"class": cls, "box": list(box), "score": score, "mask": mask, "color": color}


def run(meta, dets, classify_color=None, rules=OFFICIAL):
    grouped = {}
    for d in dets:
        grouped.setdefault(d["class"], []).append(d)
    correct, reason, _ = evaluate_image(meta, grouped, SIZE, classify_color, rules)
    return correct, reason


SINGLE = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
TWO = {"tag": "two_object", "include": [{"class": "bench", "count": 1}, {"class": "sports ball", "count": 1}],
       "prompt": "a photo of a bench and a sports ball"}
COUNT2 = {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}],
          "prompt": "a photo of two clocks"}
COLOR = {"tag": "colors", "include": [{"class": "fire hydrant", "count": 1, "color": "blue"}],
         "prompt": "a photo of a blue fire hydrant"}
POS = {"tag": "position", "include": [{"class": "teddy bear", "count": 1},
                                      {"class": "dog", "count": 1, "position": ["right of", 0]}],
       "prompt": "a photo of a dog right of a teddy bear"}
ATTR = {"tag": "color_attr", "include": [{"class": "wine glass", "count": 1, "color": "purple"},
                                         {"class": "apple", "count": 1, "color": "black"}],
        "prompt": "a photo of a purple wine glass and a black apple"}


def test_official_constants():
    r = GenEvalRules()
    assert (r.threshold, r.counting_threshold, r.max_objects, r.nms_threshold, r.position_threshold) == \
        (0.3, 0.9, 16, 1.0, 0.1)
    assert r.colors == ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
    assert [t.format(c="red", obj="car") for t in r.color_templates] == \
        ["a photo of a red car", "a photo of a red-colored car", "a photo of a red object"]
    assert r.color_background.lower() == "#999999" and r.clip_model == "ViT-L-14"
    assert TASKS == ("single_object", "two_object", "counting", "colors", "position", "color_attr")
    with pytest.raises(Exception):
        r.threshold = 0.5                                  # frozen


# ---------------------------------------------------------------- single / two objects, thresholds
def test_single_object_threshold_is_strict():
    assert run(SINGLE, [det("bench", score=0.31)]) == (True, "")
    assert run(SINGLE, [det("bench", score=0.3)]) == (False, "expected bench>=1, found 0")
    assert run(SINGLE, [det("cow")]) == (False, "expected bench>=1, found 0")
    assert run(SINGLE, [det("bench", score=0.5), det("bench", score=0.9)]) == (True, "")   # extra copies are fine


def test_two_object():
    assert run(TWO, [det("bench"), det("sports ball", score=0.4)]) == (True, "")
    assert run(TWO, [det("bench")]) == (False, "expected sports ball>=1, found 0")
    assert run(TWO, []) == (False, "expected bench>=1, found 0\nexpected sports ball>=1, found 0")


# ---------------------------------------------------------------- counting
def test_counting_uses_the_0_9_threshold():
    clocks = [det("clock", score=s) for s in (0.95, 0.92, 0.85)]
    assert run(COUNT2, clocks) == (True, "")                # 0.85 is below 0.9: two clocks counted
    loose = GenEvalRules(counting_threshold=0.3)            # with the ordinary threshold it would be three
    assert run(COUNT2, clocks, rules=loose) == (False, "expected clock<3, found 3")
    assert run(COUNT2, [det("clock", score=0.95), det("clock", score=0.9)]) == (False, "expected clock>=2, found 1")
    # a non-counting tag on the same detections keeps 0.85 (threshold 0.3)
    assert len(filter_detections({"clock": clocks}, "two_object")["clock"]) == 3


def test_counting_exclude_clause():
    four = [det("clock", score=0.99) for _ in range(4)]
    assert run(COUNT2, four) == (False, "expected clock<3, found 4")
    three = {"tag": "counting", "include": [{"class": "clock", "count": 3}],
             "exclude": [{"class": "clock", "count": 4}], "prompt": "a photo of three clocks"}
    assert run(three, four[:3]) == (True, "")
    assert run(three, four[:2]) == (False, "expected clock>=3, found 2")


def test_max_objects_cap_16():
    many = [det("clock", box=(i, 0, i + 5, 5), score=0.99 - 0.001 * i) for i in range(20)]
    kept = filter_detections({"clock": many}, "counting")["clock"]
    assert len(kept) == 16 and [d["box"][0] for d in kept] == list(range(16))   # the 16 most confident
    assert run(COUNT2, many) == (False, "expected clock<3, found 16")
    assert len(filter_detections({"clock": many}, "counting", GenEvalRules(max_objects=3))["clock"]) == 3


def test_filter_sorts_drops_empty_and_nms_is_off_by_default():
    a, b = det("cat", (0, 0, 99, 99), 0.5), det("cat", (5, 5, 99, 99), 0.8)
    low = det("dog", score=0.1)
    kept = filter_detections({"cat": [a, b], "dog": [low]}, "single_object")
    assert kept == {"cat": [b, a]}                          # score order, empty class dropped
    nms = filter_detections({"cat": [a, b]}, "single_object", GenEvalRules(nms_threshold=0.5))
    assert nms == {"cat": [b]}                              # IoU 0.90 >= 0.5: suppressed
    # ties: the later detection first, as the official reversed argsort does
    t1, t2 = det("cat", score=0.5), det("cat", score=0.5)
    assert filter_detections({"cat": [t1, t2]}, "single_object")["cat"][0] is t2


def test_box_iou_plus_one_convention():
    assert box_iou([0, 0, 9, 9], [0, 0, 9, 9]) == 1.0
    assert box_iou([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 9, 9], [20, 20, 29, 29]) == 0.0


# ---------------------------------------------------------------- colours
def test_colors_uses_detection_color_and_reason():
    assert run(COLOR, [det("fire hydrant", color="blue")]) == (True, "")
    assert run(COLOR, [det("fire hydrant", color="red")]) == \
        (False, "expected blue fire hydrant>=1, found 0 blue; and 1 red")
    assert run(COLOR, []) == (False, "expected fire hydrant>=1, found 0")


def test_colors_classifier_only_on_most_confident_count_objects():
    calls = []

    def classify(d):
        calls.append(d["score"])
        return "blue" if d["score"] > 0.9 else "red"

    dets = [det("fire hydrant", score=0.5), det("fire hydrant", score=0.95)]
    assert run(COLOR, dets, classify) == (True, "")
    assert calls == [0.95]                                  # count=1: only the top detection is classified
    with pytest.raises(ValueError, match="no classify_color"):
        run(COLOR, dets)
    with pytest.raises(ValueError, match="not one of GenEval's colours"):
        run(COLOR, dets, lambda d: "teal")


def test_color_tally_lists_colours_in_official_order():
    meta = {"tag": "colors", "include": [{"class": "car", "count": 3, "color": "red"}], "prompt": "x"}
    dets = [det("car", color=c, score=s) for c, s in (("white", 0.9), ("red", 0.8), ("blue", 0.7))]
    assert run(meta, dets) == (False, "expected red car>=3, found 1 red; and 1 red, 1 blue, 1 white")


def test_color_attr():
    ok = [det("wine glass", color="purple"), det("apple", color="black")]
    assert run(ATTR, ok) == (True, "")
    bad = [det("wine glass", color="purple"), det("apple", color="green")]
    assert run(ATTR, bad) == (False, "expected black apple>=1, found 0 black; and 1 green")
    both = [det("wine glass", color="white"), det("apple", color="green")]
    assert run(ATTR, both)[1] == ("expected purple wine glass>=1, found 0 purple; and 1 white\n"
                                  "expected black apple>=1, found 0 black; and 1 green")


# ---------------------------------------------------------------- position
def test_relations_numbers():
    assert relations([50, 0, 60, 10], [0, 0, 10, 10]) == ["right of"]      # dx = (50 - 2) / 50 = 0.96
    assert relations([0, 0, 10, 10], [50, 0, 60, 10]) == ["left of"]
    assert relations([0, 50, 10, 60], [0, 0, 10, 10]) == ["below"]         # image y points down
    assert relations([100, 100, 110, 110], [0, 0, 10, 10]) == ["right of", "below"]  # 98/141.4 = 0.69 each
    assert relations([0, 0, 10, 10], [0, 0, 10, 10]) == []                 # zero offset: no relation
    assert relations([0, 0, 10, 10], [5, 0, 15, 10]) == ["left of"]        # (-5 + 2) / 5 = -0.6
    assert relations([0, 0, 100, 10], [15, 0, 115, 10]) == []              # |-15| < 0.1 * 200: shrunk to 0


def test_position_pass_and_fail():
    teddy = det("teddy bear", (0, 0, 10, 10))
    assert run(POS, [teddy, det("dog", (50, 0, 60, 10))]) == (True, "")
    assert run(POS, [teddy, det("dog", (-60, 0, -50, 10))]) == \
        (False, "expected dog right of target, found left of target")
    assert run(POS, [teddy, det("dog", (0, 0, 10, 10))]) == (False, "expected dog right of target, found  target")
    above = dict(POS, include=[POS["include"][0], {"class": "dog", "count": 1, "position": ["above", 0]}])
    assert run(above, [teddy, det("dog", (100, 100, 110, 110))]) == \
        (False, "expected dog above target, found right of and below target")


def test_position_fails_only_because_of_the_0_1_margin():
    # teddy centre (100, 100), 100x10; dog centre (160, 180), 100x10. offset (60, 80), |offset| = 100.
    # Without the margin dx = 0.6 > 0.5 (right of). With it: 60 - 0.1 * (100 + 100) = 40 -> 0.4 (not right of);
    # dy: 80 - 0.1 * (10 + 10) = 78 -> 0.78 (below).
    teddy, dog = det("teddy bear", (50, 95, 150, 105)), det("dog", (110, 175, 210, 185))
    assert run(POS, [teddy, dog]) == (False, "expected dog right of target, found below target")
    assert run(POS, [teddy, dog], rules=GenEvalRules(position_threshold=0.0)) == (True, "")
    # just over the line with the margin: dog centre (171, 180): dx = (71 - 20) / |(71, 80)| = 0.477 -> still fails;
    # dog centre (180, 180): dx = (80 - 20) / |(80, 80)| = 0.530 -> passes
    assert run(POS, [teddy, det("dog", (121, 175, 221, 185))])[0] is False
    assert run(POS, [teddy, det("dog", (130, 175, 230, 185))])[0] is True


def test_position_missing_target_and_missing_object():
    dog = det("dog", (50, 0, 60, 10))
    assert run(POS, [dog]) == (False, "expected teddy bear>=1, found 0\nno target for dog to be right of")
    assert run(POS, [det("teddy bear")]) == (False, "expected dog>=1, found 0")


def test_position_uses_top_objects_and_every_target():
    teddy = det("teddy bear", (0, 0, 10, 10))
    good, bad = det("dog", (50, 0, 60, 10), 0.9), det("dog", (-60, 0, -50, 10), 0.5)
    assert run(POS, [teddy, good, bad]) == (True, "")      # the less confident dog is not checked
    assert run(POS, [teddy, dict(good, score=0.4), dict(bad, score=0.6)])[0] is False
    two_targets = {"tag": "position", "include": [{"class": "teddy bear", "count": 2},
                                                  {"class": "dog", "count": 1, "position": ["right of", 0]}],
                   "prompt": "x"}
    far_teddy = det("teddy bear", (100, 0, 110, 10), 0.8)
    assert run(two_targets, [teddy, far_teddy, good]) == (False, "expected dog right of target, found left of target")


def test_position_is_skipped_when_colour_fails():
    meta = {"tag": "position", "include": [{"class": "teddy bear", "count": 1},
                                           {"class": "dog", "count": 1, "color": "red", "position": ["left of", 0]}],
            "prompt": "x"}
    dets = [det("teddy bear"), det("dog", (50, 0, 60, 10), color="blue")]
    assert run(meta, dets) == (False, "expected red dog>=1, found 0 red; and 1 blue")


def test_evaluate_image_details_and_mask_check():
    dets = {"bench": [det("bench", score=0.8, color="red"), det("bench", score=0.2)]}
    correct, reason, details = evaluate_image(SINGLE, dets, SIZE)
    assert correct and details["threshold"] == 0.3 and details["image_size"] == [256, 256]
    assert details["kept"] == {"bench": [{"box": [0.0, 0.0, 10.0, 10.0], "score": 0.8, "color": "red"}]}
    json.dumps(details)                                     # records must be JSON-able
    with pytest.raises(ValueError, match="mask has shape"):
        evaluate_image(SINGLE, {"bench": [det("bench", mask=np.zeros((10, 20), bool))]}, (10, 20))


# ---------------------------------------------------------------- summary
def _row(p, tag, correct):
    return {"prompt_index": p, "tag": tag, "correct": correct, "metadata": json.dumps({"p": p, "tag": tag})}


def test_summarize_hand_computed():
    rows = ([_row(0, "single_object", c) for c in (True, True, False, True)]
            + [_row(1, "two_object", False) for _ in range(4)]
            + [_row(2, "two_object", c) for c in (True, False)]
            + [_row(3, "counting", c) for c in (True, True)])
    s = summarize(rows)
    assert s["tasks"]["single_object"] == {"accuracy": 0.75, "correct": 3, "images": 4}
    assert s["tasks"]["two_object"]["accuracy"] == pytest.approx(1 / 6)   # image level, not (0 + 0.5) / 2
    assert s["tasks"]["counting"]["accuracy"] == 1.0
    assert s["overall"] == pytest.approx((0.75 + 1 / 6 + 1.0) / 3)
    assert s["missing_tasks"] == ["colors", "position", "color_attr"]
    assert (s["images"], s["prompts"]) == (12, 4)
    assert s["images_correct"] == 0.5 and s["prompts_any_correct"] == 0.75
    assert list(s["tasks"]) == ["single_object", "two_object", "counting"]


def test_summarize_six_tasks_overall_is_unweighted_mean():
    acc = {"single_object": (1, 1), "two_object": (1, 0), "counting": (0, 0, 0, 1),
           "colors": (1,), "position": (0,), "color_attr": (1, 1, 0)}
    rows = [_row(i, tag, bool(c)) for i, (tag, cs) in enumerate(acc.items()) for c in cs]
    s = summarize(rows)
    assert s["missing_tasks"] == []
    assert s["overall"] == pytest.approx(np.mean([1, 0.5, 0.25, 1, 0, 2 / 3]))
    with pytest.raises(ValueError):
        summarize([])


# ---------------------------------------------------------------- folder layout
def _write_layout(root, metas, n=2, fmt="PNG", suffix=".png"):
    for p, meta in enumerate(metas):
        sub = root / f"{p:05d}"
        (sub / "samples").mkdir(parents=True)
        (sub / "metadata.jsonl").write_text(json.dumps(meta))
        for s in range(n):
            img = Image.new("RGB", (32, 32), (200, 20, 20))
            img.save(sub / "samples" / f"{s:04d}{suffix}", format=fmt)


def test_score_folder_rows_and_summary(tmp_path):
    cow = {"tag": "single_object", "include": [{"class": "cow", "count": 1}], "prompt": "a photo of a cow"}
    _write_layout(tmp_path, [SINGLE, cow, COLOR])
    detector = lambda image: {"bench": [det("bench")], "fire hydrant": [det("fire hydrant")]}  # noqa: E731
    seen = []

    def classify(image, d):                                 # (image, detection) form
        seen.append(image.size)
        return "blue"

    rows, summary = score_folder(tmp_path, detector, classify)
    assert [(r["prompt_index"], r["sample_index"], r["correct"]) for r in rows] == \
        [(0, 0, True), (0, 1, True), (1, 0, False), (1, 1, False), (2, 0, True), (2, 1, True)]
    assert rows[2]["reason"] == "expected cow>=1, found 0" and rows[0]["prompt"] == "a photo of a bench"
    assert rows[0]["filename"].endswith("00000/samples/0000.png") and seen == [(32, 32), (32, 32)]
    assert summary["tasks"]["single_object"]["accuracy"] == 0.5 and summary["tasks"]["colors"]["accuracy"] == 1.0
    assert summary["overall"] == 0.75 and summary["prompts"] == 3


def test_score_folder_refuses_non_png(tmp_path):
    _write_layout(tmp_path / "jpg", [SINGLE], fmt="JPEG", suffix=".jpg")
    with pytest.raises(ValueError, match="PNG"):
        list_samples(tmp_path / "jpg")
    _write_layout(tmp_path / "fake", [SINGLE], fmt="JPEG", suffix=".png")
    with pytest.raises(ValueError, match="JPEG file named .png"):
        score_folder(tmp_path / "fake", lambda im: {})
    (tmp_path / "empty" / "00000" / "samples").mkdir(parents=True)
    (tmp_path / "empty" / "00000" / "metadata.jsonl").write_text(json.dumps(SINGLE))
    with pytest.raises(ValueError, match="no samples"):
        list_samples(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        list_samples(tmp_path / "nowhere")
