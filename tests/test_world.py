"""The synthetic world: determinism, GenEval schema, exact re-detection, position rule, dataset."""
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from snapgen.data.world import (
    GENEVAL_TAGS, NUM_WORLD_LABELS, RELATIONS, WORLD_CLASSES, WORLD_COLORS, WorldConfig, WorldDataset, all_metadata,
    binding_to_label, collate_world, detect, geneval_relations, ground_truth_detections, is_heldout,
    label_to_binding, make_prompt_set, render, sample_metadata, scene_from_metadata, shape_mask, tensor_to_image,
    training_prompts, write_prompt_set,
)

CFG = WorldConfig()
GENEVAL_FILE = Path(__file__).resolve().parents[1] / "evals" / "data" / "geneval" / "evaluation_metadata.jsonl"
GENEVAL_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")


def _scene(tag, i, seed=0, cfg=CFG):
    rng = np.random.default_rng([seed, GENEVAL_TAGS.index(tag), i])
    meta = sample_metadata(rng, tag, cfg)
    return meta, scene_from_metadata(meta, rng, cfg)


def test_palette_and_shapes_are_well_separated():
    assert tuple(WORLD_COLORS) == GENEVAL_COLORS
    pal = np.array(list(WORLD_COLORS.values()), float)
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(pal, 2)) >= 95
    assert np.linalg.norm(pal - np.array(CFG.background), axis=1).min() >= 100
    for s in range(CFG.min_size, CFG.max_size + 1):      # every shape fills its box and differs from the others
        masks = {k: shape_mask(k, s, s) for k in WORLD_CLASSES}
        for m in masks.values():
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
        for a, b in itertools.combinations(WORLD_CLASSES, 2):
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.85, (a, b, s, iou)
    with pytest.raises(ValueError):
        WorldConfig(background=WORLD_COLORS["white"])


def test_determinism_by_seed():
    for tag in GENEVAL_TAGS:
        (m1, s1), (m2, s2) = _scene(tag, 3), _scene(tag, 3)
        assert m1 == m2 and s1 == s2
        assert np.array_equal(np.asarray(render(s1, CFG)[0]), np.asarray(render(s2, CFG)[0]))
    ds1, ds2, ds3 = WorldDataset(CFG, 7, 10), WorldDataset(CFG, 7, 10), WorldDataset(CFG, 8, 10)
    assert torch.equal(ds1[4]["image"], ds2[4]["image"]) and ds1[4]["caption"] == ds2[4]["caption"]
    assert any(ds1[i]["caption"] != ds3[i]["caption"] for i in range(10))
    assert make_prompt_set(5, 1, CFG) == make_prompt_set(5, 1, CFG) != make_prompt_set(5, 2, CFG)


def _check_schema(meta):
    tag, inc = meta["tag"], meta["include"]
    assert list(meta) == (["tag", "include", "exclude", "prompt"] if tag == "counting" else ["tag", "include", "prompt"])
    assert all(o["class"] in WORLD_CLASSES and list(o)[:2] == ["class", "count"] for o in inc)
    if tag == "single_object":
        assert inc == [{"class": inc[0]["class"], "count": 1}]
        assert meta["prompt"] == f"a photo of a {inc[0]['class']}"
    elif tag == "two_object":
        assert [list(o) for o in inc] == [["class", "count"]] * 2 and inc[0]["class"] != inc[1]["class"]
    elif tag == "counting":
        n = inc[0]["count"]
        assert len(inc) == 1 and CFG.min_count <= n <= CFG.max_objects
        assert meta["exclude"] == [{"class": inc[0]["class"], "count": n + 1}]
    elif tag == "colors":
        assert len(inc) == 1 and list(inc[0]) == ["class", "count", "color"] and inc[0]["color"] in WORLD_COLORS
        assert meta["prompt"].endswith(f"{inc[0]['color']} {inc[0]['class']}")
    elif tag == "position":
        rel = inc[1]["position"][0]
        assert list(inc[0]) == ["class", "count"] and list(inc[1]) == ["class", "count", "position"]
        assert inc[1]["position"] == [rel, 0] and rel in RELATIONS
        # "a photo of a X below a Y": X = include[1] (holds the relation), Y = include[0] (target)
        assert meta["prompt"] == f"a photo of a {inc[1]['class']} {rel} a {inc[0]['class']}"
    elif tag == "color_attr":
        assert [list(o) for o in inc] == [["class", "count", "color"]] * 2
        assert inc[0]["class"] != inc[1]["class"] and inc[0]["color"] != inc[1]["color"]


