"""SHA-256 of files, alone or while copying (one pass over the bytes)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def copy_and_hash(src: Path, dest_fh) -> tuple[str, int]:
    """Copy ``src`` into the open binary file ``dest_fh`` and hash it in the same pass; fsyncs."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            dest_fh.write(view[:n])
            size += n
    dest_fh.flush()
    os.fsync(dest_fh.fileno())
    return h.hexdigest(), size
