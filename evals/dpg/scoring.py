"""DPG-Bench scoring rules (pure: no model, no torch).

Two modes, recorded in every output:

``official`` reproduces ``TencentQQGYLab/ELLA dpg_bench/compute_dpg_bench.py`` (run through
``dist_eval.sh``: 2x2 grid, ``--pic-num 4``, VQA = mPLUG-large) with its bugs:
  * CSV: the first *data* row (the row right after the header) is dropped (``if i == 0: continue``);
    an ``item_id`` seen again after another item starts a fresh question group (the earlier group is
    lost); a repeated ``proposition_id`` inside an item overwrites the earlier one in place.
  * answer -> score: ``1.0`` iff the VQA answer string is exactly ``"yes"`` (no strip, no lower-case).
  * dependency rule: questions are visited in CSV order and, for each listed parent (0 = none), a
    parent whose *current* score is 0 zeroes the child and stops the scan. Scores are updated in
    place, so a zeroed parent visited earlier also zeroes its children (transitive in CSV order).
    A parent id that is not a question of the item (the first item loses question 1 through the row
    skip) raises ``KeyError`` in the official script; the prompt is then reported as
    "Failed filename" and left out of every average. We mark it ``status="failed"`` and do the same.
  * image (tile) score = mean over the item's questions; prompt score = mean over the 4 tiles;
    DPG = ``np.mean`` over prompts x 100.
  * categories: each question's raw score (before the dependency rule) from the **last tile only**,
    pooled per category over all questions of all scored prompts, mean x 100. The category is the
    ``tuple`` column before ``(`` (L2, e.g. ``"entity - whole"``); L1 is the L2 text before ``-``.

Deliberate differences from the official script in both modes (they change no score): images come
from the question file's item ids (a missing ``<item_id>.png`` raises instead of scoring whatever
``os.listdir`` finds); the CSV is read as text, so a file whose ``dependency`` cells are all single
integers (which pandas reads as int and the official ``.split(',')`` crashes on) parses fine; a grid
of the wrong size raises instead of being cropped or black-padded.

Checked against the official script itself (run outside the repo with a scripted VQA on the test
case, a 90-prompt world CSV and a quirks CSV): overall, L1 and L2 numbers equal to 1e-9.

``fixed`` corrects these: every CSV row is used (the row skip is gone; repeated item ids are merged;
duplicate question ids, unknown parents and dependency cycles raise), answers are normalised by
:func:`to_yes_no`, the dependency rule is transitive and independent of row order (a question scores
0 if any ancestor was answered no), and categories pool the dependency-applied scores of **every
tile**. Prompt and overall averaging are as in ``official``.
"""
from __future__ import annotations

import csv
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from snapgen.io import open_image_rgb

Mode = Literal["official", "fixed"]
MODES: tuple[str, ...] = ("official", "fixed")
CSV_COLUMNS: tuple[str, ...] = (
    "item_id", "text", "keywords", "proposition_id", "dependency",
    "category_broad", "category_detailed", "tuple", "question_natural_language",
)
L1_CATEGORIES: tuple[str, ...] = ("entity", "attribute", "relation", "global", "other")
CSV_SOURCE_HINT = (
    "DPG-Bench's question file is not shipped with snapgen-bench. Get 'dpg_bench/dpg_bench.csv' "
    "from the ELLA repository (https://github.com/TencentQQGYLab/ELLA, folder dpg_bench/) and pass "
    "its path."
)
ANSWER_RULES = {
    "official": "score 1 iff the answer string == 'yes' exactly",
    "fixed": "to_yes_no: lower-case, strip spaces and punctuation; yes iff the first word is 'yes'",
}


class MissingQuestionsError(FileNotFoundError):
    """The DPG-Bench question CSV the user must provide is absent."""


@dataclass(frozen=True)
class Question:
    item_id: str                    # prompt id; also the image file stem ("0" -> 0.png)
    qid: int                        # proposition_id (1-based inside the item)
    question: str                   # question_natural_language, asked to the VQA model
    dependency: tuple[int, ...]     # parent qids; (0,) = root
    tuple_text: str                 # DSG tuple, e.g. "attribute - color (circle, red)"
    category_broad: str             # CSV category_broad (kept for reports; not used to score)
    category_detailed: str          # CSV category_detailed
    csv_row: int                    # 0-based data-row index in the CSV (header excluded)

    @property
    def category(self) -> str:
        """L2 category as the official scorer derives it: the tuple text before '('."""
        return self.tuple_text.split("(")[0].strip()

    @property
    def category_l1(self) -> str:
        return category_l1(self.category)