def test_metadata_matches_geneval_schema():
    for tag in GENEVAL_TAGS:
        pool = all_metadata(tag, CFG)
        assert len({m["prompt"] for m in pool}) == len(pool)
        for m in pool:
            assert m["tag"] == tag
            _check_schema(m)
    assert len(all_metadata("position", CFG)) == 12 * 4 and len(all_metadata("color_attr", CFG)) == 12 * 90
    assert _scene("colors", 0)[0]["prompt"].startswith("a photo of a")
    assert {"a photo of an orange circle"} <= {m["prompt"] for m in all_metadata("colors", CFG)}
    assert "a photo of four crosses" in {m["prompt"] for m in all_metadata("counting", CFG)}


def test_same_key_layout_as_official_geneval_file():
    official = [json.loads(line) for line in GENEVAL_FILE.read_text().splitlines()]
    for tag in GENEVAL_TAGS:
        ref = next(m for m in official if m["tag"] == tag)
        ours = all_metadata(tag, CFG)[0]
        assert list(ours) == list(ref)
        assert [list(o) for o in ours["include"]] == [list(o) for o in ref["include"]]
        assert ours["prompt"].startswith("a photo of ")


def test_position_rule_by_hand():
    assert geneval_relations((20, 10, 30, 20), (0, 10, 10, 20)) == {"right of"}
    assert geneval_relations((0, 10, 10, 20), (20, 10, 30, 20)) == {"left of"}
    assert geneval_relations((10, 0, 20, 10), (0, 0, 10, 10)) == {"right of"}   # offset 10, shrink 2 -> 0.8
    assert geneval_relations((10, 10, 20, 20), (0, 0, 10, 10)) == {"right of", "below"}
    assert geneval_relations((5, 20, 25, 40), (0, 0, 20, 20)) == {"below"}      # (1, 16) / |(5, 20)|
    assert geneval_relations((0, 0, 10, 10), (0, 1, 10, 11)) == set()           # shrunk to zero


def test_detect_recovers_ground_truth_exactly():
    n = 0
    for tag in GENEVAL_TAGS:
        for i in range(60):
            meta, scene = _scene(tag, i)
            image, masks = render(scene, CFG)
            dets = detect(image, CFG)
            gt = ground_truth_detections(scene, CFG)
            key = lambda d: (d["class"], d["color"], tuple(d["box"]))  # noqa: E731
            assert sorted(map(key, dets)) == sorted(map(key, gt)), (meta, dets)
            assert all(d["score"] > 0.99 for d in dets)
            got = {key(d): d["mask"] for d in dets}
            assert all(np.array_equal(got[key(g)], g["mask"]) for g in gt)
            for inc in meta["include"]:          # the scene satisfies the metadata
                objs = [o for o in scene.objects if o.kind == inc["class"]]
                assert len(objs) == inc["count"]
                assert "color" not in inc or all(o.color == inc["color"] for o in objs)
            n += 1
    assert n == 360


def test_position_holds_on_rendered_boxes():
    for i in range(100):
        meta, scene = _scene("position", i, seed=5)
        target, obj = meta["include"]
        dets = {d["class"]: d for d in detect(render(scene, CFG)[0], CFG)}
        rel = obj["position"][0]
        assert geneval_relations(dets[obj["class"]]["box"], dets[target["class"]]["box"]) == {rel}
    rels = Counter(_scene("position", i, seed=6)[0]["include"][1]["position"][0] for i in range(200))
    assert set(rels) == set(RELATIONS)


def test_objects_never_touch_and_stay_inside():
    for i in range(100):
        _, scene = _scene("counting", i, seed=9)
        for a, b in itertools.combinations(scene.objects, 2):
            grown = np.zeros_like(a.mask)
            x0, y0, x1, y1 = a.box
            grown[max(0, y0 - CFG.gap): y1 + CFG.gap, max(0, x0 - CFG.gap): x1 + CFG.gap] = True
            assert not (grown & b.mask).any()
        for o in scene.objects:
            assert min(o.box) >= CFG.margin and max(o.box) <= CFG.resolution - CFG.margin


