"""Why GenEval images fail: each image's verdict sorted into one failure kind, per task.

    python -m evals.run failures results/geneval/world-tiny-geneval.json
    python -m evals.run failures A.json B.json --json            # one table per record, or JSON

GenEval's overall is a fraction correct; it does not say whether a model draws the wrong number of objects, the
right objects in the wrong place, or no recognisable object at all, and each calls for a different fix. The judge
(``evals.geneval.rules.judge``) already writes a reason per failing image, one line per failed clause, clauses in
prompt order; an image's kind is that of its **first** reason line (the first clause it fails):

    missing         "expected C>=n, found 0": no object of the class passes the task's confidence threshold
                    (0.3; 0.9 for counting)
    too_few         "expected C>=n, found k", 0 < k < n
    too_many        "expected C<n, found m": the counting task's exclude clause
    wrong_color     "expected COLOR C>=n, found ...; and ...": the objects are there, their colour is not
    wrong_position  "expected C REL target, found ..." or "no target for C to be REL"

A reason that fits none of these is an error naming it (no silent "other" bucket). Pure function of the record's
samples file, so it is a view of a record, not a new record.
"""
from __future__ import annotations

import json
import re
from collections import Counter

NAME = "failures"
HELP = "per GenEval task, how many images fail by a missing object, a wrong count, colour or position"

KINDS = ("correct", "missing", "too_few", "too_many", "wrong_color", "wrong_position")
_COUNT = re.compile(r"^expected .+>=\d+, found (?P<k>\d+)$")
_EXCLUDE = re.compile(r"^expected .+<\d+, found \d+$")
_COLOR = re.compile(r"^expected .+>=\d+, found \d+ \S+; and ")
_POSITION = re.compile(r"^(expected .+ target, found .* target|no target for .+ to be .+)$")


def failure_kind(correct: bool, reason: str) -> str:
    """The kind (one of ``KINDS``) of one judged image from its verdict and the judge's reason string."""
    if correct:
        return "correct"
    first = (reason or "").split("\n", 1)[0].strip()
    if _COLOR.match(first):                 # before _COUNT: a colour reason also starts "expected ... >=n, found"
        return "wrong_color"
    m = _COUNT.match(first)
    if m:
        return "missing" if int(m["k"]) == 0 else "too_few"
    if _EXCLUDE.match(first):
        return "too_many"
    if _POSITION.match(first):
        return "wrong_position"
    raise ValueError(f"GenEval reason {first!r}: not a reason the judge (evals.geneval.rules.judge) writes; was the "
                     "samples file written by another tool?")


def failure_table(rows: list[dict]) -> dict[str, dict[str, int]]:
    """``{task: {kind: images}}`` over a record's sample rows (``evals.records.read_rows``), every kind present
    (0 when none), tasks in order of first appearance."""
    table: dict[str, Counter] = {}
    for r in rows:
        if "correct" not in r or "tag" not in r:
            raise ValueError(f"sample row {r.get('filename', r)!r} has no verdict: not a GenEval samples file")
        table.setdefault(r["tag"], Counter())[failure_kind(bool(r["correct"]), r.get("reason", ""))] += 1
    return {tag: {k: c[k] for k in KINDS} for tag, c in table.items()}


def render(name: str, table: dict[str, dict[str, int]]) -> str:
    head = "| task | images | " + " | ".join(k.replace("_", " ") for k in KINDS) + " |"
    lines = [f"### {name}", "", head, "|---|" + "---:|" * (len(KINDS) + 1)]
    total = Counter()
    for tag, c in table.items():
        total.update(c)
        lines.append(f"| {tag} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in KINDS) + " |")
    lines.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[k]) for k in KINDS) + " |")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("records", nargs="+", metavar="RECORD", help="GenEval record JSON files (with their samples file)")
    p.add_argument("--json", action="store_true", help="print {record: {task: {kind: images}}} as JSON")


def run(args) -> int:
    from evals.records import read_rows
    from evals.report import load_record

    out = {}
    for path in args.records:
        rec = load_record(path)
        bench = rec.get("protocol", {}).get("benchmark")
        if bench != "geneval":
            raise ValueError(f"{path}: a {bench or rec.get('kind')!r} record; `failures` reads GenEval records "
                             "(results/geneval/*.json)")
        out[str(path)] = failure_table(read_rows(rec, path))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("\n\n".join(render(p, t) for p, t in out.items()))
    return 0
