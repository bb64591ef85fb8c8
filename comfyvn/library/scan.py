"""Scan library roots: register new files in place, update changed ones, mark vanished ones.

A scan walks each root once (``os.scandir``, one ``stat`` per file), compares every file with what
the last scan saw (``library_files``: device, inode, size, mtime_ns), and reads only files that
are new or changed, through the persistent :class:`~comfyvn.library.hashcache.HashCache` (a file
renamed inside a disk keeps its inode and is not read again).  Then it reconciles assets with
files by content: a new content becomes an asset registered in place; an asset whose file
vanished and whose bytes reappear elsewhere is pointed there (a move, not delete + new); an asset
with no file left is reported missing (its row stays).  Nothing on disk is moved or deleted.

Symlinked folders are followed; a folder reached twice (a symlink loop) is reported and skipped,
as are unreadable folders and files; the scan goes on.

AutoV3 (a second SHA-256 over nearly all of a ``.safetensors`` file) is by default left out of the
first pass for files of :data:`DEFER_AUTOV3_FROM` bytes and more: the files are registered and
findable by every other form first, then a background phase of the same scan computes it
(``autov3="background"``; ``"eager"``: in the first pass; ``"off"``: left queued for a later scan).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import operator
import os
import stat as stat_mod
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..config import Workspace, existing_workspace, get_setting
from ..errors import Conflict
from ..hashforms import THREADED_FROM, HashForms, is_safetensors_name
from ..hooks.events import emit, last_event_id, oldest_event_id
from ..registry.paths import SIDECAR_SUFFIX
from ..registry.rebuild import derive_tags
from ..sources import WORKSPACE_INTERNALS, sensitive_name
from ..store import LockTimeout
from ..studio.core.asset_registry import AssetRegistry
from .aliases import store_aliases, store_autov3
from .hashcache import HashCache, cache_key
from .identify import identify_unidentified
from .roots import (
    IN_PLACE_PREFIX,
    MIRROR_DIR,
    LibraryRoot,
    in_place_rel,
    library_roots,
    split_in_place,
    type_for,
)

log = logging.getLogger("comfyvn.library.scan")

Progress = Callable[[dict], None]
PROGRESS_EVERY_S = 0.5  # hook events of a running scan at most this often
_REGISTER_BATCH = 500
GONE_MARK = "#gone-"  # appended to the path of an asset whose file now holds other bytes (never a real file)
AUTOV3_MODES = ("background", "eager", "off")
# smaller files get AutoV3 in the first pass even in background mode: their scan is bound by
# registration, and a second open later would cost more than the hash
DEFER_AUTOV3_FROM = THREADED_FROM


class ScanBusyError(Conflict):
    """Another scan of the same project is running (in this or another process)."""

    code = "scan_running"


@dataclass(slots=True)
class _Entry:
    root: LibraryRoot
    rel: str  # POSIX, inside the root
    path: str
    st: os.stat_result


@dataclass
class ScanReport:
    project_id: str
    roots: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    unchanged: int = 0
    new_files: int = 0
    changed: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    moved: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    found_again: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    hashed_files: int = 0
    hashed_bytes: int = 0
    cache: dict = field(default_factory=dict)
    seconds: float = 0.0
    identify: dict | None = None
    autov3: dict = field(default_factory=dict)
    # folders whose fingerprint matched (no row loaded), compared file by file, gone since the last scan
    folders: dict = field(default_factory=lambda: {"unchanged": 0, "compared": 0, "gone": 0})

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> dict:
        return {"project_id": self.project_id, "roots": self.roots, "files": self.files, "bytes": self.bytes,
                "unchanged": self.unchanged, "new_files": self.new_files, "changed": len(self.changed),
                "registered": len(self.registered), "moved": len(self.moved), "missing": len(self.missing),
                "vanished": len(self.vanished), "errors": len(self.errors), "hashed_files": self.hashed_files,
                "hashed_bytes": self.hashed_bytes, "seconds": round(self.seconds, 3),
                "autov3_pending": self.autov3.get("pending", 0)}


@dataclass(slots=True)
class WalkTally:
    """What a walk of one root saw: every regular file, and those it found unchanged itself."""

    files: int = 0
    bytes: int = 0
    unchanged: int = 0


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_STAT_KEY = operator.attrgetter("st_mode", "st_dev", "st_ino", "st_size", "st_mtime_ns")
_MODE = operator.attrgetter("st_mode")
_INO = operator.attrgetter("st_ino")
_UNSIGNED_FIELDS = tuple(map(operator.attrgetter, ("st_mode", "st_dev", "st_ino", "st_size")))
_MTIME = operator.attrgetter("st_mtime_ns")


@dataclass(slots=True)
class FolderScan:
    """A folder a walk compared file by file: the fingerprint to keep (None: never trust it, the
    folder had something to report), and its regular files' count and bytes."""

    fingerprint: str | None
    files: int
    bytes: int


def _folder_entries(fd: int) -> tuple[list[str], list[os.stat_result], list[tuple[str, str]]]:
    """Sorted names of a folder read through ``fd``, their ``lstat`` and the names that could not
    be stat'ed (with the reason): one C-level map in the common case."""
    names = sorted(os.listdir(fd))
    try:
        return names, list(map(functools.partial(os.stat, dir_fd=fd, follow_symlinks=False), names)), []
    except OSError:  # an entry went away (or is unreadable) since the listing: one at a time
        kept: list[str] = []
        sts: list[os.stat_result] = []
        failed: list[tuple[str, str]] = []
        for name in names:
            try:
                sts.append(os.stat(name, dir_fd=fd, follow_symlinks=False))
            except OSError as exc:
                failed.append((name, exc.strerror or str(exc)))
                continue
            kept.append(name)
        return kept, sts, failed


