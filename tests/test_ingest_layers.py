"""The ingest package's imports point one way: no cycle, no private name imported across modules,
no import hidden inside a function to dodge a cycle (read from the source with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import comfyvn.ingest

PACKAGE = Path(comfyvn.ingest.__file__).parent
# the one import left inside a function: the provider-alias block of enqueue, which the provider
# concept (canonical_provider) replaces; it dodges no cycle (providers never import the queue)
ALLOWED_LOCAL = {("queue.py", ".providers")}
# the job-handling modules (netguard.py's import of mappers._REMOTE_ALLOWLIST belongs to the network policy)
JOB_MODULES = {"__init__.py", "jobs.py", "jobstore.py", "staging.py", "queue.py", "worker.py", "state.py",
               "repairs.py"}


def modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.glob("*.py"))}


def sibling(node: ast.ImportFrom) -> str | None:
    """The ingest module a ``from .x import ...`` names (None: elsewhere)."""
    if node.level == 1 and node.module:
        return node.module.split(".")[0] + ".py"
    return None


def test_worker_state_staging_and_the_job_store_never_import_the_queue():
    for name, tree in modules().items():
        if name in ("queue.py", "__init__.py", "repairs.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert sibling(node) != "queue.py", f"{name}:{node.lineno} imports the queue"


def test_no_cycle_among_the_ingest_modules():
    graph = {name: {sibling(n) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and sibling(n)}
             for name, tree in modules().items() if name != "__init__.py"}

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join(path + (node,))}"
        for nxt in graph.get(node, ()):
            visit(nxt, path + (node,))

    for name in graph:
        visit(name, ())


def test_no_private_name_imported_and_no_import_inside_a_function():
    for name, tree in modules().items():
        if name not in JOB_MODULES:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__future__"]
                assert not private, f"{name}:{node.lineno} imports private {private} from {node.module}"
        for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    where = "." * getattr(node, "level", 0) + (getattr(node, "module", None) or "")
                    assert (name, where) in ALLOWED_LOCAL, f"{name}:{node.lineno} imports {where} inside {func.name}()"
