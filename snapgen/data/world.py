"""The synthetic world: flat-colour shapes with compositional GenEval-style captions and exact truth.

A tiny text-to-image model learns this world on a CPU in minutes, and the GenEval and DPG-Bench
harnesses score it with the exact pixel reader below instead of Mask2Former / CLIP / mPLUG.

Vocabulary
    ``WORLD_CLASSES``  ("circle", "square", "triangle", "cross"): told apart by their silhouettes.
    ``WORLD_COLORS``   OrderedDict of the ten GenEval colour names -> RGB, pairwise >= 95 apart.
    ``GENEVAL_TAGS``   the six GenEval tasks; ``RELATIONS`` the four position words.

Scenes and rendering
    ``WorldConfig``                               frozen config (resolution, sizes, background...).
    ``WorldObject(kind, color, box, mask)``       box = (x0, y0, x1, y1) ints, x1/y1 exclusive,
                                                  always the tight box of ``mask`` (H, W) bool.
    ``Scene(objects, metadata, resolution)``
    ``render(scene, cfg) -> (PIL.Image RGB, [mask (H, W) bool per object])``, deterministic.

GenEval metadata (same keys and key order as ``evaluation_metadata.jsonl`` of djghosh13/geneval)
    ``all_metadata(tag, cfg) -> list[dict]``      every distinct prompt of a tag, fixed order.
    ``sample_metadata(rng, tag, cfg) -> dict``    one of them, uniformly.
    ``scene_from_metadata(meta, rng, cfg) -> Scene``  exactly the included objects, non-touching
        (``cfg.gap`` px apart), colours as given else random, counting = exactly ``count`` objects,
        position = the named relation and no other under the official 0.1-shrink rule.
    ``make_prompt_set(n_per_tag, seed, cfg, split="heldout") -> list[dict]``  deduplicated, reproducible by
        seed; "heldout" prompts never occur in training, "in_distribution" ones are training compositions.
    ``is_heldout(meta, cfg)``, ``training_prompts(cfg)``: the split (fields ``heldout_*`` of WorldConfig).
    ``write_prompt_set(path, metadata_list) -> Path``  writes ``evaluation_metadata.jsonl``.
    ``geneval_relations(box_a, box_b, threshold=0.1) -> set[str]``  relations of A relative to B.

Training data
    ``WorldDataset(cfg, seed, length, exclude_prompts=(), split="train", mode="text"|"class")``: item i is a pure function of
        (seed, i): dict(image=FloatTensor (3, H, W) in [-1, 1], caption=str, metadata=dict).
        Tags drawn with ``cfg.tag_weights``. Batch with ``collate_world``.

The world's detector (works on any image, rendered or generated)
    ``detect(image, cfg) -> list[dict]``: quantise every pixel to the nearest palette colour or the
        background, take 8-connected components per colour, drop specks (area) and fringes (no
        interior pixel), classify the silhouette by IoU with each class's ideal mask drawn in the
        component's box. Detection = {"class", "box": [x0, y0, x1, y1] floats (x1/y1 exclusive),
        "score": IoU with the best template in [0, 1], "mask": (H, W) bool, "color"}, sorted by
        score (desc). Same-colour objects that touch merge into one component (acceptable on
        generated images; never happens on renders, which keep a gap).
    ``ground_truth_detections(scene, cfg)``: same format straight from the scene (score 1.0).
    ``tensor_to_image(x)``: (3, H, W) tensor in [-1, 1] -> PIL image, for model outputs.
"""
from __future__ import annotations

import functools
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from snapgen.io import atomic_write_text

