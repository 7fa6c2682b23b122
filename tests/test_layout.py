"""The library's layout: files a reader can hold in their head, data flowing one way.

- no module over :data:`MAX_LINES` lines;
- no import cycle among ``dwp_lib``'s modules at import time (imports inside functions and
  under ``TYPE_CHECKING`` are deferred on purpose and do not count);
- no private name (``_x``) imported from another module of the library;
- ``dwp_lib.plots`` imports nothing of the library above it at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "dwp_lib"
#: about 500; the few modules between 500 and this say one concept each (the closing notes of
#: the layout work list them)
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def top_level_imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import executed when ``path`` is imported: module level, not in a
    function, not under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.extend((a.name, []) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = node.module or ""
                full = (f"{base}.{mod}" if mod else base) if node.level else mod
                found.append((full, [a.name for a in node.names]))

    visit(tree.body)
    return found


def library_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names in top_level_imports(path, name):
            # "from pkg import mod" imports pkg.mod; "from pkg import name" imports pkg
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            for candidate in subs or [target]:
                if candidate in mods and candidate != name:
                    graph[name].add(candidate)
    return graph


def test_no_module_is_longer_than_the_limit():
    long = {
        m: n
        for m, p in modules().items()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}; split them by concept"


def test_no_import_cycle():
    graph = library_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert len(graph) > 30  # the walk saw the whole library


def test_no_private_name_crosses_a_module():
    crossing = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or "dwp_lib" in (node.module or "")
            ):
                crossing += [
                    f"{name}: {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert not crossing, crossing


def test_plots_import_nothing_above_them():
    graph = library_graph()
    for name in graph:
        if name.startswith("dwp_lib.plots"):
            above = {m for m in graph[name] if not m.startswith("dwp_lib.plots")}
            assert not above, (name, above)
