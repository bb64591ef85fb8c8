"""A project's assets root: the absolute path of a relative one, and confinement below the root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..fsutil import UnsafePathError

SIDECAR_SUFFIX = ".asset.json"
INCOMING_DIR = ".incoming"  # copies in progress, inside the assets root (same file system)


class AssetsRoot:
    """The assets root of one project (``path`` as given, ``real`` with every link resolved)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.real = os.path.realpath(path)
        self.text = str(path)

    def abs(self, rel: str) -> Path:
        return Path(self.abs_str(rel))

    def abs_str(self, rel: str) -> str:
        return self.text + os.sep + rel

    def sidecar_path(self, rel: str) -> Path:
        """Where the sidecar of the asset at ``rel`` (relative to the assets root) lives."""
        return Path(self.text + os.sep + rel + SIDECAR_SUFFIX)

    def relative(self, real: str) -> str | None:
        """``real`` (a resolved path) relative to the root, with ``/``; None when it lies outside."""
        if not real.startswith(self.real + os.sep):
            return None
        return real[len(self.real) + 1:].replace(os.sep, "/")

    def confine(self, rel: str, what: str) -> Path:
        """The resolved ``assets_root / rel``; refuses anything that leaves the assets root.

        ``rel`` has passed :func:`comfyvn.fsutil.safe_relative` (no ``..``, not absolute), so
        only a symlink can lead out: walk the components and resolve fully only when one is a link.
        """
        path = self.real
        for part in rel.split("/"):
            path = path + os.sep + part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                return Path(self.real + os.sep + rel)  # nothing below exists: no link to follow
            except NotADirectoryError:  # a file where the path needs a folder
                raise UnsafePathError(f"{what} {rel!r} goes through a file as if it were a folder") from None
            if stat.S_ISLNK(mode):
                candidate = os.path.realpath(self.real + os.sep + rel)
                if not candidate.startswith(self.real + os.sep):
                    raise UnsafePathError(f"{what} {rel!r} escapes {self.real} (symlink or traversal)")
                return Path(candidate)
        return Path(path)
