"""Checks and repairs of the ingest queue that people run (the runbooks call these).

Each function works on a queue or job store and returns plain data (dicts, lists,
dataclasses); it imports no pandas, matplotlib or notebook machinery.  The runbooks in
``notebooks/runbooks/`` (see :mod:`comfyvn.runbook_reports`) show what these return and
turn it into a verdict; anyone may call them from Python or a test.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Workspace, feature_enabled, set_feature
from .errors import IngestError, JobNotFoundError
from .jobs import CLAIMED, PENDING, JobStatus
from .jobstore import JobStore
from .queue import AssetIngestQueue
from .staging import STAGING_MISSING
from .state import migrate_state

TERMS_FLAG = "require_remote_terms_ack"


# ---------------------------------------------------------------------------------------- reading
def job_epoch(value: Any) -> float | None:
    """A job timestamp as epoch seconds (the queue stores floats; ISO strings are accepted too)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def iter_jobs(queue: AssetIngestQueue, status: str | None = None, page: int = 200) -> Iterator[dict]:
    """Every job (optionally of one status), newest first, read page by page."""
    cursor = None
    while True:
        result = queue.page_jobs(limit=page, status=status, cursor=cursor)
        yield from result["items"]
        cursor = result.get("next_cursor")
        if not cursor:
            return


def staging_missing(job: dict) -> bool:
    """Whether a job's staging file is gone (or it never had one)."""
    path = job.get("staging_path")
    return not path or not Path(path).is_file()


def lapse_reason(job: dict, now: float) -> str | None:
    """Why recovery may take back a claimed job (its owner process is gone on this host, or its
    lease ran out, whatever its host: :meth:`JobStore.claim_lapsed`), or None while it holds."""
    if not JobStore.claim_lapsed(job, now):
        return None
    lease = job.get("lease_until")
    if lease is not None and lease < now:
        return f"its lease ran out {now - lease:.0f} s ago"
    return "its process is gone"


def interrupted_jobs(store: JobStore, now: float | None = None) -> list[dict]:
    """``downloading``/``applying`` jobs recovery takes back: their process is gone (on this host)
    or their lease ran out (any host).  Opening a queue recovers them, so read them first:
    ``job_id``, ``status``, ``owner``, ``updated_at``, ``lease_until`` and ``reason`` of each."""
    now = time.time() if now is None else now
    out = []
    for job in store.claimed():
        reason = lapse_reason(job, now)
        if reason is not None:
            out.append({**{k: job[k] for k in ("job_id", "status", "owner", "updated_at", "lease_until")},
                        "reason": reason})
    return out


# ---------------------------------------------------------------------------------------- stuck jobs
def find_stuck_jobs(queue: AssetIngestQueue, *, stuck_minutes: float, now: float | None = None) -> list[dict]:
    """Jobs that will not move on by themselves, each with a ``stuck_reason``.

    * ``downloading`` / ``applying`` not updated for ``stuck_minutes``: either its claim still
      holds (the process working on it renews its lease, so it is alive, but silent: a live
      download updates its job as bytes arrive), or the claim lapsed (process gone, lease ran
      out) and the next recovery pass takes it back;
    * ``staged`` whose staging file is gone: apply would fail (:func:`requeue_missing_staging`).
    """
    now = time.time() if now is None else now
    limit = float(stuck_minutes) * 60
    stuck: list[dict] = []
    for status in (s for s in JobStatus if s in CLAIMED):
        for job in iter_jobs(queue, status):
            idle = now - (job_epoch(job.get("updated_at")) or 0.0)
            if idle >= limit:
                claim = queue.jobs.get(job["job_id"])
                if claim is None:  # deleted meanwhile
                    continue
                lapsed = lapse_reason(claim, now)
                if lapsed is not None:
                    remedy = (f"{lapsed}: recovery takes it back at its next pass (a worker's, within "
                              "30 s, or any queue opening)")
                elif status == JobStatus.DOWNLOADING:
                    remedy = f"cancel it: release_job -p job_id {job['job_id']} -p cancel_active True"
                else:
                    remedy = "its process hangs: stop that process (the queue then recovers the job)"
                if lapsed is None and claim.get("lease_until") is not None:
                    remedy += f" (its lease is still renewed, to {claim['lease_until'] - now:.0f} s from now)"
                stuck.append({**job, "stuck_reason": f"{status}, no update for {idle / 60:.1f} min; {remedy}"})
    for job in iter_jobs(queue, JobStatus.STAGED):
        if staging_missing(job):
            stuck.append({**job, "stuck_reason": "staged, but its staging file is missing; run "
                                                 "requeue_missing_staging"})
    return stuck


