"""The asset ingest queue.

Jobs live in the workspace database (table ``ingest_jobs``), so a kernel, the Jupyter server
and a CLI share one queue.  Every status change commits in one transaction with its event
(``on_asset_ingest_*``, the outbox), so every process sees it.

Life of a job::

    local file ──copy+SHA-256 in one pass──> staged ──apply──> applying ──> applied
    remote URL ──> queued ──(worker, rate limited)──> downloading ──> staged ...
                   any step may end in duplicate, failed, released or cancelled

* Staging: ``data/ingest/staging/<job_id>-<file name>`` (``.<job_id>.download.part`` while a
  pull runs), written under a temporary name and renamed, so nothing half-written ever carries
  a final name.
* Dedup: a staged/applying job with the same digest (``duplicate.staged``), or a registry
  row with that hash (``duplicate.registry``).  A partial UNIQUE index on active digests
  makes "two processes stage the same bytes at once" impossible.
* Apply: the job is committed as ``applying`` (with its owner process) before the registry
  moves the file by rename; :meth:`AssetIngestQueue.recover` turns the ``applying`` jobs of
  dead processes into ``applied`` or back into ``staged``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import sources
from ..config import Workspace, default_project, feature_enabled, setup_logging, workspace
from ..errors import ComfyvnError
from ..fsutil import (
    UnsafePathError,
    boot_id,
    fsync_file,
    owner_token,
    refuse_hidden,
    safe_relative,
)
from ..hashing import sha256_file
from ..kinds import TYPE_NAME_RE as _TYPE_RE
from ..kinds import guess_type
from ..names import safe_filename
from ..provider_names import PROVIDERS, REMOTE_PROVIDERS, canonical_provider
from ..store import Database, open_store
from ..studio.core.asset_registry import AssetRegistry, check_project_id
from .errors import (
    IngestError,
    InvalidTransitionError,
    RateLimitedError,
    RemoteError,
    TermsNotAcknowledgedError,
)
from .jobs import STATUSES, TRANSITIONS, JobAction, JobStatus
from .jobstore import (
    PUBLIC_KEYS,
    UPDATED,
    JobStore,
    new_job,
    public_job,
    registered_asset,
    settled_fields,
)
from .mappers import is_host_allowed, normalise_metadata
from .providers import civitai, huggingface
from .providers.base import check_reference_url
from .ratelimit import DEFAULT_RATE_LIMIT, RateLimiter
from .staging import (
    PART_SUFFIX,
    STAGING_MISSING,
    STALE_TEMP_SECONDS,
    UNKNOWN_BOOT,
    WRITEBACK_MIN_BYTES,
    Staging,
)
from .state import STATE_VERSION, export_state, import_state
from .worker import MAX_REMOTE_BYTES, IngestWorker

log = logging.getLogger("comfyvn.ingest.queue")

STAGING_DAMAGED = ("Staged bytes no longer match their digest (the machine restarted before they reached the "
                   "disk, or the staging file was changed); retry the job to copy the source again")
APPLY_BATCH = 128  # jobs per group commit in apply()
ENQUEUE_CHUNK = 500  # files staged per syncfs + transaction by enqueue_many()
#: enqueue()'s arguments for a local file besides source_path (enqueue_many() items and defaults)
LOCAL_ARGUMENTS = ("provider", "metadata", "dest_relative", "asset_type_hint", "pin", "terms_acknowledged",
                   "project_id")
CRASH_ENV = "COMFYVN_INGEST_CRASH_AT"  # test-only fault injection: SIGKILL this process at a named point


__all__ = [
    "DEFAULT_RATE_LIMIT",
    "MAX_REMOTE_BYTES",
    "PART_SUFFIX",
    "PUBLIC_KEYS",
    "STAGING_MISSING",
    "STALE_TEMP_SECONDS",
    "STATE_VERSION",
    "STATUSES",
    "UNKNOWN_BOOT",
    "AssetIngestQueue",
    "get_ingest_queue",
    "public_job",
]


_crash_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Test hook: ``COMFYVN_INGEST_CRASH_AT=<name>[#n]`` SIGKILLs the process at the n-th pass here."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted or not wanted.startswith(name):
        return
    target, _, nth = wanted.partition("#")
    if target != name:
        return
    _crash_hits[name] = _crash_hits.get(name, 0) + 1
    if _crash_hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------- helpers
def guess_asset_type(job: dict) -> str:
    """The asset type of a job's file by :func:`comfyvn.kinds.guess_type` (model providers: ``models``)."""
    return guess_type(job.get("filename") or job.get("staging_path") or job.get("source_path") or "", job.get("provider"))


def dest_for(job: dict, asset_type: str) -> str:
    """Where a job's file goes in the registry: ``dest_relative`` as given (a folder ending in
    ``/`` or without a suffix keeps the original file name), else ``models/<folder>/<file name>``
    for a pulled model whose metadata names its folder, else ``<asset_type>/<file name>``."""
    name = job.get("filename") or safe_filename(Path(job["staging_path"]).name.split("-", 1)[-1])
    dest = job.get("dest_relative")
    if not dest:
        folder = (job.get("metadata") or {}).get("folder")  # a pulled model's ComfyUI folder (loras, vae...)
        return f"models/{folder}/{name}" if folder else f"{asset_type}/{name}"
    if dest.endswith("/") or not PurePosixPath(dest).suffix:
        return f"{dest.rstrip('/')}/{name}"
    return dest


def _check_type(value: str | None, what: str) -> None:
    if value is not None and (not isinstance(value, str) or not _TYPE_RE.match(value)):
        raise ValueError(f"{what} {value!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'")


