"""What lies under a project's assets root, and what to do with files and sidecars that have no row.

:func:`scan_assets_root` walks the root once (asset candidates, sidecars, dead writers'
temporary files); :func:`plan_disk` compares that with the rows: register, relocate (a file
moved by hand), duplicate, orphan sidecar.  Nothing here changes anything.

At a million assets the enforcer streams: :func:`scan_unregistered` keeps only what has no row
(each folder checked against the database as it is walked), :func:`rows_without_file` and
:func:`iter_row_chunks` read the rows in path-ordered chunks; nothing holds every row or file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import default_project, workspace
from ..fsutil import owner_alive, read_json_object, temp_owner
from ..hashing import sha256_file
from ..studio.core.asset_registry import AssetRegistry
from .derive import LICENSE_FILE_NAMES
from .journal import MoveJournal
from .paths import INCOMING_DIR, SIDECAR_SUFFIX

CHUNK = 500  # rows (or paths) read per query by the streaming audit


@dataclass
class Scan:
    """One walk of an assets root."""

    files: dict[str, Path] = field(default_factory=dict)     # rel -> asset candidate
    sidecars: dict[str, Path] = field(default_factory=dict)  # rel of the asset -> sidecar file
    stale_temps: list[Path] = field(default_factory=list)


def walk_assets_root(reg: AssetRegistry) -> Iterator[Scan]:
    """One :class:`Scan` per folder of the assets root (hidden folders skipped, except the incoming
    folder's temp files), in walk order: memory holds one folder at a time."""
    root = reg.assets_root
    for folder, dirs, names in os.walk(root):
        scan = Scan()
        here = Path(folder)
        rel_dir = here.relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") or d == INCOMING_DIR)
        for name in sorted(names):
            path = here / name
            rel = (rel_dir / name).as_posix()
            if name.endswith(".tmp") and (name.startswith(".") or rel_dir.name == INCOMING_DIR):
                owner = temp_owner(name)  # only temp files whose writer we can name (and is dead)
                if (owner or rel_dir.name == INCOMING_DIR) and not owner_alive(owner or ""):
                    scan.stale_temps.append(path)
                continue
            if name.startswith(".") or rel_dir.parts[:1] == (INCOMING_DIR,) or path.is_symlink():
                continue
            if name.endswith(SIDECAR_SUFFIX):
                scan.sidecars[rel[: -len(SIDECAR_SUFFIX)]] = path
            elif name.lower() not in LICENSE_FILE_NAMES and path.is_file():
                scan.files[rel] = path
        yield scan


def scan_assets_root(reg: AssetRegistry) -> Scan:
    """Walk the assets root once (hidden folders skipped, except the incoming folder's temp files)."""
    scan = Scan()
    for part in walk_assets_root(reg):
        scan.files.update(part.files)
        scan.sidecars.update(part.sidecars)
        scan.stale_temps.extend(part.stale_temps)
    return scan


def registered_paths(reg: AssetRegistry, rels: Iterable[str], chunk: int | None = None) -> set[str]:
    """Which of ``rels`` have a row (index lookups, ``chunk`` paths a query)."""
    pending, chunk = list(rels), chunk or CHUNK
    found: set[str] = set()
    for i in range(0, len(pending), chunk):
        part = pending[i:i + chunk]
        found.update(r[0] for r in reg.db.query(
            f"SELECT path FROM assets WHERE project_id = ? AND path IN ({','.join('?' * len(part))})",
            (reg.project_id, *part)))
    return found


def scan_unregistered(reg: AssetRegistry) -> Scan:
    """Walk the assets root once and keep only what has no row: unregistered files, sidecars
    without a row, dead writers' temp files.  Each folder is checked against the database as it
    is read, so memory holds one folder and the findings, not every file of a million assets."""
    scan = Scan()
    for part in walk_assets_root(reg):
        known = registered_paths(reg, [*part.files, *(rel for rel in part.sidecars if rel not in part.files)])
        scan.files.update((rel, path) for rel, path in part.files.items() if rel not in known)
        scan.sidecars.update((rel, path) for rel, path in part.sidecars.items() if rel not in known)
        scan.stale_temps.extend(part.stale_temps)
    return scan


def iter_row_chunks(reg: AssetRegistry, columns: str = "*", chunk: int | None = None) -> Iterator[list]:
    """The project's rows in path order, ``chunk`` at a time (keyset pages on the path index)."""
    last, chunk = None, chunk or CHUNK
    while True:
        where = "project_id = ?" + ("" if last is None else " AND path > ?")
        params = (reg.project_id,) if last is None else (reg.project_id, last)
        rows = reg.db.query(f"SELECT {columns} FROM assets WHERE {where} ORDER BY path LIMIT ?", (*params, chunk))
        if not rows:
            return
        yield rows
        last = rows[-1]["path"]


def rows_without_file(reg: AssetRegistry) -> dict[str, dict]:
    """``{path: {"uid", "path", "hash", "abs_path"}}`` of the rows whose file is gone (streamed:
    a million rows cost a stat each, and memory only for the missing ones)."""
    missing: dict[str, dict] = {}
    for rows in iter_row_chunks(reg, "uid, path, hash"):
        for row in rows:
            base, name = reg.file_location(row["path"])
            abs_path = base / name
            if not abs_path.exists():
                missing[row["path"]] = {"uid": row["uid"], "path": row["path"], "hash": row["hash"],
                                        "abs_path": str(abs_path)}
    return missing


def parse_time(value: Any) -> float | None:
    """Epoch seconds of a sidecar's ISO-8601 time, or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def open_registry(registry_or_project: AssetRegistry | str | None, workspace_root: str | os.PathLike | None,
                  *, recover: bool, **roots: Any) -> AssetRegistry:
    """The registry given, or the project's (the default project for None) in that workspace."""
    roots = {k: v for k, v in roots.items() if v is not None}
    if isinstance(registry_or_project, AssetRegistry):
        if roots:
            raise ValueError(f"give either a registry or {', '.join(roots)}, not both")
        return registry_or_project
    ws = workspace(workspace_root)
    project = registry_or_project or default_project(ws)
    return AssetRegistry(project, ws=ws, recover=recover, **roots)


def plan_disk(reg: AssetRegistry, scan: Scan, rows_by_path: dict[str, dict]) -> list[dict]:
    """What to do with files and sidecars that have no row: register, relocate, report."""
    rows_missing_file = {r["hash"]: r for r in rows_by_path.values() if not Path(r["abs_path"]).exists()}
    # files another process is registering or removing right now (journalled, row not yet committed)
    in_flight = {r["dest"] for r in MoveJournal(reg.db, reg.project_id).entries()}
    plans: list[dict] = []
    for rel, path in scan.files.items():
        if rel in rows_by_path or rel in in_flight:
            continue
        sidecar_path = scan.sidecars.get(rel)
        sidecar, sidecar_error = read_json_object(sidecar_path) if sidecar_path else (None, None)
        try:
            digest, size = sha256_file(path)
        except OSError as exc:
            plans.append({"action": "error", "rel": rel, "detail": f"cannot read {path}: {exc}"})
            continue
        moved = rows_missing_file.pop(digest, None)
        if moved is not None:
            plans.append({"action": "relocate", "rel": rel, "uid": moved["uid"], "from": moved["path"]})
            continue
        existing = reg.find_by_hash(digest)
        if existing is not None:
            plans.append({"action": "duplicate", "rel": rel, "uid": existing["uid"], "existing": existing["path"]})
            continue
        plans.append({"action": "register", "rel": rel, "path": path, "digest": digest, "bytes": size,
                      "sidecar": sidecar, "sidecar_path": sidecar_path, "sidecar_error": sidecar_error})
    for rel, sidecar_path in scan.sidecars.items():
        if rel not in rows_by_path and rel not in scan.files and rel not in in_flight:
            plans.append({"action": "orphan", "rel": rel, "sidecar_path": sidecar_path})
    return plans
