"""Object detectors for GenEval behind one interface: ``detector(image) -> {class: [detection]}``.

Detections are raw (all classes, unfiltered); :func:`evals.geneval.rules.filter_detections` applies
GenEval's thresholds. Backends:

* :class:`Mask2FormerDetector`  transformers' Mask2Former (COCO instance segmentation), CPU or GPU, no mmdet.
* :class:`MMDetDetector`        the official mmdet 2.x model, only where ``mmdet`` is importable.
* :class:`WorldDetector`        the synthetic world's exact pixel reader (``snapgen.data.world.detect``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import torch
from PIL import Image

from evals.geneval.rules import Detection, group_by_class
from snapgen.io import MissingWeightsError, require_path

# GenEval's 80 class names in COCO label order (djghosh13/geneval evaluation/object_names.txt).
GENEVAL_OBJECTS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
HOW_TO_GET_MASK2FORMER = (
    "Save a COCO *instance* Mask2Former on a machine with internet, e.g. "
    "Mask2FormerForUniversalSegmentation.from_pretrained('facebook/mask2former-swin-small-coco-instance')"
    ".save_pretrained(DIR) plus the same for Mask2FormerImageProcessor, and pass DIR.")
HOW_TO_GET_MMDET = (
    "Use GenEval's evaluation/download_models.sh (mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth) and mmdet "
    "2.x's configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py.")

# COCO label spellings used by detectors -> GenEval's names (object_names.txt); everything else is identical.
COCO_ALIASES: dict[str, str] = {
    "mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard",
    "tvmonitor": "tv", "tv monitor": "tv", "motorbike": "motorcycle", "aeroplane": "airplane",
    "sofa": "couch", "pottedplant": "potted plant", "diningtable": "dining table",
    "hair dryer": "hair drier", "cellphone": "cell phone", "mobile phone": "cell phone",
}


class Detector(Protocol):
    def __call__(self, image: Image.Image) -> dict[str, list[Detection]]: ...


def load_object_names(path: str | Path | None = None) -> list[str]:
    """GenEval's 80 class names in COCO order: the built-in list, or the lines of ``path``."""
    if path is None:
        return list(GENEVAL_OBJECTS)
    p = require_path(path, "GenEval object_names.txt", "It ships in djghosh13/geneval at evaluation/object_names.txt.")
    names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    if len(names) != 80:
        raise ValueError(f"'{p}' lists {len(names)} classes; GenEval's object_names.txt has 80")
    return names


def _normalise(label: str) -> str:
    name = re.sub(r"[_\-]+", " ", label.strip().lower())
    name = re.sub(r"\s+", " ", name)
    return COCO_ALIASES.get(name, name)


def map_labels(id2label: Mapping[int, str], object_names: list[str], strict: bool = True,
               source: str = "model") -> dict[int, str]:
    """label id -> GenEval class name; raises unless every GenEval class is covered exactly once.

    With ``strict`` a label outside GenEval's 80 (a panoptic 'sky', an ADE20K class) also raises: such a
    model is not the COCO instance model GenEval was calibrated on, and the official tool would silently
    score ~0 with it.
    """
    wanted = set(object_names)
    mapping = {int(i): _normalise(lbl) for i, lbl in id2label.items()}
    covered = [n for n in mapping.values() if n in wanted]
    missing = sorted(wanted - set(covered))
    extra = sorted({lbl for i, lbl in id2label.items() if mapping[int(i)] not in wanted})
    dupes = sorted({n for n in covered if covered.count(n) > 1})
    if missing or dupes or (strict and extra):
        raise ValueError(
            f"{source}'s id2label ({len(id2label)} labels) does not match GenEval's 80 COCO instance classes: "
            f"missing {missing[:10]}{'...' if len(missing) > 10 else ''} ({len(missing)}), "
            f"unknown {extra[:10]}{'...' if len(extra) > 10 else ''} ({len(extra)}), duplicated {dupes}. "
            "GenEval needs a COCO instance-segmentation detector (e.g. Mask2Former Swin-S COCO instance); a wrong "
            "detector config gives plausible-looking scores near 0.")
    return {i: n for i, n in mapping.items() if n in wanted}


