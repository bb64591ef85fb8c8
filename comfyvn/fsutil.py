"""File-system helpers: atomic writes and path confinement."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import socket
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import InvalidInput

MAX_NAME_BYTES = 255  # one path component, as Linux file systems allow
#: characters that make a path look like another: bidi embeddings, overrides, isolates and marks,
#: zero-width space and BOM (joiners U+200C/U+200D stay: scripts and emoji need them)
DECEPTIVE_CHARS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
                            "\u200b\u2060\ufeff")
#: what :func:`safe_relative` refuses in a name: control characters (Unicode category Cc, exactly
#: U+0000-U+001F and U+007F-U+009F) and the deceptive ones
REFUSED_NAME_CHAR = re.compile("[\x00-\x1f\x7f-\x9f" + "".join(sorted(DECEPTIVE_CHARS)) + "]")


class UnsafePathError(InvalidInput, ValueError):
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


@lru_cache(maxsize=1)
def boot_id() -> str | None:
    """This boot of the machine (Linux ``boot_id``), or None where the kernel does not say.

    Data written without fsync survives a killed process but maybe not a power loss; a boot
    id recorded with it tells, later, whether the machine has restarted since."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def fsync_file(path: Path | str) -> None:
    """Flush a file's bytes to disk (cheap when write-back already finished)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_temp_counter = itertools.count()


def open_temp(folder: Path | str, stem: str) -> tuple[int, str]:
    """Create a new, empty temporary file ``<folder>/<stem>.<owner>.<n>.tmp`` (O_EXCL).

    Returns ``(fd, path)``.  The name carries this process's :func:`owner_token`, so a
    sweeper can tell a dead writer's leftovers from a live writer's file in progress; the
    mode is 0666 minus the umask, like any file the user creates.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    folder = os.fspath(folder)
    owner = owner_token()
    for _ in range(1000):
        path = os.path.join(folder, f"{stem}.{owner}.{next(_temp_counter)}.tmp")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:  # a leftover of an earlier process that had our pid and start time
            continue
    raise FileExistsError(f"could not create a temporary file in {folder}")


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, (fsync,) rename.

    Readers never see a half-written file under ``path``.  ``fsync=False`` keeps that
    guarantee against a killed process but not against power loss (for derived files that
    can be rebuilt, such as sidecars and thumbnails).  The temporary name carries the
    writer's owner token (see :func:`owner_token`), so a sweeper can tell a dead writer's
    leftovers from a live writer's file in progress.
    """
    folder, name = os.path.split(os.fspath(path))
    try:
        fd, tmp = open_temp(folder, f".{name}")
    except FileNotFoundError:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, tmp = open_temp(folder, f".{name}")
    try:
        try:
            view = memoryview(data)
            while view:  # straight to the descriptor: no buffered file object for a few KiB
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(Path(folder))


def atomic_write_json(path: Path, payload: Any, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8"),
                       fsync=fsync)


# -- owners: which process wrote a temporary file or journal entry, and is it still alive? ----
@lru_cache(maxsize=1)
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux ``/proc``), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] == "Z":  # a zombie has finished running
        return "zombie"
    return fields[19] if len(fields) > 19 else None


_OWNER: tuple[int, str] | None = None


def owner_token() -> str:
    """``<host>-<pid>-<start time>`` of this process (no dots, safe inside file names)."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or _OWNER[0] != pid:  # recomputed after fork
        _OWNER = (pid, f"{_host_tag()}-{pid}-{_start_time(pid) or 0}")
    return _OWNER[1]


def owner_alive(token: str | None) -> bool:
    """Whether the process named by an :func:`owner_token` may still be running.

    Unknown formats and other hosts count as alive (never clean up what might be in use).
    """
    if not token:
        return False
    parts = token.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    host, pid_text, start = parts
    if host != _host_tag():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return token == owner_token()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now_start = _start_time(pid)
    if now_start == "zombie":
        return False
    return now_start is None or start == "0" or now_start == start


def temp_owner(name: str) -> str | None:
    """The owner token inside a temporary file name made by this module, or None."""
    if not name.endswith(".tmp"):
        return None
    pieces = name[:-4].split(".")
    for piece in reversed(pieces):
        if piece.count("-") == 2 and piece.split("-")[1].isdigit():
            return piece
    return None


def is_temp_name(name: str) -> bool:
    """Names produced by :func:`atomic_write_bytes` and partial downloads."""
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".part"))


def safe_relative(rel: str | os.PathLike[str], *, what: str = "path") -> PurePosixPath:
    """Validate a caller-supplied relative path: not absolute, no ``..``, no empty parts."""
    text = os.fspath(rel)
    if not text or "\x00" in text:
        raise UnsafePathError(f"{what} must be a non-empty relative path")
    text = text.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(f"{what} {text!r} must be relative, not absolute")
    split = text.split("/")  # a relative POSIX path's parts, with the "" and "." PurePosixPath drops
    if ".." in split:
        raise UnsafePathError(f"{what} {text!r} may not contain '..'")
    parts = [p for p in split if p not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"{what} {text!r} names no file")
    if REFUSED_NAME_CHAR.search(text):
        raise UnsafePathError(f"{what} {text!r} holds control or invisible format characters (bidi overrides, "
                              "zero-width spaces): they make a name look like another")
    long = next((p for p in parts if len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES), None)
    if long is not None:
        raise UnsafePathError(f"{what}: the name {long[:40]!r}... is over {MAX_NAME_BYTES} bytes, the file "
                              "system's limit")
    return PurePosixPath(*parts)


def refuse_hidden(rel: str | PurePosixPath, *, what: str = "dest_relative") -> None:
    """Refuse a destination with a hidden part: dot-files and dot-folders (the registry's own
    temporary folder among them) are never places a caller may write to."""
    hidden = next((part for part in str(rel).replace("\\", "/").split("/") if part.startswith(".")), None)
    if hidden is not None:
        raise UnsafePathError(f"{what} {str(rel)!r} may not contain a hidden name ({hidden!r}): dot-files and "
                              "dot-folders, such as the registry's own temporary folder, are not valid destinations")


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


def read_json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a JSON object file: ``(data, None)``, or ``(None, problem)`` with a readable problem.

    Never raises for bad content (invalid UTF-8 or JSON, nesting too deep to parse, not an object).
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"unreadable: {exc}"
    return parse_json_object(raw)


def parse_json_object(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """:func:`read_json_object` for bytes already read."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"unreadable: {exc}"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply to parse)"
    if not isinstance(data, dict):
        return None, f"not a JSON object ({type(data).__name__})"
    return data, None
