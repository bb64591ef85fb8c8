"""Which caller-named source files may be read, and opening them safely.

The one home of the source policy for every path a caller names as a file to read: ingest
``source_path``, ``POST /assets/register`` and :meth:`AssetRegistry.register_file`.

* **Allowed roots** — ``ingest.allowed_source_roots`` (``$COMFYVN_HOME`` and ``~`` by default).
  Enforced for *confined* callers: every path that came through :func:`check_source` (the HTTP
  routes, the ingest queue).  Python code calling the registry directly may name any folder.
* **Always refused**, whoever asks:

  - the workspace's own internals: ``config/``, ``logs/``, ``cache/`` and ``data/`` (database
    with its ``-wal``/``-shm``/``-journal``, ingest staging, trash, uploads, every project's
    assets) — except the assets root of the caller's own project; the database and config
    files are also recognised by identity (a hard link elsewhere is refused too);
  - sensitive names below the root that holds the file: every dot-file and dot-folder
    (``.ssh``, ``.gnupg``, ``.aws``, ``.config``, ``.env``, ``.netrc``, ``.git``... — hidden
    names hold configuration and credentials, never assets), private-key and credential names
    (``id_rsa``, ``id_ed25519``, ``credentials``...) and key-file suffixes (``*.pem``, ``*.key``...).

* **Opened once** — :func:`open_source` resolves the path once, opens the result with
  ``O_NOFOLLOW | O_NONBLOCK`` (a leaf swapped for a symlink fails, a FIFO never blocks) and
  then checks *the opened descriptor*: a regular file, its real path (``/proc/self/fd``)
  passes every rule above, its size is within :func:`source_limit`.  Callers copy or hash
  from that descriptor, never from the path again.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .config import Workspace, get_setting
from .hashing import LimitExceededError, copy_and_hash_fd, sha256_fd
from .ingest.errors import (
    CopyRequiredError,
    SourceChangedError,
    SourceNotAllowedError,
    SourceNotRegularError,
    SourcePathError,
    SourceRefusedError,
    SourceTooLargeError,
    SourceUnreadableError,
)

__all__ = [
    "DEFAULT_MAX_SOURCE_BYTES",
    "CopyRequiredError",
    "HandoffCheck",
    "OpenedSource",
    "SourceChangedError",
    "SourceNotAllowedError",
    "SourceNotRegularError",
    "SourcePath",
    "SourcePolicy",
    "SourcePathError",
    "SourceRefusedError",
    "SourceTooLargeError",
    "SourceUnreadableError",
    "allowed_source_roots",
    "check_source",
    "is_handoff_file",
    "open_source",
    "source_limit",
    "source_policy",
    "uploads_dir",
]

DEFAULT_MAX_SOURCE_BYTES = 64 * 1024**3
DEFAULT_MIN_FREE_BYTES = 1024**3
WORKSPACE_INTERNALS = ("config", "data", "cache", "logs")
SECRET_NAMES = frozenset({
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk", "identity", "authorized_keys",
    "known_hosts", "credentials", "credentials.json", "credentials.csv", "client_secret.json", "secrets.json",
    "secrets.yaml", "secrets.yml", "service-account.json", "htpasswd", "shadow", "gshadow", "master.key",
})
SECRET_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".kdbx", ".gpg", ".asc", ".ovpn",
                   ".ppk", ".tfstate")
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0))


class SourcePath(type(Path())):  # type: ignore[misc]
    """A resolved source approved by :func:`check_source` for a *confined* caller.

    Whoever opens it again (``AssetRegistry.register_file``, ``AssetIngestQueue.stage_file``)
    applies the allowed roots once more to the opened descriptor, so a file swapped between
    the check and the copy cannot lead outside them.
    """

    confined = True


def uploads_dir(ws: Workspace) -> Path:
    """Where the upload routes keep a request's body until it is handed on (``data/uploads``)."""
    return ws.data_dir / "uploads"


# ---------------------------------------------------------------------------- settings
_roots_cache: dict[Path, tuple[tuple, list[Path]]] = {}