def category_l1(category: str) -> str:
    return category.split("-")[0].strip()


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown DPG-Bench mode {mode!r}; choose one of {MODES}")


def to_yes_no(answer: str) -> bool:
    """Normalised yes/no rule (``fixed`` mode and every non-official use).

    Lower-case, trim whitespace, split on whitespace, strip punctuation from the first word; the
    answer is *yes* iff that word is ``"yes"`` ("Yes." / "yes, it is" -> True; "no", "yeah", "" ->
    False).
    """
    words = str(answer).strip().lower().split()
    return bool(words) and words[0].strip(string.punctuation) == "yes"


def answer_score(answer: str, mode: Mode) -> float:
    """Raw (pre-dependency) score of one VQA answer."""
    if mode == "official":
        return float(answer == "yes")
    return float(to_yes_no(answer))


# ----------------------------------------------------------------------------- CSV


def _read_csv_rows(csv_path: str | Path) -> list[dict[str, str]]:
    path = Path(csv_path).expanduser() if csv_path else None
    if path is None or not path.is_file():
        raise MissingQuestionsError(f"DPG-Bench questions: '{path}' does not exist. {CSV_SOURCE_HINT}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing DPG-Bench columns {missing}; header is {reader.fieldnames}")
        # pandas (used by the official scorer) skips blank lines; so do we.
        return [row for row in reader if any((v or "").strip() for v in row.values())]


def _parse_row(row: Mapping[str, str], index: int, path: str) -> Question:
    where = f"{path} data row {index} (item {row.get('item_id')!r})"
    try:
        qid = int(float(row["proposition_id"]))
        deps = tuple(int(d.strip()) for d in str(row["dependency"]).split(","))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: bad proposition_id/dependency ({e})") from None
    return Question(
        item_id=str(row["item_id"]).strip(), qid=qid, question=row["question_natural_language"],
        dependency=deps, tuple_text=row["tuple"], category_broad=row["category_broad"],
        category_detailed=row["category_detailed"], csv_row=index,
    )


def load_questions(csv_path: str | Path, mode: Mode) -> dict[str, list[Question]]:
    """Parse ``dpg_bench.csv`` into ``{item_id: [Question, ...]}`` (questions in CSV order)."""
    check_mode(mode)
    rows = _read_csv_rows(csv_path)
    parsed = [_parse_row(r, i, str(csv_path)) for i, r in enumerate(rows)]
    return _group_official(parsed) if mode == "official" else _group_fixed(parsed, str(csv_path))


def _group_official(parsed: list[Question]) -> dict[str, list[Question]]:
    groups: dict[str, dict[int, Question]] = {}
    previous = None
    for q in parsed[1:]:  # the official bug: data row 0 is skipped
        if q.item_id != previous:
            groups[q.item_id] = {}  # a non-contiguous repeat replaces the earlier group
        groups[q.item_id][q.qid] = q  # a repeated qid overwrites in place (dict keeps first position)
        previous = q.item_id
    return {item: list(qs.values()) for item, qs in groups.items()}


def _group_fixed(parsed: list[Question], path: str) -> dict[str, list[Question]]:
    groups: dict[str, dict[int, Question]] = {}
    for q in parsed:
        item = groups.setdefault(q.item_id, {})
        if q.qid in item:
            raise ValueError(f"{path}: item {q.item_id!r} repeats proposition_id {q.qid} "
                             f"(data rows {item[q.qid].csv_row} and {q.csv_row})")
        item[q.qid] = q
    for item_id, qs in groups.items():
        _check_graph(item_id, qs, path)
    return {item: list(qs.values()) for item, qs in groups.items()}


def _check_graph(item_id: str, qs: Mapping[int, Question], path: str) -> None:
    for q in qs.values():
        unknown = [p for p in q.dependency if p != 0 and p not in qs]
        if unknown:
            raise ValueError(f"{path}: item {item_id!r} question {q.qid} depends on unknown {unknown}")
    state: dict[int, int] = {}  # 1 = on the stack, 2 = done

    def visit(qid: int, stack: tuple[int, ...]) -> None:
        if state.get(qid) == 2:
            return
        if state.get(qid) == 1:
            raise ValueError(f"{path}: item {item_id!r} has a dependency cycle {stack + (qid,)}")
        state[qid] = 1
        for p in qs[qid].dependency:
            if p != 0:
                visit(p, stack + (qid,))
        state[qid] = 2

    for qid in qs:
        visit(qid, ())


