"""Remote pulls from Civitai, Hugging Face and allow-listed hosts: plan, then download.

``plan_remote(provider, remote_url, metadata, ws)`` asks the provider's API what the URL
names and returns a :class:`RemotePlan` (download URL, file name, published SHA-256 and size,
raw provider metadata, auth headers).  The queue can dedup on ``expected_sha256`` before
downloading anything.

``download(plan, part_path, ws=..., max_bytes=...)`` streams the file with httpx into
``part_path`` (the only name it ever writes, besides ``<part>.json`` with the resume
validators) and returns ``(sha256, size)``:

- redirects are followed by hand; every hop passes :mod:`comfyvn.ingest.netguard`
  (https only, allow-listed host, public address, connection pinned to the checked address);
  the provider token goes to the provider's API host only;
- the size cap holds while streaming, with or without ``Content-Length``
  (``remote.size_limit``, "Remote asset exceeds size limit"), and the partial file is removed;
- hashing happens in the same pass; a resumed download re-hashes the kept prefix once;
- a body framed by ``Content-Length`` is read from the socket itself into 1 MiB groups (checked
  against the caps before the first byte), each written with one ``os.write`` and hashed on a
  helper thread (:class:`comfyvn.hashing.HashingWriter`); other bodies come through httpx;
- a dropped connection keeps ``.part`` + ``.part.json`` (ETag / Last-Modified, URL) so the next
  call resumes with ``Range`` + ``If-Range``; a ``200`` instead of ``206`` starts over; a cut
  after progress is resumed inline up to :data:`INLINE_RESUMES` times;
- the result is checked against the published SHA-256 / size (``remote.hash_mismatch``; the
  partial file is deleted);
- HTTP failures become :class:`RemoteError` with a stable ``code``, ``retryable`` and
  ``retry_after`` (429: Retry-After when sent, else :data:`DEFAULT_RETRY_AFTER_S`).

Tokens (``CIVITAI_API_TOKEN``, ``HF_TOKEN``) live only in ``plan.headers``: they are not in
``repr(plan)``, ``plan.to_dict()``, log lines or error messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ..config import Workspace
from ..errors import ComfyvnError
from ..fsutil import atomic_write_json, fsync_dir, fsync_file
from ..hashing import CHUNK, HashingWriter
from .errors import RemoteError
from .netguard import display_url
from .providers import canonical_provider, get_provider, plan_generic
from .providers.base import DEFAULT_RETRY_AFTER_S, GuardedSession, RemotePlan, remote_error

log = logging.getLogger("comfyvn.ingest.remote")

INLINE_RESUMES = 3  # resumes inside one download() call after a cut that made progress
PROGRESS_INTERVAL_S = 0.2  # progress / cancellation callbacks at most this often (and at the end)
RESUME_META_VERSION = 1

Progress = Callable[[int, int | None], None]


def plan_remote(provider: str, remote_url: str, metadata: dict | None, ws: Workspace | None) -> RemotePlan:
    """Resolve ``remote_url`` (a provider URL or id) into a :class:`RemotePlan`.

    May call the provider's API (through the same allow-list / address policy as downloads).
    Raises :class:`RemoteError` with a readable message (bad URL, not found, gated, ...).
    """
    name = canonical_provider(provider, remote_url)
    module = get_provider(name)
    if module is None:
        return plan_generic(name, remote_url, metadata, ws)
    plan = module.plan(remote_url, metadata, ws)
    log.info("planned %s pull of %s (%s bytes, sha256 %s)", name, plan.filename,
             plan.expected_size if plan.expected_size is not None else "?",
             (plan.expected_sha256 or "unpublished")[:16])
    return plan


def resume_meta_path(part_path: Path) -> Path:
    """Where the resume validators of ``part_path`` live (``<name>.part.json``)."""
    return part_path.with_name(part_path.name + ".json")


def discard_partial(part_path: Path) -> None:
    """Remove a partial download and its resume validators."""
    for p in (part_path, resume_meta_path(part_path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def size_limit_error(size: int | None, max_bytes: int, subject: str) -> RemoteError:
    mib = 1024 * 1024
    have = f"{size / mib:.1f} MiB" if size is not None else f"more than {max_bytes / mib:.1f} MiB"
    return RemoteError(
        f"Remote asset exceeds size limit: {subject} is {have}, the limit is {max_bytes / mib:.1f} MiB "
        "(ingest.max_remote_bytes). Download it yourself and enqueue it with source_path, or raise the limit.",
        code="remote.size_limit",
    )


class _Interrupted(ComfyvnError):
    def __init__(self, error: RemoteError, progressed: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.progressed = progressed


class _StartOver(ComfyvnError):
    """The server's answer does not continue our partial file: truncate and ask again."""