def allowed_source_roots(ws: Workspace) -> list[Path]:
    """``ingest.allowed_source_roots`` expanded and resolved (re-read when the config file changes).

    ``$COMFYVN_HOME`` is the workspace root, ``~`` the user's home; a root naming an unset
    variable is dropped (never widen access by accident); relative roots are under the workspace.
    """
    try:
        st = ws.config_file.stat()
        key: tuple = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, os.environ.get("HOME"))
    except FileNotFoundError:
        key = (None, os.environ.get("HOME"))
    hit = _roots_cache.get(ws.root)
    if hit is not None and hit[0] == key:
        return list(hit[1])
    roots = get_setting("ingest.allowed_source_roots", ["$COMFYVN_HOME", "~"], ws) or []
    if isinstance(roots, str):
        roots = [roots]
    out: list[Path] = []
    for raw in roots:
        text = str(raw).replace("$COMFYVN_HOME", str(ws.root)).replace("${COMFYVN_HOME}", str(ws.root))
        text = os.path.expandvars(os.path.expanduser(text))
        if "$" in text:
            continue
        path = Path(text)
        if not path.is_absolute():
            path = ws.root / path
        out.append(path.resolve())
    _roots_cache[ws.root] = (key, out)
    return list(out)


def _int_setting(ws: Workspace, name: str, default: int) -> int:
    value = get_setting(name, default, ws)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else default


def source_limit(ws: Workspace, dest_dir: Path | None = None) -> int:
    """The most bytes one source may have: ``ingest.max_source_bytes`` (64 GiB by default) and,
    when the bytes are to be copied into ``dest_dir``, never more than that file system's free
    space minus ``ingest.min_free_bytes`` (1 GiB by default)."""
    limit = _int_setting(ws, "ingest.max_source_bytes", DEFAULT_MAX_SOURCE_BYTES)
    if dest_dir is not None:
        folder = Path(dest_dir)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        limit = min(limit, max(0, free - _int_setting(ws, "ingest.min_free_bytes", DEFAULT_MIN_FREE_BYTES)))
    return limit


# ---------------------------------------------------------------------------- the rules
def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _parts_below(path: str, root: str) -> list[str]:
    return [p for p in path[len(root.rstrip(os.sep)):].split(os.sep) if p]


def sensitive_name(parts: list[str]) -> str | None:
    """The first path component that is a dot-name, a key or a credential file, or None."""
    for i, part in enumerate(parts):
        if part.startswith("."):
            return part
        lower = part.lower()
        if i == len(parts) - 1 and (lower in SECRET_NAMES or lower.endswith(SECRET_SUFFIXES)):
            return part
    return None


_handoff_dirs: dict[tuple[str, str], tuple[str, str]] = {}


def _handoff_realpaths(ws: Workspace) -> tuple[str, str]:
    """The real paths of the staging and uploads folders, cached by the folders the settings name
    (a changed ``paths.staging`` is a new key; a folder swapped for a symlink after its first use
    is not seen until the process restarts, as the settings' own cache)."""
    key = (os.fspath(ws.staging_dir), os.fspath(uploads_dir(ws)))
    hit = _handoff_dirs.get(key)
    if hit is None:
        hit = _handoff_dirs[key] = (os.path.realpath(key[0]), os.path.realpath(key[1]))
    return hit


def is_handoff_file(path: str | os.PathLike[str], ws: Workspace) -> bool:
    """Whether ``path`` (already resolved) is a file the workspace wrote itself to hand over:
    a staged ingest file (``data/ingest/staging/<job>-<name>``) or an upload's body
    (``data/uploads/.upload-*/<name>``).  Only these may be *moved* into a registry."""
    return _is_handoff(os.fspath(path), *_handoff_realpaths(ws))


class HandoffCheck:
    """:func:`is_handoff_file` of paths not yet resolved, for a run of files: the hand-off
    folders' real paths are read once, and each folder a file lies in is resolved once (the
    file itself must be a regular file, never a symlink, so its real path is its folder's real
    path plus its name)."""

    def __init__(self, ws: Workspace) -> None:
        self.staging, self.uploads = _handoff_realpaths(ws)
        self._real_dirs: dict[str, str] = {}

    def real_path(self, path: str | os.PathLike[str]) -> str | None:
        """The real path of ``path`` when it is a hand-off file (a regular file, not a link), else None."""
        text = os.fspath(path)
        try:
            mode = os.lstat(text).st_mode
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(mode):  # a symlink is never a hand-off
            return None
        folder, name = os.path.split(text)
        real_dir = self._real_dirs.get(folder)
        if real_dir is None:
            real_dir = self._real_dirs[folder] = os.path.realpath(folder)
        real = os.path.join(real_dir, name)
        return real if _is_handoff(real, self.staging, self.uploads) else None


def _is_handoff(text: str, staging: str, uploads: str) -> bool:
    if _inside(text, staging):
        parts = _parts_below(text, staging)
        return len(parts) == 1 and not parts[0].startswith(".")
    if _inside(text, uploads):
        parts = _parts_below(text, uploads)
        return len(parts) == 2 and parts[0].startswith(".upload-")
    return False