def failure_reasons(jobs: list[dict]) -> dict[str, int]:
    """How many of ``jobs`` failed with each error."""
    reasons: dict[str, int] = {}
    for job in jobs:
        reason = job.get("error") or "(no error recorded)"
        reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


# ---------------------------------------------------------------------------------------- dedup cache
def dedup_cache_entries(queue: AssetIngestQueue, cache: dict | None = None) -> list[dict]:
    """The dedup cache as rows, each saying whether its staging file is still there."""
    cache = queue.dedup_snapshot() if cache is None else cache
    rows = []
    for digest, entry in cache.items():
        path = entry.get("staging_path")
        rows.append({"digest": digest, "job_id": entry["job_id"], "status": entry["status"],
                     "pinned": entry["pinned"], "provider": entry["provider"], "project_id": entry["project_id"],
                     "bytes": entry["bytes"], "file_present": bool(path) and Path(path).is_file(),
                     "staging_path": path})
    return rows


def cache_entries(doc: Any) -> dict:
    """The ``{digest: entry}`` part of what the status route answers (bare or wrapped)."""
    if isinstance(doc, dict) and isinstance(doc.get("cache"), dict):
        return doc["cache"]
    return doc if isinstance(doc, dict) else {}


# ---------------------------------------------------------------------------------------- release
@dataclass
class ReleaseOutcome:
    """What :func:`release_job` did: ``action`` is ``released`` or ``cancelled``; ``problems``
    lists what is left behind that should not be (a staging file, a cache pin)."""

    job_id: str
    action: JobStatus
    before: dict
    after: dict
    problems: list[str] = field(default_factory=list)


def release_job(queue: AssetIngestQueue, job_id: str, *, cancel_active: bool = False) -> ReleaseOutcome:
    """Force-release one job and check nothing of it is left.

    ``cancel_active=True`` cancels a pending (``queued``/``downloading``) job instead: the queue
    only releases staged, duplicate or failed jobs, and a hung download is stopped by cancelling
    it.  Raises :class:`JobNotFoundError` for an unknown job and the queue's
    :class:`InvalidTransitionError` (with its reason) for one that may not be released.
    """
    before = queue.get(job_id)
    if before is None:
        raise JobNotFoundError(f"no job {job_id!r} in the queue of {queue.ws.root}")
    cancel = bool(cancel_active) and before["status"] in PENDING
    after = queue.cancel(job_id) if cancel else queue.release(job_id)
    want = JobStatus.CANCELLED if cancel else JobStatus.RELEASED
    problems = []
    if after["status"] != want:
        problems.append(f"job is {after['status']!r} afterwards, not {str(want)!r}")
    staged = before.get("staging_path")
    if staged and Path(staged).exists():
        problems.append(f"staging file {staged} is still on disk")
    if before.get("digest") in queue.dedup_snapshot():
        problems.append("its digest still pins the dedup cache")
    return ReleaseOutcome(job_id, want, before, after, problems)


