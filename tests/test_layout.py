"""The library's layout: files a reader can hold in their head, data flowing one way.

- no module over :data:`MAX_LINES` lines;
- no import cycle among ``dwp_lib``'s modules, counting imports inside functions too (only
  imports under ``TYPE_CHECKING``, which never run, are left out);
- no private name (``_x``) imported from another module of the library;
- the method imports neither the pipeline (``dwp_lib.experiment``) nor the command line;
- ``dwp_lib.plots`` imports nothing of the library above it;
- nothing installed names the studies, a results folder or a findings note.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "dwp_lib"
#: one concept a module
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in ``path``, at any depth (in functions too), except
    under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = node.module or ""
            full = (f"{base}.{mod}" if mod else base) if node.level else mod
            found.append((full, [a.name for a in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def library_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, names in imports(path, name):
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


def test_the_method_does_not_import_the_pipeline():
    graph = library_graph()
    pipeline = ("dwp_lib.experiment", "dwp_lib.cli", "dwp_lib.__main__")
    for name, targets in graph.items():
        if name.startswith(pipeline) or name in ("dwp_lib.conclusions",):
            continue
        wrong = {t for t in targets if t.startswith(pipeline)}
        assert not wrong, f"{name} imports the pipeline: {sorted(wrong)}"


def test_nothing_installed_names_a_study_or_a_results_folder():
    studies = sorted(p.name for p in (ROOT / "studies").iterdir() if (p / "__init__.py").exists())
    folders = sorted(p.name for p in (ROOT / "results").iterdir() if p.is_dir())
    assert studies and folders
    found = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        found += [f"{name}: studies.{s}" for s in studies if f"studies.{s}" in text]
        found += [f"{name}: results/{f}" for f in folders if f"results/{f}" in text]
        found += [f"{name}: {n}" for n in ("FINDINGS.md",) if n in text]
    assert not found, found