# ----------------------------------------------------------------------------- grid


def split_grid(image, n: int = 2, tile_size: int | None = None) -> list:
    """Split an ``n x n`` grid image into tiles in the official order (row-major: TL, TR, BL, BR).

    The official script crops fixed ``--resolution`` boxes, silently cropping larger images and
    padding smaller ones with black. We refuse instead: the image must be square, divisible by
    ``n`` and, if ``tile_size`` is given, exactly ``n * tile_size`` pixels wide.
    """
    width, height = image.size
    if n < 1:
        raise ValueError(f"grid size must be >= 1, got {n}")
    if width != height or width % n != 0:
        raise ValueError(f"a DPG-Bench {n}x{n} grid must be square with a side divisible by {n}; "
                         f"got {width}x{height}")
    side = width // n
    if tile_size is not None and side != tile_size:
        raise ValueError(f"expected {n}x{n} tiles of {tile_size}px ({n * tile_size}px image), got "
                         f"{width}x{height} ({side}px tiles)")
    return [image.crop((c * side, r * side, (c + 1) * side, (r + 1) * side))
            for r in range(n) for c in range(n)]


# ----------------------------------------------------------------------------- one prompt


class _MissingParent(KeyError):
    """The official scorer's KeyError: a listed parent is not a question of the item."""


def _official_tile(questions: Sequence[Question], raw: Mapping[int, float]) -> dict[int, float]:
    scores = dict(raw)  # updated in place while visiting questions in CSV order, like the original
    for q in questions:
        for parent in q.dependency:
            if parent == 0:
                continue
            if parent not in scores:
                raise _MissingParent(parent)
            if scores[parent] == 0:
                scores[q.qid] = 0.0
                break
    return scores


def _fixed_tile(questions: Sequence[Question], raw: Mapping[int, float]) -> dict[int, float]:
    by_id = {q.qid: q for q in questions}
    done: dict[int, float] = {}

    def effective(qid: int, seen: frozenset[int]) -> float:
        if qid not in by_id:
            raise ValueError(f"item {questions[0].item_id!r}: unknown parent question {qid}")
        if qid in seen:
            raise ValueError(f"item {questions[0].item_id!r}: dependency cycle through {qid}")
        if qid not in done:
            parents = [p for p in by_id[qid].dependency if p != 0]
            ok = all(effective(p, seen | {qid}) > 0 for p in parents)
            done[qid] = raw[qid] if ok else 0.0
        return done[qid]

    return {q.qid: effective(q.qid, frozenset()) for q in questions}


def _check_answers(questions: Sequence[Question], answers_per_tile: Sequence[Mapping[int, str]]) -> None:
    if not questions:
        raise ValueError("score_prompt needs at least one question")
    if not answers_per_tile:
        raise ValueError(f"item {questions[0].item_id!r}: no tiles answered")
    wanted = {q.qid for q in questions}
    for t, answers in enumerate(answers_per_tile):
        if set(answers) != wanted:
            raise ValueError(f"item {questions[0].item_id!r} tile {t}: answers for qids "
                             f"{sorted(answers)} but the questions are {sorted(wanted)}")


def score_prompt(questions: Sequence[Question], answers_per_tile: Sequence[Mapping[int, str]],
                 mode: Mode) -> dict:
    """Score one prompt from its questions and the VQA answers of each tile (``{qid: answer}``).

    Returns ``status`` ("ok" / "failed"), ``tile_scores``, ``prompt_score`` (0..1), the per-question
    answers / raw / scored values per tile, and ``category_scores``: the per-question values this
    prompt contributes to each L2 category (which values depends on ``mode``; see module doc).
    """
    check_mode(mode)
    _check_answers(questions, answers_per_tile)
    raw = [{q.qid: answer_score(a[q.qid], mode) for q in questions} for a in answers_per_tile]
    row = {
        "item_id": questions[0].item_id, "mode": mode, "status": "ok", "error": None,
        "tile_scores": [], "prompt_score": None, "category_scores": {},
        "questions": [{"qid": q.qid, "question": q.question, "tuple": q.tuple_text,
                       "category": q.category, "dependency": list(q.dependency),
                       "answers": [a[q.qid] for a in answers_per_tile],
                       "raw": [r[q.qid] for r in raw], "scores": None} for q in questions],
    }
    try:
        tiles = [(_official_tile if mode == "official" else _fixed_tile)(questions, r) for r in raw]
    except _MissingParent as e:  # official: "Failed filename", prompt dropped from every average
        row.update(status="failed", error=f"KeyError: parent question {e.args[0]} is not in the item")
        return row
    row["tile_scores"] = [sum(s.values()) / len(s) for s in tiles]
    row["prompt_score"] = sum(row["tile_scores"]) / len(row["tile_scores"])
    for entry, q in zip(row["questions"], questions):
        entry["scores"] = [s[q.qid] for s in tiles]
    category_values = [raw[-1]] if mode == "official" else tiles  # official: last tile, no deps
    for q in questions:
        row["category_scores"].setdefault(q.category, []).extend(s[q.qid] for s in category_values)
    return row


