"""The runbook runner: ``comfyvn-runbook`` and :func:`run_runbook` execute runbooks with papermill.

Runbooks are parameterised notebooks in ``notebooks/runbooks/``; their logic is in
:mod:`comfyvn.runbook_reports` (one function per runbook, over the core's checks and repairs in
:mod:`comfyvn.ingest.repairs`) and their tables and charts in :mod:`comfyvn.runbook_display`.
This module is an edge of the package, like :mod:`comfyvn.launcher`: the only place besides it
that uses papermill and nbformat (imported when a runbook is listed or run, so the command
starts fast).  It re-exports the report API, so ``from comfyvn import runbooks as rb`` keeps
working.

    comfyvn-runbook --list
    comfyvn-runbook inspect_queue -p stuck_minutes 10 --workspace /path/to/ws
    comfyvn-runbook release_job -p job_id abc123def456
    papermill notebooks/runbooks/release_job.ipynb out.ipynb -p job_id abc123def456

The command keeps every executed notebook under ``<workspace>/logs/runbooks/`` and exits 0
(verdict OK), 1 (verdict FAIL), 2 (bad usage: unknown runbook or parameter) or 3 (the
runbook broke before reaching a verdict).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Workspace, open_existing_workspace, workspace
from .ingest.repairs import (
    TERMS_FLAG,
    feature_temporarily,
    find_stuck_jobs,
    iter_jobs,
    read_archive,
)
from .launcher import notebooks_dir
from .runbook_display import (
    jobs_frame,
    plot_cache,
    plot_checks,
    plot_counts,
    plot_status_counts,
)
from .runbook_reports import (
    DEFAULT_PROFILES,
    VERDICT_PREFIX,
    WORKSPACE_HINT,
    Report,
    RunbookFailed,
    Verdict,
    enforce_sidecars,
    inspect_queue,
    open_workspace,
    plural,
    release_job,
    replay_archived_state,
    requeue_missing_staging,
    snapshot_dedup_cache,
    validate_system,
)

RUNBOOKS_DIR_ENV = "COMFYVN_RUNBOOKS_DIR"


# ---------------------------------------------------------------------------------------- runner
@dataclass
class RunbookInfo:
    name: str
    path: Path
    title: str
    parameters: dict[str, Any]


@dataclass
class RunResult:
    name: str
    ok: bool
    output_path: Path
    verdict: str | None
    error: str | None = None
    crashed: bool = False


def runbooks_dir() -> Path:
    """``COMFYVN_RUNBOOKS_DIR``, else the shipped ``runbooks/`` notebooks (installed or in the checkout)."""
    return Path(os.environ.get(RUNBOOKS_DIR_ENV) or notebooks_dir() / "runbooks")


def list_runbooks(directory: Path | None = None) -> list[RunbookInfo]:
    """Every runbook in ``directory`` with its title and parameters (name, type, default, help)."""
    import nbformat
    import papermill

    directory = Path(directory or runbooks_dir())
    out = []
    for path in sorted(directory.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        title = next((c.source.lstrip("# ").splitlines()[0] for c in nb.cells
                      if c.cell_type == "markdown" and c.source.strip()), path.stem)
        out.append(RunbookInfo(path.stem, path, title, dict(papermill.inspect_notebook(str(path)))))
    return out


def find_runbook(name: str, directory: Path | None = None) -> RunbookInfo:
    books = {b.name: b for b in list_runbooks(directory)}
    if name not in books:
        raise KeyError(f"no runbook {name!r} in {directory or runbooks_dir()}; known: {', '.join(sorted(books))}")
    return books[name]


def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill's command line reads it (True/False/None, numbers, else text)."""
    constants: dict[str, Any] = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def verdict_lines(nb) -> list[str]:
    """The ``VERDICT:`` lines a notebook printed, in order."""
    lines = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                lines += [ln for ln in output.get("text", "").splitlines() if ln.startswith(VERDICT_PREFIX)]
    return lines


