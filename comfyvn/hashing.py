"""SHA-256 of files, alone or while copying (one pass over the bytes)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

CHUNK = 1024 * 1024
_local = threading.local()


def _buffer() -> bytearray:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(CHUNK)
    return buf


def sha256_file(path: Path) -> tuple[str, int]:
    """``(hex digest, size)`` of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    buf = _buffer()
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def copy_and_hash(src: Path, dest_fh, *, fsync: bool = True) -> tuple[str, int]:
    """Copy ``src`` into the open binary file ``dest_fh`` and hash it in the same pass.

    ``fsync=True`` (default) flushes the copy to disk before returning.
    """
    h = hashlib.sha256()
    size = 0
    buf = _buffer()
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            dest_fh.write(view[:n])
            size += n
    dest_fh.flush()
    if fsync:
        os.fsync(dest_fh.fileno())
    return h.hexdigest(), size
