"""DPG-Bench (ELLA, ``dpg_bench/``) without ModelScope: question file, 2x2-grid scoring, VQA backends.

``official`` mode reproduces ``compute_dpg_bench.py`` including its bugs; ``fixed`` corrects them
(see :mod:`evals.dpg.scoring`). The mode is recorded in every row and summary.

    questions = load_questions("dpg_bench.csv", "fixed")
    vqa = TransformersVQA.from_pretrained("/models/blip-vqa-base")
    rows, summary = score_folder("images/", questions, vqa, "fixed")
"""
from .scoring import (
    CSV_COLUMNS, L1_CATEGORIES, MODES, MissingQuestionsError, Mode, Question, answer_score,
    load_questions, score_folder, score_prompt, split_grid, summarize, to_yes_no,
)
from .vqa import MPlugVQA, TransformersVQA, VQABackend

__all__ = [
    "CSV_COLUMNS", "L1_CATEGORIES", "MODES", "MissingQuestionsError", "Mode", "Question",
    "answer_score", "load_questions", "score_folder", "score_prompt", "split_grid", "summarize",
    "to_yes_no", "MPlugVQA", "TransformersVQA", "VQABackend",
]
