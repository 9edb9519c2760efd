"""DPG-Bench on the synthetic world (``snapgen.data.world``): questions and an exact VQA backend.

:func:`make_world_dpg` turns GenEval-format world metadata into a DPG-Bench question file in the
official CSV format, with a dependency graph:

==========  =====================================  =======================================  =========
category    question text                          tuple                                    parents
==========  =====================================  =======================================  =========
entity      ``Is there a circle?``                 ``entity - whole (circle)``              0 (root)
attribute   ``Is the circle red?``                 ``attribute - color (circle, red)``      entity
other       ``Are there exactly 3 circles?``       ``other - count (circle, ==3)``          entity
relation    ``Is the circle left of the square?``  ``relation - spatial (circle, square,    both
                                                   left of)``                               entities
global      ``Are there any shapes?``              ``global - scene (shapes)``              0 (root)
==========  =====================================  =======================================  =========

:class:`WorldVQA` answers exactly these templates from ``detect(tile, cfg)``; any other question
raises (no silent guessing). The question text and the ``tuple`` column carry the same facts.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path
from typing import Mapping, Sequence

from snapgen.data import world
from snapgen.io import atomic_write_text

from .scoring import CSV_COLUMNS
from .vqa import VQABackend

RELATIONS: tuple[str, ...] = world.RELATIONS
GLOBAL_QUESTION = "Are there any shapes?"
GLOBAL_TUPLE = "global - scene (shapes)"


def plural(name: str) -> str:
    if name in world.WORLD_PLURALS:
        return world.WORLD_PLURALS[name]
    return name + ("es" if name.endswith(("s", "x", "z", "ch", "sh")) else "s")


def article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


# ----------------------------------------------------------------------------- questions


def _row(item_id: str, prompt: str, keywords: str, qid: int, deps: Sequence[int], broad: str,
         detailed: str, tuple_text: str, question: str) -> dict[str, str]:
    values = (item_id, prompt, keywords, str(qid), ",".join(str(d) for d in deps), broad, detailed,
              tuple_text, question)
    return dict(zip(CSV_COLUMNS, values))


def _item_rows(item_id: str, meta: Mapping) -> list[dict[str, str]]:
    include = list(meta["include"])
    classes = list(dict.fromkeys(obj["class"] for obj in include))  # unique, in prompt order
    keywords = ", ".join(classes)
    rows: list[dict[str, str]] = []
    entity_qid: dict[str, int] = {}

    def add(*fields) -> None:  # qids are 1-based in row order
        rows.append(_row(item_id, meta["prompt"], keywords, len(rows) + 1, *fields))

    for name in classes:
        entity_qid[name] = len(rows) + 1
        add((0,), "entity", "whole", f"entity - whole ({name})", f"Is there {article(name)} {name}?")
    for obj in include:
        name, parent = obj["class"], entity_qid[obj["class"]]
        if obj.get("color"):
            color = obj["color"]
            add((parent,), "attribute", "color", f"attribute - color ({name}, {color})",
                f"Is the {name} {color}?")
        if int(obj.get("count", 1)) > 1:
            n = int(obj["count"])
            add((parent,), "other", "count", f"other - count ({name}, =={n})",
                f"Are there exactly {n} {plural(name)}?")
        if obj.get("position"):
            relation, index = obj["position"][0], int(obj["position"][1])
            if relation not in RELATIONS:
                raise ValueError(f"item {item_id}: unknown relation {relation!r}; known {RELATIONS}")
            other = include[index]["class"]
            add((parent, entity_qid[other]), "relation", "spatial",
                f"relation - spatial ({name}, {other}, {relation})",
                f"Is the {name} {relation} the {other}?")
    add((0,), "global", "scene", GLOBAL_TUPLE, GLOBAL_QUESTION)
    return rows


def make_world_dpg(metadata_list: Sequence[Mapping], id_prefix: str = "world") -> tuple[dict[str, str], list[dict]]:
    """GenEval-format world metadata -> (``{item_id: prompt}``, DPG-Bench CSV rows).

    ``item_id`` is ``f"{id_prefix}{index}"``: non-numeric on purpose, since pandas (the official
    scorer's reader) would turn all-numeric ids into ints that never match an image file name.
    """
    prompts: dict[str, str] = {}
    rows: list[dict] = []
    for index, meta in enumerate(metadata_list):
        item_id = f"{id_prefix}{index}"
        prompts[item_id] = meta["prompt"]
        rows.extend(_item_rows(item_id, meta))
    return prompts, rows


def write_dpg_csv(rows: Sequence[Mapping[str, str]], path: str | Path) -> Path:
    """Write rows in the official ``dpg_bench.csv`` column order (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- exact VQA


class WorldVQA(VQABackend):
    """Answers :func:`make_world_dpg`'s questions exactly from the world's detector.

    Rules (any detection counts unless stated): entity - at least one ``class``; color - some
    detection of the class has that color; count - exactly ``n`` detections of the class; relation -
    some pair (A, B) holds the relation under ``snapgen.data.world.geneval_relations`` (GenEval's
    rule, the one the world's GenEval port uses); global - at least one detection.
    # PAPER-UNKNOWN: DPG-Bench has no geometric rule (its VQA model judges); chose GenEval's so the
    # world's two benchmarks agree; the threshold defaults to cfg.position_threshold.
    """

    name = "world-exact"

    def __init__(self, cfg: world.WorldConfig | None = None, *, position_threshold: float | None = None,
                 min_score: float = 0.0):
        self.cfg = cfg if cfg is not None else world.WorldConfig()  # passed to world.detect()
        self.position_threshold = (self.cfg.position_threshold if position_threshold is None
                                   else position_threshold)          # GenEval box-shrink factor
        self.min_score = min_score                      # detections below this score are ignored
        self._cache: tuple[str, list] | None = None     # (image digest, detections) of the last tile
        self._patterns = self._build_patterns()

    def _build_patterns(self) -> list[tuple[str, re.Pattern]]:
        names = sorted(world.WORLD_CLASSES, key=len, reverse=True)
        cls = "|".join(re.escape(n) for n in names)
        plurals = "|".join(re.escape(plural(n)) for n in names)
        colors = "|".join(re.escape(c) for c in sorted(world.WORLD_COLORS, key=len, reverse=True))
        rel = "|".join(re.escape(r) for r in RELATIONS)
        self._singular = {plural(n): n for n in names}
        return [
            ("entity", re.compile(rf"Is there an? (?P<a>{cls})\?")),
            ("color", re.compile(rf"Is the (?P<a>{cls}) (?P<color>{colors})\?")),
            ("count", re.compile(rf"Are there exactly (?P<n>\d+) (?P<a>{plurals})\?")),
            ("relation", re.compile(rf"Is the (?P<a>{cls}) (?P<rel>{rel}) the (?P<b>{cls})\?")),
            ("global", re.compile(re.escape(GLOBAL_QUESTION))),
        ]

    def detections(self, image) -> list[dict]:
        digest = hashlib.sha256(image.tobytes() + repr((image.size, image.mode)).encode()).hexdigest()
        if self._cache is None or self._cache[0] != digest:
            found = [d for d in world.detect(image, self.cfg) if d.get("score", 1.0) >= self.min_score]
            self._cache = (digest, found)
        return self._cache[1]

    def answer(self, image, question: str) -> str:
        for kind, pattern in self._patterns:
            match = pattern.fullmatch(question.strip())
            if match:
                return "yes" if self._judge(kind, match, self.detections(image)) else "no"
        raise ValueError(f"WorldVQA cannot parse question {question!r}: not a make_world_dpg template")

    def _judge(self, kind: str, m: re.Match, dets: list[dict]) -> bool:
        if kind == "global":
            return len(dets) > 0
        if kind == "count":
            name = self._singular[m["a"]]
            return sum(d["class"] == name for d in dets) == int(m["n"])
        of_a = [d for d in dets if d["class"] == m["a"]]
        if kind == "entity":
            return len(of_a) > 0
        if kind == "color":
            return any(d.get("color") == m["color"] for d in of_a)
        of_b = [d for d in dets if d["class"] == m["b"]]
        return any(m["rel"] in world.geneval_relations(a["box"], b["box"], self.position_threshold)
                   for a in of_a for b in of_b if a is not b)

    def info(self) -> dict:
        return {"name": self.name, "position_threshold": self.position_threshold,
                "min_score": self.min_score}
