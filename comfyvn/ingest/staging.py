"""Staging: where incoming bytes wait, hashed, until they are applied.

Staging is one flat folder (no per-job folder to create and delete): ``<job_id>-<file name>``
for staged files, ``.<job_id>.download.part`` (+ ``.json``) for a pull in progress.  Files are
written under a temporary name and renamed, so nothing half-written ever carries a final name;
:meth:`Staging.sweep` deletes what nobody will use any more.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .. import sources
from ..config import Workspace
from ..fsutil import boot_id, owner_alive, owner_token, temp_owner
from ..hashing import start_writeback
from ..studio.core.asset_registry import check_project_id
from .jobstore import JobStore

PART_SUFFIX = ".download.part"
STALE_TEMP_SECONDS = 3600.0
STAGING_MISSING = "Staging file missing"
UNKNOWN_BOOT = "unknown"  # staged_boot of bytes whose durability nobody vouches for (imported state)


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

    def open_source(self, src: Any, project_id: str | None, *, uploads_ok: bool = False) -> AbstractContextManager[sources.OpenedSource]:
        """``src`` opened once and checked as opened (see :func:`comfyvn.sources.open_source`)."""
        return sources.open_source(src, self.ws, confined=True, assets_root=self.project_assets_root(project_id),
                                   limit=sources.source_limit(self.ws, self.dir), uploads_ok=uploads_ok)

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

    def stage_opened(self, job_id: str, source: sources.OpenedSource,
                     filename: str) -> tuple[Path, str, int, str | None]:
        """Copy an opened source into staging (see :meth:`stage_file`)."""
        final = self.staged_file(job_id, filename)
        boot = boot_id()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.{owner_token()}.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                digest, size = source.copy_into(fh, fsync=boot is None)  # pipelined for big files
                if boot is not None:
                    start_writeback(fh.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        # A lost rename shows up as "Staging file missing", never as wrong bytes.
        return final, digest, size, boot

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


__all__ = ["PART_SUFFIX", "STAGING_MISSING", "STALE_TEMP_SECONDS", "UNKNOWN_BOOT", "Staging"]
