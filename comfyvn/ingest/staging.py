"""Staging: where incoming bytes wait, hashed, until they are applied.

Staging is one flat folder (no per-job folder to create and delete): ``<job_id>-<file name>``
for staged files, ``.<job_id>.download.part`` (+ ``.json``) for a pull in progress.  Files are
written under a temporary name and renamed, so nothing half-written ever carries a final name;
:meth:`Staging.sweep` deletes what nobody will use any more.
"""

from __future__ import annotations

import ctypes
import os
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .. import sources
from ..config import Workspace
from ..fsutil import boot_id, open_temp, owner_alive, temp_owner
from ..hashing import start_writeback
from ..studio.core.asset_registry import check_project_id
from .jobstore import JobStore

PART_SUFFIX = ".download.part"
STALE_TEMP_SECONDS = 3600.0
STAGING_MISSING = "Staging file missing"
UNKNOWN_BOOT = "unknown"  # staged_boot of bytes whose durability nobody vouches for (imported state)


SYNCFS_MIN_FILES = 16  # from this many staged files, one syncfs costs less than an fsync each
WRITEBACK_MIN_BYTES = 1024 * 1024  # enqueue_many() starts each file's write-back at once only from this size


def _syncfs_function():
    """Linux ``syncfs(fd)`` (every dirty page and the journal of one file system), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int
    except (AttributeError, OSError):
        return None
    return fn


_syncfs = _syncfs_function()


class SourceLimits:
    """:func:`comfyvn.sources.source_limit` of staging, read once for a run of files: each staged
    file's size is taken off it (the free space it used), so the run never stages more than
    one reading of the limit allowed.  It also holds the source policy of each project's run
    (:func:`comfyvn.sources.source_policy`, resolved once per run)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.policies: dict[str, sources.SourcePolicy] = {}  # by project

    def current(self) -> int:
        return max(0, self.limit)

    def used(self, size: int) -> None:
        self.limit -= size


