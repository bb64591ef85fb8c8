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

from .config import Workspace, feature_enabled, open_existing_workspace, set_feature, workspace
from .ingest.jobs import CLAIMED, JobStatus, sql_in

if TYPE_CHECKING:  # pandas and matplotlib are imported lazily: the CLI starts fast without them
    import pandas as pd
    from matplotlib.figure import Figure

RUNBOOKS_DIR_ENV = "COMFYVN_RUNBOOKS_DIR"
VERDICT_PREFIX = "VERDICT:"
ACTIVE_STATUSES = tuple(s for s in JobStatus if s in CLAIMED)  # a process works on these jobs now


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


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


WORKSPACE_HINT = "pass --workspace DIR (or -p workspace DIR) or set COMFYVN_HOME; --init creates a new workspace"


def open_workspace(root: str | os.PathLike[str] | None = None) -> Workspace:
    """The workspace a runbook works on (``root``, else ``COMFYVN_HOME``, else the current folder).

    Refuses a folder that is not a workspace yet: a runbook that inspects a typo'd path
    would otherwise create an empty workspace there and report that all is well.
    """
    return open_existing_workspace(root, hint=WORKSPACE_HINT)


def _epoch(value: Any) -> float | None:
    """Job timestamps as epoch seconds (the queue stores floats; ISO strings are accepted too)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _queue(ws: Workspace):
    """The workspace's queue, without a background downloader of its own: a runbook's kernel
    is short-lived, so re-queued remote jobs are left to the server's worker."""
    from .ingest.queue import AssetIngestQueue

    return AssetIngestQueue(ws)


def interrupted_jobs(ws: Workspace) -> list[dict]:
    """``downloading``/``applying`` jobs whose process is gone (opening the queue recovers them)."""
    from .ingest.queue import owner_alive
    from .store import get_database

    rows = get_database(ws.db_path).query(
        f"SELECT job_id, status, owner, updated_at FROM ingest_jobs WHERE status IN {sql_in(CLAIMED)}")
    return [dict(r) for r in rows if not owner_alive(r["owner"])]


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
               "idle_min", "asset_uid", "notes", "error"]
    rows = []
    for job in jobs:
        updated = _epoch(job.get("updated_at"))
        rows.append({
            "job_id": job.get("job_id"), "status": job.get("status"), "provider": job.get("provider"),
            "source": job.get("source_path") or job.get("remote_url"), "dest_relative": job.get("dest_relative"),
            "bytes": job.get("bytes") or job.get("bytes_total"), "attempts": job.get("attempts"),
            "updated": pd.to_datetime(updated, unit="s", utc=True) if updated else pd.NaT,
            "idle_min": round((now - updated) / 60, 1) if updated else None,
            "asset_uid": job.get("asset_uid") or job.get("existing_uid"), "notes": ", ".join(job.get("notes") or []),
            "error": job.get("error"),
        })
    return pd.DataFrame(rows, columns=columns)


def _staging_missing(job: dict) -> bool:
    path = job.get("staging_path")
    return not path or not Path(path).is_file()


# ---------------------------------------------------------------------------------------- inspect_queue
def find_stuck_jobs(queue, *, stuck_minutes: float, now: float | None = None) -> list[dict]:
    """Jobs that will not move on by themselves, each with a ``stuck_reason``.

    * ``downloading`` / ``applying`` not updated for ``stuck_minutes``: the process working on
      it is alive but silent (a live download updates its job as bytes arrive);
    * ``staged`` whose staging file is gone: apply would fail (``requeue_missing_staging``).
    """
    now = time.time() if now is None else now
    limit = float(stuck_minutes) * 60
    stuck: list[dict] = []
    for status in ACTIVE_STATUSES:
        for job in iter_jobs(queue, status):
            idle = now - (_epoch(job.get("updated_at")) or 0.0)
            if idle >= limit:
                remedy = f"cancel it: release_job -p job_id {job['job_id']} -p cancel_active True" \
                    if status == "downloading" else \
                    "its process hangs: stop that process (the queue then recovers the job)"
                stuck.append({**job, "stuck_reason": f"{status}, no update for {idle / 60:.1f} min; {remedy}"})
    for job in iter_jobs(queue, "staged"):
        if _staging_missing(job):
            stuck.append({**job, "stuck_reason": "staged, but its staging file is missing; run "
                                                 "requeue_missing_staging"})
    return stuck


