"""GenEval's scoring rules as pure functions (no detector, no CLIP, no files).

Port of the rules of djghosh13/geneval `evaluation/evaluate_images.py` and `summary_scores.py`,
re-written from the protocol (see SPEC.md section 4 of the project brief); every constant is in
:class:`GenEvalRules` with the official value.

Pipeline for one image:
    raw detections (per class, any order)
      -> filter_detections: sort by score (desc), keep score > threshold (0.9 for the counting tag,
         else 0.3), keep the first max_objects (16), then greedy NMS (off at the default 1.0)
      -> judge: include clauses (count, then colour on the `count` most confident objects, then
         position only if the colour check passed), then exclude clauses
      -> (correct, reason, details)

A detection is a dict ``{"class": str, "box": [x0, y0, x1, y1], "score": float,
"mask": np.ndarray (H, W) bool | None, "color": str | None}``. When ``"color"`` is set (the synthetic
world's exact reader sets it) it is used as is; otherwise ``classify_color(detection) -> str`` is asked
(the CLIP classifier bound to the image, see ``evals.geneval.colors``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Detection = dict  # {"class", "box", "score", "mask", "color"} (see module docstring)
ColorFn = Callable[[Detection], str]

TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATION_ORDER: tuple[str, ...] = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class GenEvalRules:
    threshold: float = 0.3                  # keep a detection when score > this (all tags but counting)
    counting_threshold: float = 0.9         # the same for the counting tag
    counting_tag: str = "counting"          # tag that uses counting_threshold
    max_objects: int = 16                   # at most this many detections per class (after sorting)
    nms_threshold: float = 1.0              # greedy per-class NMS IoU; exactly 1.0 means NMS off (official default)
    position_threshold: float = 0.1         # shrink each centre offset axis by this x (sum of the two box sizes)
    relation_cutoff: float = 0.5            # |normalised revised offset| above this gives a relation
    zero_offset_eps: float = 1e-3           # revised offset below this on both axes: no relation at all
    colors: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue",
                               "purple", "pink", "brown", "black", "white")  # zero-shot classes, official order
    color_templates: tuple[str, ...] = ("a photo of a {c} {obj}",
                                        "a photo of a {c}-colored {obj}",
                                        "a photo of a {c} object")           # {c} colour, {obj} class name
    color_background: str = "#999999"       # masked-out pixels are filled with this before the crop
    color_crop: bool = True                 # crop the composited image to the box before CLIP
    clip_model: str = "ViT-L-14"            # official zero-shot colour classifier (OpenAI weights)
    detector: str = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"  # official mmdet config name
    tasks: tuple[str, ...] = TASKS          # the six tasks averaged into `overall`

    def threshold_for(self, tag: str) -> float:
        return self.counting_threshold if tag == self.counting_tag else self.threshold


OFFICIAL = GenEvalRules()


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------

def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU with the official +1-pixel convention (inclusive integer corners); only NMS uses it."""
    def area(b):
        return max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)
    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]),
                  min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def relations(box_a: Sequence[float], box_b: Sequence[float], rules: GenEvalRules = OFFICIAL) -> list[str]:
    """Relations of A relative to B (image y points down), in RELATION_ORDER.

    offset = centre(A) - centre(B); each axis is shrunk toward zero by position_threshold x (size of
    A + size of B on that axis), without crossing zero, then divided by |offset| (the unshrunk length).
    """
    a = np.asarray(box_a[:4], dtype=np.float64).reshape(2, 2)      # [[x0, y0], [x1, y1]]
    b = np.asarray(box_b[:4], dtype=np.float64).reshape(2, 2)
    offset = a.mean(0) - b.mean(0)                                 # (dx, dy)
    size_sum = np.abs(a[1] - a[0]) + np.abs(b[1] - b[0])           # (w_a + w_b, h_a + h_b)
    revised = np.maximum(np.abs(offset) - rules.position_threshold * size_sum, 0) * np.sign(offset)
    if np.all(np.abs(revised) < rules.zero_offset_eps):
        return []
    dx, dy = revised / np.linalg.norm(offset)
    c = rules.relation_cutoff
    found = {"left of": dx < -c, "right of": dx > c, "above": dy < -c, "below": dy > c}
    # PAPER-DEVIATION: the official code keeps a set, so the order in its reason string follows string
    # hashing (varies per process); we use a fixed order. Scores are unaffected.
    return [r for r in RELATION_ORDER if found[r]]