WORLD_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
WORLD_PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
# The ten GenEval colour names in GenEval's order; values hand-picked so that every pair is >= 95 apart
# in RGB and >= 110 from the default grey background (checked in tests).
WORLD_COLORS: "OrderedDict[str, tuple[int, int, int]]" = OrderedDict([
    ("red", (230, 25, 25)),
    ("orange", (255, 130, 0)),
    ("yellow", (255, 240, 0)),
    ("green", (20, 170, 40)),
    ("blue", (30, 60, 230)),
    ("purple", (140, 40, 190)),
    ("pink", (255, 130, 200)),
    ("brown", (120, 70, 20)),
    ("black", (0, 0, 0)),
    ("white", (255, 255, 255)),
])
GENEVAL_TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _default_heldout_positions() -> tuple[tuple[str, str, str], ...]:
    """One relation per ordered shape pair, rotating through RELATIONS: 12 of the 48 position triples."""
    pairs = [(a, b) for a in WORLD_CLASSES for b in WORLD_CLASSES if a != b]
    return tuple((obj, RELATIONS[k % len(RELATIONS)], target) for k, (target, obj) in enumerate(pairs))


_HELDOUT_POSITIONS = _default_heldout_positions()


@dataclass(frozen=True)
class WorldConfig:
    resolution: int = 32                                   # square image side in pixels
    min_size: int = 8                                      # smallest object side (px); below 8 shapes blur into each other
    max_size: int = 12                                     # largest object side (px)
    background: tuple[int, int, int] = (128, 128, 128)     # flat background RGB, must differ from every palette colour
    min_count: int = 2                                     # counting prompts ask for min_count..max_objects objects
    max_objects: int = 4                                   # most objects in one scene (GenEval counts 2-4)
    gap: int = 2                                           # min empty pixels between two objects' boxes (no merging)
    margin: int = 1                                        # min empty pixels between an object and the border
    antialias: bool = False                                # False: flat colours, exact re-detection; True: 4x supersampled edges
    position_threshold: float = 0.1                        # GenEval's box-size shrink factor for position
    tag_weights: tuple[float, ...] = (1, 1, 1, 1, 1, 1)    # training mix over GENEVAL_TAGS (same order)
    placement_tries: int = 400                             # random layouts tried before shrinking objects
    min_component_area: int = 12                           # detect: drop components smaller than this (px at `resolution`)
    min_interior_pixels: int = 1                           # detect: drop components with fewer 4-interior pixels (blur fringes)
    # --- the held-out split: compositions that never occur in a training caption (docs/world.md) ---------
    heldout_singles: tuple[str, ...] = ("triangle", "cross")             # bare "a photo of a <shape>" prompts
    heldout_bindings: tuple[tuple[str, str], ...] = (                    # (shape, colour) never named together
        ("circle", "red"), ("square", "orange"), ("triangle", "yellow"), ("cross", "green"), ("circle", "blue"),
        ("square", "purple"), ("triangle", "pink"), ("cross", "brown"), ("circle", "black"), ("square", "white"))
    heldout_counts: tuple[tuple[str, int], ...] = (                      # (shape, count) of counting prompts
        ("circle", 3), ("square", 4), ("triangle", 2), ("cross", 3))
    heldout_positions: tuple[tuple[str, str, str], ...] = _HELDOUT_POSITIONS  # (object, relation, target)
    heldout_pairs: tuple[tuple[str, str], ...] = (("circle", "triangle"), ("square", "cross"))  # unordered two_object
    class_mode_labels: str = "shape_x_colour"              # class-conditional mode: label = shape * 10 + colour

    def __post_init__(self):
        if not 4 <= self.min_size <= self.max_size:
            raise ValueError(f"need 4 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.max_size + 2 * self.margin > self.resolution:
            raise ValueError(f"max_size {self.max_size} + 2*margin does not fit in resolution {self.resolution}")
        if not 2 <= self.min_count <= self.max_objects:
            raise ValueError(f"need 2 <= min_count <= max_objects, got {self.min_count}, {self.max_objects}")
        if self.max_objects + 1 not in NUMBER_WORDS:
            raise ValueError(f"max_objects must be < {max(NUMBER_WORDS)}")
        check_tag_weights(self.tag_weights)
        for kind in self.heldout_singles:
            _check_vocab(kind, None, "heldout_singles")
        for kind, color in self.heldout_bindings:
            _check_vocab(kind, color, "heldout_bindings")
        for kind, n in self.heldout_counts:
            _check_vocab(kind, None, "heldout_counts")
        for obj, rel, target in self.heldout_positions:
            _check_vocab(obj, None, "heldout_positions"), _check_vocab(target, None, "heldout_positions")
            if rel not in RELATIONS:
                raise ValueError(f"heldout_positions: unknown relation {rel!r}; choose from {RELATIONS}")
        for a, b in self.heldout_pairs:
            _check_vocab(a, None, "heldout_pairs"), _check_vocab(b, None, "heldout_pairs")
        bg = np.array(self.background, float)
        near = min(np.linalg.norm(bg - np.array(c, float)) for c in WORLD_COLORS.values())
        if near < 60:
            raise ValueError(f"background {self.background} is within {near:.0f} of a palette colour")


def check_tag_weights(w) -> None:
    """A training mix over ``GENEVAL_TAGS``: one non-negative weight per task, not all zero (else ValueError naming
    the field, the order and an example)."""
    if len(w) != len(GENEVAL_TAGS) or min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"tag_weights={','.join(map(str, w))}: give {len(GENEVAL_TAGS)} non-negative weights, not "
                         f"all zero, one per task in the order {','.join(GENEVAL_TAGS)} "
                         "(e.g. --set tag_weights=1,1,1.5,0.5,2,2)")


