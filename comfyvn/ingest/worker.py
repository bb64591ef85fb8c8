"""The background downloader: takes ``queued`` jobs, paced by the providers' token buckets.

Any process may run one (the Jupyter server does; a kernel's queue starts one when it queues
a remote job).  Claiming a job and taking its token happen in one transaction, so two workers
never pull the same job and together never exceed the rate.  An upstream 429 pauses that
provider for every process (honouring Retry-After) and puts the job back in ``queued``
with a ``next_attempt_at``; nobody has to sleep and retry by hand.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..config import get_setting
from ..fsutil import fsync_dir, owner_token
from .errors import IngestError, RemoteError
from .jobs import JobStatus
from .mappers import merge_metadata, normalise_metadata

if TYPE_CHECKING:
    from .queue import AssetIngestQueue

log = logging.getLogger("comfyvn.ingest.worker")

POLL_SECONDS = 1.0  # how often an idle worker looks for jobs other processes queued
RECOVER_SECONDS = 30.0  # how often a running worker looks for jobs of dead processes
PROGRESS_SECONDS = 0.5  # at most two progress events per second per job
DEFAULT_MAX_AUTO_RETRIES = 5


def backoff_seconds(failures: int, base: float = 5.0) -> float:
    """``base`` (``ingest.retry_backoff_s``, 5 s), doubled per failure in a row, capped at 5 minutes."""
    return float(min(300.0, base * 2 ** max(0, failures - 1)))


class IngestWorker:
    def __init__(self, queue: AssetIngestQueue) -> None:
        self.queue = queue
        self.remote_api: Any = None  # tests may plug in an object with plan_remote/download
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ thread control
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"comfyvn-ingest:{self.queue.ws.root.name}",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def wake(self, *, start: bool = False) -> None:
        if start and not self.running:
            self.start()
        self._wake.set()

    def _loop(self) -> None:
        last_recover = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_recover > RECOVER_SECONDS:
                    last_recover = time.monotonic()
                    self.queue.recover()
                job, wait = self.claim_next()
                if job is not None:
                    self.run_job(job)
                    continue
            except Exception:  # keep the worker alive; the job (if any) records its own error
                log.exception("ingest worker iteration failed")
                wait = POLL_SECONDS
            self._wake.wait(min(wait, POLL_SECONDS))
            self._wake.clear()

    def run_pending(self, timeout: float | None = None) -> list[dict]:
        """Process queued jobs in this thread until none is left or ``timeout`` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done: list[dict] = []
        while True:
            job, wait = self.claim_next()
            if job is not None:
                done.append(self.run_job(job))
                continue
            if not self.queue.db.query_one(f"SELECT 1 FROM ingest_jobs WHERE status = '{JobStatus.QUEUED}' LIMIT 1"):
                return done
            remaining = math.inf if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return done
            time.sleep(max(0.01, min(wait, remaining)))

    # ------------------------------------------------------------------ claiming
    def claim_next(self) -> tuple[dict | None, float]:
        """Claim the oldest runnable queued job (taking its provider's token); else the wait."""
        from .queue import _job_from_row

        q = self.queue
        if not q.db.query_one(f"SELECT 1 FROM ingest_jobs WHERE status = '{JobStatus.QUEUED}' LIMIT 1"):
            return None, POLL_SECONDS
        now = time.time()
        wait = POLL_SECONDS
        blocked: set[str] = set()
        with q.db.transaction() as conn:
            for row in conn.execute(f"SELECT * FROM ingest_jobs WHERE status = '{JobStatus.QUEUED}' ORDER BY seq LIMIT 200"):
                job = _job_from_row(row)
                if job["next_attempt_at"] > now:
                    wait = min(wait, job["next_attempt_at"] - now)
                    continue
                if job["remote_url"]:
                    if job["provider"] in blocked:
                        continue
                    pause = q.limiter.try_acquire(job["provider"], conn=conn, now=now)
                    if pause > 0:
                        blocked.add(job["provider"])
                        wait = min(wait, pause)
                        continue
                job = q._update(conn, job, "on_asset_ingest_updated",
                                {"status": JobStatus.DOWNLOADING, "owner": owner_token()})
                break
            else:
                return None, max(0.01, wait)
        q._poke()
        return job, 0.0

    def run_job(self, job: dict) -> dict:
        return self.process(job) if job["remote_url"] else self.process_local(job)

    # ------------------------------------------------------------------ helpers
    def _api(self) -> ModuleType | Any:
        return self.remote_api or importlib.import_module("comfyvn.ingest.remote")

    def _still_mine(self, conn, job_id: str) -> dict | None:
        current = self.queue._row(conn, job_id)
        if current is None or current["status"] != JobStatus.DOWNLOADING or current["owner"] != owner_token():
            return None
        return current

    def _abandon(self, job_id: str) -> dict:
        """The job was cancelled (or taken over) meanwhile: drop our files, report its state."""
        job = self.queue._row(self.queue.db.conn, job_id)
        if job is not None and job["status"] in (JobStatus.CANCELLED, JobStatus.RELEASED):
            self.queue._remove_job_files(job)
        return job or {"job_id": job_id, "status": "unknown"}

    def _claim_local(self, job: dict) -> dict | None:
        if job["status"] == JobStatus.DOWNLOADING:
            return job
        with self.queue.db.transaction() as conn:
            current = self.queue._row(conn, job["job_id"])
            if current is None or current["status"] != JobStatus.QUEUED:
                return None
            job = self.queue._update(conn, current, "on_asset_ingest_updated",
                                     {"status": JobStatus.DOWNLOADING, "owner": owner_token()})
        self.queue._poke()
        return job

    # ------------------------------------------------------------------ local (re-)staging
    def process_local(self, job: dict) -> dict:
        """Stage a queued local job from its ``source_path`` (after a retry or an import)."""
        q = self.queue
        claimed = self._claim_local(job)
        if claimed is None:
            return q._row(q.db.conn, job["job_id"]) or job
        job = claimed
        try:
            src = q.check_source(job["source_path"])
            from .queue import safe_filename

            staged, digest, size, boot = q.stage_file(job["job_id"], src,
                                                      job["filename"] or safe_filename(src.name))
        except (OSError, IngestError) as exc:
            return self._finish_failed(job, str(exc))
        with q.db.transaction() as conn:
            current = self._still_mine(conn, job["job_id"])
            if current is None:
                return self._abandon(job["job_id"])
            job = q._settle_staged(conn, current, digest, size, staged, insert=False,
                                   topic="on_asset_ingest_updated", staged_boot=boot)
        if job["status"] == JobStatus.DUPLICATE:
            q._remove_job_files(job)
        q._poke()
        return job

    # ------------------------------------------------------------------ remote pulls
    def process(self, job: dict) -> dict:
        """Pull a claimed (``downloading``) remote job: plan, dedup by published hash, download, stage."""
        q = self.queue
        api = self._api()
        job_id = job["job_id"]
        try:
            plan = api.plan_remote(job["provider"], job["remote_url"], job["user_metadata"] or None, q.ws)
            expected = plan.expected_sha256.lower() if plan.expected_sha256 else None
            from .queue import safe_filename

            filename = safe_filename(plan.filename)
            meta = merge_metadata(
                normalise_metadata(job["provider"], plan.provider_metadata or {}, filename=plan.filename,
                                   sha256=expected),
                normalise_metadata(job["provider"], job["user_metadata"] or {}))
            with q.db.transaction() as conn:
                current = self._still_mine(conn, job_id)
                if current is None:
                    return self._abandon(job_id)
                fields = {"filename": filename, "expected_sha256": expected, "bytes_total": plan.expected_size,
                          "metadata": meta, "provider_metadata": plan.provider_metadata or None}
                dup = q._dedup(conn, current["project_id"], expected, exclude=job_id) if expected else None
                if dup is not None:  # known before a single byte is downloaded
                    job = q._update(conn, current, "on_asset_ingest_updated", {
                        **fields, "status": JobStatus.DUPLICATE, "digest": expected, "owner": None, "pin": False,
                        "dedup_of": dup.get("dedup_of"), "existing_uid": dup.get("existing_uid"),
                        "notes": list(dict.fromkeys(current["notes"] + [dup["note"], "dedup.before_download"]))})
                else:
                    job = q._update(conn, current, None, fields)
            q._poke()
            if job["status"] == JobStatus.DUPLICATE:
                q._remove_job_files(job)
                return job
            part = q.part_file(job_id)
            progress, cancelled = self._callbacks(job)
            max_bytes = int(get_setting("ingest.max_remote_bytes", None, q.ws) or _max_remote_bytes())
            digest, size = api.download(plan, part, ws=q.ws, max_bytes=max_bytes, progress=progress,
                                        cancelled=cancelled)
            final = q.staged_file(job_id, filename)
            os.replace(part, final)
            fsync_dir(q.staging_dir)
        except RemoteError as exc:
            return self._remote_failed(job_id, exc)
        except (OSError, IngestError, ValueError) as exc:
            return self._finish_failed(self._current(job_id, job), f"{type(exc).__name__}: {exc}")
        with q.db.transaction() as conn:
            current = self._still_mine(conn, job_id)
            if current is None:
                return self._abandon(job_id)
            job = q._settle_staged(conn, current, digest, size, final, insert=False,
                                   topic="on_asset_ingest_updated")
        if job["status"] == JobStatus.DUPLICATE:
            q._remove_job_files(job)
        q._poke()
        return job

    def _current(self, job_id: str, fallback: dict) -> dict:
        return self.queue._row(self.queue.db.conn, job_id) or fallback

    def _callbacks(self, job: dict):
        q = self.queue
        job_id = job["job_id"]
        state = {"last": 0.0, "checked": 0.0, "cancelled": False}
        owner = owner_token()

        def progress(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - state["last"] < PROGRESS_SECONDS and not (total and done >= total):
                return
            state["last"] = now
            with q.db.transaction() as conn:
                current = q._row(conn, job_id)
                if current is None or current["status"] != JobStatus.DOWNLOADING or current["owner"] != owner:
                    state["cancelled"] = True
                    return
                q._update(conn, current, "on_asset_ingest_progress",
                          {"bytes_done": int(done), "bytes_total": total if total is not None else
                           current["bytes_total"]}, bytes_done=int(done),
                          bytes_total=total if total is not None else current["bytes_total"])
            q._poke()

        def cancelled() -> bool:
            now = time.monotonic()
            if not state["cancelled"] and now - state["checked"] >= 0.25:
                state["checked"] = now
                row = q.db.query_one("SELECT status, owner FROM ingest_jobs WHERE job_id = ?", (job_id,))
                state["cancelled"] = row is None or row[0] != JobStatus.DOWNLOADING or row[1] != owner
            return state["cancelled"]

        return progress, cancelled

    def _remote_failed(self, job_id: str, exc: RemoteError) -> dict:
        q = self.queue
        with q.db.transaction() as conn:
            current = self._still_mine(conn, job_id)
            if current is None:
                abandoned = True
            else:
                abandoned = False
                job = self._record_failure(conn, current, exc)
        if abandoned:
            return self._abandon(job_id)
        q._poke()
        if job["status"] == JobStatus.FAILED and not exc.retryable:
            q._remove_job_files({"job_id": job_id})  # a bad body is no prefix to resume
        return job

    def _record_failure(self, conn, job: dict, exc: RemoteError) -> dict:
        q = self.queue
        limit = int(get_setting("ingest.max_auto_retries", DEFAULT_MAX_AUTO_RETRIES, q.ws))
        streak = 0
        for entry in reversed(job["errors"] or []):
            if not entry.get("auto_retry"):
                break
            streak += 1
        if exc.retryable and streak < limit:
            base = float(get_setting("ingest.retry_backoff_s", 5.0, q.ws))
            delay = exc.retry_after if exc.retry_after is not None else backoff_seconds(streak + 1, base)
            if exc.status == 429 or exc.retry_after is not None:
                q.limiter.block(job["provider"], delay, conn=conn)  # every process waits, not just us
            entry = {"attempt": job["attempts"], "error": exc.message, "code": exc.code, "at": time.time(),
                     "auto_retry": True, "retry_in": delay}
            return q._update(conn, job, "on_asset_ingest_updated", {
                "status": JobStatus.QUEUED, "owner": None, "attempts": job["attempts"] + 1, "error": exc.message,
                "errors": list(job["errors"] or []) + [entry], "next_attempt_at": time.time() + delay,
                "notes": list(dict.fromkeys(job["notes"] + ["retry.scheduled"]))}, retry_in=delay)
        return q._fail(conn, job, exc.message, keep_file=False, **({"notes": list(dict.fromkeys(
            job["notes"] + ["retry.exhausted"]))} if exc.retryable else {}))

    def _finish_failed(self, job: dict, error: str) -> dict:
        q = self.queue
        with q.db.transaction() as conn:
            current = self._still_mine(conn, job["job_id"])
            if current is None:
                abandoned = True
            else:
                abandoned = False
                job = q._fail(conn, current, error)
        if abandoned:
            return self._abandon(job["job_id"])
        q._poke()
        return job


def _max_remote_bytes() -> int:
    from .queue import MAX_REMOTE_BYTES

    return MAX_REMOTE_BYTES


__all__ = ["IngestWorker", "backoff_seconds"]