def inspect_queue(ws: Workspace, *, limit: int = 20, stuck_minutes: float = 15) -> Report:
    """Summary, recent jobs and stuck jobs (seed cookbook 1: inspect queue state)."""
    import pandas as pd

    if float(stuck_minutes) <= 0:
        raise ValueError("stuck_minutes must be a positive number of minutes")
    interrupted = interrupted_jobs(ws)  # before opening the queue, which recovers them
    queue = _queue(ws)
    now = time.time()
    summary = queue.summary()
    recent = queue.list_jobs(limit=int(limit))
    stuck = find_stuck_jobs(queue, stuck_minutes=stuck_minutes, now=now)
    counts = {k: v for k, v in summary["counts"].items() if v}
    stuck_frame = jobs_frame(stuck, now)
    stuck_frame.insert(2, "stuck_reason", [j["stuck_reason"] for j in stuck])
    recovered = pd.DataFrame(
        [{"job_id": j["job_id"], "was": j["status"], "now": (queue.get(j["job_id"]) or {}).get("status"),
          "dead_process": j["owner"]} for j in interrupted], columns=["job_id", "was", "now", "dead_process"])
    failed = list(iter_jobs(queue, "failed"))
    reasons: dict[str, int] = {}
    for job in failed:
        reason = job.get("error") or "(no error recorded)"
        reasons[reason] = reasons.get(reason, 0) + 1
    limits = pd.DataFrame([{"provider": p, **v} for p, v in (summary.get("rate_limits") or {}).items()])
    total = summary["total"]
    extra = [f"{plural(len(failed), 'failed job')}: " + "; ".join(f"{r} ({n})" for r, n in reasons.items())
             + " (retry or release them)"] if failed else []
    if len(recovered):
        extra.append(f"{len(recovered)} jobs of dead processes were recovered when the queue opened")
    if stuck:
        verdict = Verdict(False, f"{len(stuck)} of {total} jobs stuck",
                          [f"{j['job_id']}: {j['stuck_reason']}" for j in stuck] + extra)
    else:
        verdict = Verdict(True, f"{plural(total, 'job')}, none stuck (threshold {stuck_minutes} min)", extra)
    return Report(verdict, {"counts": pd.DataFrame(sorted(counts.items()), columns=["status", "jobs"]),
                            "recent": jobs_frame(recent, now), "stuck": stuck_frame, "recovered": recovered,
                            "failed": jobs_frame(failed, now), "rate_limits": limits},
                  {"summary": summary, "stuck": stuck, "interrupted": interrupted})


