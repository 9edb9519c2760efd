"""Where records and caches live: the one definition of the results root and the cache root.

    results root   $SNAPGEN_RESULTS, else <repository>/results     (records, tables, figures)
    cache root     $SNAPGEN_CACHE,   else ~/.cache/snapgen-bench   (generated images, features, text embeddings)

Every reader and writer of ``results/`` and of the caches asks this module; nothing resolves them relative to
the working directory, so a command gives the same files wherever it is started. The model library itself
(``snapgen.models``, ``snapgen.cost``, ``snapgen.flow``) never imports this module.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_ENV = "SNAPGEN_RESULTS"
CACHE_ENV = "SNAPGEN_CACHE"


def results_root() -> Path:
    """The results root (read at call time, so tests and users can point it elsewhere)."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "results"


def results_dir(*parts: str) -> Path:
    """A folder under the results root, e.g. ``results_dir("geneval")`` or ``results_dir("latency", "cpu")``."""
    return results_root().joinpath(*parts)


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snapgen-bench"


def cache_dir(*parts: str) -> Path:
    return cache_root().joinpath(*parts)


def display(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it lies inside it (stable text for records), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return str(p)
