"""The background downloader: takes ``queued`` jobs, paced by the providers' token buckets.

Any process may run one (the Jupyter server does; a kernel's queue starts one when it queues
a remote job).  Claiming a job and taking its token happen in one transaction, so two workers
never pull the same job and together never exceed the rate.  An upstream 429 pauses that
provider for every process (honouring Retry-After) and puts the job back in ``queued``
with a ``next_attempt_at``; nobody has to sleep and retry by hand.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from .. import sources
from ..config import ConfigError, Workspace, get_setting, max_remote_bytes, shipped_default
from ..fsutil import boot_id, fsync_dir, owner_token
from ..store.errors import StoreUnavailable
from . import remote
from .errors import IngestError, RemoteError
from .jobs import JobStatus
from .jobstore import UPDATED, JobStore
from .mappers import merge_metadata, normalise_metadata
from .ratelimit import RateLimiter
from .staging import Staging

log = logging.getLogger("comfyvn.ingest.worker")

POLL_SECONDS = 1.0  # how often an idle worker looks for jobs other processes queued
RECOVER_SECONDS = 30.0  # how often a running worker looks for jobs of dead processes
PROGRESS_SECONDS = 0.5  # at most two progress events per second per job
OUTAGE_MAX_WAIT = 10.0  # while the store is unreachable, the worker retries at most this far apart
DEFAULT_MAX_AUTO_RETRIES = 5
MAX_REMOTE_BYTES = int(shipped_default("ingest.max_remote_bytes"))  # the shipped cap (seed name); see max_remote_bytes


def backoff_seconds(failures: int, base: float = 5.0) -> float:
    """``base`` (``ingest.retry_backoff_s``, 5 s), doubled per failure in a row, capped at 5 minutes."""
    return float(min(300.0, base * 2 ** max(0, failures - 1)))


class IngestWorker:
    """Claims and runs queued jobs of one workspace: remote pulls and local re-staging.

    ``recover`` (the queue's recovery) runs every :data:`RECOVER_SECONDS` in a running worker;
    ``safe_name`` is the file-name rule every name reaching staging goes through.
    """

    def __init__(self, ws: Workspace, jobs: JobStore, staging: Staging, limiter: RateLimiter, *,
                 recover: Callable[[], object], safe_name: Callable[[str | None], str]) -> None:
        self.ws = ws
        self.jobs = jobs
        self.staging = staging
        self.limiter = limiter
        self.recover = recover
        self.safe_name = safe_name
        self.remote_api: Any = None  # tests may plug in an object with plan_remote/download
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()  # jobs this worker runs now
        self._interrupted: set[str] = set()  # jobs whose run failed because the store was unreachable
        self._down_since: float | None = None  # monotonic time the store was found unreachable
        self._outage_wait = POLL_SECONDS

    # ------------------------------------------------------------------ thread control
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"comfyvn-ingest:{self.ws.root.name}",
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
                if self._down_since is not None:
                    self._store_answers()
                if time.monotonic() - last_recover > RECOVER_SECONDS:
                    last_recover = time.monotonic()
                    self.recover()
                job, wait = self.claim_next()
                if job is not None:
                    self.run_job(job)
                    continue
            except StoreUnavailable as exc:  # back off until the store answers (no busy loop)
                wait = self._store_lost(exc)
            except Exception:  # keep the worker alive; the job (if any) records its own error
                log.exception("ingest worker iteration failed")
                wait = POLL_SECONDS
            self._wake.wait(wait if self._down_since is not None else min(wait, POLL_SECONDS))
            self._wake.clear()

    # ------------------------------------------------------------------ store outages
    def _store_lost(self, exc: StoreUnavailable) -> float:
        """The store stopped answering: one warning per outage; returns the wait before the next try."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._outage_wait = POLL_SECONDS
            log.warning("ingest worker paused: the store is unreachable (%s); it resumes by itself when the "
                        "store answers again", exc)
        else:
            self._outage_wait = min(self._outage_wait * 2, OUTAGE_MAX_WAIT)
        return self._outage_wait

    def _store_answers(self) -> None:
        """Raises StoreUnavailable while the store is away; else ends the outage."""
        self.jobs.db.query_one("SELECT 1")
        assert self._down_since is not None
        log.warning("ingest worker resumed: the store answers again after %.0f s", time.monotonic() - self._down_since)
        self._down_since = None

    def requeue_interrupted(self) -> int:
        """Put back in the queue the jobs whose run failed because the store was unreachable (their
        partial files stay for a resume); returns how many.  Raises StoreUnavailable while it still is."""
        with self._lock:
            ids = sorted(self._interrupted - self._in_flight)
        requeued = 0
        for job_id in ids:
            with self.jobs.db.transaction() as conn:
                current = self._still_mine(conn, job_id)
                if current is not None:
                    self.jobs.update(conn, current, UPDATED, {
                        "status": JobStatus.QUEUED, "owner": None,
                        "notes": list(dict.fromkeys(current["notes"] + ["recovered.store_outage"]))})
                    requeued += 1
            if current is None:  # cancelled or taken over meanwhile
                self._abandon(job_id)
            with self._lock:
                self._interrupted.discard(job_id)
        if requeued:
            log.info("ingest worker: %d job(s) interrupted by the store outage queued again", requeued)
            self.jobs.notify()
        return requeued

    # ------------------------------------------------------------------ leases
    def lease_seconds(self) -> float:
        return self.lease_settings()[0]

    def renew_seconds(self) -> float:
        return self.lease_settings()[1]

    def lease_settings(self) -> tuple[float, float]:
        """``(ingest.lease_s, renewal period)``: the lease is renewed at least three times per lease
        (a heartbeat slower than the lease, e.g. ``lease_s`` lowered below the default ``lease_renew_s``,
        let any other server's recovery take back a claim still at work); ConfigError unless both > 0."""
        lease = float(get_setting("ingest.lease_s", ws=self.ws))
        renew = float(get_setting("ingest.lease_renew_s", ws=self.ws))
        if not (lease > 0 and renew > 0):
            raise ConfigError(f"{self.ws.config_file}: ingest.lease_s ({lease:g}) and ingest.lease_renew_s "
                              f"({renew:g}) must be above 0")
        return lease, min(renew, lease / 3)

    @contextmanager
    def _working(self, job_id: str) -> Iterator[None]:
        """While this worker runs ``job_id``: its lease is renewed (the job store's lease keeper); a
        store outage marks it interrupted."""
        with self._lock:
            self._in_flight.add(job_id)
        try:
            with self.jobs.leases.keep([job_id], lease_s=self.lease_seconds(), renew_s=self.renew_seconds()):
                yield
        except StoreUnavailable:
            with self._lock:
                self._interrupted.add(job_id)
            raise
        finally:
            with self._lock:
                self._in_flight.discard(job_id)

    def run_pending(self, timeout: float | None = None) -> list[dict]:
        """Process queued jobs in this thread until none is left or ``timeout`` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done: list[dict] = []
        while True:
            job, wait = self.claim_next()
            if job is not None:
                done.append(self.run_job(job))
                continue
            if not self.jobs.has_queued():
                return done
            remaining = math.inf if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return done
            time.sleep(max(0.01, min(wait, remaining)))

    # ------------------------------------------------------------------ claiming
    def claim_next(self) -> tuple[dict | None, float]:
        """Claim the oldest runnable queued job (taking its provider's token); else the wait."""
        if self._interrupted:
            self.requeue_interrupted()
        if not self.jobs.has_queued():
            return None, POLL_SECONDS
        now = time.time()
        wait = POLL_SECONDS
        blocked: set[str] = set()
        with self.jobs.db.transaction() as conn:
            for job in self.jobs.queued(conn):
                if job["next_attempt_at"] > now:
                    wait = min(wait, job["next_attempt_at"] - now)
                    continue
                if job["remote_url"]:
                    if job["provider"] in blocked:
                        continue
                    pause = self.limiter.try_acquire(job["provider"], conn=conn, now=now)
                    if pause > 0:
                        blocked.add(job["provider"])
                        wait = min(wait, pause)
                        continue
                job = self.jobs.update(conn, job, UPDATED, {"status": JobStatus.DOWNLOADING, "owner": owner_token(),
                                                            "lease_until": now + self.lease_seconds()})
                break
            else:
                return None, max(0.01, wait)
        self.jobs.notify()
        return job, 0.0

    def run_job(self, job: dict) -> dict:
        return self.process(job) if job["remote_url"] else self.process_local(job)

    # ------------------------------------------------------------------ helpers
    def _api(self) -> ModuleType | Any:
        return self.remote_api or remote

    def _still_mine(self, conn, job_id: str) -> dict | None:
        current = self.jobs.row(conn, job_id)
        if current is None or current["status"] != JobStatus.DOWNLOADING or current["owner"] != owner_token():
            return None
        return current

    def _abandon(self, job_id: str) -> dict:
        """The job was cancelled (or taken over) meanwhile: drop our files, report its state."""
        job = self.jobs.get(job_id)
        if job is not None and job["status"] in (JobStatus.CANCELLED, JobStatus.RELEASED):
            self.staging.remove_job_files(job)
        return job or {"job_id": job_id, "status": "unknown"}

    def _claim_local(self, job: dict) -> dict | None:
        if job["status"] == JobStatus.DOWNLOADING:
            return job
        with self.jobs.db.transaction() as conn:
            current = self.jobs.row(conn, job["job_id"])
            if current is None or current["status"] != JobStatus.QUEUED:
                return None
            job = self.jobs.update(conn, current, UPDATED, {"status": JobStatus.DOWNLOADING, "owner": owner_token(),
                                                            "lease_until": time.time() + self.lease_seconds()})
        self.jobs.notify()
        return job

    # ------------------------------------------------------------------ local (re-)staging
    def process_local(self, job: dict) -> dict:
        """Stage a queued local job from its ``source_path`` (after a retry or an import)."""
        with self._working(job["job_id"]):
            return self._stage_local(job)

    def _stage_local(self, job: dict) -> dict:
        claimed = self._claim_local(job)
        if claimed is None:
            return self.jobs.get(job["job_id"]) or job
        job = claimed
        try:
            src = sources.check_source(job["source_path"], self.ws)
            staged, digest, size, boot = self.staging.stage_file(job["job_id"], src,
                                                                 job["filename"] or self.safe_name(src.name))
        except (OSError, IngestError) as exc:
            return self._finish_failed(job, str(exc))
        with self.jobs.db.transaction() as conn:
            current = self._still_mine(conn, job["job_id"])
            if current is None:
                return self._abandon(job["job_id"])
            job = self.jobs.settle_staged(conn, current, digest, size, staged, insert=False, topic=UPDATED,
                                          staged_boot=boot)
        if job["status"] == JobStatus.DUPLICATE:
            self.staging.remove_job_files(job)
        self.jobs.notify()
        return job

    # ------------------------------------------------------------------ remote pulls
    def process(self, job: dict) -> dict:
        """Pull a claimed (``downloading``) remote job: plan, dedup by published hash, download, stage."""
        with self._working(job["job_id"]):
            return self._pull(job)

    def _pull(self, job: dict) -> dict:
        jobs, staging = self.jobs, self.staging
        api = self._api()
        job_id = job["job_id"]
        try:
            plan = api.plan_remote(job["provider"], job["remote_url"], job["user_metadata"] or None, self.ws)
            expected = plan.expected_sha256.lower() if plan.expected_sha256 else None
            filename = self.safe_name(plan.filename)
            meta = merge_metadata(
                normalise_metadata(job["provider"], plan.provider_metadata or {}, filename=plan.filename,
                                   sha256=expected),
                normalise_metadata(job["provider"], job["user_metadata"] or {}))
            with jobs.db.transaction() as conn:
                current = self._still_mine(conn, job_id)
                if current is None:
                    return self._abandon(job_id)
                fields = {"filename": filename, "expected_sha256": expected, "bytes_total": plan.expected_size,
                          "metadata": meta, "provider_metadata": plan.provider_metadata or None}
                dup = jobs.dedup(conn, current["project_id"], expected, exclude=job_id) if expected else None
                if dup is not None:  # known before a single byte is downloaded
                    job = jobs.update(conn, current, UPDATED, {
                        **fields, "status": JobStatus.DUPLICATE, "digest": expected, "owner": None, "pin": False,
                        "dedup_of": dup.get("dedup_of"), "existing_uid": dup.get("existing_uid"),
                        "notes": list(dict.fromkeys(current["notes"] + [dup["note"], "dedup.before_download"]))})
                else:
                    job = jobs.update(conn, current, None, fields)
            jobs.notify()
            if job["status"] == JobStatus.DUPLICATE:
                staging.remove_job_files(job)
                return job
            part = staging.part_file(job_id)
            progress, cancelled = self._callbacks(job)
            max_bytes = max_remote_bytes(self.ws)
            # Written behind, as local staging does: apply() fsyncs the bytes in this boot, or
            # re-hashes them after a restart (staged_boot).  No boot id: fsynced here.
            boot = boot_id()
            digest, size = api.download(plan, part, ws=self.ws, max_bytes=max_bytes, progress=progress,
                                        cancelled=cancelled, fsync=boot is None)
            final = staging.staged_file(job_id, filename)
            os.replace(part, final)
            if boot is None:
                fsync_dir(staging.dir)  # else a lost rename shows up as "Staging file missing"
        except RemoteError as exc:
            return self._remote_failed(job_id, exc)
        except (OSError, IngestError, ValueError) as exc:
            return self._finish_failed(self._current(job_id, job), f"{type(exc).__name__}: {exc}")
        with jobs.db.transaction() as conn:
            current = self._still_mine(conn, job_id)
            if current is None:
                return self._abandon(job_id)
            job = jobs.settle_staged(conn, current, digest, size, final, insert=False, topic=UPDATED,
                                     staged_boot=boot)
        if job["status"] == JobStatus.DUPLICATE:
            staging.remove_job_files(job)
        jobs.notify()
        return job

    def _current(self, job_id: str, fallback: dict) -> dict:
        return self.jobs.get(job_id) or fallback

    def _callbacks(self, job: dict):
        jobs = self.jobs
        job_id = job["job_id"]
        state = {"last": 0.0, "checked": 0.0, "cancelled": False}
        owner = owner_token()

        def progress(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - state["last"] < PROGRESS_SECONDS and not (total and done >= total):
                return
            state["last"] = now
            with jobs.db.transaction() as conn:
                current = jobs.row(conn, job_id)
                if current is None or current["status"] != JobStatus.DOWNLOADING or current["owner"] != owner:
                    state["cancelled"] = True
                    return
                jobs.update(conn, current, "on_asset_ingest_progress",
                          {"bytes_done": int(done), "bytes_total": total if total is not None else
                           current["bytes_total"]}, bytes_done=int(done),
                            bytes_total=total if total is not None else current["bytes_total"])
            jobs.notify()

        def cancelled() -> bool:
            now = time.monotonic()
            if not state["cancelled"] and now - state["checked"] >= 0.25:
                state["checked"] = now
                row = jobs.status_and_owner(job_id)
                state["cancelled"] = row is None or row[0] != JobStatus.DOWNLOADING or row[1] != owner
            return bool(state["cancelled"])

        return progress, cancelled

    def _remote_failed(self, job_id: str, exc: RemoteError) -> dict:
        with self.jobs.db.transaction() as conn:
            current = self._still_mine(conn, job_id)
            if current is None:
                abandoned = True
            else:
                abandoned = False
                job = self._record_failure(conn, current, exc)
        if abandoned:
            return self._abandon(job_id)
        self.jobs.notify()
        if job["status"] == JobStatus.FAILED and not exc.retryable:
            self.staging.remove_job_files({"job_id": job_id})  # a bad body is no prefix to resume
        return job

    def _record_failure(self, conn, job: dict, exc: RemoteError) -> dict:
        limit = int(get_setting("ingest.max_auto_retries", DEFAULT_MAX_AUTO_RETRIES, self.ws))
        streak = 0
        for entry in reversed(job["errors"] or []):
            if not entry.get("auto_retry"):
                break
            streak += 1
        if exc.retryable and streak < limit:
            base = float(get_setting("ingest.retry_backoff_s", 5.0, self.ws))
            delay = exc.retry_after if exc.retry_after is not None else backoff_seconds(streak + 1, base)
            if exc.status == 429 or exc.retry_after is not None:
                self.limiter.block(job["provider"], delay, conn=conn)  # every process waits, not just us
            entry = {"attempt": job["attempts"], "error": exc.message, "code": exc.code, "at": time.time(),
                     "auto_retry": True, "retry_in": delay}
            return self.jobs.update(conn, job, UPDATED, {
                "status": JobStatus.QUEUED, "owner": None, "attempts": job["attempts"] + 1, "error": exc.message,
                "errors": list(job["errors"] or []) + [entry], "next_attempt_at": time.time() + delay,
                "notes": list(dict.fromkeys(job["notes"] + ["retry.scheduled"]))}, retry_in=delay)
        return self.jobs.fail(conn, job, exc.message, keep_file=False, **({"notes": list(dict.fromkeys(
            job["notes"] + ["retry.exhausted"]))} if exc.retryable else {}))

    def _finish_failed(self, job: dict, error: str) -> dict:
        with self.jobs.db.transaction() as conn:
            current = self._still_mine(conn, job["job_id"])
            if current is None:
                abandoned = True
            else:
                abandoned = False
                job = self.jobs.fail(conn, current, error)
        if abandoned:
            return self._abandon(job["job_id"])
        self.jobs.notify()
        return job


__all__ = ["MAX_REMOTE_BYTES", "IngestWorker", "backoff_seconds"]