# ---------------------------------------------------------------------------------------- requeue
def requeue_missing_staging(queue: AssetIngestQueue, *, dry_run: bool = False) -> list[dict]:
    """Re-queue the jobs whose staging file is gone from their original source.

    Staged jobs whose staging file is gone are first marked ``failed`` with ``Staging file
    missing`` (by the queue's own apply, which checks the file); then every job failed that way
    is retried: a local file that still exists is staged again at once, a remote URL goes back to
    ``queued`` for a downloader.  A local source that is gone too cannot be re-queued.  Returns
    one row per job: ``job_id``, ``was``, ``source``, ``source_exists``, ``action``, ``now``,
    ``detail``.
    """
    missing = [j for j in iter_jobs(queue, JobStatus.STAGED) if staging_missing(j)]
    failed = [j for j in iter_jobs(queue, JobStatus.FAILED) if j.get("error") == STAGING_MISSING]
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
        if was == JobStatus.STAGED:
            outcome = queue.apply([job["job_id"]])  # the queue checks the file and fails the job itself
            job = (outcome["failed"] or outcome["applied"] or outcome["skipped"] or [job])[0]
            row["now"] = job["status"]
            if job["status"] != JobStatus.FAILED:  # the file came back meanwhile: nothing to re-queue
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
        if job["status"] == JobStatus.FAILED:
            row["detail"] = job.get("error") or ""
    return rows


#: where a re-queued job may stand afterwards for the repair to count as done
REQUEUED_OK = frozenset({JobStatus.STAGED, JobStatus.QUEUED, JobStatus.DOWNLOADING, JobStatus.DUPLICATE,
                         JobStatus.APPLIED})


# ---------------------------------------------------------------------------------------- replay
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


def read_archive(path: str | os.PathLike[str]) -> tuple[dict, int]:
    """An archived ``queue_state.json`` brought to the current version: ``(doc, original_version)``."""
    p = Path(path).expanduser()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"archived queue state {p} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"archived queue state {p} is not valid JSON: {exc}") from None
    return migrate_state(raw)


def unacknowledged_remote(doc: dict) -> list[str | None]:
    """Ids of the archived remote requests that lack ``terms_acknowledged``."""
    return [j.get("job_id") for j in doc["jobs"] if isinstance(j, dict) and j.get("remote_url")
            and j.get("terms_acknowledged") is not True]


@dataclass
class ReplayOutcome:
    """What :func:`replay_archive` did: the import result and the terms flag before, during
    and after the import."""

    result: dict
    flag_before: bool
    flag_during: bool
    flag_after: bool


def replay_archive(queue: AssetIngestQueue, state_path: str | os.PathLike[str], *,
                   dedup_cache_path: str | os.PathLike[str] | None = None,
                   disable_terms_ack: bool = False) -> ReplayOutcome:
    """Import an archived ``queue_state.json`` (any version) into ``queue``.

    While ``features.require_remote_terms_ack`` is on, archived remote requests that lack
    ``terms_acknowledged`` are refused.  ``disable_terms_ack=True`` turns the flag off for the
    import only and restores it afterwards, even when the import fails.  An archive the queue
    cannot read at all comes back as one refused entry with the reason.
    """
    ws = queue.ws
    flag_before = feature_enabled(TERMS_FLAG, ws)
    flag_during = flag_before
    try:
        with feature_temporarily(TERMS_FLAG, False if disable_terms_ack else flag_before, ws):
            flag_during = feature_enabled(TERMS_FLAG, ws)
            result = queue.import_state(str(Path(state_path).expanduser()), dedup_cache=dedup_cache_path)
    except IngestError as exc:
        result = {"imported": [], "skipped": [], "refused": [{"job_id": None, "index": "-", "reason": str(exc)}],
                  "migrated_from": None}
    return ReplayOutcome(result, flag_before, flag_during, feature_enabled(TERMS_FLAG, ws))


__all__ = [
    "REQUEUED_OK",
    "TERMS_FLAG",
    "ReleaseOutcome",
    "ReplayOutcome",
    "cache_entries",
    "dedup_cache_entries",
    "failure_reasons",
    "feature_temporarily",
    "find_stuck_jobs",
    "interrupted_jobs",
    "iter_jobs",
    "job_epoch",
    "read_archive",
    "release_job",
    "replay_archive",
    "requeue_missing_staging",
    "staging_missing",
    "unacknowledged_remote",
]
