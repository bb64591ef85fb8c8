"""A project's assets root: the absolute path of a relative one, and confinement below the root.

A path starting with ``@library/`` is a file of a library root registered where it lies
(:mod:`comfyvn.library.roots`): it resolves to that file, and its sidecar lies beside it or in
the workspace's mirror folder, by the root's ``sidecars`` setting.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..config import Workspace
from ..fsutil import UnsafePathError
from ..library.roots import IN_PLACE_PREFIX, in_place_path, mirror_folder, root_named, split_in_place

__all__ = ["IN_PLACE_PREFIX", "INCOMING_DIR", "SIDECAR_SUFFIX", "AssetsRoot", "in_place_sidecar_location"]

SIDECAR_SUFFIX = ".asset.json"
INCOMING_DIR = ".incoming"  # copies in progress, inside the assets root (same file system)


def in_place_sidecar_location(ws: Workspace, project_id: str, rel: str) -> tuple[Path, str]:
    """``(base folder, relative name)`` of the sidecar of the library file at ``rel``
    (``@library/<root>/<path>``), for a confined open: beside the file, or in the mirror."""
    name, inner = split_in_place(rel)
    root = root_named(name, ws)
    if root is not None and root.sidecars == "beside":
        return root.path, inner + SIDECAR_SUFFIX
    return mirror_folder(ws, project_id, name), inner + SIDECAR_SUFFIX


class AssetsRoot:
    """The assets root of one project (``path`` as given, ``real`` with every link resolved), and
    where the library files registered in place (``@library/...``) of that project lie."""

    def __init__(self, path: Path, ws: Workspace, project_id: str) -> None:
        self.path = path
        self.real = os.path.realpath(path)
        self.text = str(path)
        self.ws = ws
        self.project_id = project_id

    def abs(self, rel: str) -> Path:
        return Path(self.abs_str(rel))

    def abs_str(self, rel: str) -> str:
        if rel.startswith(IN_PLACE_PREFIX):  # a library file, where it lies
            return in_place_path(self.ws, rel)
        return self.text + os.sep + rel

    def sidecar_path(self, rel: str) -> Path:
        """Where the sidecar of the asset at ``rel`` (relative to the assets root) lives."""
        return Path(self.sidecar_str(rel))

    def sidecar_str(self, rel: str) -> str:
        """:meth:`sidecar_path` as a string (records and hook payloads)."""
        if rel.startswith(IN_PLACE_PREFIX):
            base, name = self.sidecar_location(rel)
            return str(base / name)
        return self.text + os.sep + rel + SIDECAR_SUFFIX

    def file_location(self, rel: str) -> tuple[Path, str]:
        """``(base folder, relative name)`` of the asset file at ``rel``, for a confined open: the
        assets root, or the library root an in-place file lies in."""
        if rel.startswith(IN_PLACE_PREFIX):
            path = Path(in_place_path(self.ws, rel))
            inner = split_in_place(rel)[1]
            return Path(str(path)[: -len(inner) - 1]), inner
        return self.path, rel

    def sidecar_location(self, rel: str) -> tuple[Path, str]:
        """``(base folder, relative name)`` of the sidecar of the asset at ``rel``, for a confined open."""
        if rel.startswith(IN_PLACE_PREFIX):
            return in_place_sidecar_location(self.ws, self.project_id, rel)
        return self.path, rel + SIDECAR_SUFFIX

    @staticmethod
    def in_place(rel: str) -> bool:
        """True for a library file registered where it lies (never moved nor deleted by the registry)."""
        return rel.startswith(IN_PLACE_PREFIX)

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
