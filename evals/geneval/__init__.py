"""GenEval (djghosh13/geneval) without mmdet: official rules as pure functions + detector/colour backends.

    from evals.geneval import GenEvalRules, evaluate_image, summarize, score_folder
    from evals.geneval.detectors import Mask2FormerDetector, WorldDetector
    from evals.geneval.colors import ClipColorClassifier

Backends (torch/transformers/open_clip) are imported from their own modules so that the rules stay light.
"""
from evals.geneval.rules import (OFFICIAL, TASKS, GenEvalRules, box_iou, evaluate_image, filter_detections,
                                 group_by_class, judge, relations, summarize)
from evals.geneval.score import list_samples, score_folder

__all__ = ["OFFICIAL", "TASKS", "GenEvalRules", "box_iou", "evaluate_image", "filter_detections",
           "group_by_class", "judge", "relations", "summarize", "list_samples", "score_folder"]