def _check_vocab(kind: str, color: str | None, field_name: str) -> None:
    if kind not in WORLD_CLASSES:
        raise ValueError(f"WorldConfig.{field_name}: unknown shape {kind!r}; choose from {WORLD_CLASSES}")
    if color is not None and color not in WORLD_COLORS:
        raise ValueError(f"WorldConfig.{field_name}: unknown colour {color!r}; choose from {tuple(WORLD_COLORS)}")


# ----------------------------------------------------------------------------------------------
# Shapes, objects, scenes, rendering
# ----------------------------------------------------------------------------------------------

def shape_mask(kind: str, w: int, h: int) -> np.ndarray:
    """Ideal silhouette of ``kind`` filling a w x h box: (h, w) bool touching all four box sides."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dx = xs + 0.5 - w / 2                                  # pixel-centre offsets from the box centre
    dy = ys + 0.5 - h / 2
    if kind == "circle":                                   # radius s/2 - 1/4: still touches the sides but cuts
        return (dx / (w / 2 - 0.25)) ** 2 + (dy / (h / 2 - 0.25)) ** 2 <= 1 + 1e-9  # corners (fill <= 0.78 vs 1)
    if kind == "square":
        return np.ones((h, w), bool)
    if kind == "triangle":                                 # apex up; half-width grows one row at a time
        half = np.maximum((ys + 1) / h * w / 2, 0.5)
        return np.abs(dx) <= half + 1e-9
    if kind == "cross":                                    # plus sign, centred arms ~1/4 of the side thick
        tx, ty = _arm(w), _arm(h)
        return ((xs >= (w - tx) // 2) & (xs < (w - tx) // 2 + tx)) | ((ys >= (h - ty) // 2) & (ys < (h - ty) // 2 + ty))
    raise ValueError(f"unknown kind {kind!r}; choose from {WORLD_CLASSES}")


def _arm(side: int) -> int:
    """Cross arm thickness: round(side / 4) moved to side's parity (so the arm is centred), at least 1."""
    t = max(1, round(side / 4))
    if (side - t) % 2:
        t = t - 1 if t - 1 >= 2 else t + 1
    return min(t, side)


@dataclass(frozen=True)
class WorldObject:
    kind: str                                              # one of WORLD_CLASSES
    color: str                                             # key of WORLD_COLORS
    box: tuple[int, int, int, int]                         # (x0, y0, x1, y1) pixels, x1/y1 exclusive
    mask: np.ndarray = field(compare=False, repr=False)    # (H, W) bool, tight box == box


@dataclass(frozen=True)
class Scene:
    objects: tuple[WorldObject, ...]                       # in metadata include order
    metadata: dict = field(compare=False)                  # the GenEval metadata the scene satisfies
    resolution: int = 32                                   # image side in pixels


