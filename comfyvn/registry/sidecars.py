"""Sidecars: the JSON copy of a row beside its file (and the original's legacy mirror).

The database is the source of truth; a sidecar is written from the row as committed, under
the database write lock, so two processes can never leave an older version on disk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from ..confined import open_confined
from ..fsutil import atomic_write_bytes, parse_json_object
from ..hooks.events import utc_timestamp
from ..store import Database
from .errors import AssetRegistryError
from .listeners import HOOK_ASSET_META_UPDATED, HOOK_SIDECAR_WRITTEN, Listeners
from .paths import AssetsRoot
from .records import Records, meta_view

log = logging.getLogger("comfyvn.studio.core.asset_registry")

MAX_SIDECAR_BYTES = 16 * 1024 * 1024  # a sidecar is a few KiB; a bigger one is not read whole


_INDENT_2 = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def _orjson_same(value: Any) -> bool:
    """Whether orjson writes ``value`` exactly as ``json.dumps`` does: only exact dicts with str
    keys, lists, str, 64-bit ints, bools, None and floats Python shows without an exponent
    (``1e-05`` / ``1e+16`` and NaN/inf are spelt differently by the two)."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is dict:  # plain loops: no generator frame per container (a sidecar holds dozens)
        for key, item in value.items():
            if type(key) is not str or not _orjson_same(item):
                return False
        return True
    if kind is list:
        for item in value:
            if not _orjson_same(item):
                return False
        return True
    if kind is int:
        return -(2**63) <= value < 2**64
    if kind is float:
        text = repr(value)
        return "e" not in text and "n" not in text  # not 1e-05, 1e+16, nan, inf
    return False