def folder_fingerprint(names: list[str], sts: list[os.stat_result], targets: dict[str, object]) -> str:
    """A stable digest (BLAKE2b) of a folder's entries: sorted names with their (mode, device,
    inode, size, mtime_ns), and for symlinks the same of their target (or the error).  Any
    change of a file, a name, a subfolder's entries or a link's target changes it.  Each field
    goes in as one machine-integer array (C-level maps: no per-file Python)."""
    h = hashlib.blake2b(digest_size=16)
    h.update("/".join(names).encode("utf-8", "surrogateescape"))  # "/" is never in a name
    try:
        for getter in _UNSIGNED_FIELDS:
            h.update(array("Q", map(getter, sts)))
        h.update(array("q", map(_MTIME, sts)))  # signed: before 1970 is possible
    except OverflowError:  # a value no machine integer holds (an exotic file system): as text
        h.update(repr(list(map(_STAT_KEY, sts))).encode())
    if targets:
        h.update(repr(sorted((name, _STAT_KEY(t) if isinstance(t, os.stat_result) else repr(t))
                             for name, t in targets.items())).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def walk_root(root: LibraryRoot, errors: list[dict], *, skip: set[str] | None = None,
              refused: set[tuple[int, int]] | None = None,
              folders: dict[str, tuple[str, int, int]] | None = None,
              rows_of: Callable[[str], dict[str, tuple]] | None = None,
              walked: dict[str, FolderScan | None] | None = None, unseen: dict[str, tuple] | None = None,
              tally: WalkTally | None = None, on_folder: Callable[[WalkTally], None] | None = None,
              ) -> Iterator[tuple[str, str, os.stat_result, tuple | None]]:
    """``(rel, path, stat, last row)`` of the new or changed regular files below ``root`` (symlinks
    followed, loops and unreadable folders reported in ``errors``); ``OSError`` when the root
    itself cannot be read.

    Each folder is listed through a descriptor and every entry ``lstat``-ed by name (one C-level
    map); their :func:`folder_fingerprint` is compared with the last scan's (``folders``: rel_dir
    -> (fingerprint, files, bytes)).  Equal: the folder is unchanged, its files are only counted
    in ``tally`` from the stored figures (no row loaded, nothing yielded) and ``walked[rel_dir]``
    is None.  Different (or unknown): ``rows_of(rel_dir)`` loads the last scan's rows of its files
    (rel -> ``(dev, ino, size, mtime_ns, present)``); a present file whose ``lstat`` equals its row
    is unchanged (counted), the others are yielded with their row (None for new files), the rows
    not seen go to ``unseen`` and ``walked[rel_dir]`` is the :class:`FolderScan` to store.
    ``on_folder(tally)`` is called after each folder (progress).

    Dot-names, sidecars (``*.asset.json``), key and credential files, the folders in ``skip``
    and the folders or files whose (device, inode) is in ``refused`` (the workspace's own
    database, config, logs and cache, also through a symlink or a hard link) are left out."""
    refused = refused or set()
    refused_inos = {ino for _, ino in refused}
    folders = folders or {}
    walked = {} if walked is None else walked
    unseen = {} if unseen is None else unseen
    tally = WalkTally() if tally is None else tally
    base = str(root.path)
    try:
        top = os.stat(base)
    except OSError as exc:
        errors.append({"root": root.name, "path": base, "error": f"root not readable: {exc.strerror or exc}"})
        raise
    if (top.st_dev, top.st_ino) in refused:  # the root itself is (or links to) a workspace folder
        errors.append({"root": root.name, "path": base, "error": "the workspace's own files (database, config, "
                       "logs, cache) are never registered; root skipped"})
        return
    seen_dirs = {(top.st_dev, top.st_ino)}
    stack = [(base, "")]
    skip = skip or set()
    while stack:
        folder, rel_dir = stack.pop()
        prefix = f"{rel_dir}/" if rel_dir else ""
        errors_before = len(errors)
        try:
            fd = os.open(folder, _DIR_FLAGS)
        except OSError as exc:
            errors.append({"root": root.name, "path": folder, "error": f"folder not readable: {exc.strerror or exc}"})
            continue
        try:
            try:
                names, sts, failed = _folder_entries(fd)
            except OSError as exc:
                errors.append({"root": root.name, "path": folder,
                               "error": f"folder not readable: {exc.strerror or exc}"})
                continue
            for name, reason in failed:
                errors.append({"root": root.name, "path": os.path.join(folder, name), "error": f"cannot stat: {reason}"})
            targets: dict[str, object] = {}  # symlinks: the stat of their target, or the error
            for name in itertools.compress(names, map(stat_mod.S_ISLNK, map(_MODE, sts))):
                try:
                    targets[name] = os.stat(name, dir_fd=fd)
                except OSError as exc:
                    targets[name] = exc
            fingerprint = folder_fingerprint(names, sts, targets)
            stored = folders.get(rel_dir)
            fast = (stored is not None and stored[0] == fingerprint and not failed
                    and refused_inos.isdisjoint(map(_INO, sts))
                    and refused.isdisjoint((t.st_dev, t.st_ino) for t in targets.values()
                                           if isinstance(t, os.stat_result)))
            if fast:  # unchanged folder: only its subfolders and links are looked at
                assert stored is not None
                files, nbytes, unchanged = 0, stored[2], stored[1]
                modes = list(map(_MODE, sts))
                keep = list(map(operator.or_, map(stat_mod.S_ISDIR, modes), map(stat_mod.S_ISLNK, modes)))
                pairs = zip(itertools.compress(names, keep), itertools.compress(sts, keep), strict=True)
                known: dict[str, tuple] = {}
            else:
                files = nbytes = unchanged = 0
                pairs = zip(names, sts, strict=True)
                known = rows_of(rel_dir) if rows_of is not None else {}
            for name, st in pairs:
                rel = prefix + name
                row = known.pop(rel, None)  # None for dot-names and sidecars: never registered
                if (row is not None and row == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, 1)
                        and stat_mod.S_ISREG(st.st_mode) and st.st_ino not in refused_inos):  # unchanged file
                    unchanged += 1
                    nbytes += st.st_size
                    continue
                if name.startswith(".") or name.endswith(SIDECAR_SUFFIX):
                    continue
                if row is not None:  # back in: only a file yielded below counts as seen (a folder now is not)
                    known[rel] = row
                path = os.path.join(folder, name)
                if not name.isprintable() or _undecodable(name):  # a registry path must be UTF-8 text on one line
                    errors.append({"root": root.name, "path": os.fsencode(path).decode("utf-8", "backslashreplace"),
                                   "error": "file name is not printable UTF-8 text; rename it to register it"})
                    continue
                if stat_mod.S_ISLNK(st.st_mode):
                    target = targets[name]
                    if not isinstance(target, os.stat_result):
                        errors.append({"root": root.name, "path": path,
                                       "error": f"cannot stat: {getattr(target, 'strerror', None) or target}"
                                                " (broken symlink)"})
                        continue
                    st = target
                key = (st.st_dev, st.st_ino)
                if key in refused:
                    errors.append({"root": root.name, "path": path, "error": "the workspace's own files (database, "
                                   "config, logs, cache) are never registered; skipped"})
                    continue
                if stat_mod.S_ISDIR(st.st_mode):
                    if path in skip:
                        continue
                    if key in seen_dirs:
                        errors.append({"root": root.name, "path": path,
                                       "error": "symlink loop: this folder was already scanned; skipped"})
                        continue
                    seen_dirs.add(key)
                    stack.append((path, rel))
                elif stat_mod.S_ISREG(st.st_mode) and not fast:
                    if sensitive_name([name]) is not None:  # keys and credentials are never read
                        errors.append({"root": root.name, "path": path,
                                       "error": "a key or credential file name; never registered"})
                        continue
                    files += 1
                    nbytes += st.st_size
                    known.pop(rel, None)
                    yield rel, path, st, row
                elif not stat_mod.S_ISREG(st.st_mode):  # never opened: a FIFO would block, a device never end
                    errors.append({"root": root.name, "path": path,
                                   "error": "not a regular file (FIFO, socket or device); skipped"})
            tally.files += files + unchanged
            tally.bytes += nbytes
            tally.unchanged += unchanged
            unseen.update(known)
            clean = len(errors) == errors_before
            if not fast or not clean:  # a folder with something to report is compared file by file next time
                walked[rel_dir] = FolderScan(fingerprint if clean else None, files + unchanged, nbytes)
            else:
                walked[rel_dir] = None
        finally:
            os.close(fd)
        if on_folder is not None:
            on_folder(tally)