def plot_status_counts(counts: dict[str, int], stuck: Sequence[dict] = (), title: str = "Jobs by status") -> Figure:
    """Bar chart of jobs per status; the stuck part of each bar in red."""
    import matplotlib.pyplot as plt

    statuses = [s for s, n in counts.items() if n] or ["(none)"]
    stuck_by = [sum(1 for j in stuck if j.get("status") == s) for s in statuses]
    fine = [counts.get(s, 0) - k for s, k in zip(statuses, stuck_by, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(statuses, fine, color="#4c78a8", label="moving / finished")
    ax.bar(statuses, stuck_by, bottom=fine, color="#e45756", label="stuck")
    ax.set_title(title)
    ax.set_ylabel("jobs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    if any(stuck_by):
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


# ---------------------------------------------------------------------------------------- snapshot_dedup_cache
def snapshot_dedup_cache(ws: Workspace, *, base_url: str | None = None, token: str | None = None,
                         export: bool = True) -> Report:
    """Snapshot the dedup cache (seed cookbook 2) and check each entry still holds its bytes.

    With ``base_url`` the server's ``/api/ingest/status?include_cache=true`` is fetched too and
    must agree with the workspace: a server answering for another workspace is caught here.
    """
    import pandas as pd

    queue = _queue(ws)
    cache = queue.dedup_snapshot()
    exported = queue.export_state() if export else None
    rows = []
    for digest, entry in cache.items():
        path = entry.get("staging_path")
        rows.append({"digest": digest[:16], "job_id": entry["job_id"], "status": entry["status"],
                     "pinned": entry["pinned"], "provider": entry["provider"], "project_id": entry["project_id"],
                     "bytes": entry["bytes"], "file_present": bool(path) and Path(path).is_file(),
                     "staging_path": path})
    frame = pd.DataFrame(rows, columns=["digest", "job_id", "status", "pinned", "provider", "project_id", "bytes",
                                        "file_present", "staging_path"])
    problems = [f"{r['job_id']} ({r['digest']}…): staging file missing, the entry blocks its bytes for nothing; "
                "run requeue_missing_staging" for r in rows if r["status"] == "staged" and not r["file_present"]]
    server_cache = None
    if base_url:
        from .client import ApiError, ComfyvnClient

        try:
            with ComfyvnClient(base_url, token) as client:
                server_cache = client.status(limit=1, include_cache=True).get("cache")
        except ApiError as exc:
            problems.append(f"server {base_url}: {exc}")
        else:
            server_cache = _cache_entries(server_cache)
            if set(server_cache) != set(cache):
                only_server = sorted(set(server_cache) - set(cache))
                only_here = sorted(set(cache) - set(server_cache))
                problems.append(f"the server's cache differs from {ws.root}: {len(only_server)} entries only on the "
                                f"server, {len(only_here)} only here (is the server using this workspace?)")
    pinned = sum(1 for r in rows if r["pinned"])
    size = sum(r["bytes"] or 0 for r in rows)
    where = f"; written to {exported['dedup_cache_file']}" if exported else ""
    if problems:
        verdict = Verdict(False, f"{plural(len(problems), 'problem')} in a cache of "
                                 f"{plural(len(rows), 'entry', 'entries')}", problems)
    else:
        checked = " and matches the server" if server_cache is not None else ""
        verdict = Verdict(True, f"{plural(len(rows), 'entry', 'entries')} ({pinned} pinned, {size:,} bytes), every staging file "
                                f"present{checked}{where}")
    return Report(verdict, {"entries": frame}, {"cache": cache, "server_cache": server_cache, "exported": exported})


def _cache_entries(doc: Any) -> dict:
    """The ``{digest: entry}`` part of what the status route answers (bare or wrapped)."""
    if isinstance(doc, dict) and isinstance(doc.get("cache"), dict):
        return doc["cache"]
    return doc if isinstance(doc, dict) else {}


def plot_cache(frame: pd.DataFrame) -> Figure:
    """Bytes held per provider, split into pinned and unpinned, missing files in red."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    if frame.empty:
        ax.text(0.5, 0.5, "the dedup cache is empty", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    mib = frame.assign(mib=frame["bytes"].fillna(0) / 2**20)
    groups = [("pinned", mib[mib["pinned"] & mib["file_present"]], "#4c78a8"),
              ("unpinned", mib[~mib["pinned"] & mib["file_present"]], "#9ecae9"),
              ("file missing", mib[~mib["file_present"]], "#e45756")]
    providers = sorted(frame["provider"].unique())
    left = [0.0] * len(providers)
    for label, part, colour in groups:
        values = [part[part["provider"] == p]["mib"].sum() for p in providers]
        ax.barh(providers, values, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("MiB held in staging")
    ax.set_title("Dedup cache by provider")
    ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- release_job
def release_job(ws: Workspace, job_id: str | None, *, cancel_active: bool = False) -> Report:
    """Force-release one job (seed cookbook 3); refuses, with the queue's reason, what may not be released.

    ``cancel_active=True`` cancels a ``queued`` or ``downloading`` job instead (the queue only
    releases staged, duplicate or failed jobs; a hung download is stopped by cancelling it).
    """
    from .ingest.errors import IngestError

    if not job_id:
        return Report(Verdict(False, "no job given: run with -p job_id <job id> (inspect_queue lists them)"))
    queue = _queue(ws)
    before = queue.get(job_id)
    if before is None:
        return Report(Verdict(False, f"no job {job_id!r} in the queue of {ws.root}"))
    cancel = bool(cancel_active) and before["status"] in ("queued", "downloading")
    try:
        after = queue.cancel(job_id) if cancel else queue.release(job_id)
    except IngestError as exc:
        return Report(Verdict(False, f"refused to release job {job_id} ({before['status']}): {exc}"),
                      {"job": _job_table(before, "before")}, {"before": before, "error": str(exc)})
    want = "cancelled" if cancel else "released"
    problems = []
    if after["status"] != want:
        problems.append(f"job is {after['status']!r} afterwards, not {want!r}")
    staged = before.get("staging_path")
    if staged and Path(staged).exists():
        problems.append(f"staging file {staged} is still on disk")
    if before.get("digest") in queue.dedup_snapshot():
        problems.append("its digest still pins the dedup cache")
    table = _job_table(before, "before").join(_job_table(after, "after"))
    if problems:
        verdict = Verdict(False, f"job {job_id} {want} incompletely", problems)
    else:
        verdict = Verdict(True, f"{want} job {job_id} (was {before['status']}); no staging file or cache pin left")
    return Report(verdict, {"job": table}, {"before": before, "after": after})


_JOB_FIELDS = ("job_id", "status", "provider", "source_path", "remote_url", "staging_path", "digest", "pin",
               "attempts", "error", "asset_uid", "notes")


def _job_table(job: dict, column: str = "value") -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({column: [_cell(job.get(k)) for k in _JOB_FIELDS]}, index=list(_JOB_FIELDS))


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


# ---------------------------------------------------------------------------------------- requeue_missing_staging
def requeue_missing_staging(ws: Workspace, *, dry_run: bool = False) -> Report:
    """Failure row "Status=failed with Staging file missing": re-queue the source asset.

    Staged jobs whose staging file is gone are first marked ``failed`` with ``Staging file
    missing`` (by the queue's own apply, which checks the file); then every job failed that way
    is retried from its original source: a local file that still exists is staged again at
    once, a remote URL goes back to ``queued`` for the server's downloader.  A local source that
    is gone too cannot be re-queued: the verdict names it.
    """
    import pandas as pd

    from .ingest.errors import IngestError
    from .ingest.queue import STAGING_MISSING

    queue = _queue(ws)
    missing = [j for j in iter_jobs(queue, "staged") if _staging_missing(j)]
    failed = [j for j in iter_jobs(queue, "failed") if j.get("error") == STAGING_MISSING]
    rows: list[dict] = []
    for job in missing + failed:
        was = job["status"]
        source = job.get("source_path") or job.get("remote_url")
        source_ok = bool(job.get("remote_url")) or bool(job.get("source_path") and Path(job["source_path"]).is_file())
        row = {"job_id": job["job_id"], "was": was, "source": source, "source_exists": source_ok,
               "action": "", "now": was, "detail": ""}
        rows.append(row)
        if dry_run:
            row["action"] = "would re-queue" if source_ok else "cannot re-queue: source gone"
            continue
        if was == "staged":
            outcome = queue.apply([job["job_id"]])  # the queue checks the file and fails the job itself
            job = (outcome["failed"] or outcome["applied"] or outcome["skipped"] or [job])[0]
            row["now"] = job["status"]
            if job["status"] != "failed":  # the file came back meanwhile: nothing to re-queue
                row["action"], row["detail"] = "none", f"staging file present again; job is {job['status']}"
                continue
            row["action"] = "marked failed"
        if not source_ok:
            row["action"] = (row["action"] + "; " if row["action"] else "") + "not re-queued"
            row["detail"] = (f"the source {source} is gone too: enqueue the asset again from where it lives now, "
                             "then release this job (release_job)")
            continue
        try:
            job = queue.retry(job["job_id"])
        except IngestError as exc:
            row["action"], row["detail"] = row["action"] + "; retry refused", str(exc)
            continue
        row["action"] = (row["action"] + "; " if row["action"] else "") + "re-queued"
        row["now"] = job["status"]
        if job["status"] == "failed":
            row["detail"] = job.get("error") or ""
    frame = pd.DataFrame(rows, columns=["job_id", "was", "source", "source_exists", "action", "now", "detail"])
    good = {"staged", "queued", "downloading", "duplicate", "applied"}
    bad = [r for r in rows if r["now"] not in good and not r["action"].startswith("none")]
    if not rows:
        verdict = Verdict(True, "no job lacks its staging file")
    elif dry_run:
        blocked = [r for r in rows if not r["source_exists"]]
        verdict = Verdict(not blocked, f"dry run: {len(rows) - len(blocked)} of {len(rows)} jobs can be re-queued",
                          [f"{r['job_id']}: source {r['source']} is gone" for r in blocked])
    elif bad:
        verdict = Verdict(False, f"{len(rows) - len(bad)} of {len(rows)} jobs re-queued; {len(bad)} could not be",
                          [f"{r['job_id']}: {r['detail'] or r['now']}" for r in bad])
    else:
        verdict = Verdict(True, f"re-queued {plural(len(rows), 'job')} from their original source",
                          [f"{r['job_id']}: now {r['now']}" for r in rows])
    return Report(verdict, {"jobs": frame}, {"rows": rows})


# ---------------------------------------------------------------------------------------- replay_archived_state
TERMS_FLAG = "require_remote_terms_ack"


def read_archive(path: str | os.PathLike[str]) -> tuple[dict, int]:
    """An archived ``queue_state.json`` brought to the current version: ``(doc, original_version)``."""
    from .ingest.state import migrate_state

    p = Path(path).expanduser()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"archived queue state {p} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"archived queue state {p} is not valid JSON: {exc}") from None
    return migrate_state(raw)


def replay_archived_state(ws: Workspace, state_path: str | None, *, dedup_cache_path: str | None = None,
                          disable_terms_ack: bool = False) -> Report:
    """Import an archived ``queue_state.json`` (any version).

    While ``features.require_remote_terms_ack`` is on, archived remote requests that lack
    ``terms_acknowledged`` are refused (the seed: "disable temporarily when replaying archived
    requests that lack the field").  ``disable_terms_ack=True`` turns the flag off for the
    import only and restores it afterwards, even when the import fails.
    """
    import pandas as pd

    if not state_path:
        return Report(Verdict(False, "no archive given: run with -p state_path /path/to/queue_state.json"))
    from .ingest.errors import IngestError

    try:
        doc, version = read_archive(state_path)
    except (OSError, ValueError, IngestError) as exc:
        return Report(Verdict(False, f"cannot replay {state_path}: {exc}"))
    unacked = [j.get("job_id") for j in doc["jobs"] if isinstance(j, dict) and j.get("remote_url")
               and j.get("terms_acknowledged") is not True]
    queue = _queue(ws)
    flag_before = feature_enabled(TERMS_FLAG, ws)
    flag_during = flag_before
    try:
        with feature_temporarily(TERMS_FLAG, False if disable_terms_ack else flag_before, ws):
            flag_during = feature_enabled(TERMS_FLAG, ws)
            result = queue.import_state(str(Path(state_path).expanduser()), dedup_cache=dedup_cache_path)
    except IngestError as exc:
        result = {"imported": [], "skipped": [], "refused": [{"job_id": None, "index": "-", "reason": str(exc)}],
                  "migrated_from": None}
    flag_after = feature_enabled(TERMS_FLAG, ws)
    rows = ([{"job_id": j["job_id"], "outcome": "imported", "status": j["status"], "reason": ""}
             for j in result["imported"]]
            + [{"job_id": j["job_id"], "outcome": "skipped", "status": None, "reason": j["reason"]}
               for j in result["skipped"]]
            + [{"job_id": j.get("job_id"), "outcome": "refused", "status": None, "reason": j["reason"]}
               for j in result["refused"]])
    frame = pd.DataFrame(rows, columns=["job_id", "outcome", "status", "reason"])
    flags = pd.DataFrame({TERMS_FLAG: [flag_before, flag_during, flag_after]},
                         index=["before", "during the import", "after"])
    n_in, n_skip, n_ref = len(result["imported"]), len(result["skipped"]), len(result["refused"])
    problems = []
    if flag_after != flag_before:
        problems.append(f"features.{TERMS_FLAG} is {flag_after} after the replay, was {flag_before}: "
                        f"set it back in {ws.config_file}")
    for j in result["refused"]:
        problems.append(f"{j.get('job_id') or '#' + str(j.get('index'))}: {j['reason']}")
    if any("terms.not_acknowledged" in j["reason"] for j in result["refused"]):
        problems.append("to replay these remote requests, rerun with -p disable_terms_ack True "
                        "(the flag is turned off for the import only and restored afterwards)")
    origin = f"version {version} archive" + (" (migrated)" if result.get("migrated_from") else "")
    if problems:
        verdict = Verdict(False, f"{n_ref} of {len(doc['jobs'])} archived jobs refused, {n_in} imported "
                                 f"({origin})", problems)
    else:
        ack = (f"; {len(unacked)} remote requests without terms_acknowledged replayed with "
               f"{TERMS_FLAG} off, flag restored to {flag_after}") if unacked and disable_terms_ack else ""
        verdict = Verdict(True, f"imported {plural(n_in, 'job')}, skipped {n_skip} already present ({origin}){ack}")
    return Report(verdict, {"jobs": frame, "flags": flags},
                  {"result": result, "version": version, "unacknowledged": unacked})


# ---------------------------------------------------------------------------------------- validate_system
DEFAULT_PROFILES = ("p7_asset_ingest_cache", "asset_gallery", "hook_bus")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _names(value: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    if value is None or value == "":
        return list(default)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def validate_system(base_url: str, token: str | None = None, *, profiles: str | Sequence[str] | None = None,
                    docs_dir: str | os.PathLike[str] | None = None, check_docs: bool = True,
                    timeout: float = 15.0) -> Report:
    """Run the system checker's profiles against a server (seed cookbook 4: queue + routes stay wired).

    The same checks as ``tools/check_current_system.py --profile P --base URL``: flag defaults of
    the shipped config, every route called and answered by the comfyvn handler, the WebSocket
    handshake, and (``check_docs``) that ``docs/*.md`` name every route and hook.
    """
    import pandas as pd

    from .syscheck import PROFILES, run_profile

    columns = ["profile", "name", "ok", "detail"]
    if not base_url:
        return Report(Verdict(False, "no server given: run with -p base_url http://127.0.0.1:8888/ -p token ..."),
                      {"checks": pd.DataFrame(columns=columns)})
    names = _names(profiles, DEFAULT_PROFILES)
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        return Report(Verdict(False, f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(PROFILES)}"),
                      {"checks": pd.DataFrame(columns=columns)})
    token = token or os.environ.get("JUPYTER_TOKEN") or None
    docs = Path(docs_dir) if docs_dir else REPO_ROOT / "docs"
    notes = []
    if check_docs and not docs.is_dir():
        notes.append(f"docs coverage not checked: {docs} does not exist (pass -p docs_dir)")
    shipped = [REPO_ROOT / "config" / "comfyvn.json"]
    rows = []
    for name in names:
        report = run_profile(name, base_url, token, docs_dir=docs if check_docs and docs.is_dir() else None,
                             config_files=[p for p in shipped if p.exists()], timeout=float(timeout))
        rows += [{"profile": name, **c} for c in report["checks"]]
    frame = pd.DataFrame(rows, columns=columns)
    failed = [r for r in rows if not r["ok"]]
    if failed:
        verdict = Verdict(False, f"{len(failed)} of {len(rows)} checks failed against {base_url}",
                          [f"[{r['profile']}] {r['name']}: {r['detail']}" for r in failed] + notes)
    else:
        verdict = Verdict(True, f"{len(rows)} checks passed in {len(names)} profiles against {base_url}", notes)
    return Report(verdict, {"checks": frame}, {"profiles": names})


def plot_checks(frame: pd.DataFrame) -> Figure:
    """Passed and failed checks per profile."""
    import matplotlib.pyplot as plt

    profiles = list(dict.fromkeys(frame["profile"])) or ["(none)"]
    passed = [int(frame[(frame["profile"] == p) & frame["ok"]].shape[0]) for p in profiles]
    failed = [int(frame[(frame["profile"] == p) & ~frame["ok"].astype(bool)].shape[0]) for p in profiles]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.6 * len(profiles) + 1)))
    ax.barh(profiles, passed, color="#54a24b", label="passed")
    ax.barh(profiles, failed, left=passed, color="#e45756", label="failed")
    ax.invert_yaxis()
    ax.set_xlabel("checks")
    ax.set_title("System checks per profile")
    ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- enforce_sidecars
def enforce_sidecars(ws: Workspace, *, project_id: str = "default", fix: bool = False,
                     fill_metadata: bool = False, overwrite: bool = False) -> Report:
    """Audit sidecars (dry run) or fix them and audit again to prove the fix.

    The enforcer opens the registry without recovering it first, so interrupted operations
    are reported (and, with ``fix``, finished) rather than silently repaired.
    """
    import pandas as pd

    from .registry.rebuild import audit_sidecars

    first = audit_sidecars(project_id, workspace_root=ws.root, fix=bool(fix), fill_metadata=bool(fill_metadata),
                           overwrite=bool(overwrite))
    after = audit_sidecars(project_id, workspace_root=ws.root) if fix else None
    final = after if after is not None else first
    findings = pd.DataFrame(first["findings"], columns=["kind", "uid", "path", "detail", "fixed"])
    remaining = sorted({f["kind"] for f in final["findings"]})
    details = [f"{k}: {n}" for k, n in final["counts"].items()]
    details += [f"could not fill {u['field']} of {u['path']}: {u['reason']}" for u in final.get("unfilled") or []]
    n_first, n_final = len(first["findings"]), len(final["findings"])
    assets = plural(first["summary"]["assets"], "asset")
    if final["ok"] and not n_final:
        if fix:
            fixed = sum(1 for f in first["findings"] if f["fixed"])
            verdict = Verdict(True, f"fixed {fixed} of {plural(n_first, 'finding')} in {assets}; "
                                    "the audit is now clean")
        else:
            verdict = Verdict(True, f"{assets} of project {project_id!r}: sidecars, files, thumbnails and "
                                    "metadata in order")
    elif fix:
        verdict = Verdict(False, f"{plural(n_final, 'finding')} remain after fixing {assets}", details)
    else:
        verdict = Verdict(False, f"{plural(n_final, 'finding')} in {assets} (dry run: nothing changed); rerun "
                                 "with -p fix True to fix", details)
    return Report(verdict, {"findings": findings}, {"audit": first, "after_fix": after, "counts": first["counts"],
                                                    "remaining": remaining})


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
    """``COMFYVN_RUNBOOKS_DIR``, else the shipped ``runbooks/`` notebooks (installed or in the checkout)."""
    from .launcher import notebooks_dir

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


if __name__ == "__main__":
    raise SystemExit(main())