def make_object(kind: str, color: str, box: Sequence[int], resolution: int) -> WorldObject:
    x0, y0, x1, y1 = (int(v) for v in box)
    if kind not in WORLD_CLASSES or color not in WORLD_COLORS:
        raise ValueError(f"unknown kind/colour {kind!r}/{color!r}")
    mask = np.zeros((resolution, resolution), bool)
    mask[y0:y1, x0:x1] = shape_mask(kind, x1 - x0, y1 - y0)
    return WorldObject(kind, color, (x0, y0, x1, y1), mask)


def render(scene: Scene, cfg: WorldConfig) -> tuple[Image.Image, list[np.ndarray]]:
    """Scene -> (RGB image, per-object masks). Objects never overlap, so paint order is irrelevant."""
    if scene.resolution != cfg.resolution:
        raise ValueError(f"scene resolution {scene.resolution} != cfg.resolution {cfg.resolution}")
    masks = [o.mask for o in scene.objects]
    if not cfg.antialias:
        img = np.empty((cfg.resolution, cfg.resolution, 3), np.uint8)
        img[:] = cfg.background
        for o in scene.objects:
            img[o.mask] = WORLD_COLORS[o.color]
        return Image.fromarray(img, "RGB"), masks
    f, r = 4, cfg.resolution                               # supersample 4x, then box-filter down
    big = np.empty((r * f, r * f, 3), np.float64)
    big[:] = cfg.background
    for o in scene.objects:
        x0, y0, x1, y1 = (v * f for v in o.box)
        sub = big[y0:y1, x0:x1]
        sub[shape_mask(o.kind, x1 - x0, y1 - y0)] = WORLD_COLORS[o.color]
    small = big.reshape(r, f, r, f, 3).mean(axis=(1, 3))
    return Image.fromarray(np.round(small).astype(np.uint8), "RGB"), masks


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).div(127.5).sub(1.0)


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """(3, H, W) tensor in [-1, 1] -> PIL RGB (clamped, rounded)."""
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


# ----------------------------------------------------------------------------------------------
# GenEval metadata: enumeration, sampling, prompt sets
# ----------------------------------------------------------------------------------------------

def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _single(tag: str, kind: str, color: str | None = None) -> dict:
    obj = {"class": kind, "count": 1} | ({"color": color} if color else {})
    noun = f"{color} {kind}" if color else kind
    return {"tag": tag, "include": [obj], "prompt": f"a photo of {_a(noun)}"}


def _pair(tag: str, a: str, b: str, ca: str | None = None, cb: str | None = None) -> dict:
    inc = [{"class": a, "count": 1} | ({"color": ca} if ca else {}),
           {"class": b, "count": 1} | ({"color": cb} if cb else {})]
    na, nb = (f"{ca} {a}" if ca else a), (f"{cb} {b}" if cb else b)
    return {"tag": tag, "include": inc, "prompt": f"a photo of {_a(na)} and {_a(nb)}"}


def _position(target: str, obj: str, rel: str) -> dict:
    # GenEval: "a photo of a X <rel> a Y" -> include[0] = Y (target), include[1] = X with position [rel, 0].
    inc = [{"class": target, "count": 1}, {"class": obj, "count": 1, "position": [rel, 0]}]
    return {"tag": "position", "include": inc, "prompt": f"a photo of {_a(obj)} {rel} {_a(target)}"}


def _counting(kind: str, n: int) -> dict:
    return {"tag": "counting", "include": [{"class": kind, "count": n}],
            "exclude": [{"class": kind, "count": n + 1}],
            "prompt": f"a photo of {NUMBER_WORDS[n]} {WORLD_PLURALS[kind]}"}


