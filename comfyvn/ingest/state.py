"""Versioned exports of the queue: ``queue_state.json`` and ``dedup_cache.json``.

The database is the live state; these files are atomic snapshots a person or a tool can read
and that :func:`import_state` can replay into another workspace (or this one after a reset).

Version 2 (current)::

    queue_state.json  {"version": 2, "exported_at": "...Z", "jobs": [job, ...]}
    dedup_cache.json  {"version": 2, "exported_at": "...Z", "cache": {digest: {...}}}

Version 1 (the pre-database queue) is migrated on import, never discarded::

    {"version": 1, "saved_at": 1734850000.0,
     "queue": [{"id", "provider", "state", "source", "url", "sha256", "size", "meta",
                "type_hint", "dest", "pinned", "terms"?, "error", "created"}]}
    dedup cache v1: {"version": 1, "entries": {digest: {"job": id, "pinned": bool}}}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Workspace, feature_enabled
from ..fsutil import atomic_write_json, is_within
from ..hooks.events import utc_timestamp
from .errors import IngestError
from .jobs import HOLDS_DIGEST, PENDING, SETTLED, JobStatus
from .jobstore import ENQUEUED, JobStore, new_job, public_job
from .mappers import PROVIDERS, normalise_metadata
from .staging import UNKNOWN_BOOT, Staging

STATE_VERSION = 2

_S = JobStatus
# the pre-database queue's states (v1) -> today's status; a job in flight then is redone now
_V1_STATUS = {"pending": _S.QUEUED, "queued": _S.QUEUED, "downloading": _S.QUEUED, "fetching": _S.QUEUED,
              "staged": _S.STAGED, "ready": _S.STAGED, "applying": _S.STAGED, "applied": _S.APPLIED,
              "done": _S.APPLIED, "duplicate": _S.DUPLICATE, "failed": _S.FAILED, "error": _S.FAILED,
              "released": _S.RELEASED, "cancelled": _S.CANCELLED, "canceled": _S.CANCELLED}


# ---------------------------------------------------------------------------- migrations
def _epoch(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _migrate_v1(doc: dict) -> dict:
    jobs = []
    for i, old in enumerate(doc.get("queue") or []):
        if not isinstance(old, dict):
            raise IngestError(f"queue state v1: entry {i} is not an object", code="bad_state")
        status = _V1_STATUS.get(str(old.get("state", "queued")).lower())
        if status is None:
            raise IngestError(f"queue state v1: entry {i} has unknown state {old.get('state')!r}",
                              code="bad_state")
        terms = old.get("terms", old.get("terms_acknowledged"))
        jobs.append({
            "job_id": old.get("id"), "provider": old.get("provider") or "local", "status": status,
            "source_path": old.get("source"), "remote_url": old.get("url"), "dest_relative": old.get("dest"),
            "asset_type_hint": old.get("type_hint"), "pin": bool(old.get("pinned", False)),
            "terms_acknowledged": terms,  # None = the archive never said (the seed's weakness)
            "digest": (old.get("sha256") or "").lower() or None, "bytes": old.get("size"),
            "staging_path": old.get("staging"), "error": old.get("error"),
            "user_metadata": old.get("meta") or {}, "created_at": _epoch(old.get("created")),
        })
    return {"version": 2, "exported_at": doc.get("saved_at"), "jobs": jobs}


def _migrate_cache_v1(doc: dict) -> dict:
    cache = {}
    for digest, entry in (doc.get("entries") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        cache[str(digest).lower()] = {"job_id": entry.get("job"), "pinned": bool(entry.get("pinned", False))}
    return {"version": 2, "cache": cache}


# version -> function turning that version into the next one
STATE_MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _migrate_v1}
CACHE_MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _migrate_cache_v1}


def _upgrade(doc: Any, migrations: dict[int, Callable[[dict], dict]], what: str) -> tuple[dict, int]:
    if not isinstance(doc, dict):
        raise IngestError(f"{what} must be a JSON object", code="bad_state")
    version = doc.get("version", 1 if ("queue" in doc or "entries" in doc) else None)
    if not isinstance(version, int) or version < 1:
        raise IngestError(f"{what} has no usable 'version' (got {doc.get('version')!r})", code="bad_state")
    if version > STATE_VERSION:
        raise IngestError(f"{what} is version {version}, newer than this comfyvn understands ({STATE_VERSION}); "
                          "upgrade comfyvn", code="bad_state")
    original = version
    while version < STATE_VERSION:
        doc = migrations[version](doc)
        version = doc["version"]
    return doc, original


def migrate_state(doc: Any) -> tuple[dict, int]:
    """Bring a queue-state document to :data:`STATE_VERSION`; returns ``(doc, original_version)``."""
    doc, original = _upgrade(doc, STATE_MIGRATIONS, "queue state")
    if not isinstance(doc.get("jobs"), list):
        raise IngestError("queue state has no 'jobs' list", code="bad_state")
    return doc, original


def migrate_cache(doc: Any) -> tuple[dict, int]:
    doc, original = _upgrade(doc, CACHE_MIGRATIONS, "dedup cache")
    if not isinstance(doc.get("cache"), dict):
        raise IngestError("dedup cache has no 'cache' object", code="bad_state")
    return doc, original


# ---------------------------------------------------------------------------- export
def export_state(store: JobStore, ws: Workspace, path: str | os.PathLike[str] | None = None) -> dict:
    """Write both snapshots atomically (``path`` = where the queue state goes; the cache beside it)."""
    state_file = Path(path) if path is not None else ws.queue_state_file
    cache_file = ws.dedup_cache_file if path is None else state_file.with_name("dedup_cache.json")
    now = utc_timestamp()
    jobs = [{**public_job(job), "user_metadata": job["user_metadata"]} for job in store.all_jobs()]
    cache = store.dedup_snapshot()
    atomic_write_json(state_file, {"version": STATE_VERSION, "exported_at": now, "jobs": jobs})
    atomic_write_json(cache_file, {"version": STATE_VERSION, "exported_at": now, "cache": cache})
    return {"version": STATE_VERSION, "exported_at": now, "jobs": len(jobs), "cache": len(cache),
            "queue_state_file": str(state_file), "dedup_cache_file": str(cache_file)}


# ---------------------------------------------------------------------------- import
def _load(source: Any, what: str) -> Any:
    if isinstance(source, dict):
        return json.loads(json.dumps(source))  # a private copy
    path = Path(os.fspath(source))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IngestError(f"{what} file {path} does not exist", code="bad_state") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(f"{what} file {path} is not valid JSON: {exc}", code="bad_state") from None


def import_state(store: JobStore, staging: Staging, source: Any, *, dedup_cache: Any = None,
                 check_entry: Callable[[dict], str | None] | None = None) -> dict:
    """Replay an archived queue state (any version) into this workspace's queue.

    Jobs already present (same ``job_id``) are skipped, so importing twice is harmless.
    Unfinished jobs come back as ``queued`` (re-staged from ``source_path`` or pulled again)
    or ``staged`` when their staging file is still inside this workspace's staging folder;
    finished ones are kept as history.  Remote jobs without ``terms_acknowledged`` are refused
    while ``features.require_remote_terms_ack`` is on (turn it off to replay them).
    ``check_entry`` (the queue's own checks of a project, type and destination) says why an
    entry is refused.  The caller wakes a worker for the jobs imported as ``queued``.
    """
    doc, original = migrate_state(_load(source, "queue state"))
    pins: dict[str, bool] = {}
    if dedup_cache is not None:
        cache_doc, _ = migrate_cache(_load(dedup_cache, "dedup cache"))
        pins = {d.lower(): bool(e.get("pinned")) for d, e in cache_doc["cache"].items() if isinstance(e, dict)}
    require_ack = feature_enabled("require_remote_terms_ack", staging.ws)
    result: dict[str, Any] = {"version": STATE_VERSION, "migrated_from": original if original != STATE_VERSION
                              else None, "imported": [], "skipped": [], "refused": []}
    for i, entry in enumerate(doc["jobs"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("job_id"), str) or not entry["job_id"]:
            result["refused"].append({"index": i, "job_id": None, "reason": "entry has no job_id"})
            continue
        job_id = entry["job_id"]
        provider = entry.get("provider") or "local"
        remote, source_path = entry.get("remote_url"), entry.get("source_path")
        reason = None
        if provider not in PROVIDERS:
            reason = f"unknown provider {provider!r}"
        elif not remote and not source_path:
            reason = "entry has neither source_path nor remote_url"
        elif remote and require_ack and entry.get("terms_acknowledged") is not True:
            reason = ("terms.not_acknowledged: remote job lacks terms_acknowledged=true; turn off "
                      "features.require_remote_terms_ack to replay it, or acknowledge the terms and re-enqueue")
        if reason is None and check_entry is not None:
            reason = check_entry(entry)
        if reason:
            result["refused"].append({"index": i, "job_id": job_id, "reason": reason})
            continue
        with store.db.transaction() as conn:
            if store.exists(job_id, conn):
                result["skipped"].append({"job_id": job_id, "reason": "a job with this id exists"})
                continue
            job = _replayed_job(staging, entry, pins)
            if job["status"] == JobStatus.STAGED:
                # bytes nobody here wrote: apply() checks them against the digest before use
                job = store.settle_staged(conn, job, job["digest"], job["bytes"] or 0,
                                          Path(job["staging_path"]), insert=True, topic=ENQUEUED,
                                          staged_boot=UNKNOWN_BOOT)
            else:
                job = store.insert(conn, job)
        result["imported"].append({"job_id": job_id, "status": job["status"]})
    store.notify()
    return result


def _replayed_job(staging: Staging, entry: dict, pins: dict[str, bool]) -> dict:
    status = entry.get("status") or JobStatus.QUEUED
    provider = entry.get("provider") or "local"
    digest = (entry.get("digest") or "").lower() or None
    notes = [n for n in entry.get("notes") or [] if isinstance(n, str)] + ["imported"]
    user_meta = entry.get("user_metadata") if isinstance(entry.get("user_metadata"), dict) else {}
    fields: dict[str, Any] = {
        "provider": provider, "source_path": entry.get("source_path"), "remote_url": entry.get("remote_url"),
        "dest_relative": entry.get("dest_relative"), "asset_type_hint": entry.get("asset_type_hint"),
        "pin": bool(entry.get("pin")) or pins.get(digest or "", False),
        "terms_acknowledged": entry.get("terms_acknowledged") is True, "digest": digest,
        "bytes": entry.get("bytes"), "dedup_of": entry.get("dedup_of"), "existing_uid": entry.get("existing_uid"),
        "asset_uid": entry.get("asset_uid"), "error": entry.get("error"),
        "errors": entry.get("errors") if isinstance(entry.get("errors"), list) else [],
        "attempts": int(entry.get("attempts") or 1), "user_metadata": user_meta,
        "metadata": entry.get("metadata") if isinstance(entry.get("metadata"), dict) else normalise_metadata(provider, user_meta),
        "filename": entry.get("filename"), "expected_sha256": entry.get("expected_sha256"),
        "project_id": entry.get("project_id") or staging.default_project,
        "created_at": _epoch(entry.get("created_at")) or time.time(),
    }
    if fields["filename"] is None:
        name = Path(str(fields["source_path"] or "")).name
        fields["filename"] = name or None
    if status in HOLDS_DIGEST:
        staged = entry.get("staging_path")
        # only a file inside this workspace's staging folder may be applied; anything else is re-staged
        if digest and staged and is_within(Path(staged), [staging.dir]) and Path(staged).is_file():
            fields.update(status=JobStatus.STAGED, staging_path=str(Path(staged).resolve()))
        else:
            fields["status"] = JobStatus.QUEUED
            notes.append("imported.restage")
    elif status in PENDING:
        fields["status"] = JobStatus.QUEUED
    elif status in SETTLED:
        fields["status"] = status  # history: never blocks dedup, never runs again by itself
    else:
        fields.update(status=JobStatus.FAILED, error=f"imported with unknown status {status!r}")
    fields["notes"] = list(dict.fromkeys(notes))
    if fields["status"] != JobStatus.STAGED:
        fields["pin"] = False
    return new_job(job_id=entry["job_id"], **fields)
