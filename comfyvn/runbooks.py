"""Runbooks: the seed's debug cookbook as parameterised papermill notebooks.

Each notebook in ``notebooks/runbooks/`` keeps its code thin: it calls one function of this
module, which returns a :class:`Report` (a :class:`Verdict`, pandas tables and the raw data),
shows the tables and a chart, prints ``VERDICT: OK — ...`` or ``VERDICT: FAIL — ...`` and, in
its last cell, raises :class:`RunbookFailed` when the verdict is FAIL, so a papermill run
exits non-zero.

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
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Workspace, feature_enabled, init_workspace, set_feature, workspace

if TYPE_CHECKING:  # pandas and matplotlib are imported lazily: the CLI starts fast without them
    import pandas as pd
    from matplotlib.figure import Figure

RUNBOOKS_DIR_ENV = "COMFYVN_RUNBOOKS_DIR"
DEFAULT_RUNBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "runbooks"
VERDICT_PREFIX = "VERDICT:"
ACTIVE_STATUSES = ("downloading", "applying")


# ---------------------------------------------------------------------------------------- verdicts
class RunbookFailed(AssertionError):
    """Raised by a runbook's last cell when what it checks is wrong (papermill then exits non-zero)."""


@dataclass
class Verdict:
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return f"{VERDICT_PREFIX} {'OK' if self.ok else 'FAIL'} — {self.summary}"

    def __str__(self) -> str:
        return "\n".join([self.line, *(f"  - {d}" for d in self.details)])

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise RunbookFailed(self.line)


@dataclass
class Report:
    """What a runbook found: the verdict, tables to show and the raw data behind them."""

    verdict: Verdict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def open_workspace(root: str | os.PathLike[str] | None = None) -> Workspace:
    """The workspace a runbook works on (``root``, else ``COMFYVN_HOME``, else the current folder).

    Refuses a folder that is not a workspace yet: a runbook that inspects a typo'd path
    would otherwise create an empty workspace there and report that all is well.
    """
    ws = workspace(root)
    if not ws.config_file.exists() and not ws.db_path.exists():
        raise FileNotFoundError(
            f"{ws.root} is not a comfyvn workspace (no {ws.config_file.relative_to(ws.root)}); "
            "pass -p workspace /path/to/workspace or set COMFYVN_HOME")
    return init_workspace(ws)