# ----------------------------------------------------------------------------------------------
# Filtering
# ----------------------------------------------------------------------------------------------

def _descending(scores: Sequence[float]) -> list[int]:
    # The official code reverses an ascending argsort; for ties the later detection comes first. A stable
    # ascending sort reversed reproduces that deterministically (numpy's default sort is only stable for
    # small arrays).
    return np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")[::-1].tolist()


def filter_detections(detections: Mapping[str, Sequence[Detection]], tag: str,
                      rules: GenEvalRules = OFFICIAL) -> dict[str, list[Detection]]:
    """Official per-class filtering: sort by score desc, keep score > threshold_for(tag), cap at
    max_objects, greedy NMS at nms_threshold (skipped when it is exactly 1.0). Classes left empty are
    dropped. Returns new lists (the input is not modified)."""
    thr = rules.threshold_for(tag)
    kept: dict[str, list[Detection]] = {}
    for cls, dets in detections.items():
        order = [i for i in _descending([d["score"] for d in dets]) if dets[i]["score"] > thr]
        order = order[: rules.max_objects]
        out = []
        while order:
            best = order.pop(0)
            out.append(dets[best])
            if rules.nms_threshold != 1:
                order = [i for i in order if box_iou(dets[best]["box"], dets[i]["box"]) < rules.nms_threshold]
        if out:
            kept[cls] = out
    return kept


def group_by_class(detections: Sequence[Detection]) -> dict[str, list[Detection]]:
    """A flat list of detections -> {class: [detections]} (order kept)."""
    grouped: dict[str, list[Detection]] = {}
    for d in detections:
        grouped.setdefault(d["class"], []).append(d)
    return grouped


# ----------------------------------------------------------------------------------------------
# Judging one image
# ----------------------------------------------------------------------------------------------

def _colors_of(found: Sequence[Detection], classify_color: ColorFn | None, rules: GenEvalRules) -> list[str]:
    out = []
    for det in found:
        color = det.get("color")
        if color is None:
            if classify_color is None:
                raise ValueError(f"a colour check needs the colour of a {det['class']!r} detection, but the "
                                 "detection carries no 'color' and no classify_color was given")
            color = classify_color(det)
        if color not in rules.colors:
            raise ValueError(f"colour {color!r} is not one of GenEval's colours {rules.colors}")
        out.append(color)
    return out


def _color_reason(req: dict, colors: list[str], rules: GenEvalRules) -> str:
    want, cls = req["color"], req["class"]
    tally = ", ".join(f"{colors.count(c)} {c}" for c in rules.colors if c in colors)
    return f"expected {want} {cls}>={req['count']}, found {colors.count(want)} {want}; and {tally}"


def _position_reason(req: dict, groups: list, rules: GenEvalRules, found: list[Detection]) -> str | None:
    """None when every found object holds the relation to every object of the target group."""
    rel, target = req["position"]
    if groups[target] is None:
        return f"no target for {req['class']} to be {rel}"
    for obj in found:
        for tgt in groups[target]:
            true_rels = relations(obj["box"], tgt["box"], rules)
            if rel not in true_rels:
                return f"expected {req['class']} {rel} target, found {' and '.join(true_rels)} target"
    return None


def judge(metadata: dict, kept: Mapping[str, Sequence[Detection]], classify_color: ColorFn | None = None,
          rules: GenEvalRules = OFFICIAL) -> tuple[bool, str, dict]:
    """The official `evaluate`: include clauses AND-ed, exclude clauses OR-ed, on filtered detections
    (each class sorted by score, most confident first). Returns (correct, reason, details)."""
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []               # matched objects per include clause
    colors_seen: dict[int, list[str]] = {}
    for i, req in enumerate(metadata.get("include", [])):
        cls, count = req["class"], req["count"]
        found = list(kept.get(cls, []))[:count]             # colour/position use the `count` most confident
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = colors_seen[i] = _colors_of(found, classify_color, rules)
                if colors.count(req["color"]) < count:
                    ok = False
                    reasons.append(_color_reason(req, colors, rules))
            if "position" in req and ok:                    # position only once the colour check passed
                why = _position_reason(req, groups, rules, found)
                if why is not None:
                    ok = False
                    reasons.append(why)
        groups.append(found if ok else None)
    for req in metadata.get("exclude", []):
        n = len(kept.get(req["class"], []))
        if n >= req["count"]:
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    correct = not reasons
    details = {"colors": {str(i): c for i, c in colors_seen.items()},
               "matched": [g is not None for g in groups]}
    return correct, "\n".join(reasons), details