# ----------------------------------------------------------------------------- all prompts


def summarize(rows: Sequence[Mapping], mode: Mode) -> dict:
    """DPG-Bench overall and category scores (x100) from :func:`score_prompt` rows of one mode."""
    check_mode(mode)
    wrong = sorted({r["mode"] for r in rows} - {mode})
    if wrong:
        raise ValueError(f"summarize(mode={mode!r}) got rows scored in mode(s) {wrong}")
    ok = [r for r in rows if r["status"] == "ok"]
    l2: dict[str, list[float]] = {}
    for r in ok:
        for category, values in r["category_scores"].items():
            l2.setdefault(category, []).extend(values)
    l1: dict[str, list[float]] = {}
    for category, values in l2.items():
        l1.setdefault(category_l1(category), []).extend(values)

    def x100(values: Sequence[float]) -> float | None:
        return float(np.mean(values)) * 100 if len(values) else None

    return {
        "mode": mode,
        "answer_rule": ANSWER_RULES[mode],
        "higher_is_better": True,
        "overall_x100": x100([r["prompt_score"] for r in ok]),
        "categories_x100": {c: x100(l1.get(c, [])) for c in L1_CATEGORIES},
        "other_l1_categories_x100": {c: x100(v) for c, v in sorted(l1.items()) if c not in L1_CATEGORIES},
        "l2_categories_x100": {c: x100(v) for c, v in sorted(l2.items())},
        "category_counts": {c: len(l1.get(c, [])) for c in L1_CATEGORIES},
        "n_prompts": len(rows),
        "n_scored": len(ok),
        "n_failed": len(rows) - len(ok),
        "failed": {r["item_id"]: r["error"] for r in rows if r["status"] != "ok"},
    }


def score_folder(images_dir: str | Path, questions: Mapping[str, Sequence[Question]], vqa, mode: Mode,
                 *, grid: int = 2, tile_size: int | None = None, ext: str = ".png",
                 progress: bool = False) -> tuple[list[dict], dict]:
    """Score the official layout: one ``<item_id>.png`` per prompt, each an ``grid x grid`` grid.

    ``vqa`` is any object with ``answer(image, question) -> str`` (see :mod:`evals.dpg.vqa`).
    Every prompt of ``questions`` must have its image; a missing one raises before any VQA call.
    """
    check_mode(mode)
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"DPG-Bench images folder '{root}' does not exist")
    paths = {item: root / f"{item}{ext}" for item in questions}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} DPG-Bench images are missing in "
                                f"'{root}' (one {grid}x{grid} grid per prompt, named <item_id>{ext}), "
                                f"e.g. {missing[:5]}")
    items = list(questions.items())
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc=f"DPG-Bench ({mode})")
    rows = []
    for item_id, qs in items:
        tiles = split_grid(open_image_rgb(paths[item_id]), grid, tile_size)   # corrupt grids are named
        answers = [{q.qid: _ask(vqa, tile, q.question) for q in qs} for tile in tiles]
        rows.append({**score_prompt(qs, answers, mode), "image": str(paths[item_id])})
    summary = summarize(rows, mode)
    summary.update(grid=grid, tile_size=tile_size, images_dir=str(root))
    if hasattr(vqa, "info"):
        summary["vqa"] = vqa.info()
    return rows, summary


def _ask(vqa, tile, question: str) -> str:
    answer = vqa.answer(tile, question)
    if not isinstance(answer, str):
        raise TypeError(f"{type(vqa).__name__}.answer must return str, got {type(answer).__name__}")
    return answer