def _epoch(value: Any) -> float | None:
    """Job timestamps as epoch seconds (the queue stores floats; ISO strings are accepted too)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _queue(ws: Workspace):
    from .ingest.queue import get_ingest_queue

    return get_ingest_queue(ws)


def iter_jobs(queue, status: str | None = None, page: int = 200) -> Iterator[dict]:
    """Every job (optionally of one status), newest first, read page by page."""
    cursor = None
    while True:
        result = queue.page_jobs(limit=page, status=status, cursor=cursor)
        yield from result["items"]
        cursor = result.get("next_cursor")
        if not cursor:
            return


def jobs_frame(jobs: Sequence[dict], now: float | None = None) -> pd.DataFrame:
    """Jobs as a table a person can read (newest first, ages in minutes)."""
    import pandas as pd

    now = time.time() if now is None else now
    columns = ["job_id", "status", "provider", "source", "dest_relative", "bytes", "attempts", "updated",
               "idle_min", "asset_uid", "error"]
    rows = []
    for job in jobs:
        updated = _epoch(job.get("updated_at"))
        rows.append({
            "job_id": job.get("job_id"), "status": job.get("status"), "provider": job.get("provider"),
            "source": job.get("source_path") or job.get("remote_url"), "dest_relative": job.get("dest_relative"),
            "bytes": job.get("bytes") or job.get("bytes_total"), "attempts": job.get("attempts"),
            "updated": pd.to_datetime(updated, unit="s", utc=True) if updated else pd.NaT,
            "idle_min": round((now - updated) / 60, 1) if updated else None,
            "asset_uid": job.get("asset_uid") or job.get("existing_uid"), "error": job.get("error"),
        })
    return pd.DataFrame(rows, columns=columns)


def _staging_missing(job: dict) -> bool:
    path = job.get("staging_path")
    return not path or not Path(path).is_file()


# ---------------------------------------------------------------------------------------- inspect_queue
def find_stuck_jobs(queue, *, stuck_minutes: float, now: float | None = None) -> list[dict]:
    """Jobs that will not move on by themselves, each with a ``stuck_reason``.

    * ``downloading`` / ``applying`` not updated for ``stuck_minutes`` (the process working on
      it died or hangs; a live download updates its job as bytes arrive);
    * ``staged`` whose staging file is gone (apply would fail: requeue_missing_staging).
    """
    now = time.time() if now is None else now
    limit = float(stuck_minutes) * 60
    stuck: list[dict] = []
    for status in ACTIVE_STATUSES:
        for job in iter_jobs(queue, status):
            updated = _epoch(job.get("updated_at")) or 0.0
            if now - updated >= limit:
                stuck.append({**job, "stuck_reason": f"{status} with no update for {(now - updated) / 60:.0f} min"})
    for job in iter_jobs(queue, "staged"):
        if _staging_missing(job):
            stuck.append({**job, "stuck_reason": f"staged but staging file missing: {job.get('staging_path')}"})
    return stuck


def inspect_queue(ws: Workspace, *, limit: int = 20, stuck_minutes: float = 15) -> Report:
    """Summary, recent jobs and stuck jobs (seed cookbook 1: inspect queue state)."""
    import pandas as pd

    if float(stuck_minutes) <= 0:
        raise ValueError("stuck_minutes must be a positive number of minutes")
    queue = _queue(ws)
    now = time.time()
    summary = queue.summary()
    recent = queue.list_jobs(limit=int(limit))
    stuck = find_stuck_jobs(queue, stuck_minutes=stuck_minutes, now=now)
    counts = {k: v for k, v in (summary.get("counts") or {}).items() if v}
    counts_frame = pd.DataFrame(sorted(counts.items()), columns=["status", "jobs"])
    stuck_frame = jobs_frame(stuck, now)
    stuck_frame.insert(2, "stuck_reason", [j["stuck_reason"] for j in stuck])
    total = summary.get("total", sum(counts.values()))
    if stuck:
        verdict = Verdict(False, f"{len(stuck)} of {total} jobs stuck",
                          [f"{j['job_id']}: {j['stuck_reason']}" for j in stuck]
                          + ["release_job -p job_id <id> frees a stuck job; requeue_missing_staging "
                             "re-queues staged jobs whose file is gone"])
    else:
        verdict = Verdict(True, f"{total} jobs, none stuck (threshold {stuck_minutes} min)")
    return Report(verdict, {"counts": counts_frame, "recent": jobs_frame(recent, now), "stuck": stuck_frame},
                  {"summary": summary, "stuck": stuck})


def plot_status_counts(counts: dict[str, int], stuck: Sequence[dict] = (), title: str = "Jobs by status") -> Figure:
    """Bar chart of jobs per status; the stuck part of each bar in red."""
    import matplotlib.pyplot as plt

    statuses = sorted(k for k, v in counts.items() if v) or ["(none)"]
    stuck_by = {s: sum(1 for j in stuck if j.get("status") == s) for s in statuses}
    totals = [counts.get(s, 0) for s in statuses]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(statuses, [t - stuck_by[s] for s, t in zip(statuses, totals, strict=True)], color="#4c78a8",
           label="ok")
    ax.bar(statuses, [stuck_by[s] for s in statuses], bottom=[t - stuck_by[s] for s, t in
                                                             zip(statuses, totals, strict=True)],
           color="#e45756", label="stuck")
    ax.set_title(title)
    ax.set_ylabel("jobs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    if any(stuck_by.values()):
        ax.legend()
    fig.tight_layout()
    return fig


def plot_counts(counts: dict[str, int], title: str, *, bad: Sequence[str] = (), xlabel: str = "count") -> Figure:
    """Horizontal bars of ``counts`` (keys listed in ``bad`` in red)."""
    import matplotlib.pyplot as plt

    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) or [("(none)", 0)]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.45 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items],
            color=["#e45756" if k in bad else "#4c78a8" for k, _ in items])
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- release_job
def release_job(ws: Workspace, job_id: str | None) -> Report:
    """Force-release one job (seed cookbook 3); refuses, with the reason, what may not be released."""
    import pandas as pd

    from .ingest.errors import IngestError

    if not job_id:
        return Report(Verdict(False, "no job given: run with -p job_id <job id> (inspect_queue lists them)"))
    queue = _queue(ws)
    before = queue.get(job_id)
    if before is None:
        return Report(Verdict(False, f"no job {job_id!r} in the queue of {ws.root}"))
    try:
        after = queue.release(job_id)
    except IngestError as exc:
        return Report(Verdict(False, f"refused to release job {job_id} ({before['status']}): {exc}"),
                      {"job": _job_table(before)}, {"before": before, "error": str(exc)})
    problems = []
    if after.get("status") != "released":
        problems.append(f"job is {after.get('status')!r} after release, not 'released'")
    staged = before.get("staging_path")
    if staged and Path(staged).exists() and Path(staged).resolve().is_relative_to(ws.staging_dir.resolve()):
        problems.append(f"staging file {staged} is still on disk")
    table = pd.concat([_job_table(before).rename(columns={"value": "before"}),
                       _job_table(after).rename(columns={"value": "after"})], axis=1)
    if problems:
        verdict = Verdict(False, f"job {job_id} released incompletely", problems)
    else:
        verdict = Verdict(True, f"released job {job_id} (was {before['status']}); its staging file and cache "
                                "pin are gone")
    return Report(verdict, {"job": table}, {"before": before, "after": after})


_JOB_FIELDS = ("job_id", "status", "provider", "source_path", "remote_url", "staging_path", "digest", "pin",
               "attempts", "error", "asset_uid", "updated_at")


def _job_table(job: dict) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"value": [_cell(job.get(k)) for k in _JOB_FIELDS]}, index=list(_JOB_FIELDS))


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


# ---------------------------------------------------------------------------------------- enforce_sidecars
def enforce_sidecars(ws: Workspace, *, project_id: str = "default", fix: bool = False,
                     fill_metadata: bool = False, overwrite: bool = False) -> Report:
    """Audit sidecars (dry run) or fix them and audit again to prove the fix."""
    import pandas as pd

    from .registry.rebuild import audit_sidecars
    from .studio.core.asset_registry import AssetRegistry

    registry = AssetRegistry(project_id, ws=ws)
    first = audit_sidecars(registry, fix=bool(fix), fill_metadata=bool(fill_metadata), overwrite=bool(overwrite))
    findings = pd.DataFrame(first["findings"], columns=["kind", "uid", "path", "detail", "fixed"])
    after = None
    if fix:
        registry.wait_for_thumbnails(120)
        after = audit_sidecars(registry)
    final = after if after is not None else first
    counts = {f["kind"]: 0 for f in first["findings"]}
    for f in first["findings"]:
        counts[f["kind"]] += 1
    remaining = {f["kind"] for f in final["findings"]}
    if final["ok"]:
        if fix:
            fixed = sum(1 for f in first["findings"] if f.get("fixed"))
            verdict = Verdict(True, f"fixed {fixed} of {len(first['findings'])} findings; the audit is now clean")
        else:
            verdict = Verdict(True, f"{registry.count()} assets of project {project_id!r}: sidecars in order")
    else:
        n = len(final["findings"])
        details = [f"{k}: {sum(1 for f in final['findings'] if f['kind'] == k)}" for k in sorted(remaining)]
        details += [f"could not fill: {u}" for u in final.get("unfilled") or []][:10]
        if fix:
            verdict = Verdict(False, f"{n} findings remain after fixing", details)
        else:
            verdict = Verdict(False, f"{n} findings (dry run: nothing changed); rerun with -p fix True to fix",
                              details)
    return Report(verdict, {"findings": findings}, {"audit": first, "after_fix": after, "counts": counts,
                                                    "remaining": sorted(remaining)})


# ---------------------------------------------------------------------------------------- flags
@contextmanager
def feature_temporarily(name: str, value: bool, ws: Workspace) -> Iterator[bool]:
    """Set a feature flag for the duration of a block and restore its previous value after,
    even when the block fails.  Yields the previous value."""
    previous = feature_enabled(name, ws)
    if previous == value:
        yield previous
        return
    set_feature(name, value, ws)
    try:
        yield previous
    finally:
        set_feature(name, previous, ws)


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
    return Path(os.environ.get(RUNBOOKS_DIR_ENV) or DEFAULT_RUNBOOKS_DIR)


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
    from papermill.cli import _resolve_type

    return _resolve_type(text)


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


def run_runbook(name: str, parameters: dict[str, Any] | None = None, *,
                workspace_root: str | os.PathLike[str] | None = None, output: str | os.PathLike[str] | None = None,
                directory: Path | None = None, kernel_name: str = "python3", log_output: bool = False) -> RunResult:
    """Execute one runbook with papermill and keep the executed notebook.

    ``workspace_root`` is passed as the ``workspace`` parameter; unknown parameter names are
    refused (papermill itself would only warn and run with the defaults).
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
    if "workspace" in info.parameters:
        params["workspace"] = str(ws.root)
    out = Path(output) if output else default_output(ws, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    error = None
    crashed = False
    try:
        papermill.execute_notebook(str(info.path), str(out), parameters=params, kernel_name=kernel_name,
                                   progress_bar=False, log_output=log_output)
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
    parser.add_argument("--notebooks", type=Path, help=f"runbooks folder (default: {DEFAULT_RUNBOOKS_DIR})")
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
                             directory=args.notebooks, log_output=args.log_output)
    except (KeyError, ValueError) as exc:
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


if __name__ == "__main__":
    raise SystemExit(main())
