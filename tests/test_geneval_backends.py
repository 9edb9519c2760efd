"""GenEval backends: tiny random-weight Mask2Former and open_clip models saved to tmp and loaded back through
the user-facing loaders; the world reader end to end; missing weights raise MissingWeightsError."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from evals.geneval.colors import ClipColorClassifier, crop_for_color
from evals.geneval.detectors import (GENEVAL_OBJECTS, Mask2FormerDetector, MMDetDetector, load_object_names,
                                     map_labels, mask_to_box)
from evals.geneval.rules import OFFICIAL, evaluate_image
from snapgen.io import MissingWeightsError

torch.set_num_threads(1)
GENEVAL_DIR = os.path.join(os.path.dirname(__file__), "..", "evals", "data", "geneval")  # copied with its LICENSE
COCO_SPELLING = {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}


def test_builtin_object_names_match_official_file():
    path = os.path.join(GENEVAL_DIR, "object_names.txt")
    assert load_object_names(path) == list(GENEVAL_OBJECTS) and len(GENEVAL_OBJECTS) == 80


def test_map_labels_aliases_and_errors():
    coco = {i: COCO_SPELLING.get(n, n) for i, n in enumerate(GENEVAL_OBJECTS)}
    mapping = map_labels(coco, list(GENEVAL_OBJECTS))
    assert mapping[64] == "computer mouse" and mapping[65] == "tv remote" and mapping[0] == "person"
    with pytest.raises(ValueError, match="missing"):                       # default LABEL_i names
        map_labels({i: f"LABEL_{i}" for i in range(80)}, list(GENEVAL_OBJECTS))
    panoptic = dict(coco) | {80: "sky", 81: "wall"}
    with pytest.raises(ValueError, match="unknown .*sky"):
        map_labels(panoptic, list(GENEVAL_OBJECTS))
    assert len(map_labels(panoptic, list(GENEVAL_OBJECTS), strict=False)) == 80


def test_mask_to_box_is_mmdet_mask2bbox():
    m = np.zeros((20, 30), bool)
    m[3:7, 10:25] = True
    assert mask_to_box(m) == [10.0, 3.0, 25.0, 7.0]                       # x1 / y1 exclusive
    assert mask_to_box(np.zeros((4, 4), bool)) == [0.0, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------- Mask2Former
def _tiny_mask2former(tmp_path, id2label):
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)

    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, use_pretrained_backbone=False, hidden_dim=32,
                            mask_feature_size=32, feature_size=32, encoder_layers=1, decoder_layers=2,
                            num_queries=10, encoder_feedforward_dim=64, dim_feedforward=64, num_attention_heads=2,
                            id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(tmp_path)
    Mask2FormerImageProcessor().save_pretrained(tmp_path)
    return tmp_path


def test_mask2former_detector_roundtrip(tmp_path):
    coco = {i: COCO_SPELLING.get(n, n) for i, n in enumerate(GENEVAL_OBJECTS)}
    path = _tiny_mask2former(tmp_path / "m2f", coco)
    detector = Mask2FormerDetector.from_pretrained(path, shortest_edge=64, longest_edge=128, score_floor=0.0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = detector(image)
    assert out and set(out) <= set(GENEVAL_OBJECTS)
    n = 0
    for cls, dets in out.items():
        scores = [d["score"] for d in dets]
        assert scores == sorted(scores, reverse=True)
        for d in dets:
            n += 1
            assert d["class"] == cls and d["color"] is None and 0.0 <= d["score"] <= 1.0
            assert d["mask"].shape == (48, 64) and d["mask"].dtype == bool and d["mask"].any()
            assert d["box"] == mask_to_box(d["mask"])
    assert n <= 10                                                          # at most num_queries instances
    correct, reason, details = evaluate_image(
        {"tag": "single_object", "include": [{"class": "person", "count": 1}], "prompt": "p"}, out, image.size)
    assert isinstance(correct, bool) and json.dumps(details)
    # the default score floor (0.3) drops what GenEval would drop anyway
    strict = Mask2FormerDetector.from_pretrained(path, shortest_edge=64, longest_edge=128)
    assert all(d["score"] >= 0.3 for ds in strict(image).values() for d in ds)


def test_mask2former_wrong_labels_raise(tmp_path):
    path = _tiny_mask2former(tmp_path / "bad", {i: f"LABEL_{i}" for i in range(80)})
    with pytest.raises(ValueError, match="COCO instance"):
        Mask2FormerDetector.from_pretrained(path)


def test_mask2former_missing_paths(tmp_path):
    with pytest.raises(MissingWeightsError, match="nowhere"):
        Mask2FormerDetector.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "cfg_only").mkdir()
    (tmp_path / "cfg_only" / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        Mask2FormerDetector.from_pretrained(tmp_path / "cfg_only")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="config.json"):
        Mask2FormerDetector.from_pretrained(tmp_path / "empty")


def test_mmdet_backend_needs_mmdet(tmp_path):
    try:
        import mmdet  # noqa: F401
        pytest.skip("mmdet installed; the ImportError path cannot be exercised")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="mmdet"):
        MMDetDetector(tmp_path / "cfg.py", tmp_path / "ckpt.pth")


# ---------------------------------------------------------------- colour classifier
class _FakeTokenizer:
    def __init__(self):
        self.texts = []

    def __call__(self, texts):
        self.texts += texts
        return torch.tensor([[OFFICIAL.colors.index(next(c for c in OFFICIAL.colors if f" {c}" in t))]
                             for t in texts])


class _PaletteClip(torch.nn.Module):
    """encode_image = histogram of pixels over pure palette colours; encode_text = one-hot colour."""
    RGB = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0)}

    def encode_image(self, x):                                             # (N, 3, H, W) in [0, 1]
        feats = torch.zeros(len(x), len(OFFICIAL.colors))
        for name, rgb in self.RGB.items():
            hit = (x * 255 - torch.tensor(rgb).view(1, 3, 1, 1)).abs().sum(1) < 1
            feats[:, OFFICIAL.colors.index(name)] = hit.flatten(1).float().mean(1)
        return feats

    def encode_text(self, tokens):                                         # (T, 1) colour index
        return torch.nn.functional.one_hot(tokens[:, 0], len(OFFICIAL.colors)).float()


def _to_tensor(img):
    return torch.from_numpy(np.asarray(img.resize((16, 16), Image.NEAREST), dtype=np.float32) / 255).permute(2, 0, 1)


def test_crop_composites_mask_on_grey_then_crops():
    image = Image.new("RGB", (40, 30), (0, 0, 255))                       # blue everywhere
    image.paste((255, 0, 0), (12, 8, 20, 14))                              # a red 8x6 object
    mask = np.zeros((30, 40), bool)
    mask[8:14, 12:20] = True
    crop = np.asarray(crop_for_color(image, {"box": [10, 5, 30, 20], "mask": mask}))
    assert crop.shape == (15, 20, 3)
    assert (crop[3:9, 2:10] == (255, 0, 0)).all()                          # the object
    assert (crop[0, 0] == (0x99, 0x99, 0x99)).all() and (crop[14, 19] == (0x99,) * 3).all()  # grey outside the mask
    nomask = np.asarray(crop_for_color(image, {"box": [10, 5, 30, 20], "mask": None}))
    assert (nomask[0, 0] == (0, 0, 255)).all()


def test_color_classifier_logic_with_a_palette_model():
    tok = _FakeTokenizer()
    clf = ClipColorClassifier(_PaletteClip(), _to_tensor, tok)
    image = Image.new("RGB", (40, 30), (0, 0, 255))
    image.paste((255, 0, 0), (12, 8, 20, 14))
    mask = np.zeros((30, 40), bool)
    mask[8:14, 12:20] = True
    d = {"class": "apple", "box": [4, 2, 36, 28], "mask": mask}
    assert clf(image, d) == "red"                                          # the mask hides the blue surroundings
    assert clf(image, dict(d, mask=None)) == "blue"                        # without it blue dominates the crop
    assert clf.bind(image)(d) == "red"
    assert tok.texts[:3] == ["a photo of a red apple", "a photo of a red-colored apple", "a photo of a red object"]
    assert len(tok.texts) == 30                                            # cached: 10 colours x 3 templates, once
    clf.classify(image, [dict(d, **{"class": "car"})])
    assert len(tok.texts) == 60 and tok.texts[-1] == "a photo of a white object"


def _tiny_open_clip(tmp_path):
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    cfg_path = tmp_path / "geneval-test-tiny-clip.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    model = open_clip.create_model("geneval-test-tiny-clip", force_quick_gelu=True)
    torch.save(model.state_dict(), tmp_path / "tiny_clip.pt")
    return tmp_path / "tiny_clip.pt"


def test_clip_color_classifier_roundtrip(tmp_path):
    weights = _tiny_open_clip(tmp_path)
    clf = ClipColorClassifier.from_pretrained(weights, model_name="geneval-test-tiny-clip")
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:30] = True
    dets = [{"class": "apple", "box": [10, 5, 30, 20], "mask": mask},
            {"class": "apple", "box": [0, 0, 40, 30], "mask": None}]
    colors = clf.classify(image, dets)
    assert len(colors) == 2 and all(c in OFFICIAL.colors for c in colors)
    assert colors == [clf(image, d) for d in dets]                         # batch == one by one
    assert clf.text_embeddings("apple").shape == (16, 10)
    assert torch.allclose(clf.text_embeddings("apple").norm(dim=0), torch.ones(10))
    proto = clf.protocol()
    assert proto["model_name"] == "geneval-test-tiny-clip" and len(proto["weights_sha256"]) == 64


def test_clip_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="no_such_clip.pt"):
        ClipColorClassifier.from_pretrained(tmp_path / "no_such_clip.pt")
    with pytest.raises(MissingWeightsError, match="no path given"):
        ClipColorClassifier.from_pretrained(None)


# ---------------------------------------------------------------- synthetic world
def _world():
    return pytest.importorskip("snapgen.data.world")


def test_world_detector_scores_renders_perfectly(tmp_path):
    world = _world()
    from evals.geneval.detectors import WorldDetector
    from evals.geneval.score import score_folder
    from snapgen.io import atomic_save_image

    cfg = world.WorldConfig()
    metas = world.make_prompt_set(2, seed=0, cfg=cfg)
    assert {m["tag"] for m in metas} == set(OFFICIAL.tasks)
    for p, meta in enumerate(metas):
        (tmp_path / f"{p:05d}").mkdir()
        (tmp_path / f"{p:05d}" / "metadata.jsonl").write_text(json.dumps(meta))
        for s in range(2):
            scene = world.scene_from_metadata(meta, np.random.default_rng([p, s]), cfg)
            image, _ = world.render(scene, cfg)
            atomic_save_image(tmp_path / f"{p:05d}" / "samples" / f"{s:04d}.png", image)
    detector = WorldDetector(cfg)
    rows, summary = score_folder(tmp_path, detector, classify_color=None)   # world detections carry colours
    assert [r["reason"] for r in rows if not r["correct"]] == []
    assert summary["overall"] == 1.0 and summary["missing_tasks"] == [] and summary["images"] == 2 * len(metas)


def test_world_detector_catches_a_wrong_image(tmp_path):
    world = _world()
    from evals.geneval.detectors import WorldDetector

    cfg = world.WorldConfig()
    meta = next(m for m in world.all_metadata("colors", cfg) if m["include"][0]["color"] == "red")
    other = dict(meta, include=[dict(meta["include"][0], color="blue")])
    scene = world.scene_from_metadata(other, np.random.default_rng(0), cfg)   # drawn blue, asked red
    image, _ = world.render(scene, cfg)
    correct, reason, _ = evaluate_image(meta, WorldDetector(cfg)(image), image.size)
    cls = meta["include"][0]["class"]
    assert not correct and reason == f"expected red {cls}>=1, found 0 red; and 1 blue"