GROUP = 1024 * 1024  # bytes per write + hash of a download (one buffer)
GROUPS_IN_FLIGHT = 4  # buffers at most: being filled, written, hashed (memory bound 4 MiB)


def _body_socket(resp: httpx.Response, length: int | None) -> socket.socket | None:
    """The connection's socket when the body may be read from it directly, else None.

    Only an HTTP/1.x body framed by ``Content-Length`` (no ``Transfer-Encoding``): then the
    body is exactly the next ``length`` bytes of the connection, after what httpx read along
    with the headers.  httpcore hands out the stream in its documented ``network_stream``
    response extension (TLS included: the socket is then the ``ssl.SSLSocket``).  The
    connection is not reused afterwards (httpcore closes a response closed mid-body).
    """
    if length is None or "transfer-encoding" in resp.headers or resp.http_version not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    return sock if isinstance(sock, socket.socket) else None


def _read_timeout(resp: httpx.Response) -> float | None:
    return (resp.request.extensions.get("timeout") or {}).get("read")


def _recv_into(sock: socket.socket, view: memoryview) -> int:
    """``sock.recv_into`` with httpx's exceptions (a stall or a lost connection gets resumed)."""
    try:
        return sock.recv_into(view)
    except TimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out") from None
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__) from None


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Download:
    def __init__(self, plan: RemotePlan, part_path: Path, ws: Workspace | None, max_bytes: int,
                 progress: Progress | None, cancelled: Callable[[], bool] | None, fsync: bool = True) -> None:
        self.plan = plan
        self.fsync = fsync
        self.part = Path(part_path)
        self.meta_path = resume_meta_path(self.part)
        self.ws = ws
        self.max_bytes = int(max_bytes)
        self.progress = progress
        self.cancelled = cancelled
        self.name = canonical_provider(plan.provider, plan.source_url)
        self.module = get_provider(self.name)
        self.secrets = plan.secrets()
        self.subject = f"{plan.filename!r} ({self.name})"
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.validators: dict[str, str | None] = {}
        self.last_tick = 0.0

    # -- helpers
    def _size_ok(self, size: int) -> bool:
        """Does ``size`` match the published size (within the plan's tolerance)?"""
        expected = self.plan.expected_size
        return expected is None or abs(size - expected) <= max(0, int(self.plan.size_tolerance or 0))

    def _err(self, message: str, code: str, **kw) -> RemoteError:
        return remote_error(message, code=code, secrets=self.secrets, **kw)

    def _check_cancel(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise self._err(f"Download of {self.subject} cancelled; the partial file is kept for a later resume.",
                            "remote.cancelled")

    def _tick(self, done: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_tick < PROGRESS_INTERVAL_S:
            return
        self.last_tick = now
        self._check_cancel()
        if self.progress is not None:
            self.progress(done, total)

    def _restart_file(self) -> None:
        self.offset = 0
        self.hasher = hashlib.sha256()
        if self.part.exists():
            with open(self.part, "r+b") as fh:
                fh.truncate(0)

    def _beyond_caps(self, size: int) -> RemoteError | None:
        """The error refusing a file of (at least) ``size`` bytes: past the size cap or the published size."""
        if size > self.max_bytes:
            return size_limit_error(None, self.max_bytes, self.subject)
        expected = self.plan.expected_size
        if expected is not None and size > expected + self.plan.size_tolerance:
            return self._err(f"Download of {self.subject} sent more than the {expected} bytes the provider "
                             "published; refusing the file.", "remote.hash_mismatch")
        return None

    def _fail_content(self, message: str, code: str) -> RemoteError:
        discard_partial(self.part)
        return self._err(message, code)

    # -- resume state
    def _load_state(self) -> tuple[str, int] | None:
        """Decide where to start; returns ``(sha, size)`` if the part file is already the complete file."""
        try:
            size_on_disk = self.part.stat().st_size
        except FileNotFoundError:
            size_on_disk = -1
        meta: dict = {}
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, OSError):
            meta = {}
        usable = (
            isinstance(meta, dict) and meta.get("version") == RESUME_META_VERSION
            and meta.get("download_url") == self.plan.download_url
            and meta.get("expected_sha256") == self.plan.expected_sha256
            and (meta.get("etag") or meta.get("last_modified") or self.plan.expected_sha256)
        )
        if size_on_disk <= 0:
            self._restart_file()
            return None
        if not usable and not (self.plan.expected_sha256 and self.plan.expected_size is not None
                               and self._size_ok(size_on_disk)):
            log.info("discarding %d bytes of %s: no matching resume validators", size_on_disk, self.part.name)
            self._restart_file()
            return None
        if size_on_disk > self.max_bytes:
            discard_partial(self.part)
            raise size_limit_error(size_on_disk, self.max_bytes, self.subject)
        # Re-hash the kept prefix once; the stream continues this hash.
        with open(self.part, "rb") as fh:
            while chunk := fh.read(CHUNK):
                self.hasher.update(chunk)
        self.offset = size_on_disk
        if (self.plan.expected_sha256 and self.plan.expected_size is not None and self._size_ok(size_on_disk)
                and self.hasher.hexdigest() == self.plan.expected_sha256):
            return self.hasher.hexdigest(), size_on_disk  # finished earlier, not yet moved
        if not usable:
            self._restart_file()
            return None
        self.validators = {"etag": meta.get("etag"), "last_modified": meta.get("last_modified")}
        log.info("resuming %s at byte %d", self.part.name, self.offset)
        return None

    def _save_state(self, resp: httpx.Response, total: int | None, host: str) -> None:
        etag = resp.headers.get("etag")
        if etag and etag.startswith("W/"):
            etag = None  # weak validators cannot be used with If-Range
        self.validators = {"etag": etag, "last_modified": resp.headers.get("last-modified")}
        # not fsynced here: only a kept prefix needs its validators on disk (_keep_for_resume)
        atomic_write_json(self.meta_path, {
            "version": RESUME_META_VERSION,
            "download_url": self.plan.download_url,
            "source_url": self.plan.source_url,
            "expected_sha256": self.plan.expected_sha256,
            "etag": self.validators["etag"],
            "last_modified": self.validators["last_modified"],
            "total": total,
            "host": host,
            "saved_at": time.time(),
        }, fsync=False)

    def _keep_for_resume(self, fd: int) -> None:
        """Make a prefix kept for a resume durable with its validators (and both names in the folder)."""
        os.fsync(fd)
        with contextlib.suppress(FileNotFoundError):
            fsync_file(self.meta_path)
        fsync_dir(self.part.parent)

    # -- one request
    def _attempt(self, session: GuardedSession) -> tuple[str, int]:
        headers: dict[str, str] = {}
        if self.offset > 0:
            headers["Range"] = f"bytes={self.offset}-"
            validator = self.validators.get("etag") or self.validators.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        resp, target, _hops = session.open(
            "GET", self.plan.download_url, headers=headers, subject=f"Download of {self.subject}",
            ok=(200, 206, 416), on_redirect=getattr(self.module, "on_redirect", None))
        try:
            return self._consume(resp, target.host)
        finally:
            resp.close()

    def _consume(self, resp: httpx.Response, host: str) -> tuple[str, int]:
        status = resp.status_code
        clen_text = resp.headers.get("content-length", "")
        clen = int(clen_text) if clen_text.isdigit() else None
        crange = resp.headers.get("content-range", "")
        if status == 416:
            m = re.fullmatch(r"bytes\s+\*/(\d+)", crange.strip())
            if self.offset > 0 and m and int(m.group(1)) == self.offset:
                return self._finish(self.offset)  # we already had every byte
            raise _StartOver()
        total: int | None
        if status == 206:
            m = _CONTENT_RANGE.fullmatch(crange.strip())
            if not m or int(m.group(1)) != self.offset:
                raise _StartOver()
            total = int(m.group(3)) if m.group(3) != "*" else None
        else:
            if self.offset > 0:
                log.info("%s answered 200 to a ranged request (file changed or no range support); starting over",
                         host)
                self._restart_file()
            total = clen
        expected = self.plan.expected_size
        if total is not None and total > self.max_bytes:
            discard_partial(self.part)
            raise size_limit_error(total, self.max_bytes, self.subject)
        if total is not None and not self._size_ok(total):
            raise self._fail_content(
                f"Download of {self.subject} does not match the provider: the server offers {total} bytes, "
                f"the provider published {expected}; refusing the file.", "remote.hash_mismatch")
        self._save_state(resp, total, host)
        shown_total = total if total is not None else expected
        start = self.offset
        done = self.offset
        self._tick(done, shown_total, force=True)
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o666)
        keep = True  # False once the partial file is deleted (refused content)
        try:
            os.ftruncate(fd, self.offset)
            os.lseek(fd, self.offset, os.SEEK_SET)
            writer = HashingWriter(fd, self.hasher, group=GROUP, depth=GROUPS_IN_FLIGHT)
            try:
                sock = _body_socket(resp, clen)
                if sock is not None and clen is not None:  # Content-Length framing: from the socket into the groups
                    end = start + clen
                    if (refused := self._beyond_caps(end)) is not None:  # a Content-Length past the caps
                        keep = False
                        raise refused
                    # First what httpx read along with the headers (one chunk empties its buffer);
                    # the iterator stays referenced: dropping it would close the connection.
                    body = resp.iter_raw()
                    writer.feed(next(body, b""))
                    done = start + writer.size
                    sock.settimeout(_read_timeout(resp))
                    while done < end:
                        n = _recv_into(sock, writer.space(end - done))
                        if not n:
                            break  # the server closed early: resumed below
                        writer.landed(n)
                        done += n
                        self._tick(done, shown_total)
                else:  # chunked or unframed: through httpx, with the caps checked as the bytes arrive
                    for chunk in resp.iter_raw():
                        done += len(chunk)
                        if (refused := self._beyond_caps(done)) is not None:
                            keep = False
                            raise refused
                        writer.feed(chunk)
                        self._tick(done, shown_total)
            except httpx.TimeoutException:
                raise _Interrupted(self._err(
                    f"Download of {self.subject} stalled at {done} bytes (no data within the read timeout); "
                    "it will resume from there.", "remote.timeout", retryable=True), progressed=done > start) from None
            except httpx.HTTPError as exc:
                raise _Interrupted(self._err(
                    f"Connection lost while downloading {self.subject} at {done} bytes ({type(exc).__name__}); "
                    "it will resume from there.", "remote.connection", retryable=True),
                    progressed=done > start) from None
            finally:
                writer.close()  # every received byte is written and hashed before anyone reads the digest
                self.offset = start + writer.written
        finally:
            # a finished file is fsynced unless the caller vouches for it (fsync=False); a kept prefix always
            if keep and (sys.exc_info()[0] is not None or (total is not None and done < total)):
                self._keep_for_resume(fd)
            elif keep and self.fsync:
                os.fsync(fd)
            os.close(fd)
            if not keep:
                discard_partial(self.part)
        if total is not None and done < total:
            raise _Interrupted(self._err(
                f"Download of {self.subject} ended early at {done} of {total} bytes; it will resume from there.",
                "remote.connection", retryable=True), progressed=done > start)
        return self._finish(done)

    def _finish(self, done: int) -> tuple[str, int]:
        expected = self.plan.expected_size
        if not self._size_ok(done):
            raise self._fail_content(
                f"Download of {self.subject} has {done} bytes but the provider published {expected}; the partial "
                "file was deleted.", "remote.hash_mismatch")
        digest = self.hasher.hexdigest()
        if self.plan.expected_sha256 and digest != self.plan.expected_sha256:
            raise self._fail_content(
                f"Download of {self.subject} is corrupt or not the published file: SHA-256 {digest[:16]}… but the "
                f"provider published {self.plan.expected_sha256[:16]}…; the partial file was deleted.",
                "remote.hash_mismatch")
        with contextlib.suppress(FileNotFoundError):
            self.meta_path.unlink()
        if self.progress is not None:
            self.progress(done, done)
        log.info("downloaded %s: %d bytes, sha256 %s", self.part.name, done, digest[:16])
        return digest, done

    def run(self) -> tuple[str, int]:
        expected = self.plan.expected_size
        if expected is not None and expected > self.max_bytes:
            discard_partial(self.part)
            raise size_limit_error(expected, self.max_bytes, self.subject)
        self._check_cancel()
        self.part.parent.mkdir(parents=True, exist_ok=True)
        done = self._load_state()
        if done is not None:
            with contextlib.suppress(FileNotFoundError):
                self.meta_path.unlink()
            return done
        log.info("downloading %s from %s%s", self.plan.filename, display_url(self.plan.download_url),
                 f" (resuming at {self.offset})" if self.offset else "")
        resumes = INLINE_RESUMES
        start_overs = 2
        with GuardedSession(self.name, self.ws, auth=self.plan.headers,
                            error_mapper=getattr(self.module, "map_error", None)) as session:
            while True:
                try:
                    return self._attempt(session)
                except _StartOver:
                    if start_overs == 0:
                        raise self._err(f"Download of {self.subject}: the server keeps answering with the wrong "
                                        "byte range.", "remote.range", retryable=True) from None
                    start_overs -= 1
                    self._restart_file()
                except _Interrupted as exc:
                    if not exc.progressed or resumes == 0:
                        log.warning("%s", exc.error.message)
                        raise exc.error from None
                    resumes -= 1
                    log.info("connection lost at byte %d of %s; resuming", self.offset, self.part.name)


def download(plan: RemotePlan, part_path: Path, *, ws: Workspace | None, max_bytes: int,
             progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
             fsync: bool = True) -> tuple[str, int]:
    """Download ``plan`` into ``part_path`` (resuming it when possible); return ``(sha256, size)``.

    ``fsync=False`` leaves the finished file written behind (its write-back started, nobody
    waiting): for a caller that makes it durable later, as staging does with ``staged_boot``.
    A partial file kept for a resume is fsynced either way.

    ``progress(bytes_done, bytes_total_or_None)`` is called at most every
    :data:`PROGRESS_INTERVAL_S` seconds and once at the end; ``cancelled()`` is polled as often
    and stops the download with ``RemoteError(code="remote.cancelled")`` (the partial file and
    its validators are kept, so a retry resumes).  Any other failure raises :class:`RemoteError`.
    """
    return _Download(plan, Path(part_path), ws, max_bytes, progress, cancelled, fsync).run()


__all__ = ["DEFAULT_RETRY_AFTER_S", "INLINE_RESUMES", "RemotePlan", "discard_partial", "download", "plan_remote",
           "resume_meta_path", "size_limit_error"]