@functools.lru_cache(maxsize=None)
def _all_metadata_json(tag: str, cfg: WorldConfig) -> tuple[str, ...]:
    C, K = WORLD_CLASSES, tuple(WORLD_COLORS)
    pairs = [(a, b) for a in C for b in C if a != b]        # GenEval never pairs a class with itself
    if tag == "single_object":
        out = [_single(tag, k) for k in C]
    elif tag == "two_object":
        out = [_pair(tag, a, b) for a, b in pairs]
    elif tag == "counting":
        out = [_counting(k, n) for k in C for n in range(cfg.min_count, cfg.max_objects + 1)]
    elif tag == "colors":
        out = [_single(tag, k, c) for k in C for c in K]
    elif tag == "position":
        out = [_position(t, o, r) for t, o in pairs for r in RELATIONS]
    elif tag == "color_attr":                              # GenEval also never repeats a colour
        out = [_pair(tag, a, b, ca, cb) for a, b in pairs for ca in K for cb in K if ca != cb]
    else:
        raise ValueError(f"unknown tag {tag!r}; choose from {GENEVAL_TAGS}")
    return tuple(json.dumps(m) for m in out)               # JSON keeps the cache immutable


SPLITS = ("heldout", "in_distribution")                   # evaluation prompt sets; training uses "train"


def is_heldout(meta: dict, cfg: WorldConfig) -> bool:
    """True when ``meta``'s prompt is a held-out composition (never a training caption) under ``cfg``'s split:
    a held-out bare shape, a held-out (shape, colour) binding anywhere in the prompt, a held-out (shape, count),
    a held-out (object, relation, target) triple, or a held-out unordered two-object pair."""
    tag, inc = meta["tag"], meta["include"]
    if any((o["class"], o["color"]) in cfg.heldout_bindings for o in inc if "color" in o):
        return True
    if tag == "single_object":
        return inc[0]["class"] in cfg.heldout_singles
    if tag == "counting":
        return (inc[0]["class"], inc[0]["count"]) in cfg.heldout_counts
    if tag == "position":
        return (inc[1]["class"], inc[1]["position"][0], inc[0]["class"]) in cfg.heldout_positions
    if tag == "two_object":
        pair = {inc[0]["class"], inc[1]["class"]}
        return any(pair == set(p) for p in cfg.heldout_pairs)
    return False


def all_metadata(tag: str, cfg: WorldConfig, split: str | None = None) -> list[dict]:
    """Every distinct GenEval metadata line of ``tag`` in this world, in a fixed order (fresh copies).
    ``split``: None = all; "train" = the compositions training may show; "heldout" = the others."""
    rows = [json.loads(s) for s in _all_metadata_json(tag, cfg)]
    if split is None:
        return rows
    if split not in ("train", "heldout"):
        raise ValueError(f"split={split!r}: expected None, 'train' or 'heldout'")
    return [m for m in rows if is_heldout(m, cfg) == (split == "heldout")]


@functools.lru_cache(maxsize=None)
def _train_pool_json(tag: str, cfg: WorldConfig) -> tuple[str, ...]:
    return tuple(json.dumps(m) for m in all_metadata(tag, cfg, "train"))


def sample_metadata(rng: np.random.Generator, tag: str, cfg: WorldConfig, split: str | None = None) -> dict:
    """One GenEval metadata dict of ``tag``, uniform over the tag's distinct prompts (of ``split``:
    None = all, "train" = training compositions only)."""
    pool = _train_pool_json(tag, cfg) if split == "train" else _all_metadata_json(tag, cfg)
    if split not in (None, "train"):
        raise ValueError(f"split={split!r}: expected None or 'train'")
    if not pool:
        raise ValueError(f"tag {tag!r} has no {split or ''} prompts under this WorldConfig")
    return json.loads(pool[int(rng.integers(len(pool)))])


def training_prompts(cfg: WorldConfig) -> list[str]:
    """Every caption training may show (the "train" split), sorted."""
    return sorted(m["prompt"] for tag in GENEVAL_TAGS for m in all_metadata(tag, cfg, "train"))


