"""The job store: every statement on ``ingest_jobs`` and the job-row codec.

A job is a plain dict (the row, JSON columns decoded, ``pin``/``terms_acknowledged`` as bools).
Every change goes through :meth:`JobStore.update` or :meth:`JobStore.insert` inside the caller's
transaction and emits its event there (the outbox), so the change and its event commit together.
The queue, the worker, the state export/import and the repairs all read and write jobs here.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from ..fsutil import owner_alive, owner_token
from ..hooks import emit, get_hook_bus
from ..hooks.events import emit_many
from ..store import Connection, Database
from ..store.errors import StoreUnavailable
from .errors import InvalidTransitionError, JobNotFoundError
from .jobs import CLAIMED, HOLDS_DIGEST, KEEPS_STAGING, PENDING, STATUSES, JobStatus, check_status, sql_in

JSON_COLUMNS = ("notes", "errors", "metadata", "user_metadata", "provider_metadata")
PUBLIC_KEYS = ("job_id", "provider", "status", "source_path", "remote_url", "dest_relative", "asset_type_hint",
               "pin", "terms_acknowledged", "digest", "bytes", "bytes_done", "bytes_total", "staging_path",
               "dedup_of", "existing_uid", "asset_uid", "notes", "error", "errors", "attempts", "metadata",
               "project_id", "created_at", "updated_at", "expected_sha256", "filename", "next_attempt_at")
ENQUEUED = "on_asset_ingest_enqueued"
UPDATED = "on_asset_ingest_updated"
FAILED = "on_asset_ingest_failed"
IN_CHUNK = 500  # values per "IN (...)" list (well under every SQLite build's parameter limit)
_PLAIN = frozenset({str, int, float, bool})  # values a column holds as they are (outside the JSON columns)

log = logging.getLogger("comfyvn.ingest.jobstore")


def in_chunks(values: list[Any]) -> Iterator[tuple[list[Any], str]]:
    """``(part, "?, ?, ...")`` for each :data:`IN_CHUNK` of ``values``: one ``IN (...)`` list each."""
    for start in range(0, len(values), IN_CHUNK):
        part = values[start:start + IN_CHUNK]
        yield part, ", ".join("?" * len(part))


# ---------------------------------------------------------------------------- the codec
def job_from_row(row: Any) -> dict:
    """A job dict from an ``ingest_jobs`` row (JSON columns decoded)."""
    job = dict(row)
    for key in JSON_COLUMNS:
        if key in job:
            job[key] = json.loads(job[key]) if job[key] else ({} if key != "notes" and key != "errors" else [])
    job["pin"] = bool(job.get("pin"))
    job["terms_acknowledged"] = bool(job.get("terms_acknowledged"))
    return job


def encode_value(key: str, value: Any) -> Any:
    """A job field as its column holds it (JSON columns as text, statuses as plain strings)."""
    if key in JSON_COLUMNS and value is not None:
        return json.dumps(value, ensure_ascii=False, default=str)
    return value.value if isinstance(value, Enum) else value


def public_job(job: dict) -> dict:
    """What callers see of a job (no owner token, no internal columns)."""
    return {k: job.get(k) for k in PUBLIC_KEYS}


def event_payload(job: dict, **extra: Any) -> dict:
    """The payload of an ``on_asset_ingest_*`` event (the seed's keys first)."""
    payload = {"job_id": job["job_id"], "provider": job["provider"], "status": job["status"],
               "digest": job.get("digest"), "asset_type_hint": job.get("asset_type_hint"),
               "notes": list(job.get("notes") or []), "project_id": job.get("project_id")}
    for key in ("dedup_of", "existing_uid", "asset_uid", "error", "attempts"):
        if job.get(key) is not None:
            payload[key] = job[key]
    payload.update(extra)
    return payload


def new_job(**fields: Any) -> dict:
    """A fresh ``queued`` job (not stored yet), ``fields`` (``project_id`` among them) set over the defaults."""
    now = time.time()
    job: dict[str, Any] = {"job_id": secrets.token_hex(6), "project_id": None, "provider": "local",
           "status": JobStatus.QUEUED, "source_path": None, "remote_url": None, "dest_relative": None,
           "asset_type_hint": None, "pin": False, "terms_acknowledged": False, "digest": None,
           "expected_sha256": None, "bytes": None, "bytes_done": 0, "bytes_total": None, "filename": None,
           "staging_path": None, "dedup_of": None, "existing_uid": None, "asset_uid": None, "notes": [],
           "error": None, "errors": [], "attempts": 1, "metadata": {}, "user_metadata": {},
           "provider_metadata": None, "next_attempt_at": 0.0, "owner": None, "staged_boot": None,
           "created_at": now, "updated_at": now}
    job.update(fields)
    return job


def registered_asset(conn: Connection, project_id: str, digest: str) -> Any:
    """The registry row ``(uid, path)`` holding ``digest`` (a primary-key lookup: uid = digest[:16])."""
    return conn.execute("SELECT uid, path FROM assets WHERE project_id = ? AND uid = ? AND hash = ?",
                        (project_id, digest[:16], digest)).fetchone()


def settled_fields(job: dict, digest: str, size: int, staged: Path | None, dup: dict | None,
                   staged_boot: str | None, extra_notes: list[str] | None = None) -> dict[str, Any]:
    """The changes that record staged bytes: ``staged``, or ``duplicate`` per ``dup`` (see
    :meth:`JobStore.dedup`).  ``staged_boot``: the boot the bytes were written behind in (None:
    already fsynced)."""
    notes = list(job.get("notes") or []) + list(extra_notes or [])
    fields: dict[str, Any] = {"digest": digest, "bytes": size, "bytes_done": size, "owner": None}
    if staged is not None:
        fields["staged_boot"] = staged_boot
    if dup is None:
        fields.update(status=JobStatus.STAGED, staging_path=str(staged) if staged else None, error=None)
    else:
        fields.update(status=JobStatus.DUPLICATE, staging_path=None, pin=False, dedup_of=dup.get("dedup_of"),
                      existing_uid=dup.get("existing_uid"), error=None)
        notes.append(dup["note"])
    fields["notes"] = list(dict.fromkeys(notes))
    return fields


def _claim_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` with ``lease_until`` cleared when they set the owner without a lease of their
    own (a lease belongs to one claim: a stale one must never outlive it)."""
    if "owner" in changes and "lease_until" not in changes:
        return {**changes, "lease_until": None}
    return changes


# ---------------------------------------------------------------------------- the store
class JobStore:
    """The ``ingest_jobs`` table of one workspace database.

    ``staging_dir``: this server's staging folder.  A staged file's path is stored as its name in
    that folder and resolved against it on read, so servers mounting the shared staging folder at
    different paths (``paths.staging``) all find it; rows of older versions hold absolute paths,
    which still work (and a missing one is looked up by its name in this staging folder)."""

    def __init__(self, db: Database, staging_dir: Path | None = None) -> None:
        self.db = db
        self.staging_dir = staging_dir
        self._staging_dirs = {staging_dir, staging_dir.resolve()} if staging_dir is not None else set()
        self.leases = LeaseKeeper(self)

    # ------------------------------------------------------------------ the staging path column
    def _encode(self, key: str, value: Any) -> Any:
        """:func:`encode_value`, with a path in this staging folder stored as its name."""
        if key == "staging_path" and value is not None and self.staging_dir is not None:
            path = Path(value)
            if path.is_absolute() and path.parent in self._staging_dirs:
                return path.name
        return encode_value(key, value)

    def staged_path(self, stored: str | None) -> str | None:
        """The ``staging_path`` column read on this server: a name resolved in this staging folder;
        an absolute path (older rows) as it is, or by its name here when it is missing there."""
        if stored is None or self.staging_dir is None:
            return stored
        path = Path(stored)
        if not path.is_absolute():
            return str(self.staging_dir / path.name)
        if path.parent not in self._staging_dirs and not path.exists():
            local = self.staging_dir / path.name
            if local.exists():
                return str(local)
        return stored

    def _job(self, row: Any) -> dict:
        job = job_from_row(row)
        if job.get("staging_path") is not None:
            job["staging_path"] = self.staged_path(job["staging_path"])
        return job

    # ------------------------------------------------------------------ one job
    def row(self, conn: Connection, job_id: str) -> dict | None:
        """The job ``job_id`` as ``conn`` sees it (inside a transaction: as it will commit)."""
        row = conn.execute("SELECT * FROM ingest_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def get(self, job_id: Any) -> dict | None:
        """The job ``job_id`` now (None for an unknown id or one that is not a string)."""
        return self.row(self.db.conn, job_id) if isinstance(job_id, str) else None

    def require(self, conn: Connection, job_id: Any) -> dict:
        job = self.row(conn, job_id) if isinstance(job_id, str) else None
        if job is None:
            raise JobNotFoundError(f"no ingest job {job_id!r}")
        return job

    def exists(self, job_id: str, conn: Connection | None = None) -> bool:
        return (conn or self.db.conn).execute("SELECT 1 FROM ingest_jobs WHERE job_id = ?",
                                              (job_id,)).fetchone() is not None

    def project_of(self, job_id: str) -> str | None:
        row = self.db.query_one("SELECT project_id FROM ingest_jobs WHERE job_id = ?", (job_id,))
        return row[0] if row else None

    def status_and_owner(self, job_id: str) -> tuple[str, str | None] | None:
        """``(status, owner)`` of a job, read cheaply (a download polls this to notice a cancel)."""
        row = self.db.query_one("SELECT status, owner FROM ingest_jobs WHERE job_id = ?", (job_id,))
        return (row[0], row[1]) if row else None

    # ------------------------------------------------------------------ changes (caller's transaction)
    def insert(self, conn: Connection, job: dict, topic: str = ENQUEUED) -> dict:
        """Store a new job and emit ``topic``."""
        cols = ", ".join(job)
        values = [self._encode(k, v) for k, v in job.items()]
        conn.execute(f"INSERT INTO ingest_jobs({cols}) VALUES ({', '.join('?' * len(job))})", values)
        emit(conn, topic, event_payload(job), project_id=job.get("project_id"))
        return job

    def insert_many(self, conn: Connection, jobs: list[dict], topic: str = ENQUEUED) -> list[dict]:
        """Store new jobs (every one with the same keys) with one statement, and emit ``topic``
        for each (one statement per project)."""
        if not jobs:
            return jobs
        keys = list(jobs[0])
        special = {k for k in keys if k in JSON_COLUMNS or k == "staging_path"}
        conn.executemany(f"INSERT INTO ingest_jobs({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                         [[v if v is None or (type(v) in _PLAIN and k not in special) else self._encode(k, v)
                           for k, v in zip(keys, (job[k] for k in keys), strict=True)] for job in jobs])
        by_project: dict[str | None, list[tuple[str, dict]]] = {}
        for job in jobs:
            by_project.setdefault(job.get("project_id"), []).append((topic, event_payload(job)))
        for project_id, events in by_project.items():
            emit_many(conn, events, project_id=project_id)
        return jobs

    def rows(self, conn: Connection, job_ids: list[str]) -> dict[str, dict]:
        """``{job_id: job}`` of the known ids among ``job_ids`` (a few statements, whatever their number)."""
        out: dict[str, dict] = {}
        for part, marks in in_chunks(job_ids):
            for row in conn.execute(f"SELECT * FROM ingest_jobs WHERE job_id IN ({marks})", part):
                out[row["job_id"]] = self._job(row)
        return out

    def statuses(self, conn: Connection, job_ids: list[str]) -> dict[str, str]:
        """``{job_id: status}`` of the known ids among ``job_ids``."""
        out: dict[str, str] = {}
        for part, marks in in_chunks(job_ids):
            out.update(conn.execute(f"SELECT job_id, status FROM ingest_jobs WHERE job_id IN ({marks})", part).fetchall())
        return out

    def update_many(self, conn: Connection, jobs: list[dict], topic: str | None,
                    changes: dict[str, Any]) -> list[dict]:
        """:meth:`update` of many jobs with the same ``changes`` (one statement, one event statement)."""
        if not jobs:
            return []
        changes = {**_claim_changes(changes), "updated_at": time.time()}
        cols = ", ".join(f"{k} = ?" for k in changes)
        values = [self._encode(k, v) for k, v in changes.items()]
        conn.executemany(f"UPDATE ingest_jobs SET {cols} WHERE job_id = ?", [(*values, j["job_id"]) for j in jobs])
        new = [{**job, **changes} for job in jobs]
        if topic:
            by_project: dict[str | None, list[tuple[str, dict]]] = {}
            for job in new:
                by_project.setdefault(job.get("project_id"), []).append((topic, event_payload(job)))
            for project_id, events in by_project.items():
                emit_many(conn, events, project_id=project_id)
        return new

    def mark_applied_many(self, conn: Connection, project_id: str,
                          done: list[tuple[dict, str, dict]]) -> dict[str, dict]:
        """Mark jobs ``applied`` as :meth:`update` does, each with its asset: one UPDATE statement
        for them all and their ``on_asset_ingest_applied`` events in one insert.  ``done``:
        ``(job, asset uid, extra event data)``; returns ``{job_id: job as changed}``."""
        now = time.time()
        out: dict[str, dict] = {}
        rows, events = [], []
        for job, asset_uid, extra in done:
            changes = {"status": JobStatus.APPLIED, "asset_uid": asset_uid, "pin": False, "staging_path": None,
                       "owner": None, "error": None, "updated_at": now}
            new = out[job["job_id"]] = {**job, **changes}
            rows.append([*(encode_value(k, v) for k, v in changes.items()), job["job_id"]])
            events.append(("on_asset_ingest_applied", event_payload(new, **extra)))
        conn.executemany("UPDATE ingest_jobs SET status = ?, asset_uid = ?, pin = ?, staging_path = ?, owner = ?,"
                         " error = ?, updated_at = ? WHERE job_id = ?", rows)
        emit_many(conn, events, project_id=project_id)
        return out

    def update(self, conn: Connection, job: dict, topic: str | None, changes: dict[str, Any],
               **event_extra: Any) -> dict:
        """Apply ``changes`` to a job row and emit ``topic`` (None: no event); returns the new job."""
        changes = {**_claim_changes(changes), "updated_at": time.time()}
        cols = ", ".join(f"{k} = ?" for k in changes)
        values = [self._encode(k, v) for k, v in changes.items()]
        conn.execute(f"UPDATE ingest_jobs SET {cols} WHERE job_id = ?", (*values, job["job_id"]))
        new = {**job, **changes}
        if topic:
            emit(conn, topic, event_payload(new, **event_extra), project_id=new.get("project_id"))
        return new

    def fail(self, conn: Connection, job: dict, error: str, *, keep_file: bool = False,
             **extra: Any) -> dict:
        """Mark a job ``failed`` with ``error`` (added to its error history).  ``keep_file``: it keeps
        its staging file (and pin) for a retry.  A claim (``downloading``/``applying`` with an owner)
        that is no longer held as ``job`` describes it (recovery took it back after its lease ran
        out) is left to its new holder: the row is returned unchanged."""
        if job.get("status") in CLAIMED and job.get("owner"):
            lock = " FOR UPDATE" if self.db.engine == "postgresql" else ""
            row = conn.execute(f"SELECT * FROM ingest_jobs WHERE job_id = ?{lock}", (job["job_id"],)).fetchone()
            current = self._job(row) if row else None
            if current is None or current["status"] != job["status"] or current["owner"] != job["owner"]:
                return current or job
        errors = list(job.get("errors") or []) + [{"attempt": job["attempts"], "error": error,
                                                  "at": time.time()}]
        changes: dict[str, Any] = {"status": JobStatus.FAILED, "error": error, "errors": errors, "owner": None,
                                   "pin": False if not keep_file else job["pin"]}
        if not keep_file:
            changes["staging_path"] = None
        changes.update(extra)
        return self.update(conn, job, FAILED, changes)

    @staticmethod
    def claim_lapsed(job: dict, now: float) -> bool:
        """Whether a claimed job's claim may be taken back: its owner process is gone (a process on
        this host), or its lease ran out (any host; ``lease_until`` NULL: a claim without a lease)."""
        lease = job.get("lease_until")
        return not owner_alive(job["owner"]) or (lease is not None and lease < now)

    def renew_leases(self, job_ids: list[str], owner: str, until: float) -> int:
        """Extend the lease of those of ``job_ids`` still claimed (``downloading`` or ``applying``)
        under ``owner`` (a heartbeat; no event: nothing a reader sees changes); returns how many
        were renewed."""
        renewed = 0
        with self.db.transaction() as conn:
            for part, marks in in_chunks(job_ids):
                cur = conn.execute(
                    f"UPDATE ingest_jobs SET lease_until = ? WHERE job_id IN ({marks})"
                    f" AND owner = ? AND status IN {sql_in(CLAIMED)}", (until, *part, owner))
                renewed += max(0, cur.rowcount)
        return renewed

    def take_over(self, conn: Connection, job: dict, owner: str, until: float) -> dict | None:
        """Make the lapsed claim ``job`` (as read: status, owner and lease) ``owner``'s, with a lease
        to ``until``, in ``conn``'s transaction; None when it changed meanwhile (renewed, finished,
        or taken by another server's recovery).  One conditional UPDATE: on PostgreSQL it waits for
        a commit of the old holder in progress and then sees it (see :meth:`end_claims`)."""
        # "IS NULL" where the claim as read has no owner or no lease ("= NULL" matches nothing)
        terms, params = ["job_id = ?", "status = ?"], [job["job_id"], str(job["status"])]
        for column in ("owner", "lease_until"):
            if job.get(column) is None:
                terms.append(f"{column} IS NULL")
            else:
                terms.append(f"{column} = ?")
                params.append(job[column])
        cur = conn.execute(f"UPDATE ingest_jobs SET owner = ?, lease_until = ? WHERE {' AND '.join(terms)}",
                           (owner, until, *params))
        if cur.rowcount != 1:
            return None
        return {**job, "owner": owner, "lease_until": until}

    def end_claims(self, conn: Connection, jobs: list[dict], owner: str) -> None:
        """Inside the transaction that finishes ``jobs`` (``applying`` under ``owner``): clear their
        leases, or raise :class:`InvalidTransitionError` (the transaction then rolls back) when any
        is no longer claimed by ``owner``: a process that lost its claim (paused past its lease,
        taken back by recovery elsewhere) must not commit what the new holder is undoing."""
        held: set[str] = set()
        ids = [job["job_id"] for job in jobs]
        for part, marks in in_chunks(ids):
            held.update(r[0] for r in conn.execute(
                f"UPDATE ingest_jobs SET lease_until = NULL WHERE job_id IN ({marks})"
                " AND owner = ? AND status = ? RETURNING job_id", (*part, owner, str(JobStatus.APPLYING))).fetchall())
        lost = [job_id for job_id in ids if job_id not in held]
        if lost:
            raise InvalidTransitionError(
                f"{len(lost)} job(s) ({', '.join(lost[:5])}) are no longer applying under this process: their "
                "lease ran out and recovery took them back; nothing of them was committed")

    def notify(self) -> None:
        """Wake this process's event tailer now (after a commit) rather than at its next poll."""
        get_hook_bus(self.db).poke()

    # ------------------------------------------------------------------ dedup
    def dedup(self, conn: Connection, project_id: str, digest: str,
              exclude: str | None = None) -> dict | None:
        """The change that makes a job a duplicate of ``digest``, or None if it is new."""
        row = conn.execute(
            "SELECT job_id FROM ingest_jobs WHERE project_id = ? AND digest = ? AND status IN "
            f"{sql_in(HOLDS_DIGEST)} AND job_id != ? LIMIT 1", (project_id, digest, exclude or "")).fetchone()
        if row:
            return {"status": JobStatus.DUPLICATE, "dedup_of": row[0], "note": "duplicate.staged"}
        row = registered_asset(conn, project_id, digest)
        if row:
            return {"status": JobStatus.DUPLICATE, "existing_uid": row[0], "note": "duplicate.registry"}
        return None

    def dedup_many(self, conn: Connection, project_id: str, digests: list[str]) -> dict[str, dict]:
        """:meth:`dedup` of many digests of one project at once: ``{digest: change}`` for those
        already held by a staged/applying job or a registry row (the others are new)."""
        out: dict[str, dict] = {}
        unique = list(dict.fromkeys(digests))
        for part, marks in in_chunks(unique):
            for digest, job_id in conn.execute(
                    f"SELECT digest, job_id FROM ingest_jobs WHERE project_id = ? AND digest IN ({marks})"
                    f" AND status IN {sql_in(HOLDS_DIGEST)}", (project_id, *part)):
                out.setdefault(digest, {"status": JobStatus.DUPLICATE, "dedup_of": job_id, "note": "duplicate.staged"})
            for uid, digest in conn.execute(
                    f"SELECT uid, hash FROM assets WHERE project_id = ? AND uid IN ({marks})",
                    (project_id, *(d[:16] for d in part))):
                if digest in part and digest not in out:
                    out[digest] = {"status": JobStatus.DUPLICATE, "existing_uid": uid, "note": "duplicate.registry"}
        return out

    def settle_staged(self, conn: Connection, job: dict, digest: str, size: int, staged: Path | None, *,
                      insert: bool, topic: str, extra_notes: list[str] | None = None,
                      staged_boot: str | None = None) -> dict:
        """Record freshly staged bytes as ``staged``, or as a ``duplicate`` of what exists.
        ``staged_boot``: the boot the bytes were written behind in (None: already fsynced)."""
        dup = self.dedup(conn, job["project_id"], digest, exclude=job["job_id"])
        fields = settled_fields(job, digest, size, staged, dup, staged_boot, extra_notes)
        if insert:
            return self.insert(conn, {**job, **fields}, topic)
        return self.update(conn, job, topic, fields)

    def active_pull(self, conn: Connection, project_id: str, url: str) -> str | None:
        """The id of a pending pull of ``url`` in ``project_id`` (a second request is its duplicate)."""
        row = conn.execute("SELECT job_id FROM ingest_jobs WHERE project_id = ? AND remote_url = ?"
                           f" AND status IN {sql_in(PENDING)} LIMIT 1", (project_id, url)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ lists
    def ids_with_status(self, status: JobStatus, *, unpinned_before: float | None = None) -> list[str]:
        """Ids of the jobs in ``status``, oldest first (``unpinned_before``: only unpinned jobs not
        updated since that time)."""
        sql = "SELECT job_id FROM ingest_jobs WHERE status = ?"
        params: list[Any] = [str(status)]
        if unpinned_before is not None:
            sql += " AND pin = 0 AND updated_at < ?"
            params.append(unpinned_before)
        return [r[0] for r in self.db.query(sql + " ORDER BY seq", tuple(params))]

    def has_queued(self) -> bool:
        return self.db.query_one(
            f"SELECT 1 FROM ingest_jobs WHERE status = '{JobStatus.QUEUED}' LIMIT 1") is not None

    def queued(self, conn: Connection, limit: int = 200) -> Iterator[dict]:
        """The oldest queued jobs (for the worker to claim one)."""
        # PostgreSQL: rows another claimer holds are skipped, not waited for
        lock = " FOR UPDATE SKIP LOCKED" if self.db.engine == "postgresql" else ""
        for row in conn.execute(f"SELECT * FROM ingest_jobs WHERE status = '{JobStatus.QUEUED}'"
                                f" ORDER BY seq LIMIT ?{lock}", (limit,)):
            yield self._job(row)

    def claimed(self) -> list[dict]:
        """The ``downloading``/``applying`` jobs, whoever owns them."""
        return [self._job(r) for r in self.db.query(
            f"SELECT * FROM ingest_jobs WHERE status IN {sql_in(CLAIMED)} ORDER BY seq")]

    def ids_keeping_staging(self) -> set[str]:
        """Jobs whose files in staging are (or may again be) in use."""
        return {r[0] for r in self.db.query(f"SELECT job_id FROM ingest_jobs WHERE status IN {sql_in(KEEPS_STAGING)}")}

    def all_jobs(self) -> list[dict]:
        """Every job, oldest first."""
        return [self._job(r) for r in self.db.query("SELECT * FROM ingest_jobs ORDER BY seq")]

    def page(self, limit: int, status: str | None = None, provider: str | None = None,
             before_seq: int | None = None) -> tuple[list[dict], int | None]:
        """Up to ``limit`` jobs newest first (filters optional, ``before_seq`` for the next page);
        returns ``(jobs, seq to continue before or None)``."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(str(check_status(status)))
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.db.query(f"SELECT * FROM ingest_jobs{clause} ORDER BY seq DESC LIMIT ?", (*params, limit + 1))
        more = rows[limit - 1]["seq"] if len(rows) > limit else None
        return [self._job(r) for r in rows[:limit]], more

    # ------------------------------------------------------------------ figures
    def counts(self) -> dict[str, int]:
        """Jobs per status (every status, zeros included)."""
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.query("SELECT status, COUNT(*) FROM ingest_jobs GROUP BY status"):
            counts[status] = n
        return counts

    def provider_counts(self) -> dict[str, int]:
        return {p: n for p, n in self.db.query("SELECT provider, COUNT(*) FROM ingest_jobs GROUP BY provider")}

    def held_totals(self) -> tuple[int, int]:
        """``(bytes, pinned jobs)`` of the jobs holding their digest."""
        row = self.db.query_one(
            "SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(pin), 0) FROM ingest_jobs"
            f" WHERE status IN {sql_in(HOLDS_DIGEST)}")
        assert row is not None  # an aggregate always answers one row
        return int(row[0]), int(row[1])

    def dedup_snapshot(self) -> dict:
        """``{digest: {...}}`` of the bytes that block duplicates now (staged/applying jobs)."""
        rows = self.db.query(
            "SELECT digest, job_id, status, pin, provider, project_id, staging_path, bytes, updated_at"
            f" FROM ingest_jobs WHERE status IN {sql_in(HOLDS_DIGEST)} AND digest IS NOT NULL ORDER BY seq")
        return {r["digest"]: {"job_id": r["job_id"], "status": r["status"], "pinned": bool(r["pin"]),
                              "provider": r["provider"], "project_id": r["project_id"],
                              "staging_path": self.staged_path(r["staging_path"]), "bytes": r["bytes"],
                              "updated_at": r["updated_at"]} for r in rows}


class LeaseKeeper:
    """Keeps this process's claims alive while it works on them: a daemon thread renews the leases
    of the kept jobs every ``renew_s`` (to now + ``lease_s``; see :meth:`keep`) and ends when none
    is left.  Only claims still held by this process are renewed (:meth:`JobStore.renew_leases`)."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self._kept: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._lease_s = 60.0
        self._renew_s = 10.0

    @contextmanager
    def keep(self, job_ids: list[str], *, lease_s: float, renew_s: float) -> Iterator[None]:
        """Renew the leases of ``job_ids`` (those this process claims) until the block ends."""
        with self._lock:
            self._lease_s, self._renew_s = lease_s, renew_s
            self._kept.update(job_ids)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._renew, daemon=True, name="comfyvn-ingest-leases")
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._kept.subtract(job_ids)
                self._kept = +self._kept  # drop the zeros

    def kept(self, job_id: str) -> bool:
        """Whether a thread of this process works on ``job_id`` now (its lease is being renewed)."""
        with self._lock:
            return self._kept[job_id] > 0

    def _renew(self) -> None:
        owner = owner_token()
        try:
            while True:
                time.sleep(self._renew_s)
                with self._lock:
                    ids = sorted(self._kept)
                    if not ids:
                        self._thread = None
                        return
                    lease_s = self._lease_s
                try:
                    self.jobs.renew_leases(ids, owner, time.time() + lease_s)
                except StoreUnavailable:  # the work notices the outage itself
                    pass
                except Exception:
                    log.exception("renewing ingest leases failed")
        finally:
            self.jobs.db.close()  # this thread's connection


__all__ = [
    "JSON_COLUMNS",
    "PUBLIC_KEYS",
    "JobStore",
    "LeaseKeeper",
    "encode_value",
    "event_payload",
    "job_from_row",
    "new_job",
    "public_job",
    "registered_asset",
    "settled_fields",
]