def _workspace_identities(ws: Workspace) -> set[tuple[int, int]]:
    """(device, inode) of the workspace's internal folders and of its database and config files."""
    out: set[tuple[int, int]] = set()
    db = str(ws.db_path)
    try:
        config_files = [str(p) for p in ws.config_file.parent.iterdir()]
    except OSError:
        config_files = []
    for path in (*(str(ws.root / name) for name in WORKSPACE_INTERNALS), db, db + "-wal", db + "-shm",
                 db + "-journal", *config_files):
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


def _undecodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
        return True
    return False


class _Progress:
    """Throttled progress: the callback and ``on_library_scan_progress`` hook events."""

    def __init__(self, scanner: Scanner, callback: Progress | None) -> None:
        self.scanner = scanner
        self.callback = callback
        self.state = {"phase": "walk", "files_done": 0, "files_total": 0, "bytes_done": 0, "bytes_total": 0,
                      "started_at": time.time()}
        self._last_event = 0.0

    def update(self, force: bool = False, **changes: object) -> None:
        self.state.update(changes)
        if self.callback is not None:
            self.callback(dict(self.state))
        now = time.monotonic()
        if force or now - self._last_event >= PROGRESS_EVERY_S:
            self._last_event = now
            self.scanner.event("on_library_scan_progress", dict(self.state))