def make_prompt_set(n_per_tag: int | dict[str, int], seed: int, cfg: WorldConfig, split: str = "heldout") -> list[dict]:
    """Evaluation prompt set in GenEval format: per tag (GENEVAL_TAGS order) ``n`` distinct prompts drawn
    without replacement, seeded by (seed, tag index), from ``split``: "heldout" (compositions that never occur
    in training; the default) or "in_distribution" (training compositions, to measure the gap). A tag with
    fewer distinct prompts gives all of them. ``n_per_tag`` may be a dict tag -> n (missing tags get 0)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    out = []
    for i, tag in enumerate(GENEVAL_TAGS):
        n = n_per_tag.get(tag, 0) if isinstance(n_per_tag, dict) else int(n_per_tag)
        pool = all_metadata(tag, cfg, "heldout" if split == "heldout" else "train")
        order = np.random.default_rng([seed, i]).permutation(len(pool))
        out.extend(pool[j] for j in order[: min(n, len(pool))])
    return out


def write_prompt_set(path: str | os.PathLike, metadata_list: Sequence[dict]) -> Path:
    """Write GenEval's ``evaluation_metadata.jsonl`` (one JSON object a line, key order kept).
    ``path`` is the file, or a folder to write ``evaluation_metadata.jsonl`` into."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "evaluation_metadata.jsonl"
    return atomic_write_text(path, "".join(json.dumps(m) + "\n" for m in metadata_list))


# ----------------------------------------------------------------------------------------------
# Scene layout
# ----------------------------------------------------------------------------------------------

