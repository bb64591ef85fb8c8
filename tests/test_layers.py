"""The layering rule, read from the code with ``ast``.

* The core (``comfyvn``) imports no Jupyter, Tornado, ipywidgets, papermill or nbformat code,
  except the edge modules that exist to start or drive Jupyter; no core module imports an edge
  module, ``server_ext`` or ``widgets``.
* No import cycle exists between the modules of ``comfyvn``.
* No module imports a private name (``_x``) from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("comfyvn", "server_ext", "widgets")
JUPYTER = ("jupyter", "jupyter_server", "jupyter_client", "jupyter_core", "jupyterlab", "tornado",
           "ipywidgets", "ipykernel", "IPython", "papermill", "nbformat", "nbclient", "nbconvert",
           "voila", "traitlets")
#: modules of comfyvn whose job is to start or drive Jupyter; the core never imports them
EDGE = {"comfyvn.launcher", "comfyvn.runbooks"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name][0].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, tree: ast.Module):
    """(imported module, names, line, top_level) for every import statement of a module."""
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            names = [a.name for a in node.names]
            # "from pkg import sub" imports the submodule pkg.sub
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if subs:
                for sub in subs:
                    yield sub, [], node.lineno, id(node) in top
                names = [n for n in names if f"{target}.{n}" not in MODULES]
            if names or not subs:
                yield target, names, node.lineno, id(node) in top


def _core() -> list[str]:
    return [m for m in MODULES if m == "comfyvn" or m.startswith("comfyvn.")]


def test_core_imports_no_jupyter_and_no_edge() -> None:
    bad = []
    for module in _core():
        if module in EDGE:
            continue
        path, tree = MODULES[module]
        for target, _names, line, _top in _imports(module, tree):
            root = target.split(".")[0]
            if root in JUPYTER or root in ("server_ext", "widgets") or target in EDGE:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "the core must not import Jupyter code or an edge module:\n" + "\n".join(bad)


def test_server_ext_and_widgets_do_not_import_each_other() -> None:
    bad = []
    for module, (path, tree) in MODULES.items():
        layer = module.split(".")[0]
        other = {"server_ext": ("widgets", "comfyvn_widgets"), "widgets": ("server_ext", "comfyvn_server_ext")}
        if layer not in other:
            continue
        for target, _names, line, _top in _imports(module, tree):
            if target.split(".")[0] in other[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "the HTTP layer and the dashboards are siblings:\n" + "\n".join(bad)


def test_no_private_names_imported_across_modules() -> None:
    bad = []
    for module, (path, tree) in MODULES.items():
        for target, names, line, _top in _imports(module, tree):
            if target.split(".")[0] not in PACKAGES and not target.startswith("tests"):
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} from {target}")
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    core = set(_core())
    graph: dict[str, set[str]] = {m: set() for m in core}
    for module in core:
        _path, tree = MODULES[module]
        for target, _names, _line, _top in _imports(module, tree):
            # a package's __init__ running its submodules is not a cycle; a module that takes
            # names from a package (or from a module) depends on it
            if target in core and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_in_the_core() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles inside comfyvn:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_catch_what_they_claim() -> None:
    # the cycle finder and the import reader are tested on made-up input, so the tests above
    # cannot pass by reading nothing
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert len(_core()) > 40
    tree = ast.parse("from .x import _y\nimport tornado.web\n")
    got = list(_imports("comfyvn.ingest.queue", tree))
    assert ("comfyvn.ingest.x", ["_y"], 1, True) in got and ("tornado.web", [], 2, True) in got


@pytest.mark.parametrize("package", PACKAGES)
def test_package_is_read(package: str) -> None:
    assert any(m.startswith(package) for m in MODULES)
