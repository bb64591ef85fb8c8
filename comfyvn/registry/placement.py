"""Registration: check a source, read its bytes once, place it in the assets root, commit its row.

:meth:`Placement.register_files` is one group commit: each item is checked and read into a
typed :class:`RegistrationPlan`, then 1) every file operation is journalled
(:class:`comfyvn.registry.journal.MoveJournal`), 2) the files are put in place with one
directory fsync per folder, 3) rows, events and sidecars commit in one transaction.  A process
killed anywhere leaves journal entries that :class:`comfyvn.registry.recovery.Recovery`
finishes or undoes.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import rights
from ..config import Workspace
from ..fsutil import UnsafePathError, fsync_dir, open_temp, owner_token, refuse_hidden, safe_relative
from ..hashing import copy_and_hash as copy_path_and_hash
from ..hashing import sha256_file
from ..kinds import TYPE_NAME_RE
from ..store import Connection, Database, IntegrityError
from .errors import AssetCollisionError, AssetRegistryError
from .journal import MoveJournal
from .listeners import HOOK_ASSET_REGISTERED, HOOK_SIDECAR_WRITTEN, HookCall, Listeners
from .paths import IN_PLACE_PREFIX, INCOMING_DIR, SIDECAR_SUFFIX, AssetsRoot
from .previews import Previews
from .records import UNSET, Records, deep_merge, normalise_tags, split_metadata, stated_terms
from .sidecars import Sidecars
from .updates import Updates

if TYPE_CHECKING:
    from ..sources import HandoffCheck

log = logging.getLogger("comfyvn.studio.core.asset_registry")

DIGEST_RE = re.compile(r"^[0-9a-fA-F]{64}$")
OnCommit = Callable[[Connection, int, dict], None]
OnCommitMany = Callable[[Connection, list[tuple[int, dict]]], None]


def copy_and_hash(source: Any, dest_fh, *, fsync: bool = True) -> tuple[str, int]:
    """Copy and hash ``source`` into ``dest_fh``: an opened, checked source (read from its
    descriptor, never past its size limit) or a path of the registry's own hand-off files."""
    if isinstance(source, str | os.PathLike):
        return copy_path_and_hash(Path(source), dest_fh, fsync=fsync)
    return source.copy_into(dest_fh, fsync=fsync)


@dataclass(frozen=True)
class Merge:
    """What a registration adds to an asset that already holds the same bytes."""

    meta: dict
    tags: list[str]
    license_tag: str | None  # "" clears the licence, None leaves it


@dataclass
class RegistrationPlan:
    """One file on its way in: checked and read, to be journalled, placed and committed."""

    record: dict        # the row to insert
    op: str             # "copy" (from tmp), "move" (a hand-off file, by rename) or "adopt" (where it lies)
    source: Path        # the resolved source
    final: Path         # where the file is to be
    tmp: Path | None    # the copy in the incoming folder, owned by the plan until placed
    merge: Merge
    index: int = -1     # the item's position in register_files
    intent: int = -1    # its journal entry
    placed: bool = False
    clash: dict | None = None  # the row another process committed for the same bytes meanwhile
    sidecar_written: bool = False