class Staging:
    """The staging folder of one workspace (``data/ingest/staging``)."""

    def __init__(self, ws: Workspace, jobs: JobStore, default_project: str) -> None:
        self.ws = ws
        self.jobs = jobs
        self.default_project = default_project
        self.dir = ws.staging_dir
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ file layout
    def staged_file(self, job_id: str, filename: str) -> Path:
        return self.dir / f"{job_id}-{filename}"

    def part_file(self, job_id: str) -> Path:
        return self.dir / f".{job_id}{PART_SUFFIX}"

    def job_dir(self, job_id: str) -> Path:
        """The per-job staging folder of earlier versions; no longer created (see :meth:`job_files`)."""
        return self.dir / job_id

    def job_files(self, job_id: str) -> list[Path]:
        """Every file in staging that belongs to a job (scans the folder; for people and tests)."""
        return sorted(p for p in self.dir.iterdir() if p.name.startswith((f"{job_id}-", f".{job_id}")))

    def remove_job_files(self, job: dict, *, keep_part: bool = False) -> None:
        """Delete a job's staged file and (unless ``keep_part``) its partial download."""
        paths = [self.staged_file(job["job_id"], job["filename"])] if job.get("filename") else []
        if not keep_part:
            part = self.part_file(job["job_id"])
            paths += [part, part.with_name(part.name + ".json")]
        for path in paths:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ staging bytes
    def project_assets_root(self, project_id: str | None) -> Path:
        return self.ws.assets_root / check_project_id(project_id or self.default_project)

    def open_source(self, src: Any, project_id: str | None, *, uploads_ok: bool = False,
                    limits: SourceLimits | None = None) -> AbstractContextManager[sources.OpenedSource]:
        """``src`` opened once and checked as opened (see :func:`comfyvn.sources.open_source`);
        ``limits``: the size cap of a run of files (:meth:`batch_limits`), else read now."""
        if limits is None:
            return sources.open_source(src, self.ws, confined=True, assets_root=self.project_assets_root(project_id),
                                       limit=sources.source_limit(self.ws, self.dir), uploads_ok=uploads_ok)
        project = project_id or self.default_project
        policy = limits.policies.get(project)
        if policy is None:  # the project's assets root (a settings read) and the policy, once per run
            policy = limits.policies[project] = sources.source_policy(
                self.ws, confined=True, assets_root=self.project_assets_root(project), run=True)
        return sources.open_source(src, self.ws, limit=limits.current(), uploads_ok=uploads_ok, policy=policy)

    def batch_limits(self) -> SourceLimits:
        """The size cap for a run of files staged one after the other (read once; see :class:`SourceLimits`)."""
        return SourceLimits(sources.source_limit(self.ws, self.dir))

    def stage_file(self, job_id: str, src: Path, filename: str) -> tuple[Path, str, int, str | None]:
        """Copy ``src`` into staging, hashing in the same pass (temp file + rename).

        The source is opened once and checked by :func:`comfyvn.sources.open_source` (allowed
        roots, refused names, regular file, size cap), and copied from that descriptor.
        Returns ``(path, digest, size, staged_boot)``.  The bytes are written behind: their
        write-back starts at once but nobody waits for it; ``staged_boot`` (this boot's id)
        lets apply() fsync them in this boot, or re-hash them after the machine restarted, so a
        power loss shows up as a failed job, never as wrong bytes in the registry.  Where the
        kernel has no boot id the copy is fsynced here instead (``staged_boot`` None).
        """
        with self.open_source(src, self.jobs.project_of(job_id)) as source:
            return self.stage_opened(job_id, source, filename)

    def stage_opened(self, job_id: str, source: sources.OpenedSource, filename: str, *,
                     writeback: bool = True) -> tuple[Path, str, int, str | None]:
        """Copy an opened source into staging (see :meth:`stage_file`).  ``writeback=False``
        leaves the write-back to the kernel (a batch of small files, made durable together by
        :meth:`sync_many`)."""
        final = self.staged_file(job_id, filename)
        boot = boot_id()
        fd, tmp_name = open_temp(self.dir, f".{final.name}")  # ".<job>-<name>.<owner>.<n>.tmp" (see sweep)
        try:
            with os.fdopen(fd, "wb") as fh:
                digest, size = source.copy_into(fh, fsync=boot is None)  # pipelined for big files
                if boot is not None and writeback:
                    start_writeback(fh.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        # A lost rename shows up as "Staging file missing", never as wrong bytes.
        return final, digest, size, boot

    # ------------------------------------------------------------------ durability
    def sync_many(self, paths: list[str]) -> set[str]:
        """Make many written-behind staged files durable with one ``syncfs`` of the staging file
        system instead of an fsync each (from :data:`SYNCFS_MIN_FILES` files of this folder; Linux).
        Returns the paths so synced: the caller fsyncs any other itself (none when syncfs is
        missing or reports an error)."""
        folder = str(self.dir)
        ours = [p for p in paths if p and os.path.dirname(p) == folder]
        if len(ours) < SYNCFS_MIN_FILES or _syncfs is None:
            return set()
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            ok = _syncfs(fd) == 0
        finally:
            os.close(fd)
        return set(ours) if ok else set()

    # ------------------------------------------------------------------ sweeping
    def sweep(self) -> int:
        """Delete what nobody will use: temp files of dead writers, files of finished jobs, and
        files without a job once they are an hour old (an enqueue killed before it committed)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        keep = self.jobs.ids_keeping_staging()
        swept = 0
        try:
            entries = [e for e in os.scandir(self.dir) if e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return 0
        for entry in entries:
            name = entry.name
            token = temp_owner(name)
            if token is not None:  # ".<job>-<name>.<owner>.<random>.tmp"
                drop = not owner_alive(token)
            else:
                job_id = name[1:13] if name.startswith(".") else name[:12]
                if job_id in keep:
                    continue
                try:
                    old = entry.stat(follow_symlinks=False).st_mtime < cutoff
                except FileNotFoundError:
                    continue
                drop = self.jobs.exists(job_id) or old
            if drop:
                Path(entry.path).unlink(missing_ok=True)
                swept += 1
        return swept


__all__ = ["PART_SUFFIX", "STAGING_MISSING", "STALE_TEMP_SECONDS", "UNKNOWN_BOOT", "SYNCFS_MIN_FILES", "WRITEBACK_MIN_BYTES", "SourceLimits", "Staging"]
