"""Edits of registered assets: metadata, tags, licences and rights (one or many in one
transaction, with optimistic concurrency), and following a file moved by hand."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from .. import rights
from ..fsutil import safe_relative
from ..hashing import sha256_file
from ..store import Database
from .errors import AssetNotFoundError, AssetRegistryError
from .listeners import HOOK_ASSET_META_UPDATED, HOOK_SIDECAR_WRITTEN, Listeners
from .paths import IN_PLACE_PREFIX, AssetsRoot
from .records import UNSET, Records, check_terms, deep_merge, normalise_tags, split_metadata
from .sidecars import Sidecars, sidecar_uid


class Updates:
    """Changes to the rows of one project (each followed by its sidecar and hooks)."""

    def __init__(self, db: Database, project_id: str, root: AssetsRoot, records: Records, sidecars: Sidecars,
                 listeners: Listeners) -> None:
        self.db = db
        self.project_id = project_id
        self.root = root
        self.records = records
        self.sidecars = sidecars
        self.listeners = listeners

    def update_meta(self, uid: str, metadata: dict | None = None, *, replace: bool = False,
                          add_tags: Iterable[str] | str | None = None,
                          remove_tags: Iterable[str] | str | None = None,
                          license_tag: Any = UNSET, expected_version: int | None = None) -> dict:
        """Merge ``metadata`` into an asset (``replace=True`` swaps it); preview and thumbnails stay.

        ``tags``, ``license``, ``origin`` and ``version`` inside ``metadata`` are the asset's
        fields: ``tags`` sets the tag list (then ``add_tags``/``remove_tags`` apply), ``license``
        sets the licence (empty or null clears it; ``license_tag`` wins when both are given),
        ``origin`` sets the origin and ``version`` is the version the caller read (as
        ``expected_version``), so a record's ``meta`` can be edited and sent back as it is.

        ``expected_version`` makes the update conditional (optimistic concurrency): a row
        changed meanwhile by someone else raises instead of silently losing their edit.
        """
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("metadata must be a JSON object (dict)")
        return self.update_many([uid], metadata=metadata, replace=replace, add_tags=normalise_tags(add_tags),
                                 remove_tags=normalise_tags(remove_tags), license_tag=license_tag,
                                 expected_version=expected_version)[0]

    def bulk_update_tags(self, uids: Iterable[str], add_tags: Iterable[str] | str | None = None,
                         remove_tags: Iterable[str] | str | None = None, license_tag: Any = UNSET) -> list[dict]:
        """Add/remove tags and override (``"cc0"``) or clear (``None``) the licence of many assets in one transaction."""
        uids = list(dict.fromkeys(uids))
        return self.update_many(uids, metadata=None, replace=False, add_tags=normalise_tags(add_tags),
                                 remove_tags=normalise_tags(remove_tags), license_tag=license_tag)

    def update_many(self, uids: list[str], *, metadata: dict | None, replace: bool, add_tags: list[str],
                     remove_tags: list[str], license_tag: Any, expected_version: int | None = None) -> list[dict]:
        fields: dict[str, Any] = {}
        terms_given: dict | None = None
        if metadata is not None:
            metadata, fields = split_metadata(metadata)
            if "license_terms" in metadata:  # terms a person sets are a field, not free-form meta
                terms_given = check_terms(metadata.pop("license_terms"), default_source="user")
        if license_tag is UNSET and "license" in fields:
            license_tag = fields["license"]
        if "version" in fields:
            if expected_version is not None and expected_version != fields["version"]:
                raise ValueError(f"metadata version {fields['version']} disagrees with expected_version "
                                 f"{expected_version}")
            expected_version = fields["version"]
        if license_tag is not UNSET and license_tag is not None and not isinstance(license_tag, str):
            raise ValueError("license_tag must be a string, or None to clear it")
        if license_tag == "":
            license_tag = None
        updated: list[dict] = []
        fired: list[tuple[str, dict]] = []
        calls: list[tuple[str, dict, dict | None]] = []
        now = time.time()
        with self.db.transaction() as conn:
            records = []
            missing = []
            for uid in uids:
                rec = self.records.row(uid, conn)
                (missing.append(uid) if rec is None else records.append(rec))
            if missing:
                raise AssetNotFoundError(f"unknown asset uid(s) in project {self.project_id!r}: {', '.join(missing)}")
            for rec in records:
                if expected_version is not None and rec["version"] != expected_version:
                    raise AssetRegistryError(
                        f"asset {rec['uid']} changed meanwhile (version {rec['version']}, expected {expected_version})")
                new = dict(rec)
                if metadata is not None:
                    new["meta"] = dict(metadata) if replace else deep_merge(rec["meta"], metadata)
                base_tags = fields.get("tags", rec["tags"])
                new["tags"] = [t for t in base_tags if t not in remove_tags] + [
                    t for t in add_tags if t not in base_tags and t not in remove_tags]
                if license_tag is not UNSET:
                    new["license"] = license_tag
                new["origin"] = fields.get("origin", rec["origin"])
                given = None if terms_given == rec["license_terms"] else terms_given  # a meta round trip
                if license_tag is not UNSET or given is not None:
                    new["license_terms"] = self.rights_after_change(rec, new, given)
                    new["license_known"] = rights.licence_known(new["license"], new["license_terms"])
                if (new["meta"], new["tags"], new["license"], new["origin"], new["license_terms"]) == (
                        rec["meta"], rec["tags"], rec["license"], rec["origin"], rec["license_terms"]):
                    updated.append(rec)
                    continue
                new["version"] = rec["version"] + 1
                new["updated_at"] = now
                # the tag rows first: the copies trigger (registry.007_tag_copies) then has none to follow
                conn.execute("DELETE FROM asset_tags WHERE project_id = ? AND uid = ?", (self.project_id, rec["uid"]))
                conn.execute(
                    "UPDATE assets SET meta = ?, tags = ?, license = ?, origin = ?, version = ?, updated_at = ?,"
                    " search_text = ?, sidecar_pending = 1, license_terms = ?, commercial_rank = ?,"
                    " credit_required = ?, derivatives_allowed = ?, license_known = ?"
                    " WHERE project_id = ? AND uid = ?",
                    (json.dumps(new["meta"], ensure_ascii=False), json.dumps(new["tags"]), new["license"],
                     new["origin"], new["version"], now, self.records.search_text(new), *self.records.rights_columns(new),
                     self.project_id, rec["uid"]))
                self.records.write_tags(conn, [new])
                calls.append((HOOK_ASSET_META_UPDATED, self.records.payload(new, include_meta=True),
                              {"tags": new["tags"], "license": new["license"],
                               "license_terms": dict(new["license_terms"])}))
                calls.append((HOOK_SIDECAR_WRITTEN, self.records.sidecar_payload(new), None))
                updated.append(new)
            if calls:
                fired = self.listeners.emit_all(conn, calls)
        self.sidecars.sync([r["uid"] for r in updated if r["updated_at"] == now])
        self.listeners.run(fired)
        return [self.records.public(r) for r in updated]

    @staticmethod
    def rights_after_change(rec: dict, new: dict, terms_given: dict | None) -> dict:
        """An asset's rights after its licence or terms changed: terms a person gives win (over the
        current ones, term by term); a new
        licence decides by itself; a cleared one falls back to what the source stated.  The base
        model's licence stays."""
        keep = {"base_model_license": rec["license_terms"].get("base_model_license")}
        if terms_given is not None:
            stated: dict = {**rec["license_terms"], **{k: v for k, v in terms_given.items() if v is not None}}
        elif new["license"] is None:
            stated = {**keep, **(rec["provenance"].get("license_terms") or {})}
        else:
            stated = keep
        return rights.asset_rights(new["license"], stated, base_model=new["meta"].get("base_model"))

    def relocate(self, uid: str, new_relative: str) -> dict:
        """Point an asset at the place its file was moved to by hand (the enforcer's fix).

        The file must already be at ``new_relative`` (inside the assets root) with the
        registered bytes; the sidecar is written there and the old one removed.
        """
        rel = str(safe_relative(new_relative, what="new_relative"))
        final = self.root.confine(rel, "new_relative")
        rec = self.records.require(uid)
        if not final.is_file() or sha256_file(final)[0] != rec["hash"]:
            raise AssetRegistryError(f"{rel!r} does not hold the bytes of asset {uid}; nothing changed")
        old_rel = rec["path"]
        if old_rel == rel:
            return self.records.public(rec)
        fired: list[tuple[str, dict]] = []
        with self.db.transaction() as conn:
            rec = self.records.require(uid, conn)
            self.records.check_path_free(conn, rel)
            new = {**rec, "path": rel, "version": rec["version"] + 1, "updated_at": time.time()}
            conn.execute("UPDATE assets SET path = ?, version = ?, updated_at = ?, search_text = ?, sidecar_pending = 1"
                         " WHERE project_id = ? AND uid = ?",
                         (rel, new["version"], new["updated_at"], self.records.search_text(new), self.project_id, uid))
            fired = self.listeners.emit_all(conn, [
                (HOOK_ASSET_META_UPDATED, self.records.payload(new, include_meta=True),
                 {"tags": new["tags"], "license": new["license"], "moved_from": old_rel}),
                (HOOK_SIDECAR_WRITTEN, self.records.sidecar_payload(new), None)])
        self.sidecars.sync([uid])
        old_sidecar = self.root.sidecar_path(old_rel)
        if sidecar_uid(old_sidecar) == uid and not self.root.abs(old_rel).exists():
            old_sidecar.unlink(missing_ok=True)
        self.listeners.run(fired)
        return self.records.public(new)

    def relink_in_place(self, uid: str, new_rel: str) -> dict:
        """Point an asset at the library file its bytes now lie in (a file moved outside the
        workbench); fires ``asset_meta_updated`` with ``moved_from``.  Nothing is moved."""
        if not self.root.in_place(new_rel):
            raise ValueError(f"{new_rel!r} is not a library path ({IN_PLACE_PREFIX}<root>/<path>)")
        with self.db.transaction() as conn:
            rec = self.records.require(uid, conn)
            old_rel = rec["path"]
            if old_rel == new_rel:
                return self.records.public(rec)
            self.records.check_path_free(conn, new_rel)
            new = {**rec, "path": new_rel, "version": rec["version"] + 1, "updated_at": time.time()}
            conn.execute("UPDATE assets SET path = ?, version = ?, updated_at = ?, search_text = ?, sidecar_pending = 1"
                         " WHERE project_id = ? AND uid = ?",
                         (new_rel, new["version"], new["updated_at"], self.records.search_text(new), self.project_id,
                          uid))
            fired = self.listeners.emit_all(conn, [
                (HOOK_ASSET_META_UPDATED, self.records.payload(new, include_meta=True),
                 {"tags": new["tags"], "license": new["license"], "moved_from": self.root.abs_str(old_rel)}),
                (HOOK_SIDECAR_WRITTEN, self.records.sidecar_payload(new), None)])
        self.root.sidecar_path(new_rel).parent.mkdir(parents=True, exist_ok=True)
        self.sidecars.sync([uid])
        old_sidecar = self.root.sidecar_path(old_rel)
        if sidecar_uid(old_sidecar) == uid and not self.root.abs(old_rel).exists():
            old_sidecar.unlink(missing_ok=True)
        self.listeners.run(fired)
        return self.records.public(new)