def test_noise_and_flat_images_give_no_detections():
    flat = Image.new("RGB", (32, 32), CFG.background)
    assert detect(flat, CFG) == []
    n_dets = sum(len(detect(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8), CFG))
                 for i in range(100))
    assert n_dets <= 3
    float_flat = np.full((32, 32, 3), 0.5, np.float32)    # float arrays are read as [0, 1]
    assert detect(float_flat, CFG) == []


def test_detect_is_robust_to_mild_noise_and_blur():
    ok = 0
    for i in range(60):
        meta, scene = _scene(GENEVAL_TAGS[i % 6], i, seed=11)
        image = render(scene, CFG)[0]
        rng = np.random.default_rng(i)
        noisy = np.clip(np.asarray(image, float) + rng.normal(0, 15, (32, 32, 3)), 0, 255).astype(np.uint8)
        blurred = image.filter(ImageFilter.GaussianBlur(0.7))
        gt = sorted((o.kind, o.color) for o in scene.objects)
        ok += all(sorted((d["class"], d["color"]) for d in detect(x, CFG)) == gt for x in (noisy, blurred))
    assert ok >= 57


def test_dataset_items_and_collate():
    ds = WorldDataset(CFG, seed=0, length=24)
    items = [ds[i] for i in range(len(ds))]
    for it in items:
        x = it["image"]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
        assert it["caption"] == it["metadata"]["prompt"]
        _check_schema(it["metadata"])
        back = tensor_to_image(x)                          # lossless round trip through [-1, 1]
        want = Counter({inc["class"]: inc["count"] for inc in it["metadata"]["include"]})
        assert Counter(d["class"] for d in detect(back, CFG)) == want
    batch = collate_world(items[:5])
    assert batch["image"].shape == (5, 3, 32, 32) and len(batch["caption"]) == 5
    assert len({it["metadata"]["tag"] for it in items}) >= 4
    with pytest.raises(IndexError):
        ds[24]
    only_colors = WorldConfig(tag_weights=(0, 0, 0, 1, 0, 0))
    held = {m["prompt"] for m in all_metadata("colors", only_colors)[:20]}
    ds2 = WorldDataset(only_colors, seed=1, length=40, exclude_prompts=held)
    assert all(ds2[i]["metadata"]["tag"] == "colors" and ds2[i]["caption"] not in held for i in range(40))


def test_prompt_set_dedup_caps_and_writes(tmp_path):
    ps = make_prompt_set(30, seed=3, cfg=CFG)                 # held-out split (the default)
    counts = Counter(m["tag"] for m in ps)
    assert counts == {"single_object": 2, "two_object": 4, "counting": 4, "colors": 10, "position": 12,
                      "color_attr": 30}
    ind = Counter(m["tag"] for m in make_prompt_set(30, seed=3, cfg=CFG, split="in_distribution"))
    assert ind == {"single_object": 2, "two_object": 8, "counting": 8, "colors": 30, "position": 30, "color_attr": 30}
    assert len({m["prompt"] for m in ps}) == len(ps)
    assert make_prompt_set({"position": 5}, seed=3, cfg=CFG) == [m for m in ps if m["tag"] == "position"][:5]
    path = write_prompt_set(tmp_path, ps)
    assert path.name == "evaluation_metadata.jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == ps
    for m in ps:                                            # every held-out prompt renders and re-reads
        scene = scene_from_metadata(m, np.random.default_rng(0), CFG)
        assert len(detect(render(scene, CFG)[0], CFG)) == sum(i["count"] for i in m["include"])


def test_larger_resolution_and_antialias():
    cfg64 = WorldConfig(resolution=64, min_size=12, max_size=24, gap=3)
    for tag in GENEVAL_TAGS:
        meta, scene = _scene(tag, 1, cfg=cfg64)
        dets = detect(render(scene, cfg64)[0], cfg64)
        assert sorted((d["class"], d["color"]) for d in dets) == sorted((o.kind, o.color) for o in scene.objects)
    aa = WorldConfig(antialias=True)
    meta, scene = _scene("two_object", 0, cfg=aa)
    img = np.asarray(render(scene, aa)[0])
    assert len({tuple(p) for p in img.reshape(-1, 3)}) > 3  # soft edges add colours


