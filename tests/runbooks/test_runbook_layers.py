"""Only the runner (comfyvn/runbooks.py) touches papermill and nbformat; the repairs, the reports
and the display helpers are core modules (read from the source with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import comfyvn

CORE = Path(comfyvn.__file__).parent
NOTEBOOK_MACHINERY = ("papermill", "nbformat", "nbclient", "jupyter", "jupyter_server", "jupyter_client",
                      "ipykernel", "IPython", "tornado", "ipywidgets", "traitlets")
EDGES = ("comfyvn.runbooks", "comfyvn.launcher")


def imported(path: Path) -> list[str]:
    """Every module ``path`` imports, anywhere in it (functions too), as absolute names."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = ".".join(path.relative_to(CORE.parent).with_suffix("").parts[:-node.level])
                base = f"{package}.{base}" if base else package
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def test_repairs_reports_and_display_import_no_notebook_machinery_and_no_edge():
    for path in (CORE / "ingest" / "repairs.py", CORE / "runbook_reports.py", CORE / "runbook_display.py"):
        for name in imported(path):
            assert name.split(".")[0] not in NOTEBOOK_MACHINERY, f"{path.name} imports {name}"
            assert not name.startswith(EDGES), f"{path.name} imports the edge module {name}"


def test_the_runner_is_where_papermill_is_used():
    assert {"papermill", "nbformat"} <= {n.split(".")[0] for n in imported(CORE / "runbooks.py")}