def evaluate_image(metadata: dict, detections: Mapping[str, Sequence[Detection]], image_size: tuple[int, int],
                   classify_color: ColorFn | None = None, rules: GenEvalRules = OFFICIAL) -> tuple[bool, str, dict]:
    """Score one image from its raw detections ({class: [detection]}, any order, unfiltered).

    image_size is (width, height) as PIL gives it; masks must be (height, width) like the official assert.
    details: the threshold used, the kept detections (class -> [{box, score, color}]) and the colours read.
    """
    width, height = image_size
    for dets in detections.values():
        for d in dets:
            m = d.get("mask")
            if m is not None and tuple(np.shape(m)) != (height, width):
                raise ValueError(f"{d['class']} mask has shape {np.shape(m)}, image is (H, W)=({height}, {width})")
    tag = metadata["tag"]
    kept = filter_detections(detections, tag, rules)
    correct, reason, details = judge(metadata, kept, classify_color, rules)
    details["threshold"] = rules.threshold_for(tag)
    details["image_size"] = [width, height]
    details["kept"] = {cls: [{"box": [float(v) for v in d["box"][:4]], "score": float(d["score"]),
                              "color": d.get("color")} for d in dets] for cls, dets in kept.items()}
    return correct, reason, details


# ----------------------------------------------------------------------------------------------
# Summary (summary_scores.py)
# ----------------------------------------------------------------------------------------------

def _prompt_key(row: Mapping[str, Any]) -> str:
    # The official summary groups prompts by the metadata JSON string; rows that carry it are grouped the
    # same way, others by prompt_index (equivalent: the 553 official metadata lines are all distinct).
    if "metadata" in row:
        m = row["metadata"]
        return m if isinstance(m, str) else json.dumps(m)
    return f"prompt_index={row['prompt_index']}"


def summarize(rows: Sequence[Mapping[str, Any]], rules: GenEvalRules = OFFICIAL) -> dict:
    """Official summary of per-image rows ({tag, correct, metadata or prompt_index, ...}).

    Task accuracy = mean of `correct` over that task's images (image level, as summary_scores.py);
    overall = unweighted mean over the tasks present (the official code averages whatever tags occur;
    `missing_tasks` lists the official six that are absent so a partial run cannot pass for a full one).
    images_correct = mean over all images; prompts_any_correct = share of prompts with >= 1 correct image.
    """
    if not rows:
        raise ValueError("summarize needs at least one scored image")
    by_tag: dict[str, list[bool]] = {}
    by_prompt: dict[str, bool] = {}
    for r in rows:
        by_tag.setdefault(r["tag"], []).append(bool(r["correct"]))
        key = _prompt_key(r)
        by_prompt[key] = by_prompt.get(key, False) or bool(r["correct"])
    order = [t for t in rules.tasks if t in by_tag] + sorted(t for t in by_tag if t not in rules.tasks)
    tasks = {t: {"accuracy": float(np.mean(by_tag[t])), "correct": int(sum(by_tag[t])), "images": len(by_tag[t])}
             for t in order}
    flat = [c for t in order for c in by_tag[t]]
    return {
        "overall": float(np.mean([tasks[t]["accuracy"] for t in order])),
        "tasks": tasks,
        "missing_tasks": [t for t in rules.tasks if t not in by_tag],
        "images": len(flat),
        "prompts": len(by_prompt),
        "images_correct": float(np.mean(flat)),
        "prompts_any_correct": float(np.mean(list(by_prompt.values()))),
    }