class Scanner:
    """One scan of some roots of one project (see :func:`scan_library`)."""

    def __init__(self, ws: Workspace, project_id: str | None = None, *, registry=None,
                 cache: HashCache | None = None, autov3: str = "background") -> None:
        if autov3 not in AUTOV3_MODES:
            raise ValueError(f"autov3 must be one of {', '.join(AUTOV3_MODES)}, not {autov3!r}")
        self.autov3 = autov3
        self.ws = ws
        self.registry = registry or AssetRegistry(project_id, ws=ws)
        self.project_id = self.registry.project_id
        self.db = self.registry.db
        self.cache = cache or HashCache(self.db)
        self.scan_id = f"{int(time.time() * 1000):x}"
        self.rows_loaded = 0  # library_files rows read to compare folders whose fingerprint changed
        # one scan per project at a time, across processes; thread_local=False: a scan started by
        # one thread (an HTTP request) may run and release in another
        self.lock = self.db.lock(f"library-scan-{self.project_id}")

    def event(self, topic: str, data: dict) -> None:
        try:
            with self.db.transaction() as conn:
                emit(conn, topic, {**data, "scan_id": self.scan_id, "project_id": self.project_id},
                     project_id=self.project_id)
        except Exception:  # progress is a courtesy: a busy database never fails the scan
            log.debug("could not emit %s", topic, exc_info=True)

    def run(self, names: list[str] | None = None, *, progress: Progress | None = None,
            then: Callable[[ScanReport], object] | None = None) -> ScanReport:
        """Scan; ``then(report)`` runs once every file is registered with every form but AutoV3
        (bulk identification needs no more), before the AutoV3 phase."""
        started = time.monotonic()
        roots = _select_roots(self.ws, names)
        report = ScanReport(self.project_id, roots=[r.name for r in roots])
        lock = self.lock
        try:
            lock.acquire(timeout=0)
        except LockTimeout:
            raise ScanBusyError(f"a library scan of project {self.project_id!r} is already running; "
                                "wait for it to finish") from None
        try:
            before = self.cache.counters()
            prog = _Progress(self, progress)
            mark = last_event_id(self.db.conn)  # removals after this are found by the next scan's _orphans
            self.event("on_library_scan_started", {"roots": report.roots})
            self._scan(roots, report, prog)
            after = self.cache.counters()
            report.cache = {k: after[k] - before[k] for k in after}
            report.hashed_files, report.hashed_bytes = report.cache["files_read"], report.cache["bytes_read"]
            report.seconds = time.monotonic() - started
            todo = self._autov3_todo(roots) if self.autov3 != "off" else []
            queued = self._autov3_pending_count() if self.autov3 == "off" else len(todo)
            # queued: contents whose AutoV3 was still to compute after the first phase; pending: still after this scan
            report.autov3 = {"mode": self.autov3, "queued": queued, "pending": queued, "files": 0, "bytes": 0,
                             "seconds": 0.0, "errors": []}
            if not todo:
                prog.update(force=True, phase="done")
            self.event("on_library_scan_finished", {**report.summary(), "event_mark": mark})
            if then is not None:
                then(report)
            if todo:
                self._autov3_phase(todo, report, prog)
                prog.update(force=True, phase="done", autov3_files=report.autov3["files"],
                            autov3_bytes=report.autov3["bytes"], autov3_seconds=report.autov3["seconds"])
        finally:
            lock.release()
        return report

    # -- the phases --------------------------------------------------------------------------
    def _scan(self, roots: list[LibraryRoot], report: ScanReport, prog: _Progress) -> None:
        skip = {str(self.ws.root.joinpath(*MIRROR_DIR))}  # the mirror sidecars, should a root hold the workspace
        todo: list[_Entry] = []
        came_back: list[_Entry] = []
        known: dict[tuple[str, str], tuple] = {}  # the last scan's rows of new/changed/returned files
        unseen: dict[str, dict[str, tuple]] = {}  # per available root: rows of files not seen this time
        refused = _workspace_identities(self.ws)
        folder_rows: dict[str, dict[str, FolderScan | None]] = {}  # per walked root: folders to store / drop
        for root in roots:
            self._fill_dirs(root.name)
            folders = self._folders(root.name)
            tally = WalkTally()
            walked: dict[str, FolderScan | None] = {}
            rows: dict[str, tuple] = {}

            def walked_one(t: WalkTally, before: int = report.files) -> None:
                prog.update(files_seen=before + t.files)

            def rows_of(rel_dir: str, name: str = root.name) -> dict[str, tuple]:
                return self._known(name, rel_dir)

            try:  # one pass: stat, compare with the last scan, keep only what changed
                for rel, path, st, row in walk_root(root, report.errors, skip=skip, refused=refused, folders=folders,
                                                    rows_of=rows_of, walked=walked, unseen=rows, tally=tally,
                                                    on_folder=walked_one):
                    if row is not None and row[:4] == cache_key(st):
                        if not row[4]:
                            came_back.append(_Entry(root, rel, path, st))
                            known[(root.name, rel)] = row
                        continue
                    todo.append(_Entry(root, rel, path, st))
                    if row is not None:
                        known[(root.name, rel)] = row
            except OSError:
                continue  # an unplugged disk: reported, its files are not marked missing
            for rel_dir in folders.keys() - walked.keys():  # folders gone (or unreadable): their files vanished
                rows.update(self._known(root.name, rel_dir))
            report.files += tally.files
            report.bytes += tally.bytes
            report.folders["unchanged"] += sum(v is None for v in walked.values())
            report.folders["compared"] += sum(v is not None for v in walked.values())
            report.folders["gone"] += len(folders.keys() - walked.keys())
            unseen[root.name] = rows
            folder_rows[root.name] = {**dict.fromkeys(folders.keys() - walked.keys()),
                                      **{d: v for d, v in walked.items() if v is not None}}
        report.unchanged = report.files - len(todo)
        todo.sort(key=lambda e: (e.root.name, e.rel))
        report.new_files = sum((e.root.name, e.rel) not in known for e in todo)
        prog.update(force=True, phase="hash", files_total=len(todo), bytes_total=sum(e.st.st_size for e in todo))
        hashed = self._hash(todo, report, prog)
        affected: set[str] = set()
        now = time.time()
        with self.db.transaction() as conn:
            for e in came_back:
                back = self._full_row(conn, e.root.name, e.rel)
                conn.execute("UPDATE library_files SET status = 'present', missing_since = NULL, seen_at = ?"
                             " WHERE project_id = ? AND root = ? AND rel = ?",
                             (now, self.project_id, e.root.name, e.rel))
                report.found_again.append(_display(e))
                affected.add(back["uid"])
            for e, forms in hashed:
                old = self._full_row(conn, e.root.name, e.rel) if (e.root.name, e.rel) in known else None
                uid = forms.sha256[:16]
                if old is not None and old["sha256"] != forms.sha256:
                    report.changed.append(_display(e))
                    affected.add(old["uid"])
                conn.execute(
                    "INSERT INTO library_files(project_id, root, rel, dir, uid, sha256, size, dev, ino, mtime_ns,"
                    " status, seen_at, missing_since) VALUES (?,?,?,?,?,?,?,?,?,?,'present',?,NULL)"
                    " ON CONFLICT(project_id, root, rel) DO UPDATE SET uid = excluded.uid, sha256 = excluded.sha256,"
                    " size = excluded.size, dev = excluded.dev, ino = excluded.ino, mtime_ns = excluded.mtime_ns,"
                    " status = excluded.status, seen_at = excluded.seen_at, missing_since = excluded.missing_since,"
                    " dir = excluded.dir",
                    (self.project_id, e.root.name, e.rel, _rel_dir(e.rel), uid, forms.sha256, forms.size,
                     *cache_key(e.st)[:2], e.st.st_mtime_ns, now))
                affected.add(uid)
            store_aliases(conn, (forms for _, forms in hashed))
            # AutoV3 still to compute (background phase); not for bytes whose AutoV3 is known, nor
            # for a file the cache knows has no valid safetensors header
            conn.executemany(
                "INSERT INTO library_autov3_pending(sha256, size, queued_at) SELECT ?, ?, ? WHERE NOT EXISTS"
                " (SELECT 1 FROM hash_aliases WHERE sha256 = ? AND form = 'autov3') AND NOT EXISTS (SELECT 1 FROM"
                " library_hash_cache WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ? AND autov3 = '')"
                " ON CONFLICT DO NOTHING",
                [(forms.sha256, forms.size, now, forms.sha256, *cache_key(e.st)) for e, forms in hashed
                 if forms.autov3 is None and is_safetensors_name(e.rel)])
            for name, rel, seen in ((r, rel, seen) for r, rows in unseen.items() for rel, seen in rows.items()):
                if seen[4]:
                    conn.execute("UPDATE library_files SET status = 'missing', missing_since = ?"
                                 " WHERE project_id = ? AND root = ? AND rel = ?", (now, self.project_id, name, rel))
                    report.vanished.append(f"{name}:{rel}")
                    affected.add(self._full_row(conn, name, rel)["uid"])
            unread = {(e.root.name, e.rel) for e in todo} - {(e.root.name, e.rel) for e, _ in hashed}
            self._store_folders(conn, folder_rows, {(name, _rel_dir(rel)) for name, rel in unread})
            affected.update(self._orphans(conn))
        prog.update(force=True, phase="register")
        self._reconcile(sorted(affected), report)

    def _orphans(self, conn) -> list[str]:
        """Uids of files still in a root whose asset was removed from the registry: from the
        ``on_asset_removed`` events since the last scan began (O(removals)), or, when the log no
        longer reaches back that far, one query over every library file."""
        row = conn.execute("SELECT data FROM events WHERE topic = 'on_library_scan_finished' AND project_id = ?"
                           " ORDER BY id DESC LIMIT 1", (self.project_id,)).fetchone()
        mark = json.loads(row[0]).get("event_mark") if row else None
        if isinstance(mark, int) and oldest_event_id(conn) <= mark + 1:
            uids = {json.loads(r[0]).get("uid") for r in conn.execute(
                "SELECT data FROM events WHERE topic = 'on_asset_removed' AND id > ? AND project_id = ?",
                (mark, self.project_id))}
            return [u for u in uids if isinstance(u, str) and conn.execute(
                "SELECT 1 FROM library_files f WHERE f.project_id = ? AND f.uid = ? AND f.status = 'present' AND NOT"
                " EXISTS (SELECT 1 FROM assets a WHERE a.project_id = f.project_id AND a.uid = f.uid)",
                (self.project_id, u)).fetchone()]
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT f.uid FROM library_files f LEFT JOIN assets a ON a.project_id = f.project_id"
            " AND a.uid = f.uid WHERE f.project_id = ? AND f.status = 'present' AND a.uid IS NULL",
            (self.project_id,))]

    def _known(self, root_name: str, rel_dir: str) -> dict[str, tuple]:
        """What the last scan saw in one folder of a root: rel -> (dev, ino, size, mtime_ns, present?);
        the rest of a row (uid, sha256) is read only for the few files that changed or vanished.
        Only folders whose fingerprint changed (or that are gone) are loaded."""
        cur = self.db.conn.cursor()
        cur.row_factory = None  # plain tuples
        try:
            cur.execute("SELECT rel, dev, ino, size, mtime_ns, CASE WHEN status = 'present' THEN 1 ELSE 0 END"
                        " FROM library_files WHERE project_id = ? AND root = ? AND dir = ?",
                        (self.project_id, root_name, rel_dir))
            out = {r[0]: r[1:] for r in cur}
        finally:
            cur.close()
        self.rows_loaded += len(out)
        return out

    def _folders(self, root_name: str) -> dict[str, tuple[str, int, int]]:
        """The last scan's folders of a root: rel_dir -> (fingerprint, files, bytes)."""
        cur = self.db.conn.cursor()
        cur.row_factory = None
        try:
            cur.execute("SELECT rel_dir, fingerprint, files, bytes FROM library_folders WHERE project_id = ? AND root = ?",
                        (self.project_id, root_name))
            return {r[0]: r[1:] for r in cur}
        finally:
            cur.close()

    def _fill_dirs(self, root_name: str) -> None:
        """Rows written before folder fingerprints (``dir`` NULL): their folder is filled in and
        recorded with an untrusted fingerprint (compared file by file, found gone if not walked)."""
        if self.db.conn.execute("SELECT 1 FROM library_files WHERE project_id = ? AND root = ? AND dir IS NULL"
                                " LIMIT 1", (self.project_id, root_name)).fetchone() is None:
            return
        with self.db.transaction() as conn:
            rels = [r[0] for r in conn.execute("SELECT rel FROM library_files WHERE project_id = ? AND root = ?"
                                               " AND dir IS NULL", (self.project_id, root_name)).fetchall()]
            conn.executemany("UPDATE library_files SET dir = ? WHERE project_id = ? AND root = ? AND rel = ?",
                             [(_rel_dir(rel), self.project_id, root_name, rel) for rel in rels])
            conn.executemany("INSERT INTO library_folders(project_id, root, rel_dir, fingerprint, files, bytes)"
                             " VALUES (?,?,?,'',0,0) ON CONFLICT DO NOTHING",
                             [(self.project_id, root_name, d) for d in sorted({_rel_dir(rel) for rel in rels})])

    def _store_folders(self, conn, folder_rows: dict[str, dict[str, FolderScan | None]], unread: set[tuple[str, str]]) -> None:
        """Fingerprints of the folders compared file by file (in the files' own transaction); a
        folder holding a file that could not be read keeps none (compared again next time)."""
        upserts, gone = [], []
        for root_name, rows in folder_rows.items():
            for rel_dir, f in rows.items():
                if f is None:
                    gone.append((self.project_id, root_name, rel_dir))
                    continue
                fingerprint = "" if f.fingerprint is None or (root_name, rel_dir) in unread else f.fingerprint
                upserts.append((self.project_id, root_name, rel_dir, fingerprint, f.files, f.bytes))
        if gone:
            conn.executemany("DELETE FROM library_folders WHERE project_id = ? AND root = ? AND rel_dir = ?", gone)
        if upserts:
            conn.executemany(
                "INSERT INTO library_folders(project_id, root, rel_dir, fingerprint, files, bytes) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT(project_id, root, rel_dir) DO UPDATE SET fingerprint = excluded.fingerprint,"
                " files = excluded.files, bytes = excluded.bytes", upserts)

    def _full_row(self, conn, root: str, rel: str) -> dict:
        row = conn.execute("SELECT uid, sha256, status FROM library_files WHERE project_id = ? AND root = ? AND rel = ?",
                           (self.project_id, root, rel)).fetchone()
        return {"uid": row[0], "sha256": row[1], "status": row[2]}

    def _hash(self, todo: list[_Entry], report: ScanReport, prog: _Progress) -> list[tuple[_Entry, HashForms]]:
        """Forms of new and changed files: the hash cache first (batched), then one read each."""
        out: list[tuple[_Entry, HashForms]] = []
        cached = self.cache.lookup_many([e.st for e in todo]) if todo else []
        done_files = done_bytes = 0
        lock = threading.Lock()

        def on_bytes(n: int) -> None:
            nonlocal done_bytes
            with lock:
                done_bytes += n
            prog.update(bytes_done=done_bytes)

        with self.cache.batch():
            for e, forms in zip(todo, cached, strict=True):
                eager = self.autov3 == "eager" or (self.autov3 == "background" and e.st.st_size < DEFER_AUTOV3_FROM)
                if forms is None or (eager and forms.autov3 is None and is_safetensors_name(e.rel)):
                    try:  # (a cached row without AutoV3 gets it by a pass of AutoV3 alone)
                        forms = self.cache.hash_file(e.path, on_bytes=on_bytes, autov3=eager)
                    except OSError as exc:
                        report.errors.append({"root": e.root.name, "path": e.path,
                                              "error": f"cannot read: {exc.strerror or exc}"})
                        continue
                else:
                    done_bytes += forms.size
                done_files += 1
                prog.update(files_done=done_files, bytes_done=done_bytes)
                out.append((e, forms))
        return out

    # -- AutoV3, after the files are registered and findable by every other form -----------------
    def _autov3_todo(self, roots: list[LibraryRoot]) -> list[tuple]:
        """One present file of these roots per queued content: ``(sha256, root, rel, dev, ino, size,
        mtime_ns)``.  An empty queue (every rescan of an unchanged library) costs this one query."""
        names = {r.name for r in roots}
        out: dict[str, tuple] = {}
        for row in self.db.conn.execute(
                "SELECT p.sha256, f.root, f.rel, f.dev, f.ino, f.size, f.mtime_ns FROM library_autov3_pending p"
                " JOIN library_files f ON f.sha256 = p.sha256 WHERE f.project_id = ? AND f.status = 'present'"
                " ORDER BY f.root, f.rel", (self.project_id,)):
            if row[1] in names and row[0] not in out:
                out[row[0]] = tuple(row)
        return list(out.values())

    def _autov3_pending_count(self) -> int:
        return self.db.conn.execute("SELECT count(*) FROM library_autov3_pending").fetchone()[0]

    def _autov3_phase(self, todo: list[tuple], report: ScanReport, prog: _Progress) -> None:
        """AutoV3 of the queued contents, one file each: recorded in the hash cache and the alias
        table as soon as it is known (``find_by_hash`` resolves it from then on)."""
        started = time.monotonic()
        before = self.cache.counters()
        roots = {r.name: r for r in library_roots(self.ws)}
        done_files = done_bytes = 0

        def on_bytes(n: int) -> None:
            nonlocal done_bytes
            done_bytes += n
            prog.update(bytes_done=done_bytes)

        prog.update(force=True, phase="autov3", files_done=0, files_total=len(todo), bytes_done=0,
                    bytes_total=sum(r[5] for r in todo), phase_started_at=time.time())
        for sha256, root_name, rel, *key in todo:
            path = os.path.join(str(roots[root_name].path), rel)
            state = self.cache.autov3_state(tuple(key))  # known for this file (an interrupted phase)
            if state is None:
                try:
                    state = self.cache.complete_autov3(path, tuple(key), on_bytes=on_bytes) or ""
                except OSError as exc:  # changed or gone since the first phase: the next scan hashes it
                    report.autov3["errors"].append({"root": root_name, "path": path,
                                                    "error": f"AutoV3 not computed: {exc.strerror or exc}"})
                    continue
            with self.db.transaction() as conn:
                if state:
                    store_autov3(conn, sha256, state)
                conn.execute("DELETE FROM library_autov3_pending WHERE sha256 = ?", (sha256,))
            done_files += 1
            prog.update(files_done=done_files)
        with self.db.transaction() as conn:  # contents no file holds any more
            conn.execute("DELETE FROM library_autov3_pending WHERE NOT EXISTS (SELECT 1 FROM library_files f"
                         " WHERE f.sha256 = library_autov3_pending.sha256 AND f.status = 'present')")
        after = self.cache.counters()
        report.autov3.update(files=after["files_read"] - before["files_read"],
                             bytes=after["bytes_read"] - before["bytes_read"],
                             pending=len(todo) - done_files, seconds=round(time.monotonic() - started, 3))

    def _reconcile(self, uids: list[str], report: ScanReport) -> None:
        """Assets against the files that hold their bytes: register, relink (a move), or report missing."""
        if not uids:
            return
        present: dict[str, list[dict]] = {}
        for start in range(0, len(uids), 500):
            chunk = uids[start:start + 500]
            for r in self.db.conn.execute(
                    "SELECT uid, root, rel, sha256, size FROM library_files WHERE project_id = ? AND status = 'present'"
                    f" AND uid IN ({','.join('?' * len(chunk))}) ORDER BY root, rel", (self.project_id, *chunk)):
                present.setdefault(r[0], []).append({"root": r[1], "rel": r[2], "sha256": r[3], "size": r[4]})
        roots = {r.name: r for r in library_roots(self.ws)}
        registered: set[str] = set()
        for start in range(0, len(uids), 500):
            chunk = uids[start:start + 500]
            registered.update(r[0] for r in self.db.conn.execute(
                f"SELECT uid FROM assets WHERE project_id = ? AND uid IN ({','.join('?' * len(chunk))})",
                (self.project_id, *chunk)))
        to_register: list[dict] = []
        for uid in uids:
            asset = self.registry.get_asset(uid) if uid in registered else None
            files = present.get(uid, [])
            paths = [in_place_rel(f["root"], f["rel"]) for f in files]
            if asset is None:
                if files and files[0]["root"] in roots:
                    f = files[0]
                    kind = type_for(roots[f["root"]], f["rel"])
                    to_register.append({"rel": paths[0], "asset_type": kind, "sha256": f["sha256"], "size": f["size"],
                                        "tags": derive_tags(f["rel"], kind)})
                continue
            if not asset["path"].startswith(IN_PLACE_PREFIX) or asset["path"] in paths:
                continue  # a registered file of the assets root, or its library file is still there
            if files:
                moved = self.registry.relink_in_place(uid, paths[0])
                report.moved.append({"uid": uid, "from": _display_rel(asset["path"]), "to": _display_rel(paths[0]),
                                     "path": moved["abs_path"]})
            else:
                report.missing.append({"uid": uid, "path": asset["abs_path"], "type": asset["type"]})
                if self._holds_other_bytes(asset["path"], uid):  # edited in place: free the path for them
                    self.registry.relink_in_place(uid, f"{asset['path']}{GONE_MARK}{uid}")
        for start in range(0, len(to_register), _REGISTER_BATCH):
            for rec in self.registry.register_in_place(to_register[start:start + _REGISTER_BATCH]):
                report.registered.append(rec["uid"])


    def _holds_other_bytes(self, rel: str, uid: str) -> bool:
        name, inner = split_in_place(rel)
        row = self.db.conn.execute("SELECT uid FROM library_files WHERE project_id = ? AND root = ? AND rel = ?"
                                   " AND status = 'present'", (self.project_id, name, inner)).fetchone()
        return row is not None and row[0] != uid