def test_heldout_prompts_never_occur_in_training():
    """Held out means held out: 100k training captions (the stream the trainer reads: WorldDataset's default
    split, seed 0) contain no evaluation prompt of the held-out split, and cover every training composition."""
    ds = WorldDataset(CFG, seed=0, length=10**9)
    assert all(ds.caption(i) == ds[i]["caption"] for i in range(50))       # caption() is the item's caption
    train = Counter(ds.caption(i) for i in range(100_000))
    heldout = {m["prompt"] for m in make_prompt_set(10**6, seed=0, cfg=CFG)}
    assert len(heldout) == 2 + 4 + 4 + 10 + 12 + 466
    assert not set(train) & heldout
    assert set(train) == set(training_prompts(CFG))
    for tag in GENEVAL_TAGS:                                  # every task has both kinds of prompt
        assert all_metadata(tag, CFG, "train") and all_metadata(tag, CFG, "heldout")
        assert all(is_heldout(m, CFG) for m in all_metadata(tag, CFG, "heldout"))
    # each held-out kind of composition, by hand
    prompts = {m["prompt"] for tag in GENEVAL_TAGS for m in all_metadata(tag, CFG, "heldout")}
    for p in ("a photo of a red circle", "a photo of a triangle", "a photo of three circles",
              "a photo of a circle and a triangle", "a photo of a triangle and a circle",
              "a photo of a white square and a blue triangle"):
        assert p in prompts and p not in train, p
    assert sum(p in prompts for p in ("a photo of a red square", "a photo of a circle", "a photo of two circles")) == 0
    # the held-out binding never appears in any training caption, in any task
    for kind, color in CFG.heldout_bindings:
        assert not any(f"{color} {kind}" in c for c in train)


def test_evaluation_prompt_sets_default_to_heldout():
    """What the harness scores by default (GenEval / DPG / CLIP world prompt sets, FID world captions and
    reference renders) comes from the held-out split."""
    import argparse

    from evals.benchmarks.common import add_world_prompt_args, world_prompt_set
    from evals.benchmarks.fid import world_captions

    p = argparse.ArgumentParser()
    add_world_prompt_args(p)
    meta, source = world_prompt_set(p.parse_args([]))
    assert meta and all(is_heldout(m, CFG) for m in meta) and source.startswith("world:heldout:")
    ind, _ = world_prompt_set(p.parse_args(["--world-split", "in_distribution"]))
    assert ind and not any(is_heldout(m, CFG) for m in ind)
    assert all(is_heldout(m, CFG) for m in world_captions(200))
    assert not any(is_heldout(m, CFG) for m in world_captions(200, split="in_distribution"))


def test_class_conditional_mode():
    ds = WorldDataset(CFG, seed=2, length=200, mode="class")
    labels = [ds[i]["label"] for i in range(200)]
    assert len(set(labels)) > 30 and all(0 <= y < NUM_WORLD_LABELS for y in labels)
    for i in range(20):
        item = ds[i]
        kind, color = label_to_binding(item["label"])
        dets = detect(tensor_to_image(item["image"]), CFG)
        assert [(d["class"], d["color"]) for d in dets] == [(kind, color)]
        assert binding_to_label(kind, color) == item["label"]
    with pytest.raises(ValueError, match="mode"):
        WorldDataset(CFG, 0, 1, mode="classes")
    with pytest.raises(ValueError, match="heldout_bindings"):
        WorldConfig(heldout_bindings=(("circle", "teal"),))


@pytest.mark.parametrize("bench,extra", [("geneval", []), ("dpg", []), ("fid", ["--ref", "world", "--n", "8"])])
def test_in_distribution_records_never_take_the_heldout_records_name(bench, extra, capsys):
    """`--world-split in_distribution` once wrote world-tiny-geneval.json, replacing the held-out record."""
    from evals.run import main

    names = {}
    for split in ("heldout", "in_distribution"):
        assert main([bench, "--ckpt", "world-tiny", "--world-split", split, "--dry-run", *extra]) == 0
        names[split] = Path(json.loads(capsys.readouterr().out)["record"]).name
    assert names["in_distribution"] == names["heldout"].replace(".json", "-in_distribution.json")