@dataclass(frozen=True)
class SourcePolicy:
    """Everything :func:`open_source` checks a path against, resolved once (for a batch of
    files: see :func:`source_policy`); the per-path rules are the same as for one file."""

    ws: Workspace
    roots: tuple[str, ...] | None  # the allowed roots of a confined caller; None: any folder
    own_assets: str  # real path of the caller's own assets root (the one readable part of data/)
    internals: tuple[tuple[str, str], ...]  # (name, real path) of the workspace's own folders
    staging: str
    uploads: str
    identities: frozenset[tuple[int, int]]
    markers: tuple[str, ...]  # what marks another workspace's root (its config and database files)
    # a run's policy (source_policy(run=True)): the real path of each folder its files were named
    # in, resolved once (whatever changes meanwhile, open_source judges the descriptor it opened)
    real_dirs: dict[str, str] | None = field(default=None, compare=False, repr=False)


def source_policy(ws: Workspace, *, confined: bool = True, assets_root: Path | None = None,
                  run: bool = False) -> SourcePolicy:
    """The workspace's folders, identities and allowed roots resolved now, for checking many
    sources with :func:`open_source` (``policy=``); the same arguments as :func:`open_source`.
    ``run``: for one run of files (an :meth:`~comfyvn.ingest.AssetIngestQueue.enqueue_many`
    chunk), which also resolves each folder its files lie in once."""
    roots = tuple(str(r) for r in allowed_source_roots(ws)) if confined else None
    staging, uploads = _handoff_realpaths(ws)
    return SourcePolicy(
        ws=ws, roots=roots, own_assets=os.path.realpath(assets_root if assets_root is not None else ws.assets_root),
        internals=tuple((name, os.path.realpath(ws.root / name)) for name in WORKSPACE_INTERNALS),
        staging=staging, uploads=uploads, identities=frozenset(_workspace_identities(ws)),
        markers=(str(ws.config_file.relative_to(ws.root)), str(ws.db_path.relative_to(ws.root))),
        real_dirs={} if run else None)


def _refusal(real: str, policy: SourcePolicy, uploads_ok: bool) -> Exception | None:
    """Why ``real`` (a fully resolved path) may not be read, or None."""
    ws = policy.ws
    own_assets = policy.own_assets
    in_own_assets = _inside(real, own_assets) and real != own_assets
    # compared by real path, so a workspace whose data/ is a symlink to another disk is covered too
    internal = next((name for name, folder in policy.internals if _inside(real, folder)), None)
    if internal is not None and not in_own_assets:
        if uploads_ok and _inside(real, policy.uploads) and _is_handoff(real, policy.staging, policy.uploads):
            return None
        return SourceRefusedError(
            f"{real} is inside the workspace's own files ({internal}/): the database, config, logs, cache, "
            "staging, trash, uploads and other projects' assets are never read as sources")
    if in_own_assets:  # the registry checks what it holds itself (registered paths, sidecars)
        bad = next((p for p in _parts_below(real, own_assets) if p.startswith(".")), None)
        return None if bad is None else SourceRefusedError(
            f"{real}: {bad!r} is a hidden or sensitive name (the registry's own temporary files live there)")
    other = _another_workspaces_internals(real, policy.markers)
    if other is not None:
        return SourceRefusedError(
            f"{real} is inside the own files of another comfyvn workspace ({other}): its database, config, "
            "logs, cache and assets are never read as sources; register from that workspace instead")
    bases = list(policy.roots) if policy.roots is not None else [str(ws.root), os.path.expanduser("~")]
    containing = [b for b in bases if _inside(real, b)]
    if policy.roots is not None and not containing:
        shown = ", ".join(bases) or "(none configured)"
        return SourceNotAllowedError(
            f"{real} is outside the folders ingest may read from: {shown}. Move the file into one of them "
            f"or add its folder to ingest.allowed_source_roots in {ws.config_file}")
    checks = [sensitive_name(_parts_below(real, b)) for b in containing] or [sensitive_name(real.split(os.sep))]
    if all(bad is not None for bad in checks):
        return SourceRefusedError(
            f"{real} is refused: {checks[0]!r} is a hidden (dot) or key/credential name, and such files are never "
            "read as sources (see docs/ASSET_INGEST.md, 'Source policy')")
    return None