def encode_sidecar(doc: dict) -> bytes:
    """A sidecar's bytes: ``json.dumps(doc, indent=2, ensure_ascii=False)`` and a newline, in UTF-8.

    With an indent Python's encoder runs in pure Python (~0.1 ms a sidecar); orjson writes the
    same bytes for the values it spells alike (:func:`_orjson_same`), the rest goes to ``json``.
    """
    if _orjson_same(doc):
        try:
            return orjson.dumps(doc, option=_INDENT_2)
        except orjson.JSONEncodeError:  # a lone surrogate: json's own error below
            pass
    return (json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


def atomic_write_json(path: Path, doc: dict, *, fsync: bool = True) -> None:
    """:func:`comfyvn.fsutil.atomic_write_json` for sidecars (the same bytes, by
    :func:`encode_sidecar`); the one place sidecar files are written (tests hook it here)."""
    atomic_write_bytes(path, encode_sidecar(doc), fsync=fsync)


def sidecar_uid(path: Path) -> str | None:
    """The uid a sidecar file names, or None (missing, unreadable, not an object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("uid") if isinstance(data, dict) else None


class Sidecars:
    """The sidecars of one project."""

    def __init__(self, db: Database, project_id: str, root: AssetsRoot, records: Records, listeners: Listeners,
                 meta_root: Path | None) -> None:
        self.db = db
        self.project_id = project_id
        self.root = root
        self.records = records
        self.listeners = listeners
        self.meta_root = meta_root

    @staticmethod
    def document(rec: dict) -> dict:
        """The sidecar JSON for a record (the database is the source of truth)."""
        return {
            "uid": rec["uid"], "type": rec["type"], "path": rec["path"], "hash": rec["hash"],
            "bytes": rec["bytes"], "tags": rec["tags"], "license": rec["license"], "origin": rec["origin"],
            "version": rec["version"], "created_at": utc_timestamp(rec["created_at"]), "meta": meta_view(rec),
            "preview": rec["preview"], "provenance": rec["provenance"], "license_terms": rec["license_terms"],
        }

    def sync(self, uids: Iterable[str], batch: int = 64) -> int:
        """Write the sidecars of rows marked pending, from the row as committed *now*.

        The write happens under the database write lock, so two processes updating one
        asset can never leave the older version on disk.
        """
        written = 0
        pending = list(uids)
        for i in range(0, len(pending), batch):
            with self.db.transaction() as conn:
                for uid in pending[i:i + batch]:
                    rec = self.records.row(uid, conn)
                    if rec is None or not rec["sidecar_pending"] or not self.root.abs(rec["path"]).exists():
                        continue
                    self.write(rec)
                    conn.execute("UPDATE assets SET sidecar_pending = 0 WHERE project_id = ? AND uid = ?",
                                 (self.project_id, uid))
                    written += 1
        return written

    def read(self, uid: str) -> dict:
        """The parsed sidecar of an asset (raises AssetRegistryError naming the file if missing or corrupt)."""
        rec = self.records.require(uid)
        path = self.root.sidecar_path(rec["path"])
        try:  # the confined reader: a sidecar swapped for a symlink is refused, never followed
            fh, _ = open_confined(*self.root.sidecar_location(rec["path"]), what="sidecar")
        except FileNotFoundError:
            raise AssetRegistryError(f"sidecar {path} is missing; run the enforcer to rewrite it") from None
        with fh:
            raw = fh.read(MAX_SIDECAR_BYTES + 1)
        if len(raw) > MAX_SIDECAR_BYTES:
            raise AssetRegistryError(f"sidecar {path} is over {MAX_SIDECAR_BYTES} bytes; run the enforcer to rewrite it")
        data, problem = parse_json_object(raw)
        if data is None:
            raise AssetRegistryError(f"sidecar {path} is {problem}; run the enforcer to rewrite it")
        return data

    def rewrite(self, uid: str, *, reason: str = "rewrite") -> dict:
        """Rewrite a sidecar from the database row (the enforcer's fix); returns the public record.

        The sidecar's contents change, so both ``asset_meta_updated`` and
        ``asset_sidecar_written`` fire (with ``reason`` in the modder envelopes).
        """
        with self.db.transaction() as conn:
            rec = self.records.require(uid, conn)
            if not self.root.abs(rec["path"]).exists():
                raise AssetRegistryError(f"asset {uid}: file {self.root.abs(rec['path'])} is missing; "
                                         "not writing a sidecar for it")
            fired = self.listeners.emit_all(conn, [
                (HOOK_ASSET_META_UPDATED, self.records.payload(rec, include_meta=True),
                 {"tags": rec["tags"], "license": rec["license"], "reason": reason}),
                (HOOK_SIDECAR_WRITTEN, self.records.sidecar_payload(rec), {"reason": reason})])
            self.write(rec)
            conn.execute("UPDATE assets SET sidecar_pending = 0 WHERE project_id = ? AND uid = ?",
                         (self.project_id, uid))
        self.listeners.run(fired)
        return self.records.public(rec)

    def ensure(self, uid: str, *, overwrite: bool = False) -> Path:
        """The asset's sidecar path, writing it from the database when missing (or when
        ``overwrite``; that fires ``asset_meta_updated`` and ``asset_sidecar_written``)."""
        rec = self.records.require(uid)
        path = self.root.sidecar_path(rec["path"])
        if overwrite or not path.is_file():
            self.rewrite(uid, reason="ensure_sidecar")
        return path

    def write(self, rec: dict) -> None:
        """Write the sidecar (atomically) and, with ``meta_root``, the original's legacy mirror."""
        doc = self.document(rec)
        atomic_write_json(self.root.sidecar_path(rec["path"]), doc, fsync=False)
        mirror = self.legacy_path(rec["path"])
        if mirror is not None:
            try:  # a derived copy for old tooling: its failure never undoes the change
                mirror.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(mirror, {"id": rec["uid"], **doc}, fsync=False)
            except OSError:
                log.exception("could not write the legacy sidecar mirror %s", mirror)

    def legacy_path(self, rel: str) -> Path | None:
        """``<meta_root>/<rel without suffix>.json`` (the original's mirror), or None without meta_root."""
        return (self.meta_root / rel).with_suffix(".json") if self.meta_root is not None else None