def mask_to_box(mask: np.ndarray) -> list[float]:
    """Tight box [x0, y0, x1, y1] of a (H, W) bool mask, x1/y1 exclusive (mmdet's mask2bbox)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)]


# ----------------------------------------------------------------------------------------------
# transformers Mask2Former
# ----------------------------------------------------------------------------------------------

class Mask2FormerDetector:
    """COCO instance Mask2Former through transformers. Scores = class prob x mean mask prob (the same
    definition as mmdet's Mask2Former), top num_queries (class, query) pairs, boxes = tight mask boxes.

    PAPER-DEVIATION: the public transformers checkpoints are the original Mask2Former (Detectron2) weights,
    not mmdet's re-trained Swin-S; and transformers resamples mask logits through a fixed 384x384 grid before
    resizing to the image. Scores can differ slightly from the official tool; record the weights' hash.
    """

    def __init__(self, model, processor, label_to_class: dict[int, str], device: str = "cpu",
                 shortest_edge: int = 800, longest_edge: int = 1333, score_floor: float = 0.3,
                 source: str | None = None):
        self.model = model.eval().to(device)
        self.processor = processor
        self.label_to_class = label_to_class    # model label id -> GenEval class name
        self.device = device
        self.size = {"shortest_edge": shortest_edge, "longest_edge": longest_edge}  # mmdet test scale (1333, 800)
        self.score_floor = score_floor          # drop scores below this early; GenEval keeps only > 0.3
        self.source = source

    @classmethod
    def from_pretrained(cls, local_dir: str | Path, object_names: list[str] | None = None, device: str = "cpu",
                        strict_labels: bool = True, **kwargs: Any) -> "Mask2FormerDetector":
        from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        root = require_path(local_dir, "Mask2Former (COCO instance) folder for GenEval", HOW_TO_GET_MASK2FORMER,
                            must_contain=("config.json",))
        weights = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
        if not any((root / w).exists() for w in weights):
            raise MissingWeightsError(f"Mask2Former weights: none of {weights} in '{root}'. {HOW_TO_GET_MASK2FORMER}")
        model = Mask2FormerForUniversalSegmentation.from_pretrained(str(root))
        label_to_class = map_labels(model.config.id2label, object_names or load_object_names(),
                                    strict=strict_labels, source=f"Mask2Former at '{root}'")
        if (root / "preprocessor_config.json").exists():
            processor = Mask2FormerImageProcessor.from_pretrained(str(root))
        else:                                   # defaults = ImageNet mean/std, size divisor 32, like mmdet
            processor = Mask2FormerImageProcessor()
        return cls(model, processor, label_to_class, device=device, source=str(root), **kwargs)

    @torch.inference_mode()
    def __call__(self, image: Image.Image) -> dict[str, list[Detection]]:
        image = image.convert("RGB")
        inputs = self.processor(images=image, size=self.size, return_tensors="pt")
        outputs = self.model(**{k: v.to(self.device) for k, v in inputs.items()})  # pixel_values (1, 3, H', W')
        result = self.processor.post_process_instance_segmentation(
            outputs, threshold=self.score_floor, target_sizes=[(image.height, image.width)],
            return_binary_maps=True)[0]
        dets = []
        for k, seg in enumerate(result["segments_info"]):
            cls_name = self.label_to_class.get(seg["label_id"])
            if cls_name is None:
                continue
            mask = result["segmentation"][k].cpu().numpy() > 0                           # (H, W) bool
            dets.append({"class": cls_name, "box": mask_to_box(mask), "score": float(seg["score"]),
                         "mask": mask, "color": None})
        return group_by_class(sorted(dets, key=lambda d: -d["score"]))


# ----------------------------------------------------------------------------------------------
# Official mmdet model
# ----------------------------------------------------------------------------------------------

class MMDetDetector:
    """The official GenEval detector (mmdet 2.x ``init_detector`` / ``inference_detector``). Needs mmdet,
    which this project does not install (see PEERS.md pain point 1); use it to cross-check the port."""

    def __init__(self, config_path: str | Path, checkpoint_path: str | Path, device: str = "cuda",
                 object_names: list[str] | None = None):
        try:
            from mmdet.apis import inference_detector, init_detector
        except ImportError as e:
            raise ImportError("MMDetDetector needs mmdet 2.x with mmcv-full 1.x (GenEval's environment), which is "
                              "not installed here; use Mask2FormerDetector instead, or install mmdet to "
                              "cross-check against the official model.") from e
        cfg = require_path(config_path, "mmdet Mask2Former config", HOW_TO_GET_MMDET)
        ckpt = require_path(checkpoint_path, "mmdet Mask2Former checkpoint", HOW_TO_GET_MMDET)
        self._infer = inference_detector
        self.model = init_detector(str(cfg), str(ckpt), device=device)
        self.object_names = object_names or load_object_names()
        classes = getattr(self.model, "CLASSES", None) or getattr(self.model, "dataset_meta", {}).get("classes")
        if classes is not None:
            map_labels(dict(enumerate(classes)), self.object_names, source=f"mmdet model '{cfg}'")

    def __call__(self, image: Image.Image) -> dict[str, list[Detection]]:
        bgr = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()     # mmdet expects BGR arrays
        result = self._infer(self.model, bgr)
        bbox = result[0] if isinstance(result, tuple) else result
        segm = result[1] if isinstance(result, tuple) and len(result) > 1 else None
        out: dict[str, list[Detection]] = {}
        for idx, name in enumerate(self.object_names):
            for j, row in enumerate(bbox[idx]):                           # row = (x0, y0, x1, y1, score)
                mask = None if segm is None else np.asarray(segm[idx][j], dtype=bool)
                out.setdefault(name, []).append({"class": name, "box": [float(v) for v in row[:4]],
                                                 "score": float(row[4]), "mask": mask, "color": None})
        return out


# ----------------------------------------------------------------------------------------------
# Synthetic world
# ----------------------------------------------------------------------------------------------

class WorldDetector:
    """The synthetic world's exact reader; its detections carry "color", so no CLIP is needed."""

    def __init__(self, cfg: Any = None):
        from snapgen.data import world

        self._world = world
        self.cfg = cfg if cfg is not None else world.WorldConfig()
        self.classes = tuple(world.WORLD_CLASSES)

    def __call__(self, image: Image.Image) -> dict[str, list[Detection]]:
        return group_by_class(self._world.detect(image, self.cfg))
