"""A self-contained static HTML report of result records: look at the samples instead of reading numbers.

    python -m evals.run report results/geneval/world-tiny-geneval.json --out /tmp/report
    python -m evals.run report A.json B.json --out /tmp/ab          # + compare view (B - A, flipped samples)
    python -m evals.run report results/fid/*.json results/dpg/*.json --out /tmp/all --thumb 128

``DIR/index.html`` plus ``DIR/images/`` (copies of the sample images, thumbnailed to ``--thumb`` px): no server,
no external URL. Per record: scores with CIs and the protocol card; GenEval: every image with its kept
detections drawn (box, class, score, colour read), the verdict and the reason; DPG-Bench: every grid with its
tile scores and each question's answers and dependency-zeroed scores; FID/KID: generated samples beside reference
samples. Filters (record, task / mode, correct / incorrect) and sorting are plain JavaScript. With two or more
records of one benchmark, the compare view shows B - A per metric with the paired 95% CI (``evals.compare``) and
the samples whose verdict flipped, both images side by side. Check a rendered page with
``python -m evals.report.screenshot``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

NAME = "report"
HELP = "write a static HTML report (samples, detections, verdicts, compare view) of one or more records"


def add_arguments(p) -> None:
    from snapgen.cli import positive_int

    p.add_argument("records", nargs="+", metavar="RECORD", help="record JSON files; with two or more records of "
                   "one benchmark the first is A of the compare view")
    p.add_argument("--out", required=True, help="report folder (index.html + images/); replaced if it holds a report")
    p.add_argument("--title", default=None, help="page title (default: the record names)")
    p.add_argument("--thumb", type=positive_int, default=256, help="longest side of copied images in px")


def _slugs(recs: list[dict]) -> list[str]:
    from evals.benchmarks.common import slug

    out: list[str] = []
    for rec in recs:
        base = slug(rec["name"]) or "record"
        name, i = base, 2
        while name in out:
            name, i = f"{base}-{i}", i + 1
        out.append(name)
    return out


def load_record(path: str | Path) -> dict:
    """A record in the current envelope; a schema-1 record is converted in memory (``evals.migrate_records``,
    numbers unchanged), so a report never needs the results folder rewritten first."""
    from evals.migrate_records import convert
    from snapgen.records import read_record

    return convert(Path(path)) or read_record(path)


def build_report(paths: list[str | Path], out: str | Path, title: str | None = None, thumb: int = 256) -> Path:
    """Write the report of ``paths`` into ``out``; returns the path of ``index.html``."""
    from evals.records import read_rows
    from evals.report.collect import Entry, ImageStore, section
    from evals.report.flips import comparisons
    from evals.report.page import render
    from snapgen.io import atomic_write_text

    paths = [str(p) for p in paths]
    if not str(out).strip():
        raise ValueError("--out '': empty path; pass the report folder to write (index.html + images/)")
    out = Path(out)
    if out.is_file():
        raise NotADirectoryError(f"--out {out}: is a file; pass a folder for the report (index.html + images/)")
    from snapgen.io import check_writable_dir

    check_writable_dir(out, "--out")
    recs = [load_record(p) for p in paths]
    if (out / "index.html").is_file() and (out / "images").is_dir():
        shutil.rmtree(out / "images")                               # stale images of an earlier report
    out.mkdir(parents=True, exist_ok=True)
    store = ImageStore(out, thumb)
    entries = []
    for path, rec, s in zip(paths, recs, _slugs(recs)):
        rows = None
        if rec["kind"] == "evaluation" and (rec.get("details") or {}).get("samples_jsonl"):
            rows = read_rows(rec, path)
        entries.append(Entry(path, rec, rows, s))
    sections = [section(e, store) for e in entries]
    comps = comparisons(sections, {e.slug: (e.path, e.rec) for e in entries})
    index = out / "index.html"
    atomic_write_text(index, render(sections, comps, title or " vs ".join(r["name"] for r in recs)))
    return index


def run(args) -> int:
    index = build_report(args.records, args.out, args.title, args.thumb)
    n = sum(1 for _ in (Path(args.out) / "images").rglob("*.png")) if (Path(args.out) / "images").is_dir() else 0
    print(f"report: {index} ({n} images); open file://{index.resolve()}")
    return 0
