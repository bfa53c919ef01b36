"""No import cycles in runicorn, between modules or between its top-level packages.

The graph counts every import of one runicorn module by another: at module level and
inside functions (the lazy ones kept off ``import runicorn`` still tie the two modules
together), but not under ``if TYPE_CHECKING:`` (never executed).  A ``"module:attribute"``
string naming a runicorn module counts too: it is imported when resolved at run time
(the ``_LAZY`` tables, CLI ``COMMANDS``, hooks named by string).

Packages: the top-level packages and modules of runicorn (``runicorn.store``,
``runicorn.errors``, ...) form a graph without cycles either.  The root package
``runicorn`` (the public API) and ``runicorn.cli`` (the command line) compose the others
and may import anything; nothing imports them back except ``runicorn.__main__``.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import runicorn

PACKAGE = Path(runicorn.__file__).parent

# Units that compose the others; only ENTRY_POINT may import them.
COMPOSERS = ("runicorn", "runicorn.cli")
ENTRY_POINT = "runicorn.__main__"

Graph = dict[str, dict[str, str]]  # module -> {imported module: "file:line" of the first import}

# Cycles still being taken apart, tolerated as they are or smaller (a cycle that is not inside
# one of these sets fails the test: a new cycle, or one that grew).  These lists only shrink;
# they are empty: no cycle is left.
KNOWN_MODULE_CYCLES: list[set[str]] = []
KNOWN_PACKAGE_CYCLES: list[set[str]] = []


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(name: str, path: Path, top: str) -> list[tuple[str, int]]:
    """Every dotted name ``name`` (the module at ``path``) imports, with its line: import
    statements anywhere outside ``if TYPE_CHECKING:``, ``"top.module:attr"`` strings, and
    literal ``importlib.import_module("top.module")`` arguments."""
    spec = re.compile(rf"^{re.escape(top)}(\.\w+)*:\w+$")
    found: list[tuple[str, int]] = []

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if _is_type_checking(node.test):
                for stmt in node.orelse:  # the else branch does run
                    self.visit(stmt)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.extend((a.name, node.lineno) for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            # `from pkg import sub` imports the submodule when there is one: keep both
            # candidates, the resolver below takes the longest that is a module.
            found.extend((f"{base}.{a.name}", node.lineno) for a in node.names)

        def visit_Constant(self, node: ast.Constant) -> None:
            if isinstance(node.value, str) and spec.match(node.value):
                module, _, attr = node.value.partition(":")
                found.append((f"{module}.{attr}", node.lineno))

        def visit_Call(self, node: ast.Call) -> None:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if (
                called in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((node.args[0].value, node.lineno))
            self.generic_visit(node)

    Visitor().visit(ast.parse(path.read_text("utf-8"), str(path)))
    return found


def import_graph(root: Path) -> Graph:
    """The module graph of the package at ``root`` (a directory with ``__init__.py``)."""
    top = root.name
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: Graph = {}
    for name, path in files.items():
        deps: dict[str, str] = {}
        for target, line in _imported_names(name, path, top):
            while target not in files and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in files and target != name:
                deps.setdefault(target, f"{path.relative_to(root.parent)}:{line}")
        graph[name] = deps
    return graph


def unit_of(module: str) -> str:
    """The top-level package or module of runicorn that ``module`` belongs to."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: Graph) -> Graph:
    """The graph between top-level units: an edge wherever a module of one imports another's."""
    units: Graph = {}
    for module, deps in graph.items():
        edges = units.setdefault(unit_of(module), {})
        for dep, where in deps.items():
            if unit_of(dep) != unit_of(module):
                edges.setdefault(unit_of(dep), where)
    return units


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one member (sorted), each a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        # Tarjan's algorithm without recursion: (node, iterator over its successors).
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, succ = work[-1]
            for dep in succ:
                if dep not in index:
                    index[dep] = low[dep] = len(index)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(sorted(graph.get(dep, ())))))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found, key=lambda c: (-len(c), c))


def shortest_cycle(graph: Graph, component: list[str]) -> str:
    """One shortest cycle through the first member of ``component``, each edge with the
    line that makes it: what to look at first when the test fails."""
    members = set(component)
    start = component[0]
    came: dict[str, str] = {}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        for dep in sorted(graph[node]):
            if dep not in members:
                continue
            if dep == start:
                path = [node]
                while path[-1] != start:
                    path.append(came[path[-1]])
                path.reverse()
                hops = [f"{a} ({graph[a][b]}) -> " for a, b in zip(path, [*path[1:], start])]
                return "".join(hops) + start
            if dep not in came:
                came[dep] = node
                todo.append(dep)
    raise AssertionError(f"{component} is not a cycle")


def problems(
    graph: Graph, known_modules: Sequence[set[str]] = (), known_packages: Sequence[set[str]] = ()
) -> list[str]:
    """Everything wrong with ``graph`` by the rules of this file, one line each; cycles
    inside one of the ``known_*`` sets are tolerated."""
    out = [
        f"module cycle of {len(c)}: {shortest_cycle(graph, c)}  [all: {', '.join(c)}]"
        for c in cycles(graph)
        if not any(set(c) <= k for k in known_modules)
    ]
    units = package_graph(graph)
    out += [
        f"package cycle of {len(c)}: {shortest_cycle(units, c)}  [all: {', '.join(c)}]"
        for c in cycles(units)
        if not any(set(c) <= k for k in known_packages)
    ]
    allowed = {*COMPOSERS, ENTRY_POINT}
    out += [
        f"{unit} imports {dep} ({where}), which only {', '.join(sorted(allowed))} may"
        for unit, deps in sorted(units.items())
        if unit not in allowed
        for dep, where in sorted(deps.items())
        if dep in COMPOSERS
    ]
    return out