class Placement:
    """Registration of files into one project."""

    def __init__(self, ws: Workspace, db: Database, project_id: str, root: AssetsRoot, records: Records,
                 sidecars: Sidecars, previews: Previews, updates: Updates, listeners: Listeners,
                 journal: MoveJournal, *, fsync: bool) -> None:
        self.ws = ws
        self.db = db
        self.project_id = project_id
        self.root = root
        self.records = records
        self.sidecars = sidecars
        self.previews = previews
        self.updates = updates
        self.listeners = listeners
        self.journal = journal
        self.fsync = fsync

    def register_files(self, items: list[dict], *, on_commit: OnCommit | None = None,
                       on_commit_many: OnCommitMany | None = None) -> list[dict | Exception]:
        """Register many files as one group commit (see :meth:`AssetRegistry.register_files`)."""
        if on_commit is not None and on_commit_many is not None:
            raise ValueError("give on_commit or on_commit_many, not both")
        if on_commit is not None:
            per_item = on_commit

            def each(conn: Connection, done: list[tuple[int, dict]]) -> None:
                for index, record in done:
                    per_item(conn, index, record)

            on_commit_many = each
        from .. import sources  # see plan()

        results: list[dict | Exception | None] = [None] * len(items)
        plans: list[RegistrationPlan] = []
        handoff = sources.HandoffCheck(self.ws)  # the hand-off folders resolved once for the group
        try:
            for index, item in enumerate(items):
                try:
                    planned = self.plan(**item, handoff=handoff)
                except Exception as exc:
                    results[index] = exc
                    continue
                if isinstance(planned, RegistrationPlan):
                    planned.index = index
                    plans.append(planned)
                else:
                    results[index] = planned
            if plans:
                self.commit(plans, results, on_commit_many)
        finally:
            for plan in plans:
                if plan.tmp is not None:
                    plan.tmp.unlink(missing_ok=True)
        return results  # type: ignore[return-value]

    def register_in_place(self, items: list[dict], *, origin: str = "library") -> list[dict]:
        """Register files of library roots where they lie (one transaction; see
        :meth:`AssetRegistry.register_in_place`).  Nothing is journalled: no file is placed, so
        nothing is left to undo."""
        now = time.time()
        plans: list[RegistrationPlan] = []
        results: list[dict | None] = [None] * len(items)
        for index, item in enumerate(items):
            rel = str(item["rel"])
            if not self.root.in_place(rel):
                raise ValueError(f"{rel!r} is not a library path ({IN_PLACE_PREFIX}<root>/<path>)")
            if not TYPE_NAME_RE.match(item["asset_type"]) or not DIGEST_RE.match(item["sha256"]):
                raise ValueError(f"bad asset type or SHA-256 for {rel!r}")
            digest = item["sha256"].lower()
            existing = self.records.row(digest[:16])
            if existing is not None:
                results[index] = self.records.public(existing)
                continue
            where = self.root.abs_str(rel)
            prov = {"source": item.get("source") or where, "provider": origin, "digest": digest,
                    "terms_acknowledged": False, "provider_metadata": {}, "in_place": True}
            record: dict[str, Any] = {
                "uid": digest[:16], "type": item["asset_type"], "path": rel, "hash": digest,
                "bytes": int(item["size"]), "tags": normalise_tags(item.get("tags")), "license": None,
                "origin": origin, "version": 1, "created_at": now, "updated_at": now,
                "meta": dict(item.get("metadata") or {}), "preview": self.previews.preview_for(digest[:16], rel),
                "provenance": prov, "license_terms": rights.asset_rights(None, None, base_model=None)}
            record["license_known"] = rights.licence_known(None, record["license_terms"])
            self.root.sidecar_path(rel).parent.mkdir(parents=True, exist_ok=True)
            plans.append(RegistrationPlan(record=record, op="adopt", source=Path(where), final=Path(where), tmp=None,
                                          merge=Merge({}, record["tags"], None), index=index))
        fired: list[HookCall] = []
        committed: list[RegistrationPlan] = []
        try:
            with self.db.transaction() as conn:
                for plan in plans:
                    outcome = self.commit_one(conn, plan, None)
                    if isinstance(outcome, BaseException):
                        raise outcome
                    if isinstance(outcome, list):
                        fired.extend(outcome)
                        committed.append(plan)
                    elif plan.clash is not None:  # registered a moment ago by another process
                        results[plan.index] = self.records.public(plan.clash)
        except BaseException:  # nothing of the batch is registered: leave none of its sidecars behind
            for plan in plans:
                if plan.sidecar_written:
                    self.root.sidecar_path(plan.record["path"]).unlink(missing_ok=True)
            raise
        self.listeners.run(fired)
        for plan in committed:
            self.previews.schedule(plan.record)
            results[plan.index] = self.records.public(plan.record)
        return results  # type: ignore[return-value]

    def plan(self, source_path: str | os.PathLike[str], asset_type: str, *,
             dest_relative: str | None = None, metadata: dict | None = None, copy: bool = True,
             provenance: dict | None = None, license_tag: str | None = None,
             tags: Iterable[str] | str | None = None, origin: str | None = None,
             digest: str | None = None, created_at: float | None = None,
             handoff: HandoffCheck | None = None) -> RegistrationPlan | dict:
        """Check one registration and read its bytes: the public record when nothing is to be
        placed (a duplicate), else the plan :meth:`commit` carries out.  ``handoff``: the
        :class:`comfyvn.sources.HandoffCheck` of a group of registrations (else made here).

        The source obeys :mod:`comfyvn.sources` (opened once, checked as opened, read from that
        descriptor).  ``copy=False`` registers a file of this project's assets root where it
        lies; the only files it moves are the workspace's own hand-offs (a staged ingest file,
        an upload's body), never a file a caller named elsewhere.
        """
        from .. import sources  # not at the top: comfyvn.ingest (which sources imports) imports the registry

        if not isinstance(asset_type, str) or not TYPE_NAME_RE.match(asset_type):
            raise ValueError(f"asset_type {asset_type!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("metadata must be a JSON object (dict)")
        if provenance is not None and not isinstance(provenance, dict):
            raise ValueError("provenance must be a JSON object (dict)")
        if license_tag is not None and not isinstance(license_tag, str):
            raise ValueError("license_tag must be a string or None")
        if digest is not None and not DIGEST_RE.match(str(digest)):
            raise ValueError(f"digest {digest!r} must be 64 hexadecimal digits (SHA-256)")
        meta, fields = split_metadata(metadata)  # tags/license/origin inside metadata are the fields
        tag_list = normalise_tags([*normalise_tags(tags), *fields.get("tags", [])])
        if license_tag is None and "license" in fields:
            license_tag = fields["license"]  # "" clears the licence of a duplicate; a new asset gets none
        origin = origin or fields.get("origin")
        merge = Merge(meta=meta, tags=tag_list, license_tag=license_tag)
        confined = isinstance(source_path, sources.SourcePath)  # named by a remote caller (check_source)
        source = Path(os.fspath(source_path))
        if not copy and not confined and (moved := self.handoff_source(source_path, handoff)) is not None:
            return self.plan_bytes(source, moved, None, op="move", asset_type=asset_type, dest_relative=dest_relative,
                                   merge=merge, digest=digest, provenance=provenance, origin=origin,
                                   created_at=created_at)
        limit = sources.source_limit(self.ws, self.root.path if copy else None)
        with sources.open_source(source_path, self.ws, confined=confined, assets_root=self.root.path,
                                 limit=limit) as opened:
            return self.plan_bytes(source, opened.path, opened, op="copy" if copy else "adopt", asset_type=asset_type,
                                   dest_relative=dest_relative, merge=merge, digest=digest, provenance=provenance,
                                   origin=origin, created_at=created_at)

    def handoff_source(self, source_path: str | os.PathLike[str], check: HandoffCheck | None = None) -> Path | None:
        """The resolved path of a hand-off file (see :func:`comfyvn.sources.is_handoff_file`), else
        None; ``check``: the :class:`comfyvn.sources.HandoffCheck` of a group."""
        from .. import sources  # see plan()

        real = (check or sources.HandoffCheck(self.ws)).real_path(source_path)
        return None if real is None else Path(real)

    def dest_relative(self, source: Path, source_real: Path, asset_type: str,
                      dest_relative: str | None) -> tuple[str, Path]:
        """``(rel, resolved destination)`` for a registration, validated against the assets root."""
        if dest_relative is None:
            rel = str(safe_relative(f"{asset_type}/{source.name}", what="dest_relative"))
        else:
            text = os.fspath(dest_relative).replace("\\", "/")
            pure = safe_relative(text, what="dest_relative")
            # a folder ("characters/" or no suffix) keeps the original file name, unless it names
            # the very file being registered in place
            as_folder = text.endswith("/") or (not pure.suffix and self.root.confine(str(pure), "dest_relative")
                                               != source_real)
            rel = str(pure / source.name) if as_folder else str(pure)
        if rel.endswith(SIDECAR_SUFFIX):
            raise UnsafePathError(f"dest_relative {rel!r} may not end with {SIDECAR_SUFFIX}")
        refuse_hidden(rel)
        return rel, self.root.confine(rel, "dest_relative")

    def in_place_relative(self, source: Path, source_real: Path, asset_type: str,
                          dest_relative: str | None) -> tuple[str, Path]:
        """``(rel, path)`` of a ``copy=False`` registration: the file's own place in the assets root."""
        from .. import sources  # see plan()

        rel = self.root.relative(str(source_real))
        if rel is None:
            raise sources.CopyRequiredError(
                f"copy=false registers a file where it lies, so it must already be inside this project's assets "
                f"root ({self.root.real}); {source} is not. Use copy=true to copy it in (the original is left alone)")
        if rel.endswith(SIDECAR_SUFFIX):
            raise UnsafePathError(f"{rel!r} is a sidecar, not an asset")
        if dest_relative is not None and self.dest_relative(source, source_real, asset_type,
                                                            dest_relative)[1] != source_real:
            raise sources.CopyRequiredError(
                f"copy=false registers {rel!r} where it lies (it is never moved), but dest_relative "
                f"{dest_relative!r} names another place: omit dest_relative, or use copy=true to copy it there")
        return rel, source_real

    def plan_bytes(self, source: Path, source_real: Path, opened: Any, *, op: str, asset_type: str,
                   dest_relative: str | None, merge: Merge, digest: str | None, provenance: dict | None,
                   origin: str | None, created_at: float | None) -> RegistrationPlan | dict:
        """Read (copy or hash) the bytes of a checked source and plan its placement.

        ``op``: ``copy`` (from ``opened``), ``adopt`` (``copy=False``: in place, hashed from
        ``opened``) or ``move`` (a hand-off file, by path)."""
        if op == "adopt":
            rel, final_real = self.in_place_relative(source, source_real, asset_type, dest_relative)
        else:
            rel, final_real = self.dest_relative(source, source_real, asset_type, dest_relative)
        final = self.root.abs(rel)
        in_place = source_real == final_real
        if in_place:
            op = "adopt"
        absent: str | None = None  # a uid just looked up and not registered
        if digest is not None:  # a known digest finds a duplicate before any byte is read or copied
            known = self.records.row(digest.lower()[:16])
            if known is not None and known["hash"] == digest.lower():
                return self.duplicate(known, known["hash"], merge)
            absent = digest.lower()[:16] if known is None else None
        tmp: Path | None = None
        keep_tmp = False
        try:
            if op == "copy":
                tmp, digest, size = self.copy_in(opened)
            elif digest is None:
                digest, size = opened.sha256() if opened is not None else sha256_file(source_real)
            else:
                size = opened.size if opened is not None else source_real.stat().st_size
            digest = digest.lower()
            uid = digest[:16]
            self.check_not_another_asset(source_real, digest)
            existing = None if uid == absent else self.records.row(uid)  # (a row racing in: commit() sees it)
            if existing is not None:
                return self.duplicate(existing, digest, merge)
            if op != "adopt" and os.path.lexists(final):
                if final.is_file() and not final.is_symlink() and sha256_file(final)[0] == digest:
                    op = "adopt"  # the identical file is already there: register it where it lies
                else:
                    raise AssetCollisionError(
                        f"a different file already exists at {rel!r}; choose another dest_relative")
            keep_tmp = True  # the plan owns it now
        finally:
            if tmp is not None and not keep_tmp:
                tmp.unlink(missing_ok=True)
        now = time.time()
        prov = dict(provenance or {})
        prov.setdefault("source", str(source_real))
        prov.setdefault("provider", origin or "local")
        prov.setdefault("digest", digest)
        prov.setdefault("terms_acknowledged", False)
        prov.setdefault("provider_metadata", {})
        meta, stated = stated_terms(merge.meta, prov)
        if stated is not None:
            prov["license_terms"] = stated  # what the source said: a cleared licence falls back to it
        license_tag = merge.license_tag
        record: dict[str, Any] = {
            "uid": uid, "type": asset_type, "path": rel, "hash": digest, "bytes": size, "tags": merge.tags,
            "license": license_tag or None, "origin": origin or prov.get("provider") or "local", "version": 1,
            "created_at": float(created_at) if created_at is not None else now, "updated_at": now,
            "meta": meta, "preview": self.previews.preview_for(uid, rel), "provenance": prov,
            "license_terms": rights.asset_rights(license_tag or None, stated, base_model=meta.get("base_model")),
        }
        record["license_known"] = rights.licence_known(record["license"], record["license_terms"])
        return RegistrationPlan(record=record, op=op, source=source_real, final=final, tmp=tmp, merge=merge)

    def check_not_another_asset(self, source_real: Path, digest: str) -> None:
        """Refuse a source that is the registered file of another asset whose bytes it no longer holds."""
        rel = self.root.relative(str(source_real))
        if rel is None:
            return
        row = self.db.query_one("SELECT uid, hash FROM assets WHERE project_id = ? AND path = ?", (self.project_id, rel))
        if row is not None and row["hash"] != digest:
            from .. import sources  # see plan()

            raise sources.SourceRefusedError(
                f"{rel!r} is the registered file of asset {row['uid']} but no longer holds its bytes; run the "
                "enforcer (comfyvn-enforcer) to inspect it instead of registering it again")

    def commit(self, plans: list[RegistrationPlan], results: list, on_commit: OnCommitMany | None) -> None:
        """1) journal every file operation, 2) put the files in place and fsync their folders
        once, 3) commit rows + events + sidecars (+ ``on_commit``) in one transaction.  A
        process killed anywhere leaves journal entries recovery finishes or undoes."""
        now, owner = time.time(), owner_token()
        with self.db.transaction() as conn:
            for plan in plans:
                plan.intent = self.journal.record(conn, plan.record["uid"], plan.op,
                                                  str(plan.source) if plan.op == "move" else None,
                                                  plan.record["path"], now, owner)
        folders: set[str] = set()
        undo: list[RegistrationPlan] = []  # plans whose placement is to be taken back (and journal entry dropped)
        live: list[RegistrationPlan] = []
        try:
            for plan in plans:
                if plan.op == "adopt":
                    live.append(plan)
                    continue
                src = plan.tmp if plan.tmp is not None else plan.source
                try:
                    plan.placed = self.place(src, plan.final, plan.record["hash"], from_source=plan.tmp is None,
                                             folders=folders)
                except Exception as exc:
                    results[plan.index] = exc
                    undo.append(plan)
                    continue
                if plan.placed:
                    plan.tmp = None  # moved into place
                else:
                    plan.op = "adopt"  # an identical file raced in at the destination
                live.append(plan)
            if self.fsync:
                for folder in folders:
                    fsync_dir(Path(folder))
            fired: list[HookCall] = []
            committed: list[RegistrationPlan] = []
            with self.db.transaction() as conn:
                if len(live) > 1 and self.commit_group(conn, live, on_commit, fired):
                    committed.extend(live)
                    live_left: list[RegistrationPlan] = []
                else:
                    live_left = live
                for plan in live_left:
                    outcome = self.commit_one(conn, plan, on_commit)
                    if isinstance(outcome, list):
                        fired.extend(outcome)
                        committed.append(plan)
                    else:
                        undo.append(plan)
                        if isinstance(outcome, BaseException):
                            results[plan.index] = outcome
        except BaseException as exc:  # the commit itself failed: nothing of this batch is registered
            for plan in live:
                if plan not in undo:
                    undo.append(plan)
                    results[plan.index] = exc if isinstance(exc, Exception) else None
                if plan.sidecar_written:  # written for a row that never committed
                    self.root.sidecar_path(plan.record["path"]).unlink(missing_ok=True)
            self.undo_all(undo)
            raise
        self.undo_all(undo)
        for plan in undo:
            if results[plan.index] is None and plan.clash is not None:  # another process registered these bytes
                try:
                    results[plan.index] = self.duplicate(plan.clash, plan.record["hash"], plan.merge)
                except Exception as exc:
                    results[plan.index] = exc
        self.listeners.run(fired)
        for plan in committed:
            log.debug("registered %s as %s (%s, %d bytes)", plan.record["path"], plan.record["uid"],
                      plan.op, plan.record["bytes"])
            self.previews.schedule(plan.record)
            results[plan.index] = self.records.public(plan.record)

    def commit_group(self, conn, plans: list[RegistrationPlan], on_commit: OnCommitMany | None,
                     fired: list[HookCall]) -> bool:
        """Insert every planned row under one savepoint: the common case, without a savepoint
        per item.  When an item fails (a clash, a failed sidecar), everything of the group is
        rolled back, its sidecars removed, and False returned: :meth:`commit_one` then goes item
        by item.  ``on_commit`` runs once every row is in (once, with every item); its failure
        fails the whole group commit."""
        conn.execute("SAVEPOINT register_group")
        calls: list[HookCall] = []
        try:
            self.records.insert_many(conn, [plan.record for plan in plans])
            for plan in plans:
                self.insert_one(conn, plan, None, row_inserted=True, emit=False)
            # the events of every row in one statement
            calls = self.listeners.emit_all(conn, [c for plan in plans for c in self.hook_calls(plan.record)])
        except Exception:
            conn.execute("ROLLBACK TO register_group")
            conn.execute("RELEASE register_group")
            for plan in plans:
                if plan.sidecar_written:  # written for a row that was rolled back
                    self.root.sidecar_path(plan.record["path"]).unlink(missing_ok=True)
                    plan.sidecar_written = False
            return False
        conn.execute("RELEASE register_group")
        if on_commit is not None:
            on_commit(conn, [(plan.index, self.records.public(plan.record)) for plan in plans])
        fired.extend(calls)
        return True

    def hook_calls(self, rec: dict) -> list[tuple[str, dict, dict | None]]:
        """The hook calls (with their extra event data) of a newly registered asset."""
        return [(HOOK_ASSET_REGISTERED, self.records.payload(rec, include_meta=True),
                 {"bytes": rec["bytes"], "license_terms": dict(rec["license_terms"])}),
                (HOOK_SIDECAR_WRITTEN, self.records.sidecar_payload(rec), None)]

    def insert_one(self, conn, plan: RegistrationPlan, on_commit: OnCommitMany | None, *,
                   row_inserted: bool = False, emit: bool = True) -> list[HookCall]:
        """One planned row with its events (``emit=False``: the caller emits them), journal
        entry, thumbnail rows, ``on_commit`` and sidecar, inside the caller's transaction
        (raises on any failure)."""
        rec = plan.record
        if not row_inserted:
            self.records.insert(conn, rec)
        self.journal.forget(conn, plan.intent)
        fired = self.listeners.emit_all(conn, self.hook_calls(rec)) if emit else []
        if rec["preview"].get("kind"):
            self.previews.mark(conn, rec, "pending")
        if on_commit is not None:
            on_commit(conn, [(plan.index, self.records.public(rec))])
        # written under the write lock: no other writer can slip an older sidecar in after
        self.sidecars.write(rec)
        plan.sidecar_written = True
        return fired

    def commit_one(self, conn, plan: RegistrationPlan, on_commit: OnCommitMany | None
                   ) -> list[HookCall] | BaseException | None:
        """Insert one planned row inside the group transaction (under a savepoint, so a clash
        or a failed sidecar undoes only this item).  Returns the hook calls to run, or the
        item's exception, or None when another process holds the same bytes (``plan.clash``)."""
        rec = plan.record
        conn.execute("SAVEPOINT register_one")
        try:
            try:
                self.records.insert(conn, rec)
            except IntegrityError:  # the uid or the path is taken (by another process)
                conn.execute("ROLLBACK TO register_one")  # first: PostgreSQL refuses reads in a failed transaction
                plan.clash = self.records.row(rec["uid"], conn)
                if plan.clash is not None:
                    conn.execute("RELEASE register_one")
                    return None
                self.records.check_path_free(conn, rec["path"])
                raise
            fired = self.insert_one(conn, plan, on_commit, row_inserted=True)
        except Exception as exc:
            conn.execute("ROLLBACK TO register_one")
            conn.execute("RELEASE register_one")
            return exc
        conn.execute("RELEASE register_one")
        return fired

    def undo_all(self, plans: list[RegistrationPlan]) -> None:
        """Take back the placements of items that did not commit and drop their journal entries."""
        for plan in plans:
            self.undo_place(plan.op if plan.placed else "adopt", plan.source, plan.final)
        self.journal.drop([p.intent for p in plans])

    def copy_in(self, source: Any) -> tuple[Path, str, int]:
        """Copy ``source`` (a path, or an opened :class:`comfyvn.sources.OpenedSource`) into the
        registry's incoming folder, hashing it in the same pass."""
        incoming = self.root.text + os.sep + INCOMING_DIR
        try:
            fd, name = open_temp(incoming, "copy")
        except FileNotFoundError:
            os.makedirs(incoming, exist_ok=True)
            fd, name = open_temp(incoming, "copy")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                digest, size = copy_and_hash(source, fh, fsync=self.fsync)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, digest, size

    def place(self, src: Path, final: Path, digest: str, *, from_source: bool, folders: set[str]) -> bool:
        """Move ``src`` to ``final`` without ever overwriting anything there.

        Returns False (and leaves ``src`` alone) when an identical file already sits at
        ``final``; raises :class:`AssetCollisionError` when a different one does.  The folder
        to fsync (once per group commit) is added to ``folders``.
        """
        try:
            try:
                os.link(src, final)
            except FileNotFoundError:
                if not src.exists():
                    raise
                final.parent.mkdir(parents=True, exist_ok=True)  # first file in a new folder
                os.link(src, final)
        except FileExistsError:
            if final.is_file() and sha256_file(final)[0] == digest:
                return False
            raise AssetCollisionError(f"a different file appeared at {final} while registering; "
                                      "nothing was overwritten") from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise
            if exc.errno == errno.EXDEV and from_source:  # moving across file systems: copy in first
                tmp, copied, _ = self.copy_in(src)
                try:
                    if copied != digest:
                        raise AssetRegistryError(f"{src} does not match the digest given for it") from None
                    placed = self.place(tmp, final, digest, from_source=False, folders=folders)
                finally:
                    tmp.unlink(missing_ok=True)
                if placed:
                    src.unlink()
                return placed
            # no hard links on this file system: reserve the name, then rename over the reservation
            try:
                os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                raise AssetCollisionError(f"a file already exists at {final}") from None
            os.replace(src, final)
        else:
            src.unlink()
        folders.add(str(final.parent))
        return True

    @staticmethod
    def undo_place(op: str, source: Path, final: Path) -> None:
        """Take back a file this call put at ``final`` (best effort; recover() finishes the rest)."""
        try:
            if op == "copy":
                final.unlink(missing_ok=True)
            elif op == "move":
                if source.exists():
                    final.unlink(missing_ok=True)
                elif final.exists():
                    shutil.move(str(final), str(source))
        except OSError:
            log.exception("could not undo placing %s; recover() will retry", final)

    def duplicate(self, row: dict, digest: str, merge: Merge) -> dict:
        """The public record of the asset that already holds these bytes, with ``merge`` applied."""
        if row["hash"] != digest:
            raise AssetRegistryError(f"uid collision: {row['uid']} already names a different file ({row['path']})")
        patch_tags = [t for t in merge.tags if t not in row["tags"]]
        changed = bool(patch_tags) or (merge.meta and deep_merge(row["meta"], merge.meta) != row["meta"]) or (
            merge.license_tag is not None and merge.license_tag != row["license"])
        if changed:
            return self.updates.update_meta(row["uid"], merge.meta, add_tags=patch_tags,
                                            license_tag=merge.license_tag if merge.license_tag is not None else UNSET)
        return self.records.public(row)
