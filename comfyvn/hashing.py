"""SHA-256 of files, alone or while copying (one pass over the bytes)."""

from __future__ import annotations

import hashlib
import mmap
import os
import queue
import threading
from pathlib import Path

from .errors import InvalidInput

CHUNK = 1024 * 1024
_local = threading.local()


def _buffer() -> bytearray:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(CHUNK)
    return buf


class LimitExceededError(InvalidInput):
    """The source offered more bytes than the copy's ``limit`` (the copy is incomplete)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


def _bounded(buf_view: memoryview, size: int, limit: int | None) -> memoryview:
    """The part of the buffer to read into next: never more than one byte past ``limit``."""
    if limit is None:
        return buf_view
    return buf_view[:max(1, min(len(buf_view), limit + 1 - size))]


def _hash_fh(fh, limit: int | None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    view = memoryview(_buffer())
    while n := fh.readinto(_bounded(view, size, limit)):
        h.update(view[:n])
        size += n
        if limit is not None and size > limit:
            raise LimitExceededError(limit)
    return h.hexdigest(), size


def sha256_file(path: Path) -> tuple[str, int]:
    """``(hex digest, size)`` of a file, read in 1 MiB chunks."""
    with open(path, "rb", buffering=0) as fh:
        return _hash_fh(fh, None)


def sha256_fd(fd: int, *, limit: int | None = None) -> tuple[str, int]:
    """``(hex digest, size)`` of an open file from its start; :class:`LimitExceededError` past ``limit``."""
    os.lseek(fd, 0, os.SEEK_SET)
    with open(fd, "rb", buffering=0, closefd=False) as fh:
        return _hash_fh(fh, limit)


def _copy_fh(fh, dest_fh, *, fsync: bool, limit: int | None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    view = memoryview(_buffer())
    while n := fh.readinto(_bounded(view, size, limit)):
        size += n
        if limit is not None and size > limit:
            raise LimitExceededError(limit)
        h.update(view[:n])
        dest_fh.write(view[:n])
    dest_fh.flush()
    if fsync:
        os.fsync(dest_fh.fileno())
    return h.hexdigest(), size


def copy_and_hash(src: Path, dest_fh, *, fsync: bool = True) -> tuple[str, int]:
    """Copy ``src`` into the open binary file ``dest_fh`` and hash it in the same pass.

    ``fsync=True`` (default) flushes the copy to disk before returning.
    """
    with open(src, "rb", buffering=0) as fh:
        return _copy_fh(fh, dest_fh, fsync=fsync, limit=None)


def copy_and_hash_fd(src_fd: int, dest_fh, *, fsync: bool = True, limit: int | None = None) -> tuple[str, int]:
    """:func:`copy_and_hash_large` from an open file descriptor (read from its start).

    Never copies more than ``limit`` bytes: a source that offers more (it grew while being
    read) raises :class:`LimitExceededError`; the caller discards the partial copy.
    """
    os.lseek(src_fd, 0, os.SEEK_SET)
    with open(src_fd, "rb", buffering=0, closefd=False) as fh:
        if os.fstat(src_fd).st_size < LARGE_FILE:
            return _copy_fh(fh, dest_fh, fsync=fsync, limit=limit)
        return _copy_large(fh, dest_fh, fsync=fsync, limit=limit)


# -- big files: hashing overlapped with copying --------------------------------------------
LARGE_FILE = 16 * CHUNK  # below this, copy_and_hash's simple loop is as fast
_PIPE_CHUNK = 8 * CHUNK
_PIPE_DEPTH = 4


def _writeback_starter():
    """``start(fd, offset, length)``: begin writing a range to disk without waiting (Linux
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so a closing fsync has little left to do."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    except (AttributeError, OSError, TypeError):
        return lambda fd, offset, length: None
    return lambda fd, offset, length: fn(fd, offset, length, 2)


_start_writeback = _writeback_starter()


def start_writeback(fd: int) -> None:
    """Begin writing a whole file to disk without waiting for it (a later fsync is then cheap)."""
    _start_writeback(fd, 0, 0)


def copy_and_hash_large(src: Path, dest_fh, *, fsync: bool = True) -> tuple[str, int]:
    """:func:`copy_and_hash` for big files: same result, one pass over user space, less waiting.

    The kernel copies ``src`` into ``dest_fh`` (``copy_file_range``, no trip through Python
    buffers) in 32 MiB chunks while a helper thread hashes each chunk of the *destination*
    as soon as it lands (from the page cache, mapped: no extra copy), so the digest is always
    that of the bytes written, whatever happens to the source meanwhile.  Write-back of every
    chunk starts at once instead of at the closing fsync.  Where ``copy_file_range`` cannot
    be used, :func:`_copy_and_hash_pipelined` does the copy.  Files under
    :data:`LARGE_FILE` take :func:`copy_and_hash`.
    """
    if os.stat(src).st_size < LARGE_FILE:
        return copy_and_hash(src, dest_fh, fsync=fsync)
    with open(src, "rb", buffering=0) as fh:
        return _copy_large(fh, dest_fh, fsync=fsync, limit=None)


def _copy_large(fh, dest_fh, *, fsync: bool, limit: int | None) -> tuple[str, int]:
    dest_fh.flush()
    fd = dest_fh.fileno()
    start = fh.tell()

    def chunk(size: int) -> int:
        return _KERNEL_CHUNK if limit is None else max(1, min(_KERNEL_CHUNK, limit + 1 - size))

    if not _readable(fd):  # what lands cannot be read back: hash the buffers on their way
        return _copy_and_hash_pipelined(fh, fd, fsync=fsync, limit=limit)
    try:
        first = os.copy_file_range(fh.fileno(), fd, chunk(0))
    except (AttributeError, OSError):  # another file system, an old kernel: copy through Python
        fh.seek(start)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        return _copy_and_hash_pipelined(fh, fd, fsync=fsync, limit=limit)
    h = hashlib.sha256()
    todo: queue.Queue = queue.Queue()
    failure: list[BaseException] = []
    worker = threading.Thread(target=_hash_ranges, args=(fd, h, todo, failure), name="comfyvn-sha256",
                              daemon=True)
    worker.start()
    size, n = 0, first
    try:
        while n:
            _start_writeback(fd, size, n)
            todo.put((size, n))
            size += n
            if limit is not None and size > limit:
                raise LimitExceededError(limit)
            n = os.copy_file_range(fh.fileno(), fd, chunk(size))
    finally:
        todo.put(None)
        worker.join()
    if failure:
        raise failure[0]
    if fsync:
        os.fsync(fd)
    return h.hexdigest(), size


_KERNEL_CHUNK = 32 * CHUNK


def _readable(fd: int) -> bool:
    """Whether ``fd`` was opened for reading (False where the platform cannot tell)."""
    try:
        import fcntl
    except ImportError:  # Windows: no copy_file_range either
        return False
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_WRONLY


def _hash_ranges(fd: int, h, todo: queue.Queue, failure: list[BaseException]) -> None:
    """Hash ``(offset, length)`` ranges of ``fd`` in order, read through a read-only mapping
    (``pread`` where the file cannot be mapped).  An exception goes to ``failure``."""
    gran = mmap.ALLOCATIONGRANULARITY
    try:
        while (item := todo.get()) is not None:
            offset, length = item
            start = offset - offset % gran
            try:
                with mmap.mmap(fd, length + offset - start, prot=mmap.PROT_READ, offset=start) as mapped:
                    h.update(memoryview(mapped)[offset - start:])
            except (OSError, ValueError):  # a file system without mmap: read the range instead
                while length:
                    data = os.pread(fd, min(length, CHUNK), offset)
                    if not data:
                        raise OSError(f"file descriptor {fd} shrank while being hashed") from None
                    h.update(data)
                    offset += len(data)
                    length -= len(data)
    except BaseException as exc:
        failure.append(exc)
        while todo.get() is not None:  # let the copier finish
            pass


class HashingWriter:
    """Writes a stream to ``fd`` in groups of ``group`` bytes while a helper thread hashes them.

    The caller fills :meth:`space` (``readinto`` / ``recv_into`` straight into it) and reports
    :meth:`landed` bytes, or hands over bytes with :meth:`feed`.  A full group is written with
    ``os.write`` (no Python buffering), its write-back is started, and it goes to the helper
    thread, which hashes the very buffer that was written (hashlib drops the GIL), so the digest
    covers exactly the bytes written and hashing overlaps the reading.  At most ``depth``
    buffers exist (bounded memory); :meth:`close` writes the rest and waits for the hash.
    ``hasher`` may already hold a prefix (a resumed download).
    """

    def __init__(self, fd: int, hasher=None, *, group: int = 8 * CHUNK, depth: int = 4) -> None:
        self.fd = fd
        self.hasher = hasher if hasher is not None else hashlib.sha256()
        self.position = os.lseek(fd, 0, os.SEEK_CUR)
        self.written = 0  # bytes written by this writer
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._todo: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._group, self._depth, self._made = group, depth, 1  # buffers made when the hash lags, not before
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._hash, name="comfyvn-sha256", daemon=True)
        self._thread.start()
        self._buf = bytearray(group)
        self._view = memoryview(self._buf)
        self._filled = 0

    def _hash(self) -> None:
        while (item := self._todo.get()) is not None:
            buf, n = item
            try:
                with memoryview(buf) as view:
                    self.hasher.update(view[:n])
            except BaseException as exc:  # pragma: no cover - hashlib does not fail on bytes
                self._failure.append(exc)
            self._free.put(buf)

    @property
    def size(self) -> int:
        """Bytes taken so far (written, or waiting in the current group)."""
        return self.written + self._filled

    def space(self, limit: int | None = None) -> memoryview:
        """The free part of the current group (at most ``limit`` bytes): read into it, then :meth:`landed`."""
        end = len(self._buf) if limit is None else min(len(self._buf), self._filled + limit)
        return self._view[self._filled:end]

    def landed(self, n: int) -> None:
        """``n`` bytes were read into :meth:`space`."""
        self._filled += n
        if self._filled == len(self._buf):
            self.flush()

    def feed(self, data: bytes | memoryview) -> None:
        """Copy ``data`` into the groups."""
        data = memoryview(data)
        while data:
            room = self.space(len(data))
            n = len(room)
            room[:] = data[:n]
            data = data[n:]
            self.landed(n)

    def flush(self) -> None:
        """Write the current group and hand it to the hashing thread."""
        n = self._filled
        if not n:
            return
        view = self._view[:n]
        done = 0
        while done < n:
            done += os.write(self.fd, view[done:])
        _start_writeback(self.fd, self.position, n)
        self.position += n
        self.written += n
        self._todo.put((self._buf, n))
        if self._free.empty() and self._made < self._depth:  # only this thread takes buffers
            self._made += 1
            self._buf = bytearray(self._group)
        else:
            self._buf = self._free.get()
        self._view = memoryview(self._buf)
        self._filled = 0

    def close(self) -> str:
        """Write what is left, wait until every written byte is hashed; the hex digest."""
        try:
            self.flush()
        finally:
            if self._thread.is_alive():
                self._todo.put(None)
                self._thread.join()
        if self._failure:
            raise self._failure[0]
        return self.hasher.hexdigest()


def _copy_and_hash_pipelined(fh, fd: int, *, fsync: bool, limit: int | None = None) -> tuple[str, int]:
    """Read and write 8 MiB chunks in this thread while a helper thread hashes them (hashlib
    releases the GIL); write-back of every written chunk starts at once."""
    writer = HashingWriter(fd, group=_PIPE_CHUNK, depth=_PIPE_DEPTH)
    try:
        while n := fh.readinto(_bounded(writer.space(), writer.size, limit)):
            if limit is not None and writer.size + n > limit:
                raise LimitExceededError(limit)
            writer.landed(n)
    finally:
        digest = writer.close()
    if fsync:
        os.fsync(fd)
    return digest, writer.written