# --- the checker on a package built for it -------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "runicorn"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_checker_finds_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "def f():\n    from runicorn import b\n    return b\n",
            "b.py": "import runicorn.a\n",
            "c.py": "from runicorn.a import f\n",
        },
    )
    graph = import_graph(root)
    assert cycles(graph) == [["runicorn.a", "runicorn.b"]]
    assert (
        shortest_cycle(graph, ["runicorn.a", "runicorn.b"])
        == "runicorn.a (runicorn/a.py:2) -> runicorn.b (runicorn/b.py:1) -> runicorn.a"
    )


def test_the_checker_finds_a_cycle_through_a_module_attr_string(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "hooks.py": 'HOOKS = ["runicorn.feature:refresh"]\n',
            "feature.py": "from runicorn.hooks import HOOKS\n\ndef refresh(): ...\n",
            "lazy.py": 'import importlib\n\ndef g():\n    return importlib.import_module("runicorn.hooks")\n',
            "pkg/__init__.py": '_LAZY = {"x": "runicorn.pkg:sub"}\n',
            "pkg/sub.py": "from runicorn.pkg import _LAZY\n",
            "doc.py": '"""See runicorn.feature:refresh, which is prose, not a spec."""\nimport runicorn.lazy\n',
        },
    )
    graph = import_graph(root)
    assert graph["runicorn.lazy"] == {"runicorn.hooks": "runicorn/lazy.py:4"}
    assert graph["runicorn.doc"] == {"runicorn.lazy": "runicorn/doc.py:2"}
    assert cycles(graph) == [["runicorn.feature", "runicorn.hooks"], ["runicorn.pkg", "runicorn.pkg.sub"]]


def test_the_checker_ignores_type_checking_imports(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runicorn.b import B\n",
            "b.py": "import typing\nif typing.TYPE_CHECKING:\n    import runicorn.a\nelse:\n    import runicorn.c\n"
            "class B: ...\n",
            "c.py": "from runicorn import a\n",
        },
    )
    graph = import_graph(root)
    assert graph == {
        "runicorn": {},
        "runicorn.a": {},
        "runicorn.b": {"runicorn.c": "runicorn/b.py:5"},
        "runicorn.c": {"runicorn.a": "runicorn/c.py:1"},
    }
    assert problems(graph) == []


def test_the_checker_finds_package_cycles_and_imports_of_the_composers(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            # No module cycle, but store and artifacts need each other.
            "store/__init__.py": "",
            "store/core.py": "def gc():\n    from runicorn.artifacts.roots import roots\n",
            "store/tree.py": "",
            "artifacts/__init__.py": "",
            "artifacts/roots.py": "def roots(): ...\n",
            "artifacts/install.py": "from runicorn.store.tree_format import x\n",
            # The composers import anything; only __main__ imports them.
            "__init__.py": '_LAZY = {"gc": "runicorn.store.core:gc"}\n',
            "cli/__init__.py": "import runicorn\nfrom runicorn.store import core\n",
            "__main__.py": "from runicorn.cli import main\n",
            "errors.py": "def f():\n    from runicorn.cli import main\n",
        },
    )
    graph = import_graph(root)
    assert cycles(graph) == []
    assert problems(graph) == [
        "package cycle of 2: runicorn.artifacts (runicorn/artifacts/install.py:1) -> "
        "runicorn.store (runicorn/store/core.py:2) -> runicorn.artifacts  "
        "[all: runicorn.artifacts, runicorn.store]",
        "runicorn.errors imports runicorn.cli (runicorn/errors.py:2), which only "
        "runicorn, runicorn.__main__, runicorn.cli may",
    ]
    # A known cycle is tolerated as it is or smaller, not once it grows.
    known = [{"runicorn.artifacts", "runicorn.store"}]
    assert len(problems(graph, known_packages=known)) == 1
    assert len(problems(graph, known_packages=[{"runicorn.store", "runicorn.cli"}])) == 2


# --- runicorn itself -----------------------------------------------------------------------


def test_the_graph_sees_the_package() -> None:
    graph = import_graph(PACKAGE)
    assert "runicorn.store.store" in graph and "runicorn.cli" in graph
    assert "runicorn.errors" in graph["runicorn.store.store"]
    # Lazy imports and "module:attr" strings are edges: the CLI reaches its commands both ways.
    assert "runicorn.cli.store_cmds" in graph["runicorn.cli"]
    assert "runicorn.cli.options" in graph["runicorn.cli.store_cmds"]


def test_no_import_cycles_in_runicorn() -> None:
    found = problems(import_graph(PACKAGE), KNOWN_MODULE_CYCLES, KNOWN_PACKAGE_CYCLES)
    assert not found, "\n".join(["import structure:", *found])