def _rel_dir(rel: str) -> str:
    """The folder part of a root-relative POSIX path ('' at the top of the root)."""
    return rel.rpartition("/")[0]


def _display(e: _Entry) -> str:
    return f"{e.root.name}:{e.rel}"


def _display_rel(rel: str) -> str:
    name, inner = split_in_place(rel)
    return f"{name}:{inner}"


def _select_roots(ws: Workspace, names: list[str] | None) -> list[LibraryRoot]:
    roots = library_roots(ws)
    if not names:
        if not roots:
            raise ValueError("no library roots configured: add {name, path, layout, sidecars} entries to "
                             "library.roots in config/comfyvn.json")
        return roots
    by_name = {r.name: r for r in roots}
    by_path = {str(r.path): r for r in roots}
    out: list[LibraryRoot] = []
    for name in names:
        root = by_name.get(name) or by_path.get(os.path.realpath(os.path.expanduser(name)))
        if root is None:
            raise ValueError(f"{name!r} is not a configured library root; known: {', '.join(by_name) or 'none'} "
                             "(add it to library.roots in config/comfyvn.json)")
        if root not in out:
            out.append(root)
    return out


def scan_library(roots: list[str] | None = None, *, project: str | None = None, ws: Workspace | None = None,
                 identify: bool = False, progress: Progress | None = None, registry=None,
                 autov3: str = "background") -> ScanReport:
    """Scan library roots (all configured ones, or those named by name or path) of ``project``;
    with ``identify``, ask Civitai about unidentified model files in bulk as soon as they are
    registered (before the AutoV3 phase).  ``autov3``: see :data:`AUTOV3_MODES` and the module."""
    ws = ws or existing_workspace()
    scanner = Scanner(ws, project, registry=registry, autov3=autov3)

    def then(report: ScanReport) -> None:
        report.identify = identify_unidentified(scanner.registry).to_dict()

    return scanner.run(roots, progress=progress, then=then if identify else None)


