"""The import graph of the four packages, read with ``ast`` (module-level imports and imports inside functions,
``TYPE_CHECKING`` blocks included): layering ``snapgen <- ablations <- evals <- paper_figures`` (no import runs
upward) and no import cycle anywhere.

An edge goes from a module to the module it names: ``import a.b`` -> ``a.b``; ``from a.b import c`` -> ``a.b.c``
when that is a module, else ``a.b``. Importing a submodule also runs its parent packages' ``__init__``; those
implicit edges are not counted (as in pylint's cyclic-import and import-linter).
Test files inside the packages (``test_*.py``, ``conftest.py``) are tests: they may import anything.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("snapgen", "ablations", "evals", "paper_figures")   # each may import only itself and those before it

# Known violations in files other workers are converting (issue 14), as (importer, imported) module pairs. Each
# entry names its file; remove it when that file lands. The test fails on a violation not listed here, and on an
# entry that no longer occurs (so the list only shrinks).
ALLOWED_UPWARD: set[tuple[str, str]] = set()
ALLOWED_CYCLES: set[frozenset[str]] = set()


def _is_test(path: Path) -> bool:
    return path.name.startswith("test_") or path.name == "conftest.py"


def modules() -> dict[str, Path]:
    """Module name -> file for every .py under the four packages."""
    out = {}
    for top in LAYERS:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in (None for third-party modules)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Internal modules imported anywhere in ``path`` (module level and inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {m for m in (_resolve(n, known) for n in names) if m and m != module}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports_of(m, p, known) for m, p in known.items()}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def upward_imports(g: dict[str, set[str]], known: dict[str, Path]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in g.items() if not _is_test(known[a]) for b in targets if _layer(b) > _layer(a)}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one cycle through it."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:  # iterative enough for this repository's depth
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(_cycle_in(sorted(comp), g))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _cycle_in(component: list[str], g: dict[str, set[str]]) -> list[str]:
    """One concrete cycle a -> ... -> a inside a strongly connected component (breadth-first, shortest)."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "evals"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from paper_figures.x import y\n    from . import b\n")
    (pkg / "b.py").write_text("import evals.a\n")
    known = {"evals": pkg / "__init__.py", "evals.a": pkg / "a.py", "evals.b": pkg / "b.py",
             "paper_figures.x": tmp_path / "x.py"}
    g = {m: imports_of(m, p, known) for m, p in known.items() if m != "paper_figures.x"}
    assert g["evals.a"] == {"paper_figures.x", "evals.b"} and g["evals.b"] == {"evals.a"}
    assert upward_imports(g, known) == {("evals.a", "paper_figures.x")}
    assert cycles({**g, "paper_figures.x": set()}) == [["evals.a", "evals.b", "evals.a"]]


def test_layering_snapgen_ablations_evals_paper_figures():
    known = modules()
    found = upward_imports(graph(), known)
    new = sorted(found - ALLOWED_UPWARD)
    assert not new, "imports that run upward (snapgen <- ablations <- evals <- paper_figures):\n" + "\n".join(
        f"  {known[a].relative_to(REPO)}: {a} imports {b}" for a, b in new)
    assert not ALLOWED_UPWARD - found, f"allow-list entries that no longer occur (delete them): {ALLOWED_UPWARD - found}"


def test_no_import_cycles():
    found = cycles(graph())
    new = [c for c in found if frozenset(c) not in ALLOWED_CYCLES]
    assert not new, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in new)
    stale = ALLOWED_CYCLES - {frozenset(c) for c in found}
    assert not stale, f"allow-list entries that no longer occur (delete them): {stale}"