def _another_workspaces_internals(real: str, markers: tuple[str, ...]) -> str | None:
    """The internal folder of another workspace (one holding a config file or a database:
    ``markers``, relative to its root) that ``real`` (a resolved path) lies in, or None."""
    parts = real.split(os.sep)  # ["", "home", ...]: parts[i] lies in the folder os.sep.join(parts[:i])
    for i in range(1, len(parts) - 1):
        if parts[i] in WORKSPACE_INTERNALS:
            root = os.sep.join(parts[:i]) or os.sep
            if any(os.path.isfile(os.path.join(root, marker)) for marker in markers):
                return os.path.join(root, parts[i])
    return None


def _workspace_identities(ws: Workspace) -> set[tuple[int, int]]:
    """(device, inode) of the database files and of every file in ``config/`` (settings, the
    webhook secrets key): a hard link to one of them elsewhere is refused too."""
    out = set()
    db = str(ws.db_path)
    try:
        config_files = [str(p) for p in ws.config_file.parent.iterdir()]
    except OSError:
        config_files = []
    for path in (db, db + "-wal", db + "-shm", db + "-journal", *config_files):
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


# ---------------------------------------------------------------------------- resolving and opening
def _absolute(source_path: str | os.PathLike[str], ws: Workspace) -> Path:
    """The absolute path of a source; a relative one means the workspace's folder, whoever asks
    (HTTP, Python, a widget), never the working folder of whichever process happens to run."""
    try:
        text = os.fspath(source_path)
    except TypeError:
        raise SourcePathError(f"source path must be a string, got {type(source_path).__name__}") from None
    if not text or "\x00" in text:
        raise SourcePathError("source path must be a non-empty path without NUL characters")
    raw = Path(text).expanduser()
    return raw if raw.is_absolute() else ws.root / raw


def _os_error(exc: OSError, raw: Path) -> Exception:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return FileNotFoundError(f"source file {raw} does not exist")
    if exc.errno == errno.ELOOP:
        return SourcePathError(f"source path {raw} is a symlink loop (too many levels of symbolic links)")
    if exc.errno == errno.ENAMETOOLONG:
        return SourcePathError(f"source path {str(raw)[:200]}... is too long for the file system")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SourceUnreadableError(f"source file {raw} cannot be read (permission denied)")
    if exc.errno == errno.ENXIO:
        return SourceNotRegularError(f"source_path {raw} is not a regular file (a socket or device)")
    return SourcePathError(f"source path {raw} cannot be opened: {exc.strerror or exc}")


def _not_regular(raw: Path, mode: int) -> SourceNotRegularError:
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a file")
    return SourceNotRegularError(f"source_path {raw} is not a regular file ({kind})")


def _resolve_in_run(raw: Path, real_dirs: dict[str, str]) -> str:
    """:func:`_resolve` for a run of files: the folder of a file that is no link itself is resolved
    once for the run (``real_dirs``), the file's real path being the folder's plus its name."""
    text = os.fspath(raw)
    folder, name = os.path.split(text)
    try:
        if name not in ("", ".", "..") and not stat.S_ISLNK(os.lstat(text).st_mode):
            real_dir = real_dirs.get(folder)
            if real_dir is None:
                real_dir = real_dirs[folder] = os.path.realpath(folder, strict=True)
            return os.path.join(real_dir, name)
    except OSError as exc:
        raise _os_error(exc, raw) from None
    return _resolve(raw)


def _resolve(raw: Path) -> str:
    try:
        return os.path.realpath(raw, strict=True)
    except OSError as exc:
        raise _os_error(exc, raw) from None
    except RuntimeError:  # older Pythons report a loop this way
        raise SourcePathError(f"source path {raw} is a symlink loop") from None


def check_source(source_path: str | os.PathLike[str], ws: Workspace, *, confined: bool = True,
                 assets_root: Path | None = None) -> Path:
    """The resolved source if it may be read (without opening it); raises the refusal otherwise.

    With ``confined`` (default) the result is a :class:`SourcePath`: opening it later applies
    the allowed roots again.  The final answer is always :func:`open_source`'s.
    """
    raw = _absolute(source_path, ws)
    resolved = _resolve(raw)
    problem = _refusal(resolved, source_policy(ws, confined=confined, assets_root=assets_root), False)
    if problem is not None:
        if os.path.abspath(raw) != resolved:
            problem.args = (f"{raw} (symlink to {resolved}): {problem}",)
            if hasattr(problem, "message"):
                problem.message = problem.args[0]
        raise problem
    try:
        mode = os.stat(resolved).st_mode
    except OSError as exc:
        raise _os_error(exc, raw) from None
    if not stat.S_ISREG(mode):
        raise _not_regular(raw, mode)
    return SourcePath(resolved) if confined else Path(resolved)