def default_output(ws: Workspace, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S_%fZ")
    return ws.logs_dir / "runbooks" / f"{stamp}_{name}.ipynb"


def _kernel_config():
    """The runbook kernel talks over local sockets where there are some (IPC), not plain TCP: nothing
    is listening on a port, and ipykernel has no "running over TCP without encryption" to warn about."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc"}}) if os.name == "posix" else Config()


def run_runbook(name: str, parameters: dict[str, Any] | None = None, *,
                workspace_root: str | os.PathLike[str] | None = None, output: str | os.PathLike[str] | None = None,
                directory: Path | None = None, kernel_name: str = "python3", log_output: bool = False,
                create_workspace: bool = False) -> RunResult:
    """Execute one runbook with papermill and keep the executed notebook.

    ``workspace_root`` is passed as the ``workspace`` parameter; unknown parameter names are
    refused (papermill itself would only warn and run with the defaults).  A folder that is not
    a workspace is refused before anything is written (the executed notebook is kept in the
    workspace's ``logs/``) unless ``create_workspace``, or ``output`` for a runbook that needs
    no workspace.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    info = find_runbook(name, directory)
    params = dict(parameters or {})
    unknown = sorted(set(params) - set(info.parameters))
    if unknown:
        raise ValueError(f"runbook {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters: {', '.join(info.parameters) or '(none)'}")
    ws = workspace(workspace_root if workspace_root is not None else params.get("workspace"))
    if "workspace" in info.parameters or output is None:
        # refuses a typo'd folder before anything is written there
        ws = open_existing_workspace(ws.root, create=create_workspace, hint=WORKSPACE_HINT)
    if "workspace" in info.parameters:
        params["workspace"] = str(ws.root)
    out = Path(output) if output else default_output(ws, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    error = None
    crashed = False
    try:
        papermill.execute_notebook(str(info.path), str(out), parameters=params, kernel_name=kernel_name,
                                   progress_bar=False, log_output=log_output, config=_kernel_config())
        ok = True
    except PapermillExecutionError as exc:
        ok = False
        crashed = exc.ename != RunbookFailed.__name__
        error = f"{exc.ename}: {exc.evalue}"
    verdicts = verdict_lines(nbformat.read(out, as_version=4)) if out.exists() else []
    return RunResult(name, ok, out, verdicts[-1] if verdicts else None, error, crashed)


def _print_list(directory: Path | None) -> None:
    for book in list_runbooks(directory):
        print(f"{book.name:26} {book.title}")
        for p in book.parameters.values():
            default = p.get("default")
            helptext = f"  # {p['help']}" if p.get("help") else ""
            print(f"    -p {p['name']} {default}{helptext}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="comfyvn-runbook", description="Run a comfyvn runbook (a papermill notebook) by name.",
        epilog="Exit status: 0 verdict OK, 1 verdict FAIL, 2 bad usage, 3 the runbook broke before a verdict.")
    parser.add_argument("name", nargs="?", help="runbook name (see --list)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a parameter, as papermill -p reads it (True/False/None, numbers, else text)")
    parser.add_argument("--workspace", help="workspace folder (default: COMFYVN_HOME, else the current folder)")
    parser.add_argument("--output", help="where to write the executed notebook "
                                         "(default: <workspace>/logs/runbooks/<timestamp>_<name>.ipynb)")
    parser.add_argument("--init", action="store_true", help="create the workspace if the folder is not one yet")
    parser.add_argument("--notebooks", type=Path, help="runbooks folder (default: the shipped runbooks)")
    parser.add_argument("--list", action="store_true", help="list the runbooks and their parameters")
    parser.add_argument("--log-output", action="store_true", help="stream the notebook's output while it runs")
    args = parser.parse_args(argv)
    if args.list:
        _print_list(args.notebooks)
        return 0
    if not args.name:
        parser.print_usage(sys.stderr)
        print("comfyvn-runbook: error: give a runbook name, or --list", file=sys.stderr)
        return 2
    params = {k: parse_value(v) for k, v in args.parameter}
    try:
        result = run_runbook(args.name, params, workspace_root=args.workspace, output=args.output,
                             directory=args.notebooks, log_output=args.log_output, create_workspace=args.init)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"comfyvn-runbook: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if result.verdict:
        print(result.verdict)
    if result.crashed:
        print(f"runbook {args.name} broke before its verdict: {result.error}", file=sys.stderr)
    print(f"executed notebook: {result.output_path}")
    if result.ok:
        return 0
    return 3 if result.crashed else 1



__all__ = [
    "DEFAULT_PROFILES",
    "RUNBOOKS_DIR_ENV",
    "TERMS_FLAG",
    "VERDICT_PREFIX",
    "WORKSPACE_HINT",
    "Report",
    "RunResult",
    "RunbookFailed",
    "RunbookInfo",
    "Verdict",
    "default_output",
    "enforce_sidecars",
    "feature_temporarily",
    "find_runbook",
    "find_stuck_jobs",
    "inspect_queue",
    "iter_jobs",
    "jobs_frame",
    "list_runbooks",
    "main",
    "open_workspace",
    "parse_value",
    "plot_cache",
    "plot_checks",
    "plot_counts",
    "plot_status_counts",
    "plural",
    "read_archive",
    "release_job",
    "replay_archived_state",
    "requeue_missing_staging",
    "run_runbook",
    "runbooks_dir",
    "snapshot_dedup_cache",
    "validate_system",
    "verdict_lines",
]


if __name__ == "__main__":
    raise SystemExit(main())
