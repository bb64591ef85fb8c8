"""File-system helpers: atomic writes and path confinement."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any


class UnsafePathError(ValueError):
    """A path from a caller would leave the folder it is confined to."""


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8"))


def is_temp_name(name: str) -> bool:
    """Names produced by :func:`atomic_write_bytes` and partial downloads."""
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".part"))


def safe_relative(rel: str | os.PathLike[str], *, what: str = "path") -> PurePosixPath:
    """Validate a caller-supplied relative path: not absolute, no ``..``, no empty parts."""
    text = os.fspath(rel)
    if not text or "\x00" in text:
        raise UnsafePathError(f"{what} must be a non-empty relative path")
    text = text.replace("\\", "/")
    pure = PurePosixPath(text)
    if pure.is_absolute() or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(f"{what} {text!r} must be relative, not absolute")
    if any(part == ".." for part in pure.parts):
        raise UnsafePathError(f"{what} {text!r} may not contain '..'")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"{what} {text!r} names no file")
    return PurePosixPath(*parts)


def confined_path(root: Path, rel: str | os.PathLike[str], *, what: str = "path") -> Path:
    """``root / rel`` after checking it stays inside ``root`` once symlinks are resolved."""
    pure = safe_relative(rel, what=what)
    root_resolved = Path(root).resolve()
    candidate = (root_resolved / pure).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise UnsafePathError(f"{what} {os.fspath(rel)!r} escapes {root_resolved} (symlink or traversal)")
    return candidate


def is_within(path: Path, roots: list[Path]) -> bool:
    resolved = Path(path).resolve()
    for root in roots:
        r = Path(root).resolve()
        if resolved == r or r in resolved.parents:
            return True
    return False
