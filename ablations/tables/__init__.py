"""Every markdown table of ``results/tables/``, written by this one package as pure functions of records.

    python -m ablations.tables                  # regenerate every table from the records under results/
    python -m ablations.tables geneval latency  # just these

A table is registered in ``TABLES`` (name -> ``"module:function"``); the function takes the results root and
returns the markdown text (it reads the records it needs with ``snapgen.records``, refuses malformed ones, and
must give byte-identical output for the same records). Figures are drawn by ``paper_figures``.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from pathlib import Path
from typing import Callable

from snapgen.io import atomic_write_text
from snapgen.paths import results_root

# name -> "module:function(results_root) -> markdown"; results/tables/<name>.md
TABLES: dict[str, str] = {
    "architecture": "ablations.tables.architecture:render",
    "decoders": "ablations.tables.decoders:render",
    "latency": "ablations.tables.latency:render",
    "geneval": "ablations.tables.evaluation:render_geneval",
    "dpg": "ablations.tables.evaluation:render_dpg",
    "ladder_t2i": "ablations.tables.ladder:render_t2i",
    "ladder_in256": "ablations.tables.ladder:render_in256",
    "distillation": "ablations.tables.distillation:render",
    "speed": "ablations.tables.speed:render",
    "levers": "ablations.tables.levers:render",
}


def renderer(name: str) -> Callable[[Path], str]:
    if name not in TABLES:
        close = difflib.get_close_matches(name, TABLES, n=3, cutoff=0.4)
        raise KeyError(f"unknown table {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                       + f" (known: {', '.join(TABLES)})")
    module, _, fn = TABLES[name].partition(":")
    return getattr(importlib.import_module(module), fn)


def dirty_records(records: dict[str, dict]) -> list[str]:
    """Paths of records made from uncommitted code (git commit ending in "-dirty") or from an unknown commit."""
    return [p for p, r in records.items()
            if not (c := (r.get("environment") or {}).get("git_commit")) or str(c).endswith("-dirty")]


def load(root: Path, folder: str, kind: str, allow_dirty: bool = False, where: str = "") -> dict[str, dict]:
    """The records of ``kind`` under ``root/folder`` (validated). Tables are built from records of committed code
    only: a dirty record raises unless ``allow_dirty`` (the table then marks it)."""
    from snapgen.records import read_records

    recs = read_records(root / folder) if (root / folder).is_dir() else {}
    other = {p: r["kind"] for p, r in recs.items() if r["kind"] != kind}
    if other:                                   # skipped, it would be a row silently missing from the table
        p, k = next(iter(other.items()))
        raise ValueError(f"{where or folder}: {p} is a record of kind {k!r} in {root / folder}, which holds {kind!r} "
                         f"records ({len(other)} such file(s)); move it out of that folder")
    bad = dirty_records(recs)
    if bad and not allow_dirty:
        raise ValueError(f"{where or folder}: {len(bad)} record(s) come from uncommitted code or an unknown commit: "
                         f"{', '.join(Path(b).name for b in bad[:5])}. Commit the code and rerun them, or pass "
                         "--allow-dirty to build the table anyway (it then marks them).")
    return recs


def write_table(name: str, text: str, root: Path | None = None) -> Path:
    """``results/tables/<name>.md`` (atomic)."""
    return atomic_write_text((root or results_root()) / "tables" / f"{name}.md", text)


def regenerate(names: list[str] | None = None, root: Path | None = None, allow_dirty: bool = False) -> list[Path]:
    """Render and write the named tables (all by default) from the records under ``root``."""
    root = root or results_root()
    out = []
    for n in names or list(TABLES):
        fn = renderer(n)
        kw = {"allow_dirty": allow_dirty} if "allow_dirty" in inspect.signature(fn).parameters else {}
        out.append(write_table(n, fn(root, **kw), root))
    return out