def error_body(exc: BaseException) -> dict:
    """``{"error": code, "message": text}`` of one item's failure (the shape of the server's errors)."""
    code = getattr(exc, "code", None)
    if not isinstance(code, str):
        code = ("unsafe_path" if isinstance(exc, UnsafePathError) else "file_not_found"
                if isinstance(exc, FileNotFoundError) else "source_unreadable" if isinstance(exc, PermissionError)
                else "invalid_request")
    return {"error": code, "message": str(exc)}


# ---------------------------------------------------------------------------- the queue
class AssetIngestQueue:
    """The ingest queue of one workspace (see the module docstring)."""

    def __init__(self, ws: Workspace | None = None, *, start_worker: bool = False, auto_worker: bool = False) -> None:
        self.ws = (ws or workspace()).ensure()
        setup_logging(self.ws.logs_dir)
        self.staging_dir = self.ws.staging_dir
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.db: Database = open_store(self.ws)
        self.limiter = RateLimiter(self.db, self.ws)
        self.default_project = default_project(self.ws)
        self._registries: dict[str, AssetRegistry] = {}
        self._registries_lock = threading.Lock()
        self.auto_worker = auto_worker
        self.jobs = JobStore(self.db, self.staging_dir)
        self.staging = Staging(self.ws, self.jobs, self.default_project)
        self.worker = IngestWorker(self.ws, self.jobs, self.staging, self.limiter, recover=self.recover,
                                   safe_name=safe_filename)
        self.recover()
        if start_worker:
            self.start_worker()

    # ------------------------------------------------------------------ plumbing
    def registry(self, project_id: str | None = None) -> AssetRegistry:
        project_id = project_id or self.default_project
        with self._registries_lock:
            reg = self._registries.get(project_id)
            if reg is None:
                reg = self._registries[project_id] = AssetRegistry(project_id, ws=self.ws)
            return reg

    # staging is one flat folder (see comfyvn.ingest.staging)
    def staged_file(self, job_id: str, filename: str) -> Path:
        return self.staging.staged_file(job_id, filename)

    def part_file(self, job_id: str) -> Path:
        return self.staging.part_file(job_id)

    def job_dir(self, job_id: str) -> Path:
        """The per-job staging folder of earlier versions; no longer created (see :meth:`job_files`)."""
        return self.staging.job_dir(job_id)

    def job_files(self, job_id: str) -> list[Path]:
        """Every file in staging that belongs to a job (scans the folder; for people and tests)."""
        return self.staging.job_files(job_id)

    # ------------------------------------------------------------------ source checks
    def allowed_source_roots(self) -> list[Path]:
        """``ingest.allowed_source_roots`` expanded and resolved (see :func:`comfyvn.sources.allowed_source_roots`)."""
        return sources.allowed_source_roots(self.ws)

    def check_source(self, source_path: str | os.PathLike[str]) -> Path:
        """The resolved source file if the source policy lets it be read (see :mod:`comfyvn.sources`).

        The result is a :class:`comfyvn.sources.SourcePath`: whoever opens it later (the registry,
        :meth:`stage_file`) checks the opened file against the same rules again.
        """
        return sources.check_source(source_path, self.ws)

    def stage_file(self, job_id: str, src: Path, filename: str) -> tuple[Path, str, int, str | None]:
        """Copy ``src`` into staging, hashing in the same pass (see :meth:`Staging.stage_file`)."""
        return self.staging.stage_file(job_id, src, filename)

    # ------------------------------------------------------------------ enqueue
    def enqueue(self, provider: str = "local", metadata: dict | None = None, *, source_path: Any = None,
                remote_url: str | None = None, dest_relative: str | None = None,
                asset_type_hint: str | None = None, pin: bool = False, terms_acknowledged: bool = False,
                project_id: str | None = None, wait: bool = False, handoff: bool = False) -> dict:
        """Queue one file: a local ``source_path`` (staged now) or a ``remote_url`` (pulled by the worker).

        ``handoff=True`` is for the upload route only: its own body file under ``data/uploads``
        may be read; a path from a request never may.

        Returns the job.  Local files come back ``staged`` or ``duplicate``; remote URLs come
        back ``queued`` (or, with ``wait=True``, after the pull, raising
        :class:`RateLimitedError` instead of sleeping when the provider's bucket is empty).
        """
        if (source_path is None) == (remote_url is None):
            raise ValueError("give exactly one of source_path (a local file) or remote_url")
        fields = self._job_fields(provider, metadata, dest_relative, asset_type_hint, pin, terms_acknowledged,
                                  project_id, remote_url)
        provider, project_id = fields["provider"], fields["project_id"]
        if remote_url is not None:
            return self._enqueue_remote(remote_url, fields, wait=wait)

        # opened once and checked as opened; an upload's body handed on by the upload route may be read
        with self.staging.open_source(source_path, project_id, uploads_ok=handoff) as source:
            filename = safe_filename(source.path.name)
            job = new_job(source_path=str(source.path), filename=filename, **fields)
            job["metadata"] = normalise_metadata(provider, metadata, filename=filename)
            staged, digest, size, boot = self.staging.stage_opened(job["job_id"], source, filename)
        crash_point("enqueue.staged")
        try:
            with self.db.transaction() as conn:
                job = self.jobs.settle_staged(conn, job, digest, size, staged, insert=True,
                                          topic="on_asset_ingest_enqueued", staged_boot=boot)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        if job["status"] == JobStatus.DUPLICATE:
            staged.unlink(missing_ok=True)
        self.jobs.notify()
        return public_job(job)

    def _job_fields(self, provider: Any, metadata: Any, dest_relative: Any, asset_type_hint: Any, pin: Any,
                    terms_acknowledged: Any, project_id: Any, remote_url: Any = None) -> dict:
        """The checked fields of a new job (:meth:`enqueue`'s arguments); ValueError for a bad one."""
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a JSON object (dict), got {type(metadata).__name__}")
        if isinstance(provider, str):  # aliases folded; a URL's provider guessed (comfyvn.provider_names)
            provider = canonical_provider(provider, None if remote_url is None else str(remote_url))
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; known providers: {', '.join(PROVIDERS)}")
        _check_type(asset_type_hint, "asset_type_hint")
        if dest_relative is not None:
            pure = safe_relative(dest_relative, what="dest_relative")
            refuse_hidden(pure)
            dest_relative = str(pure) + (
                "/" if str(dest_relative).endswith(("/", "\\")) else "")
        project_id = check_project_id(project_id or self.default_project)  # it names a folder: checked first
        return {"provider": provider, "project_id": project_id, "dest_relative": dest_relative,
                "asset_type_hint": asset_type_hint, "pin": bool(pin),
                "terms_acknowledged": bool(terms_acknowledged), "user_metadata": dict(metadata or {})}

    def enqueue_many(self, items: Iterable[Any], *, chunk_size: int = ENQUEUE_CHUNK, **defaults: Any) -> dict:
        """Queue many local files: each is staged (copied and hashed) as :meth:`enqueue` does,
        and every ``chunk_size`` of them are made durable together (one ``syncfs``, see
        :meth:`Staging.sync_many`) and recorded in one transaction (their dedup checks, job rows
        and ``on_asset_ingest_enqueued`` events together).

        ``items``: paths, or dicts of :meth:`enqueue`'s local arguments (``source_path`` and
        optionally ``metadata``, ``dest_relative``, ``asset_type_hint``, ``pin``, ``project_id``,
        ``provider``, ``terms_acknowledged``); ``defaults`` are those arguments for every item
        (an item's own win).  Any iterable: it is read one chunk at a time, so a generator over
        a huge folder keeps one chunk of work in memory (the result holds one entry per item).

        Dedup is by content as in :meth:`enqueue`: a file whose bytes are already staged or
        registered, or appear earlier in the same call, comes back ``duplicate``.  A file that
        cannot be queued (refused, missing, bad arguments) does not stop the others.  Each
        chunk commits on its own: a process killed midway keeps the chunks committed before,
        and of the current chunk only staging files without a job, which the sweep removes.

        Returns ``{"jobs": [job, ...], "errors": [{"index", "source_path", "error", "message"}]}``
        (jobs in the order of the items).
        """
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or not 1 <= chunk_size <= 10_000:
            raise ValueError("chunk_size must be an integer between 1 and 10000")
        if isinstance(items, str | bytes | os.PathLike | dict):
            raise ValueError("items must be a list (or other iterable) of paths or dicts, not a single one")
        unknown = set(defaults) - set(LOCAL_ARGUMENTS)
        if unknown:
            raise TypeError(f"enqueue_many() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        common = self._item_fields(defaults, {})  # bad defaults fail the whole call before anything is staged
        result: dict[str, list] = {"jobs": [], "errors": []}
        chunk: list[tuple[int, Any]] = []
        for index, item in enumerate(items):
            chunk.append((index, item))
            if len(chunk) >= chunk_size:
                self._enqueue_chunk(chunk, defaults, common, result)
                chunk = []
        if chunk:
            self._enqueue_chunk(chunk, defaults, common, result)
        return result

    def _item_fields(self, defaults: dict, item: dict) -> dict:
        """The job fields of one :meth:`enqueue_many` item over ``defaults``."""
        unknown = set(item) - set(LOCAL_ARGUMENTS) - {"source_path"}
        if unknown:
            raise ValueError(f"unknown item keys: {', '.join(sorted(unknown))} (remote URLs go through enqueue())")
        args = {**dict.fromkeys(LOCAL_ARGUMENTS), "provider": "local", **defaults,
                **{k: v for k, v in item.items() if k != "source_path"}}
        return self._job_fields(args["provider"], args["metadata"], args["dest_relative"], args["asset_type_hint"],
                                args["pin"], args["terms_acknowledged"], args["project_id"])

    def _enqueue_chunk(self, chunk: list[tuple[int, Any]], defaults: dict, common: dict, result: dict) -> None:
        """Stage one chunk of :meth:`enqueue_many` and record it in one transaction (``common``:
        the fields of an item that is a bare path)."""
        staged_jobs: list[tuple[int, dict, Path, str, int, str | None]] = []
        limits = self.staging.batch_limits()
        try:
            for index, item in chunk:
                source_path = item.get("source_path") if isinstance(item, dict) else item
                try:
                    if source_path is None:
                        raise ValueError("every item needs a source_path")
                    fields = (self._item_fields(defaults, item) if isinstance(item, dict)
                              else {**common, "user_metadata": dict(common["user_metadata"])})
                    with self.staging.open_source(source_path, fields["project_id"], limits=limits) as source:
                        filename = safe_filename(source.path.name)
                        job = new_job(source_path=str(source.path), filename=filename, **fields)
                        job["metadata"] = normalise_metadata(fields["provider"], fields["user_metadata"] or None,
                                                             filename=filename)
                        staged, digest, size, boot = self.staging.stage_opened(
                            job["job_id"], source, filename, writeback=source.size >= WRITEBACK_MIN_BYTES)
                        limits.used(size)
                except (ComfyvnError, ValueError, OSError) as exc:
                    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError):
                        raise  # the disk, not the item: stop (this chunk's staged files are removed below)
                    result["errors"].append({"index": index, "source_path": str(source_path), **error_body(exc)})
                    continue
                staged_jobs.append((index, job, staged, digest, size, boot))
                crash_point("enqueue_many.file_staged")
            # one syncfs makes the whole chunk durable before its rows commit (staged_boot None:
            # apply has nothing left to sync); without it the files stay written behind
            synced = self.staging.sync_many([str(staged) for _, _, staged, _, _, boot in staged_jobs if boot])
            staged_jobs = [(i, job, staged, digest, size, None if str(staged) in synced else boot)
                           for i, job, staged, digest, size, boot in staged_jobs]
            crash_point("enqueue_many.staged")
            with self.db.transaction() as conn:
                rows = self._settle_chunk(conn, staged_jobs)
            crash_point("enqueue_many.committed")
        except BaseException:
            for _, _, staged, *_ in staged_jobs:
                staged.unlink(missing_ok=True)
            raise
        for (_, _, staged, *_), job in zip(staged_jobs, rows, strict=True):
            if job["status"] == JobStatus.DUPLICATE:
                staged.unlink(missing_ok=True)
            result["jobs"].append(public_job(job))
        self.jobs.notify()

    def _settle_chunk(self, conn, staged_jobs: list) -> list[dict]:
        """Record a chunk's staged files as ``staged`` or ``duplicate`` (of what exists, or of an
        earlier file of the chunk) inside ``conn``'s transaction; the jobs in chunk order."""
        by_project: dict[str, list[str]] = {}
        for _, job, _, digest, _, _ in staged_jobs:
            by_project.setdefault(job["project_id"], []).append(digest)
        known = {project: self.jobs.dedup_many(conn, project, digests) for project, digests in by_project.items()}
        rows = []
        for _, job, staged, digest, size, boot in staged_jobs:
            held = known[job["project_id"]]
            fields = settled_fields(job, digest, size, staged, held.get(digest), boot)
            row = {**job, **fields}
            if digest not in held:  # later copies in this chunk are duplicates of this job
                held[digest] = {"status": JobStatus.DUPLICATE, "dedup_of": job["job_id"], "note": "duplicate.staged"}
            rows.append(row)
        return self.jobs.insert_many(conn, rows)

    def _enqueue_remote(self, url: str, fields: dict, *, wait: bool) -> dict:
        provider = fields["provider"]
        if provider not in REMOTE_PROVIDERS:
            raise ValueError(f"provider {provider!r} cannot pull URLs; use one of {', '.join(REMOTE_PROVIDERS)}")
        if not isinstance(url, str) or not url.strip():
            raise ValueError("remote_url must be a non-empty URL")
        url, notes = self._check_remote_reference(provider, url.strip(), fields["user_metadata"])
        if feature_enabled("require_remote_terms_ack", self.ws) and not fields["terms_acknowledged"]:
            raise TermsNotAcknowledgedError(
                f"remote pulls from {provider} need terms_acknowledged=true: confirm you accept the provider's "
                "terms and the asset's licence (features.require_remote_terms_ack)")
        job = new_job(remote_url=url, notes=notes, **fields)
        job["metadata"] = normalise_metadata(provider, fields["user_metadata"])
        with self.db.transaction() as conn:
            active = self.jobs.active_pull(conn, job["project_id"], url)
            if active:
                job.update(status=JobStatus.DUPLICATE, dedup_of=active, notes=notes + ["duplicate.queued"])
                job = self.jobs.insert(conn, job)
            else:
                if wait:
                    retry_after = self.limiter.try_acquire(provider, conn=conn)
                    if retry_after > 0:
                        raise RateLimitedError(
                            f"{provider} rate limit reached; try again in {retry_after:.1f} s (or enqueue "
                            "without wait and the worker pulls it when the bucket refills)",
                            retry_after=retry_after)
                    job.update(status=JobStatus.DOWNLOADING, owner=owner_token())
                job = self.jobs.insert(conn, job)
        self.jobs.notify()
        if job["status"] == JobStatus.DOWNLOADING:
            return public_job(self.worker.process(job))
        if job["status"] == JobStatus.QUEUED:
            self.worker.wake(start=self.auto_worker)
        return public_job(job)

    def _check_remote_reference(self, provider: str, url: str, metadata: dict) -> tuple[str, list[str]]:
        """Refuse a reference the provider cannot understand, before a job exists (no network).

        Civitai and Hugging Face take their own forms (``civitai:VERSION``, ``hf://org/repo/file``
        besides their URLs); other providers take https URLs on their allow-listed hosts.  A
        ``token=`` query parameter is removed: tokens come from CIVITAI_API_TOKEN / HF_TOKEN.
        """
        try:
            check_reference_url(url)  # the webhook URL length cap; ports 1-65535
        except RemoteError as exc:
            raise IngestError(exc.message, code=exc.code) from None
        notes: list[str] = []
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            if not parts.hostname:
                raise ValueError(f"remote_url {url!r} has no host")
            if parts.username or parts.password:
                raise ValueError("remote_url may not carry credentials; tokens come from CIVITAI_API_TOKEN / HF_TOKEN")
            query = parse_qsl(parts.query, keep_blank_values=True)
            if any(k.lower() == "token" for k, _ in query):
                url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k.lower() != "token"])))
                notes.append("url.token_removed")
            if not is_host_allowed(parts.hostname, provider, self.ws):
                raise IngestError(f"host {parts.hostname!r} is not on the {provider} allowlist; see "
                                  "_REMOTE_ALLOWLIST in comfyvn/ingest/mappers.py or ingest.extra_allowed_hosts",
                                  code="host_not_allowed")
        elif provider not in ("civitai", "huggingface"):
            raise ValueError(f"remote_url {url!r} must be an http(s) URL")
        try:
            if provider == "civitai":
                civitai.parse_reference(url, metadata, self.ws)
            elif provider == "huggingface":
                huggingface.parse_reference(url, self.ws)
        except RemoteError as exc:  # bad input, not an upstream failure
            raise IngestError(exc.message, code=exc.code) from None
        return url, notes

    # ------------------------------------------------------------------ apply
    def apply(self, job_ids: list[str] | None = None, asset_type_override: str | None = None) -> dict:
        """Move staged files into the registry.  ``None`` = every staged job; ``[]`` = nothing.

        Jobs are applied in group commits of :data:`APPLY_BATCH`: one transaction claims them,
        their files are fsynced and renamed into place with one fsync per folder, and one
        transaction commits every asset row together with its job's ``applied`` status.
        Returns ``{"applied": [job], "failed": [job], "skipped": [job], "unknown": [id]}``.
        """
        _check_type(asset_type_override, "asset_type_override")
        result: dict[str, list] = {"applied": [], "failed": [], "skipped": [], "unknown": []}
        if job_ids is None:
            ids = self.jobs.ids_with_status(JobStatus.STAGED)
        elif isinstance(job_ids, str):
            raise ValueError("job_ids must be a list of job ids, not a single string")
        else:
            ids = list(dict.fromkeys(job_ids))
        for start in range(0, len(ids), APPLY_BATCH):
            batch = ids[start:start + APPLY_BATCH]
            with self._apply_leases_kept(batch):
                self._apply_batch(batch, asset_type_override, result)
        return result

    def _apply_leases_kept(self, ids: list) -> AbstractContextManager[None]:
        """While a batch applies, the leases of its claims (those of ``ids`` this process claims)
        are renewed, however long its files take to sync and move (see :class:`LeaseKeeper`)."""
        return self.jobs.leases.keep([i for i in ids if isinstance(i, str)], lease_s=self.worker.lease_seconds(),
                                     renew_s=self.worker.renew_seconds())

    def _claim_for_apply(self, ids: list, result: dict) -> list[dict]:
        """Mark the staged jobs among ``ids`` ``applying`` (ours, with a lease of ``ingest.lease_s``)
        in one transaction; sort the rest into ``result``.  Returns the claimed jobs."""
        claimed, dropped = [], []
        with self.db.transaction() as conn:
            found = self.jobs.rows(conn, [i for i in ids if isinstance(i, str)])
            for job_id in ids:
                job = found.get(job_id) if isinstance(job_id, str) else None
                if job is None:
                    result["unknown"].append(job_id)
                elif job["status"] != JobStatus.STAGED:
                    result["skipped"].append(public_job(job))
                elif not job["staging_path"] or not os.path.isfile(job["staging_path"]):
                    result["failed"].append(public_job(self.jobs.fail(conn, job, STAGING_MISSING)))
                elif (existing := registered_asset(conn, job["project_id"], job["digest"])) is not None:
                    # registered meanwhile by someone else: do not touch that asset
                    job = self.jobs.update(conn, job, UPDATED, {
                        "status": JobStatus.DUPLICATE, "existing_uid": existing[0], "pin": False, "staging_path": None,
                        "notes": list(dict.fromkeys(job["notes"] + ["duplicate.registry"]))})
                    dropped.append(job)
                    result["skipped"].append(public_job(job))
                else:  # (no other staged job can hold this digest: the unique index on active digests)
                    claimed.append(job)
            claimed = self.jobs.update_many(conn, claimed, UPDATED, {"status": JobStatus.APPLYING, "owner": owner_token(),
                                                                     "lease_until": time.time() + self.worker.lease_seconds()})
        self.jobs.notify()
        for job in dropped:
            self.staging.remove_job_files(job)
        return claimed

    def _staged_bytes_problem(self, job: dict, synced: set[str]) -> str | None:
        """Make a job's written-behind staged bytes durable (this boot; unless ``registry.fsync``
        is off; ``synced``: paths already made durable together), or check them again (after a
        restart of the machine, or bytes imported from a state file).  Returns the error that
        fails the job, or None."""
        boot, path = job.get("staged_boot"), job["staging_path"]
        try:
            if boot is None:
                return None  # fsynced when staged
            if boot == boot_id():
                if path not in synced and self.registry(job["project_id"]).fsync:
                    fsync_file(path)
                return None
            return None if sha256_file(Path(path))[0] == job["digest"] else STAGING_DAMAGED
        except FileNotFoundError:
            return STAGING_MISSING

    def _sync_staged(self, jobs: list[dict]) -> set[str]:
        """Make the written-behind staged files of this boot durable together where one call does
        it for many (see :meth:`Staging.sync_many`); the paths so synced."""
        this_boot = boot_id()
        paths = [job["staging_path"] for job in jobs if this_boot is not None and job.get("staged_boot") == this_boot
                 and self._registry_fsyncs(job["project_id"])]
        return self.staging.sync_many(paths)

    def _registry_fsyncs(self, project_id: str) -> bool:
        try:
            return self.registry(project_id).fsync
        except ValueError:  # a bad project: its job fails in _apply_batch
            return False

    def _registration(self, job: dict, override: str | None) -> dict:
        """The registry item (see :meth:`AssetRegistry.register_files`) that applies a job."""
        asset_type = (override or job["asset_type_hint"] or (job.get("metadata") or {}).get("asset_type")
                      or guess_asset_type(job))
        meta = {k: v for k, v in (job["metadata"] or {}).items()
                if k not in ("tags", "license", "provider") and v not in (None, [], {})}
        provenance = {"source": job["remote_url"] or job["source_path"], "provider": job["provider"],
                      "digest": job["digest"], "terms_acknowledged": job["terms_acknowledged"],
                      "job_id": job["job_id"], "provider_metadata": job["provider_metadata"]}
        return {"source_path": job["staging_path"], "asset_type": asset_type,
                "dest_relative": dest_for(job, asset_type), "metadata": meta, "copy": False,
                "provenance": provenance, "license_tag": (job["metadata"] or {}).get("license"),
                "tags": (job["metadata"] or {}).get("tags") or [], "origin": job["provider"],
                "digest": job["digest"]}

    def _apply_batch(self, ids: list, override: str | None, result: dict) -> None:
        claimed = self._claim_for_apply(ids, result)
        if not claimed:
            return
        crash_point("apply.claimed")
        ready: list[dict] = []
        failures: list[tuple[dict, str]] = []
        synced = self._sync_staged(claimed)
        for job in claimed:
            try:  # a job written by an older version may name a project no registry can open
                check_project_id(job["project_id"])
                problem = self._staged_bytes_problem(job, synced)
            except ValueError as exc:
                problem = str(exc)
            if problem is None:
                ready.append(job)
            else:
                failures.append((job, problem))
        applied: dict[str, dict] = {}  # job id -> job as mark_applied changed it (committed if its row says so)
        outcomes: dict[str, Any] = {}
        by_project: dict[str, list[dict]] = {}
        for job in ready:
            by_project.setdefault(job["project_id"], []).append(job)
        for project_id, jobs in by_project.items():
            def mark_applied(conn, done: list[tuple[int, dict]], jobs: list[dict] = jobs,
                             project_id: str = project_id) -> None:
                applied.update(self._mark_applied(conn, project_id, [(jobs[i], record) for i, record in done]))
            try:
                items = [self._registration(job, override) for job in jobs]
                found = self.registry(project_id).register_files(items, on_commit_many=mark_applied)
            except Exception as exc:  # the group commit failed as a whole: nothing of it registered
                found = [exc] * len(jobs)
            outcomes.update((job["job_id"], out) for job, out in zip(jobs, found, strict=True))
        crash_point("apply.registered")
        with self.db.transaction() as conn:
            for job, problem in failures:
                result["failed"].append(public_job(self.jobs.fail(conn, job, problem)))
            # applied = committed as such inside the registry's transaction (by mark_applied)
            now = self.jobs.statuses(conn, [job["job_id"] for job in ready])
            for job in ready:
                staged = job["staging_path"]
                outcome = outcomes[job["job_id"]]
                if isinstance(outcome, BaseException):
                    current = job if os.path.isfile(staged) else {**job, "staging_path": None}
                    result["failed"].append(public_job(self.jobs.fail(
                        conn, current, f"{type(outcome).__name__}: {outcome}", keep_file=os.path.isfile(staged))))
                    continue
                try:  # merged, or the identical file already lay at the destination (moved: nothing left)
                    os.unlink(staged)
                except FileNotFoundError:
                    pass
                if now.get(job["job_id"]) == JobStatus.APPLIED:
                    result["applied"].append(public_job(applied[job["job_id"]]))
                else:  # the registry merged us into a row someone else made meanwhile: nothing was moved
                    result["skipped"].append(public_job(self.jobs.update(conn, job, UPDATED, {
                        "status": JobStatus.DUPLICATE, "existing_uid": outcome["uid"], "pin": False, "staging_path": None,
                        "owner": None, "notes": list(dict.fromkeys(job["notes"] + ["duplicate.registry"]))})))
        for job, _ in failures:
            self.staging.remove_job_files(job)
        self.jobs.notify()
        crash_point("apply.committed")

    def _mark_applied(self, conn, project_id: str, done: list[tuple[dict, dict]]) -> dict[str, dict]:
        """Mark jobs ``applied`` as :meth:`JobStore.update` does, inside the registry's commit:
        one UPDATE statement for them all and their ``on_asset_ingest_applied`` events in one
        insert; ``{job_id: job as changed}``."""
        self.jobs.end_claims(conn, [job for job, _ in done], owner_token())  # still ours, or nothing commits
        return self.jobs.mark_applied_many(conn, project_id, [
            (job, record["uid"], {"path": record["abs_path"], "sidecar": record["sidecar"]}) for job, record in done])

    # ------------------------------------------------------------------ other transitions
    def release(self, job_id: str) -> dict:
        """Drop a staged, duplicate or failed job: deletes its staging file and its dedup pin."""
        with self.db.transaction() as conn:
            job = self.jobs.require(conn, job_id)
            if job["status"] == JobStatus.RELEASED:
                return public_job(job)
            if job["status"] == JobStatus.APPLIED:
                raise InvalidTransitionError(
                    f"job {job_id} is applied: its file now belongs to asset {job['asset_uid']}; remove the "
                    f"asset from the registry (AssetRegistry.remove_asset('{job['asset_uid']}')) instead")
            if job["status"] not in TRANSITIONS[JobAction.RELEASE]:
                hint = {JobStatus.QUEUED: "cancel it instead", JobStatus.DOWNLOADING: "cancel it instead",
                        JobStatus.APPLYING: "wait for apply() to finish",
                        JobStatus.CANCELLED: "it holds nothing any more"}
                raise InvalidTransitionError(
                    f"job {job_id} is {job['status']}: only staged, duplicate or failed jobs can be released "
                    f"({hint.get(job['status'], '')})")
            job = self.jobs.update(conn, job, UPDATED,
                               {"status": JobStatus.RELEASED, "pin": False, "staging_path": None, "owner": None})
        self.staging.remove_job_files(job)
        self.jobs.notify()
        return public_job(job)

    def cancel(self, job_id: str) -> dict:
        """Stop a queued, downloading or staged job (its partial or staged file is deleted)."""
        with self.db.transaction() as conn:
            job = self.jobs.require(conn, job_id)
            if job["status"] == JobStatus.CANCELLED:
                return public_job(job)
            if job["status"] not in TRANSITIONS[JobAction.CANCEL]:
                raise InvalidTransitionError(
                    f"job {job_id} is {job['status']}: only queued, downloading or staged jobs can be cancelled"
                    + (" (release it instead)" if job["status"] in TRANSITIONS[JobAction.RELEASE] else ""))
            was = job["status"]
            job = self.jobs.update(conn, job, UPDATED,
                               {"status": JobStatus.CANCELLED, "pin": False, "staging_path": None})
        if was != JobStatus.DOWNLOADING:  # a running download notices, stops and cleans up itself
            self.staging.remove_job_files(job)
        self.jobs.notify()
        return public_job(job)

    def retry(self, job_id: str) -> dict:
        """Try a failed or cancelled job again (``attempts`` + 1)."""
        with self.db.transaction() as conn:
            job = self.jobs.require(conn, job_id)
            if job["status"] not in TRANSITIONS[JobAction.RETRY]:
                raise InvalidTransitionError(
                    f"job {job_id} is {job['status']}: only failed or cancelled jobs can be retried")
            staged = Path(job["staging_path"]) if job["staging_path"] else None
            base = {"attempts": job["attempts"] + 1, "error": None, "owner": None, "next_attempt_at": 0.0,
                    "notes": list(dict.fromkeys(job["notes"] + ["retried"]))}
            if staged is not None and staged.is_file() and job["digest"]:
                job = self.jobs.update(conn, job, None, base)
                job = self.jobs.settle_staged(conn, job, job["digest"], job["bytes"] or 0, staged,
                                          insert=False, topic=UPDATED,
                                          staged_boot=job.get("staged_boot"))
            else:
                job = self.jobs.update(conn, job, UPDATED,
                                   {**base, "status": JobStatus.QUEUED, "staging_path": None, "bytes_done": 0})
        if job["status"] == JobStatus.DUPLICATE:
            self.staging.remove_job_files(job)
        self.jobs.notify()
        if job["status"] == JobStatus.QUEUED and job["remote_url"] is None:
            return public_job(self.worker.process_local(job))  # a local file is re-staged at once
        if job["status"] == JobStatus.QUEUED:
            self.worker.wake(start=self.auto_worker)
        return public_job(self.get(job_id) or job)

    # ------------------------------------------------------------------ reading
    def get(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        return public_job(job) if job else None

    def page_jobs(self, limit: int = 50, status: str | None = None, provider: str | None = None,
                  cursor: str | None = None) -> dict:
        """Newest first: ``{"items": [job], "next_cursor": str | None}``."""
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError("limit must be an integer between 1 and 1000")
        before = None
        if cursor is not None:
            try:
                before = int(cursor)
                if not 0 <= before < 2**63:  # beyond what SQLite holds
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(f"invalid cursor {str(cursor)[:80]!r}") from None
        jobs, more = self.jobs.page(limit, status, provider, before_seq=before)
        return {"items": [public_job(j) for j in jobs], "next_cursor": str(more) if more is not None else None}

    def list_jobs(self, limit: int = 50, status: str | None = None, provider: str | None = None) -> list[dict]:
        """The newest ``limit`` jobs, optionally of one status / provider."""
        return self.page_jobs(limit=limit, status=status, provider=provider)["items"]

    def summary(self, stored: dict | None = None) -> dict:
        """Job counts, held bytes, the providers' rate limits and the worker's state.

        ``stored``: :meth:`summary_rows` read earlier (by a caller that keeps them while the
        database is unchanged); the rate limits are worked out from them for now."""
        stored = self.summary_rows() if stored is None else stored
        counts = stored["counts"]
        return {"counts": counts, "total": sum(counts.values()), "providers": stored["providers"],
                "staged_bytes": stored["staged_bytes"], "pinned": stored["pinned"],
                "rate_limits": self.limiter.statuses(REMOTE_PROVIDERS, stored["buckets"]),
                "worker_running": self.worker.running, "state_version": STATE_VERSION,
                "staging_dir": str(self.staging_dir)}

    def summary_rows(self) -> dict:
        """What :meth:`summary` reads from the database (the same answer while nothing commits)."""
        staged_bytes, pinned = self.jobs.held_totals()
        return {"counts": self.jobs.counts(), "providers": self.jobs.provider_counts(),
                "staged_bytes": staged_bytes, "pinned": pinned, "buckets": self.limiter.rows(REMOTE_PROVIDERS)}

    def dedup_snapshot(self) -> dict:
        """``{digest: {...}}`` of the bytes that block duplicates now (staged/applying jobs)."""
        return self.jobs.dedup_snapshot()

    def prune(self, older_than: float) -> list[dict]:
        """Release unpinned staged jobs untouched for ``older_than`` seconds (pins keep theirs)."""
        cutoff = time.time() - float(older_than)
        ids = self.jobs.ids_with_status(JobStatus.STAGED, unpinned_before=cutoff)
        out = []
        for job_id in ids:
            try:
                out.append(self.release(job_id))
            except InvalidTransitionError:  # applied meanwhile by someone else
                continue
        return out

    # ------------------------------------------------------------------ state files
    def export_state(self, path: str | os.PathLike[str] | None = None) -> dict:
        """Write ``queue_state.json`` and ``dedup_cache.json`` (see :func:`comfyvn.ingest.state.export_state`)."""
        return export_state(self.jobs, self.ws, path)

    def import_state(self, path_or_dict: Any, dedup_cache: Any = None) -> dict:
        """Replay an archived queue state (see :func:`comfyvn.ingest.state.import_state`)."""
        result = import_state(self.jobs, self.staging, path_or_dict, dedup_cache=dedup_cache,
                              check_entry=self._check_import_entry)
        if any(j["status"] == JobStatus.QUEUED for j in result["imported"]):
            self.worker.wake(start=self.auto_worker)
        return result

    @staticmethod
    def _check_import_entry(entry: dict) -> str | None:
        """Why an archived job may not be imported as it is (its project, type or destination), or None."""
        try:
            if entry.get("project_id") is not None:
                check_project_id(entry["project_id"])
            _check_type(entry.get("asset_type_hint"), "asset_type_hint")
            if entry.get("dest_relative") is not None:
                safe_relative(entry["dest_relative"], what="dest_relative")
        except (ValueError, UnsafePathError) as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------------ worker
    def start_worker(self) -> None:
        """Start this process's background downloader (a daemon thread)."""
        self.worker.start()

    def stop_worker(self, timeout: float = 10.0) -> None:
        self.worker.stop(timeout)

    def run_pending(self, timeout: float | None = None) -> list[dict]:
        """Process queued jobs in the calling thread until none is left (or ``timeout`` passes)."""
        return [public_job(j) for j in self.worker.run_pending(timeout)]

    # ------------------------------------------------------------------ recovery
    def recover(self) -> dict[str, int]:
        """Bring back the jobs of dead processes (or whose lease ran out) and sweep stale staging leftovers.

        ``downloading`` -> ``queued`` (the partial file stays for a resumed download);
        ``applying`` -> ``applied`` when the registry holds the bytes, else ``staged`` (the
        registry's intent journal has put the file back), else ``failed``.

        A lapsed ``applying`` claim is first taken over (ours, with a lease, in its own commit):
        from then on its old holder, should it still run, can commit nothing of it (see
        :meth:`JobStore.end_claims`), so the registry may undo its moves whatever its host.  Claims
        a thread of this process is still applying are left to it.
        """
        stats = {"requeued": 0, "applied": 0, "restaged": 0, "failed": 0, "swept": 0}
        now, me = time.time(), owner_token()
        stuck = [j for j in self.jobs.claimed() if self.jobs.claim_lapsed(j, now) and not self.jobs.leases.kept(j["job_id"])]
        held: list[dict] = []  # applying claims taken over: settled once the registry has recovered their moves
        for job in stuck:
            bad_project: str | None
            try:
                check_project_id(job["project_id"])
            except ValueError as exc:  # from an older version: fail the job, never the whole queue
                bad_project = str(exc)
            else:
                bad_project = None
            with self.db.transaction() as conn:
                current = self.jobs.row(conn, job["job_id"])
                if (current is None or current["status"] != job["status"] or current["owner"] != job["owner"]
                        or not self.jobs.claim_lapsed(current, time.time())):  # renewed meanwhile
                    continue
                current = self.jobs.take_over(conn, current, me, time.time() + self.worker.lease_seconds())
                if current is None:  # renewed, finished or taken by another server meanwhile
                    continue
                if bad_project is not None:
                    self.jobs.fail(conn, current, bad_project)
                    stats["failed"] += 1
                elif current["status"] == JobStatus.APPLYING:
                    held.append(current)
                else:
                    stats[self._recover_one(conn, current)] += 1
        if held:
            self._recover_applying(held, stats)
        stats["swept"] = self.staging.sweep()
        if any(stats.values()):
            log.info("ingest recovery: %s", stats)
            self.jobs.notify()
        return stats

    def _recover_applying(self, held: list[dict], stats: dict[str, int]) -> None:
        """Settle the ``applying`` claims recovery took over: the registry of each project first
        finishes or undoes the moves of their staged files (any old holder's), then each job is
        settled by what the registry holds.  Their leases are renewed meanwhile."""
        me = owner_token()
        by_project: dict[str, list[dict]] = {}
        for job in held:
            by_project.setdefault(job["project_id"], []).append(job)
        with self.jobs.leases.keep([j["job_id"] for j in held], lease_s=self.worker.lease_seconds(),
                                   renew_s=self.worker.renew_seconds()):
            for project_id, jobs in by_project.items():
                taken_over = {Path(j["staging_path"]).name: j["staging_path"] for j in jobs if j["staging_path"]}
                self.registry(project_id).recover(taken_over)
            for job in held:
                with self.db.transaction() as conn:
                    current = self.jobs.row(conn, job["job_id"])
                    if current is None or current["status"] != JobStatus.APPLYING or current["owner"] != me:
                        continue
                    stats[self._recover_one(conn, current)] += 1

    def _recover_one(self, conn, job: dict) -> str:
        notes = list(job["notes"])
        if job["status"] == JobStatus.DOWNLOADING:
            self.jobs.update(conn, job, UPDATED, {
                "status": JobStatus.QUEUED, "owner": None, "notes": list(dict.fromkeys(notes + ["recovered.interrupted"]))})
            return "requeued"
        staged = Path(job["staging_path"]) if job["staging_path"] else None
        asset = registered_asset(conn, job["project_id"], job["digest"]) if job["digest"] else None
        registry = self.registry(job["project_id"])
        if asset is not None and (registry.assets_root / asset["path"]).is_file():
            if staged is not None and staged.exists():  # the registry kept its own copy: ours is spare
                staged.unlink(missing_ok=True)
            self.jobs.update(conn, job, "on_asset_ingest_applied", {
                "status": JobStatus.APPLIED, "asset_uid": asset["uid"], "pin": False, "staging_path": None, "owner": None,
                "notes": list(dict.fromkeys(notes + ["recovered.applied"]))},
                path=str(registry.assets_root / asset["path"]))
            return "applied"
        if staged is not None and staged.is_file():
            self.jobs.update(conn, job, UPDATED, {
                "status": JobStatus.STAGED, "owner": None, "notes": list(dict.fromkeys(notes + ["recovered.restaged"]))})
            return "restaged"
        self.jobs.fail(conn, job, STAGING_MISSING)
        return "failed"


# ---------------------------------------------------------------------------- one per workspace
_queues: dict[tuple[int, Path], AssetIngestQueue] = {}
_queues_lock = threading.Lock()


def get_ingest_queue(ws: Workspace | None = None) -> AssetIngestQueue:
    """The process-wide queue of a workspace (default: the current one).

    Its worker starts by itself when a remote job is queued.
    """
    ws = ws or workspace()
    key = (os.getpid(), ws.root)
    with _queues_lock:
        queue = _queues.get(key)
        if queue is None:
            queue = _queues[key] = AssetIngestQueue(ws, auto_worker=True)
        return queue