def geneval_relations(box_a: Sequence[float], box_b: Sequence[float], threshold: float = 0.1) -> set[str]:
    """Relations of A relative to B under GenEval's rule: centre offset A-B, each axis shrunk toward 0 by
    threshold x (sum of both box sizes on that axis), divided by the original offset's length; a component
    < -0.5 / > 0.5 gives left of / right of (x) and above / below (y, image y points down)."""
    a, b = np.asarray(box_a, float).reshape(2, 2), np.asarray(box_b, float).reshape(2, 2)
    offset = a.mean(0) - b.mean(0)                         # (dx, dy)
    dims = (a[1] - a[0]) + (b[1] - b[0])
    revised = np.maximum(np.abs(offset) - threshold * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = set()
    if dx < -0.5: rels.add("left of")
    if dx > 0.5: rels.add("right of")
    if dy < -0.5: rels.add("above")
    if dy > 0.5: rels.add("below")
    return rels


def _apart(a: Sequence[int], b: Sequence[int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _try_layout(sizes: Sequence[int], rng: np.random.Generator, cfg: WorldConfig) -> list[tuple] | None:
    boxes: list[tuple] = []
    for s in sizes:
        hi = cfg.resolution - cfg.margin - s               # largest valid x0 / y0
        for _ in range(50):
            x0, y0 = (int(v) for v in rng.integers(cfg.margin, hi + 1, size=2))
            box = (x0, y0, x0 + s, y0 + s)
            if all(_apart(box, b, cfg.gap) for b in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _layout(sizes: list[int], rng: np.random.Generator, cfg: WorldConfig, relation: str | None) -> list[tuple]:
    """Non-touching square boxes of the given sides; with ``relation`` the second box holds exactly that
    relation (and no other) to the first. Shrinks objects toward min_size if the tries run out."""
    sizes = list(sizes)
    while True:
        for _ in range(cfg.placement_tries):
            boxes = _try_layout(sizes, rng, cfg)
            if boxes is None:
                continue
            if relation is None or geneval_relations(boxes[1], boxes[0], cfg.position_threshold) == {relation}:
                return boxes
        if all(s <= cfg.min_size for s in sizes):
            raise RuntimeError(f"cannot place {len(sizes)} objects in {cfg.resolution}px with {cfg}")
        sizes = [max(cfg.min_size, s - 1) for s in sizes]


def scene_from_metadata(meta: dict, rng: np.random.Generator, cfg: WorldConfig) -> Scene:
    """A scene satisfying GenEval metadata ``meta``: exactly the included objects (``count`` of each),
    colour as given else uniform at random, position relation exact; layout drawn from ``rng``."""
    specs = [(inc["class"], inc.get("color"), inc.get("position")) for inc in meta["include"]
             for _ in range(inc["count"])]
    if len(specs) > cfg.max_objects:
        raise ValueError(f"{len(specs)} objects exceed max_objects={cfg.max_objects}")
    relation = None
    for _, _, pos in specs:
        if pos is not None:
            if pos[1] != 0 or len(specs) != 2:
                raise ValueError(f"only 'position': [rel, 0] between two single objects is supported: {meta}")
            relation = pos[0]
    palette = tuple(WORLD_COLORS)
    colors = [c if c is not None else palette[int(rng.integers(len(palette)))] for _, c, _ in specs]
    sizes = [int(s) for s in rng.integers(cfg.min_size, cfg.max_size + 1, size=len(specs))]
    boxes = _layout(sizes, rng, cfg, relation)
    objects = tuple(make_object(k, c, b, cfg.resolution) for (k, _, _), c, b in zip(specs, colors, boxes))
    return Scene(objects, meta, cfg.resolution)


def ground_truth_detections(scene: Scene, cfg: WorldConfig) -> list[dict]:
    """The detections a perfect reader would return for ``scene`` (score 1.0, include order)."""
    return [{"class": o.kind, "box": [float(v) for v in o.box], "score": 1.0, "mask": o.mask.copy(),
             "color": o.color} for o in scene.objects]


# ----------------------------------------------------------------------------------------------
# Training data
# ----------------------------------------------------------------------------------------------

NUM_WORLD_LABELS = len(WORLD_CLASSES) * len(WORLD_COLORS)  # class-conditional mode: 40 (shape, colour) labels


def label_to_binding(label: int) -> tuple[str, str]:
    """Class-conditional label -> (shape, colour): label = shape index * 10 + colour index."""
    if not 0 <= int(label) < NUM_WORLD_LABELS:
        raise ValueError(f"world class label {label} outside 0..{NUM_WORLD_LABELS - 1}")
    k, c = divmod(int(label), len(WORLD_COLORS))
    return WORLD_CLASSES[k], tuple(WORLD_COLORS)[c]


def binding_to_label(kind: str, color: str) -> int:
    return WORLD_CLASSES.index(kind) * len(WORLD_COLORS) + tuple(WORLD_COLORS).index(color)


class WorldDataset(torch.utils.data.Dataset):
    """Unlimited in principle; ``length`` only sets the epoch. Item i is a pure function of (seed, i, cfg).

    ``split``: "train" (default: only compositions of the training split, see ``is_heldout``), "heldout" (only
    held-out compositions: reference renders for evaluation) or "all". ``exclude_prompts`` are redrawn too.
    ``mode="class"``: the ImageNet-style class-conditional world: item i has ``label`` in 0..39 (shape x colour,
    uniform) and shows one object of that shape and colour; its caption is the colors-task prompt."""

    def __init__(self, cfg: WorldConfig, seed: int, length: int, exclude_prompts: Sequence[str] = (),
                 split: str = "train", mode: str = "text"):
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"WorldDataset split={split!r}: expected 'train', 'heldout' or 'all'")
        if mode not in ("text", "class"):
            raise ValueError(f"WorldDataset mode={mode!r}: expected 'text' or 'class'")
        self.cfg, self.seed, self.length, self.split, self.mode = cfg, int(seed), int(length), split, mode
        self.exclude = frozenset(exclude_prompts)
        w = np.asarray(cfg.tag_weights, float)
        if split != "all":      # a tag without prompts in this split cannot be drawn
            w = w * np.array([bool(all_metadata(t, cfg, split)) for t in GENEVAL_TAGS], float)
        if w.sum() <= 0:
            raise ValueError(f"no tag with weight > 0 has prompts in split {split!r}")
        self.tag_p = w / w.sum()
        self._pools = None if split == "all" else {t: all_metadata(t, cfg, split) for t in GENEVAL_TAGS}

    def __len__(self) -> int:
        return self.length

    def _meta(self, rng: np.random.Generator, tag: str) -> dict:
        if self._pools is None:
            return sample_metadata(rng, tag, self.cfg)
        pool = self._pools[tag]
        return dict(pool[int(rng.integers(len(pool)))])

    def caption(self, i: int) -> str:
        """Item i's caption without laying out its scene (the metadata draws come first in its stream)."""
        return self._draw_meta(np.random.default_rng([self.seed, int(i)]))["prompt"]

    def _draw_meta(self, rng: np.random.Generator) -> dict:
        if self.mode == "class":
            return _single("colors", *label_to_binding(int(rng.integers(NUM_WORLD_LABELS))))
        for _ in range(1000):
            tag = GENEVAL_TAGS[int(rng.choice(len(GENEVAL_TAGS), p=self.tag_p))]
            meta = self._meta(rng, tag)
            if meta["prompt"] not in self.exclude:
                return meta
        raise RuntimeError("exclude_prompts covers (almost) every prompt of the weighted tags")

    def sample(self, i: int) -> tuple[Scene, dict]:
        rng = np.random.default_rng([self.seed, int(i)])
        meta = self._draw_meta(rng)
        return scene_from_metadata(meta, rng, self.cfg), meta

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        scene, meta = self.sample(i)
        image, _ = render(scene, self.cfg)
        item = {"image": image_to_tensor(image), "caption": meta["prompt"], "metadata": meta}  # (3, H, W)
        if self.mode == "class":
            item["label"] = binding_to_label(meta["include"][0]["class"], meta["include"][0]["color"])
        return item


def collate_world(batch: list[dict]) -> dict[str, Any]:
    """Stack images to (B, 3, H, W); keep captions and metadata as lists (metadata varies in shape)."""
    return {"image": torch.stack([b["image"] for b in batch]),
            "caption": [b["caption"] for b in batch],
            "metadata": [b["metadata"] for b in batch]}


# ----------------------------------------------------------------------------------------------
# The world's detector
# ----------------------------------------------------------------------------------------------

def _as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """-> (H, W, 3) float64 in 0..255. ndarray input: uint8 0..255, or float in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) array, got {arr.shape}")
    return arr.astype(np.float64) * (255.0 if np.issubdtype(arr.dtype, np.floating) else 1.0)


def quantise(image: Image.Image | np.ndarray, cfg: WorldConfig) -> np.ndarray:
    """(H, W) int labels: 0 = background, 1 + i = i-th WORLD_COLORS entry (nearest in RGB)."""
    rgb = _as_rgb_array(image)
    pal = np.array([cfg.background, *WORLD_COLORS.values()], np.float64)   # (11, 3)
    d = ((rgb[:, :, None, :] - pal[None, None]) ** 2).sum(-1)              # (H, W, 11)
    return d.argmin(-1)


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Best class and its IoU for a component mask, comparing with each ideal shape in its tight box."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    h, w = crop.shape
    ious = {}
    for kind in WORLD_CLASSES:
        ideal = shape_mask(kind, w, h)
        ious[kind] = (crop & ideal).sum() / (crop | ideal).sum()
    best = max(WORLD_CLASSES, key=lambda k: ious[k])
    return best, float(ious[best])


_FOUR = ndimage.generate_binary_structure(2, 1)            # 4-neighbourhood for "interior" pixels
_EIGHT = ndimage.generate_binary_structure(2, 2)           # 8-connectivity for components


def detect(image: Image.Image | np.ndarray, cfg: WorldConfig) -> list[dict]:
    """Read every object from an image; see the module docstring for the output format."""
    labels = quantise(image, cfg)                           # (H, W)
    h, w = labels.shape
    min_area = cfg.min_component_area * (h * w) / cfg.resolution ** 2
    dets = []
    for ci, color in enumerate(WORLD_COLORS, start=1):
        color_mask = labels == ci
        if not color_mask.any():
            continue
        interior = ndimage.binary_erosion(color_mask, _FOUR)
        comps, n = ndimage.label(color_mask, _EIGHT)
        for j, sl in enumerate(ndimage.find_objects(comps), start=1):
            comp = comps == j
            if comp.sum() < min_area or (interior & comp).sum() < cfg.min_interior_pixels:
                continue
            kind, score = classify_shape(comp[sl])
            box = [float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop)]
            dets.append({"class": kind, "box": box, "score": score, "mask": comp, "color": color})
    dets.sort(key=lambda d: (-d["score"], d["box"][1], d["box"][0]))
    return dets