def start_scan(registry, roots: list[str] | None = None, *, identify: bool = False,
               autov3: str = "background") -> dict:
    """Start a scan in a background thread (the HTTP route and the dashboard): its progress is
    ``on_library_scan_*`` hook events.  Raises :class:`ScanBusyError` at once when one is running."""
    scanner = Scanner(registry.ws, registry.project_id, registry=registry, autov3=autov3)
    chosen = _select_roots(registry.ws, roots)  # bad names are the caller's error, raised now
    try:
        scanner.lock.acquire(timeout=0)
    except LockTimeout:
        raise ScanBusyError(f"a library scan of project {registry.project_id!r} is already running; "
                            "wait for it to finish") from None

    def work() -> None:
        try:
            scanner.run([r.name for r in chosen],
                        then=(lambda _report: identify_unidentified(scanner.registry)) if identify else None)
        except Exception:
            log.exception("library scan %s of project %s failed", scanner.scan_id, registry.project_id)
            scanner.event("on_library_scan_finished", {"roots": [r.name for r in chosen], "error": "failed; see "
                                                       "the server log"})
        finally:
            scanner.lock.release()

    threading.Thread(target=work, name=f"comfyvn-library-scan-{scanner.scan_id}", daemon=True).start()
    return {"scan_id": scanner.scan_id, "project_id": registry.project_id, "roots": [r.name for r in chosen],
            "identify": identify, "autov3": autov3}


