"""Open a file confined to a folder, never following a symlink on the way.

:func:`open_confined` is the one way the HTTP routes open a workspace file for a response
(asset download, thumbnail, waveform, sidecar).  It walks ``rel`` one component at a time with
``os.open(..., dir_fd=..., O_NOFOLLOW)``, so a symlink anywhere below ``root`` (a folder or the
file itself) is refused, and a swap between a check and the open cannot happen: the caller
reads from the descriptor this returns and never opens the path again.  ``O_NONBLOCK`` keeps a
FIFO planted in the tree from hanging the open; ``fstat`` must then say "regular file".

``root`` itself is trusted (it comes from the workspace's configuration, and may be a symlink to
another disk); only what lies below it is checked.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from .errors import Refused
from .fsutil import UnsafePathError, safe_relative

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


class RefusedFileError(Refused, UnsafePathError):
    """The file exists but is not served: a symlink on the way, or not a regular file."""


def open_confined(root: str | os.PathLike[str], rel: str | os.PathLike[str], *,
                  what: str = "file") -> tuple[BinaryIO, os.stat_result]:
    """Open ``root/rel`` for reading; return the open file and its ``fstat``.

    Raises :class:`FileNotFoundError` when a component is missing, :class:`RefusedFileError`
    when a component is a symlink or the file is not a regular file, and
    :class:`~comfyvn.fsutil.UnsafePathError` for an absolute path or ``..`` in ``rel``.
    """
    parts = safe_relative(rel, what=what).parts
    shown = "/".join(parts)
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            try:
                fd = os.open(part, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                raise _why(exc, dir_fd, part, what, shown) from None
            os.close(dir_fd)
            dir_fd = fd
        fd, dir_fd = dir_fd, -1
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RefusedFileError(f"{what} {shown!r} is not a regular file; it is not served")
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def _why(exc: OSError, dir_fd: int, part: str, what: str, shown: str) -> OSError | RefusedFileError:
    """The error to raise for a failed open of ``part`` inside ``dir_fd``."""
    if exc.errno == errno.ENOENT:
        return FileNotFoundError(errno.ENOENT, f"{what} {shown!r} does not exist")
    try:
        mode = os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return RefusedFileError(f"{what} {shown!r} goes through a symlink ({part!r}); it is not served")
    if exc.errno == errno.ENOTDIR:  # a file where a folder was expected: nothing at that path
        return FileNotFoundError(errno.ENOENT, f"{what} {shown!r} does not exist")
    if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP) or (mode and not stat.S_ISREG(mode)):
        return RefusedFileError(f"{what} {shown!r} is not a regular file; it is not served")
    return exc