def _descriptor_path(fd: int, st: os.stat_result, resolved: str) -> str:
    """The real path of an open file (``/proc/self/fd``; elsewhere the resolved path, verified by identity)."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        try:
            now = os.stat(resolved, follow_symlinks=False)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise SourceChangedError(f"source file {resolved} changed while it was being opened; try again") from None
        return resolved
    if real.endswith(" (deleted)"):
        raise SourceChangedError(f"source file {resolved} was deleted while it was being opened")
    return real


@dataclass
class OpenedSource:
    """An open, checked source: read it through :meth:`copy_into` / :meth:`sha256`, never by path."""

    fd: int
    path: Path  # the real path of the opened file
    size: int  # its size when opened
    limit: int

    def copy_into(self, dest_fh, *, fsync: bool = True) -> tuple[str, int]:
        """Copy and hash from the descriptor; never more than ``limit`` bytes (a file that grew
        past it raises :class:`SourceTooLargeError`; the caller removes the partial copy)."""
        try:
            return copy_and_hash_fd(self.fd, dest_fh, fsync=fsync, limit=self.limit)
        except LimitExceededError:
            raise self._too_large("grew while it was read and is now larger than") from None

    def sha256(self) -> tuple[str, int]:
        try:
            return sha256_fd(self.fd, limit=self.limit)
        except LimitExceededError:
            raise self._too_large("grew while it was read and is now larger than") from None

    def _too_large(self, what: str) -> SourceTooLargeError:
        return SourceTooLargeError(
            f"source file {self.path} {what} the limit of {self.limit} bytes (ingest.max_source_bytes, and the "
            "free disk space minus ingest.min_free_bytes)")


@contextmanager
def open_source(source_path: str | os.PathLike[str], ws: Workspace, *, confined: bool | None = None,
                assets_root: Path | None = None, limit: int | None = None,
                uploads_ok: bool = False, policy: SourcePolicy | None = None) -> Iterator[OpenedSource]:
    """Open a caller-named source once and check the descriptor (see the module docstring).

    ``confined``: apply ``ingest.allowed_source_roots`` (default True; the registry passes False
    for paths Python code gives it directly, True for a :class:`SourcePath`).  ``assets_root``:
    the caller's own project's assets root, the one part of ``data/`` that may be read (None:
    any project's, for a check that does not know the project yet).  ``limit``: most bytes
    (default :func:`source_limit` without a destination).  ``uploads_ok``: an upload's body
    handed on by the upload route (``data/uploads/.upload-*/<name>``) may be read.  ``policy``:
    :func:`source_policy` resolved once for a batch of files (then ``confined`` and
    ``assets_root`` are the policy's).
    """
    if policy is None:
        policy = source_policy(ws, confined=True if confined is None else confined, assets_root=assets_root)
    raw = _absolute(source_path, ws)
    resolved = _resolve(raw) if policy.real_dirs is None else _resolve_in_run(raw, policy.real_dirs)
    problem = _refusal(resolved, policy, uploads_ok)
    if problem is not None:
        if os.path.abspath(raw) != resolved:
            message = f"{raw} (symlink to {resolved}): {problem}"
            problem.args = (message,)
            if hasattr(problem, "message"):
                problem.message = message
        raise problem
    try:
        fd = os.open(resolved, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the leaf became a symlink after it was resolved
            raise SourceChangedError(f"source file {raw} was replaced by a symbolic link while it was being "
                                     "opened; nothing was read") from None
        raise _os_error(exc, raw) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(raw, st.st_mode)
        real = _descriptor_path(fd, st, resolved)
        if real != resolved:  # something on the way was swapped after resolving: judge what was opened
            problem = _refusal(real, policy, uploads_ok)
            if problem is not None:
                raise SourceChangedError(f"source file {raw} changed while it was being opened and now leads to a "
                                         f"refused file; nothing was read ({problem})")
        if (st.st_dev, st.st_ino) in policy.identities:
            raise SourceRefusedError(f"{raw} is (a link to) the workspace's database or config file")
        cap = source_limit(ws) if limit is None else limit
        opened = OpenedSource(fd=fd, path=Path(real), size=st.st_size, limit=cap)
        if st.st_size > cap:
            raise opened._too_large(f"is {st.st_size} bytes, over")
        yield opened
    finally:
        os.close(fd)