def last_scan(registry) -> dict | None:
    """The newest ``on_library_scan_finished`` event of the project (its summary), or None."""
    row = registry.db.query_one("SELECT data FROM events WHERE topic = 'on_library_scan_finished' AND project_id = ?"
                                " ORDER BY id DESC LIMIT 1", (registry.project_id,))
    return json.loads(row[0]) if row else None


def library_status(registry) -> dict:
    """Per root: files, bytes, assets, identified / unidentified, missing (the dashboard's table)."""
    ws = registry.ws
    out = []
    rows = registry.db.query(
        "SELECT f.root, count(*) AS files, coalesce(sum(f.size), 0) AS bytes,"
        " sum(CASE WHEN f.status = 'missing' THEN 1 ELSE 0 END) AS missing, count(DISTINCT f.uid) AS assets,"
        " count(DISTINCT i.uid) AS identified"
        " FROM library_files f LEFT JOIN library_identified i ON i.project_id = f.project_id AND i.uid = f.uid"
        " WHERE f.project_id = ? GROUP BY f.root", (registry.project_id,))
    by_root = {r["root"]: dict(r) for r in rows}
    for root in library_roots(ws):
        r = by_root.get(root.name, {"files": 0, "bytes": 0, "missing": 0, "assets": 0, "identified": 0})
        out.append({**root.to_dict(), "available": root.path.is_dir(), "files": r["files"], "bytes": r["bytes"],
                    "missing": r["missing"] or 0, "assets": r["assets"], "identified": r["identified"],
                    "unidentified": r["assets"] - r["identified"]})
    return {"project_id": registry.project_id, "roots": out,
            "negative_cache_days": get_setting("library.negative_cache_days", 7, ws)}


__all__ = ["AUTOV3_MODES", "DEFER_AUTOV3_FROM", "ScanBusyError", "FolderScan", "ScanReport", "Scanner", "WalkTally", "folder_fingerprint", "last_scan", "library_status", "scan_library", "start_scan",
           "walk_root"]
