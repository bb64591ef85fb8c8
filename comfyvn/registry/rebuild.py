"""The sidecar enforcer: compare the registry database with the files under the assets root.

:func:`audit_sidecars` finds what disagrees (and fixes what it safely can, through the
registry API so the usual hooks fire); :func:`rebuild_from_disk` registers files that lie
under the assets root without a database row, using their sidecars when they are valid.
``tools/assets_enforcer.py``, ``python -m comfyvn.registry.rebuild`` and the
``comfyvn-enforcer`` console script all run :func:`main`.

The database is the source of truth for registered assets: a sidecar that disagrees with
it is rewritten from the row (with ``overwrite``), never the other way round.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import ConfigError, NotAWorkspaceError, existing_workspace, get_setting, workspace
from ..fsutil import owner_alive, read_json_object, temp_owner
from ..hashing import sha256_file
from ..kinds import MODEL_SUFFIXES as MODEL_SUFFIXES  # re-exported: still importable from here
from ..kinds import guess_type as kind_type
from ..kinds import is_type_name, normalise_tags
from ..studio.core.asset_registry import (
    INCOMING_DIR,
    SIDECAR_SUFFIX,
    AssetRegistry,
    AssetRegistryError,
)

log = logging.getLogger("comfyvn.registry.rebuild")

FINDING_KINDS = (
    "interrupted_operation",  # a process died half-way through a change (recover() finishes/undoes it)
    "stale_temp_file",        # a temporary file left by a dead writer
    "missing_file",           # a row whose file is gone (or was moved by hand)
    "file_changed",           # the file's bytes differ from what was registered
    "missing_sidecar",
    "invalid_sidecar",        # not valid JSON / not an object
    "sidecar_mismatch",       # valid JSON that disagrees with the database
    "orphan_sidecar",         # a sidecar without a row
    "unregistered_file",      # a file under the assets root without a row (or sidecar)
    "duplicate_file",         # an unregistered file holding the bytes of a registered asset
    "missing_thumbnail",
    "missing_tags",
    "missing_license",
)
LICENSE_FILE_NAMES = {"license", "license.txt", "license.md", "licence", "licence.txt", "licence.md", "copying"}

# cc0, cc-by-4.0, cc_by_sa_4_0, CC-BY-NC-ND-3.0 ... as a separate token of a file name
_CC_TOKEN = re.compile(r"(?<![a-z0-9])(?:(?P<cc0>cc0)|cc[-_ ]?by(?P<mods>(?:[-_ ](?:nc|sa|nd)){0,2})"
                       r"(?:[-_ ]?(?P<major>\d)(?:[._](?P<minor>\d))?)?)(?![a-z0-9])")
_SPDX_LINE = re.compile(r"SPDX-License-Identifier:\s*([A-Za-z0-9.+\-]+)", re.I)
_BARE_SPDX = re.compile(r"^(CC0-1\.0|CC-BY(?:-NC)?(?:-SA|-ND)?-\d\.\d|MIT|Apache-2\.0|[A-Z][A-Za-z0-9.+\-]*-\d(?:\.\d)*)$")
_TITLES = [  # well-known licence texts without an SPDX line: (pattern, tag)
    (re.compile(r"\bCC0 1\.0 Universal\b", re.I), "cc0"),
    (re.compile(r"Attribution-NonCommercial-ShareAlike (\d\.\d)", re.I), "cc-by-nc-sa-{}"),
    (re.compile(r"Attribution-NonCommercial-NoDerivatives? (\d\.\d)", re.I), "cc-by-nc-nd-{}"),
    (re.compile(r"Attribution-NonCommercial (\d\.\d)", re.I), "cc-by-nc-{}"),
    (re.compile(r"Attribution-ShareAlike (\d\.\d)", re.I), "cc-by-sa-{}"),
    (re.compile(r"Attribution-NoDerivatives? (\d\.\d)", re.I), "cc-by-nd-{}"),
    (re.compile(r"Creative Commons Attribution (\d\.\d)", re.I), "cc-by-{}"),
    (re.compile(r"^\s*MIT License\b", re.I | re.M), "mit"),
    (re.compile(r"Apache License,?\s+Version 2\.0", re.I), "apache-2.0"),
]
_NOISE = re.compile(r"^(v\d+|\d+|final|copy|new|old|tmp|temp|draft|wip|[0-9a-f]{8,})$")


# ------------------------------------------------------------------------------ metadata fill
def spdx_to_tag(identifier: str) -> str:
    """``CC-BY-4.0`` -> ``cc-by-4.0``; ``CC0-1.0`` -> ``cc0`` (the registry's licence tags)."""
    tag = identifier.strip().lower()
    return "cc0" if tag.startswith("cc0") else tag


def _license_token(text: str) -> str | None:
    """The Creative Commons licence named by a token in ``text`` (``cc_by_sa_4_0`` -> ``cc-by-sa-4.0``)."""
    m = _CC_TOKEN.search(text.lower())
    if not m:
        return None
    if m.group("cc0"):
        return "cc0"
    tag = "cc-by" + "".join("-" + mod for mod in re.findall(r"nc|sa|nd", m.group("mods") or ""))
    if m.group("major"):
        tag += f"-{m.group('major')}.{m.group('minor') or '0'}"
    return tag


def license_from_file(path: Path) -> str | None:
    """The licence a LICENSE file declares (SPDX line, bare SPDX id or a well-known title)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:20_000]
    except OSError:
        return None
    m = _SPDX_LINE.search(text)
    if m:
        return spdx_to_tag(m.group(1))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if _BARE_SPDX.match(first):
        return spdx_to_tag(first)
    for pattern, tag in _TITLES:
        hit = pattern.search(text)
        if hit:
            return tag.format(*hit.groups())
    return None


def derive_license(assets_root: Path, rel: str) -> tuple[str | None, str]:
    """``(licence, where it came from)`` for an asset: a token in its file name wins, else the
    nearest LICENSE file in its folder or a parent folder up to the assets root."""
    pure = PurePosixPath(rel)
    token = _license_token(pure.name)
    if token:
        return token, f"file name token in {pure.name!r}"
    root = Path(assets_root)
    folder = pure.parent
    unrecognised: list[str] = []
    while True:
        here = root / folder
        try:
            names = {p.name.lower(): p for p in here.iterdir() if p.is_file()}
        except OSError:
            names = {}
        for name in sorted(LICENSE_FILE_NAMES):
            if name in names:
                found = license_from_file(names[name])
                if found:
                    return found, f"licence file {(PurePosixPath(folder) / names[name].name).as_posix()}"
                unrecognised.append((PurePosixPath(folder) / names[name].name).as_posix())
        if folder == PurePosixPath(".") or str(folder) in ("", "."):
            break
        folder = folder.parent
    if unrecognised:
        return None, (f"licence file {unrecognised[0]} not recognised (add a line "
                      "'SPDX-License-Identifier: CC-BY-4.0' or similar)")
    return None, "no licence token in the file name and no LICENSE file in its folder or above"


def derive_tags(rel: str, asset_type: str | None = None) -> list[str]:
    """Tags from the folders (below the type folder) and the words of the file name."""
    pure = PurePosixPath(rel)
    folders = list(pure.parent.parts)
    if folders and asset_type and folders[0].lower() == asset_type.lower():
        folders = folders[1:]
    tags = [re.sub(r"[\s_]+", "-", f.strip().lower()) for f in folders]
    stem = pure.name[: -len("".join(pure.suffixes))] if pure.suffixes else pure.name
    stem = _CC_TOKEN.sub(" ", stem.lower())
    for word in re.split(r"[\s_\-.,()\[\]+]+", stem):
        if len(word) >= 2 and not _NOISE.match(word) and word != (asset_type or "").lower():
            tags.append(word)
    return normalise_tags(t for t in tags if t)


def guess_type(rel: str, sidecar: dict | None = None) -> str:
    """Asset type for a file found on disk: its sidecar's, else its top folder, else by kind
    (:func:`comfyvn.kinds.guess_type`, the rule ingest and uploads use)."""
    if sidecar and is_type_name(sidecar.get("type")):
        return sidecar["type"]
    parts = PurePosixPath(rel).parts
    if len(parts) > 1:
        folder = re.sub(r"[\s]+", "-", parts[0].lower())
        if is_type_name(folder):
            return folder
    return kind_type(rel)


# ------------------------------------------------------------------------------ scanning
@dataclass
class _Scan:
    files: dict[str, Path] = field(default_factory=dict)     # rel -> asset candidate
    sidecars: dict[str, Path] = field(default_factory=dict)  # rel of the asset -> sidecar file
    stale_temps: list[Path] = field(default_factory=list)


def _scan(reg: AssetRegistry) -> _Scan:
    scan = _Scan()
    root = reg.assets_root
    for folder, dirs, names in os.walk(root):
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
    return scan


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _open(registry_or_project: AssetRegistry | str | None, workspace_root: str | os.PathLike | None,
          *, recover: bool, **roots: Any) -> AssetRegistry:
    roots = {k: v for k, v in roots.items() if v is not None}
    if isinstance(registry_or_project, AssetRegistry):
        if roots:
            raise ValueError(f"give either a registry or {', '.join(roots)}, not both")
        return registry_or_project
    ws = workspace(workspace_root)
    project = registry_or_project or get_setting("registry.default_project", "default", ws)
    return AssetRegistry(project, ws=ws, recover=recover, **roots)


class RebuildSummary(dict):
    """:func:`rebuild_from_disk`'s report; also the original's ``.processed`` (files registered
    or followed to where they were moved) and ``.removed`` (stale rows removed) counts."""

    @property
    def processed(self) -> int:
        return sum(1 for key in ("registered", "relocated") for item in self[key] if item.get("done"))

    @property
    def removed(self) -> int:
        return len(self.get("removed_stale", []))

    def as_dict(self) -> dict:
        return {**self, "processed": self.processed, "removed": self.removed}


class _Report:
    def __init__(self, reg: AssetRegistry, *, fix: bool) -> None:
        self.reg, self.fix = reg, fix
        self.findings: list[dict] = []
        self.unfilled: list[dict] = []
        self.rewritten = 0

    def add(self, kind: str, uid: str | None, path: str | None, detail: str, fixed: bool = False) -> dict:
        finding = {"kind": kind, "uid": uid, "path": path, "detail": detail, "fixed": bool(fixed)}
        self.findings.append(finding)
        return finding

    def result(self) -> dict:
        counts = Counter(f["kind"] for f in self.findings)
        remaining = sum(1 for f in self.findings if not f["fixed"])
        return {
            "ok": remaining == 0,
            "project": self.reg.project_id,
            "counts": {k: counts[k] for k in FINDING_KINDS if counts[k]},
            "findings": self.findings,
            "unfilled": self.unfilled,
            "dry_run": not self.fix,
            "assets_root": str(self.reg.assets_root),
            "summary": {"assets": self.reg.count(), "findings": len(self.findings),
                        "fixed": len(self.findings) - remaining, "remaining": remaining,
                        "sidecars_rewritten": self.rewritten},
        }


# ------------------------------------------------------------------------------ rebuild
def _plan_disk(reg: AssetRegistry, scan: _Scan, rows_by_path: dict[str, dict]) -> list[dict]:
    """What to do with files and sidecars that have no row: register, relocate, report."""
    rows_missing_file = {r["hash"]: r for r in rows_by_path.values() if not Path(r["abs_path"]).exists()}
    # files another process is registering or removing right now (journalled, row not yet committed)
    in_flight = {r[0] for r in reg.db.query("SELECT dest FROM file_intents WHERE project_id = ?", (reg.project_id,))}
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


def _register_plan(reg: AssetRegistry, plan: dict, *, fill_metadata: bool) -> dict:
    """Register one file where it lies, taking what its sidecar says when the sidecar is valid."""
    rel, sidecar = plan["rel"], plan["sidecar"] or {}
    asset_type = guess_type(rel, sidecar)
    meta = sidecar.get("meta") if isinstance(sidecar.get("meta"), dict) else {}
    tags = sidecar.get("tags") if isinstance(sidecar.get("tags"), list) else []
    tags = [t for t in tags if isinstance(t, str)]
    license_tag = sidecar.get("license") if isinstance(sidecar.get("license"), str) else None
    provenance = dict(sidecar["provenance"]) if isinstance(sidecar.get("provenance"), dict) else None
    if provenance and provenance.get("digest") != plan["digest"]:
        provenance.pop("digest", None)  # the sidecar described other bytes
    if fill_metadata:
        tags = tags or derive_tags(rel, asset_type)
        license_tag = license_tag or derive_license(reg.assets_root, rel)[0]
    origin = sidecar.get("origin") if isinstance(sidecar.get("origin"), str) else None
    return reg.register_file(plan["path"], asset_type, dest_relative=rel, copy=False, metadata=meta, tags=tags,
                             license_tag=license_tag, provenance=provenance, origin=origin, digest=plan["digest"],
                             created_at=_parse_time(sidecar.get("created_at")))


def _trash_orphan(reg: AssetRegistry, rel: str, sidecar_path: Path) -> Path:
    dest = reg.ws.trash_dir / reg.project_id / "orphan-sidecars" / time.strftime("%Y%m%dT%H%M%S") / (
        rel + SIDECAR_SUFFIX)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(sidecar_path), str(dest))
    return dest


def _apply_disk_plans(reg: AssetRegistry, plans: list[dict], report: _Report, *, fix: bool,
                      fill_metadata: bool) -> dict:
    done: dict[str, list] = {"registered": [], "relocated": [], "duplicates": [], "orphans": [], "errors": []}
    for plan in plans:
        rel, action = plan["rel"], plan["action"]
        if action == "relocate":
            detail = f"file moved by hand from {plan['from']!r} to {rel!r}"
            fixed = False
            if fix:
                try:
                    reg.relocate_asset(plan["uid"], rel)
                    fixed, detail = True, detail + "; the registry now points at the new place"
                except (AssetRegistryError, OSError, ValueError) as exc:
                    detail += f"; could not relocate: {exc}"
            else:
                detail += "; a fix points the registry at the new place"
            report.add("missing_file", plan["uid"], plan["from"], detail, fixed)
            done["relocated"].append({"uid": plan["uid"], "from": plan["from"], "to": rel, "done": fixed})
        elif action == "duplicate":
            report.add("duplicate_file", plan["uid"], rel,
                       f"unregistered copy of asset {plan['uid']} ({plan['existing']}); delete it or keep it "
                       "outside the assets root")
            done["duplicates"].append({"path": rel, "uid": plan["uid"], "existing_path": plan["existing"]})
        elif action == "error":
            report.add("unregistered_file", None, rel, plan["detail"])
            done["errors"].append({"path": rel, "error": plan["detail"]})
        elif action == "orphan":
            detail = "sidecar without a registered asset and without its file"
            fixed = False
            if fix:
                moved_to = _trash_orphan(reg, rel, plan["sidecar_path"])
                fixed, detail = True, detail + f"; moved to {moved_to}"
            else:
                detail += "; a fix moves it to the trash folder"
            report.add("orphan_sidecar", None, rel + SIDECAR_SUFFIX, detail, fixed)
            done["orphans"].append({"path": rel + SIDECAR_SUFFIX, "done": fixed})
        else:  # register
            has_sidecar = plan["sidecar_path"] is not None
            kind = "orphan_sidecar" if has_sidecar else "unregistered_file"
            if plan["sidecar_error"]:
                detail = f"file without a row; its sidecar is {plan['sidecar_error']} (registered from the file alone)"
            elif has_sidecar:
                uid = plan["sidecar"].get("uid")
                detail = f"sidecar (uid {uid}) without a row; its file is there"
                if plan["sidecar"].get("hash") not in (None, plan["digest"]):
                    detail += " but holds other bytes than the sidecar describes"
            else:
                detail = "file under the assets root without a row"
            fixed, uid = False, plan["digest"][:16]
            if fix:
                try:
                    rec = _register_plan(reg, plan, fill_metadata=fill_metadata)
                    fixed, uid = True, rec["uid"]
                    detail += f"; registered as {rec['type']} {rec['uid']}"
                except (AssetRegistryError, OSError, ValueError) as exc:
                    detail += f"; could not register: {exc}"
            else:
                detail += f"; a fix registers it as {guess_type(rel, plan['sidecar'])!r}"
            report.add(kind, uid, rel, detail, fixed)
            done["registered"].append({"uid": uid, "path": rel, "from_sidecar": plan["sidecar"] is not None,
                                       "done": fixed})
    return done


def rebuild_from_disk(registry_or_project: AssetRegistry | str | None = None, *, dry_run: bool = False,
                      fill_metadata: bool = False, workspace_root: str | os.PathLike | None = None,
                      project_id: str | None = None, assets_root: str | os.PathLike | None = None,
                      db_path: str | os.PathLike | None = None, thumbs_root: str | os.PathLike | None = None,
                      remove_stale: bool = False, wait_for_thumbs: bool = False) -> RebuildSummary:
    """Register the files under the assets root that have no row, where they lie.

    A valid sidecar beside a file supplies its type, tags, licence, metadata, provenance,
    origin and creation time (the uid always comes from the file's bytes).  A file holding
    the bytes of an asset whose file is missing was moved by hand: the row is pointed at the
    new place.  A second copy of a registered asset is reported, not registered.  Sidecars
    with neither a row nor a file go to the trash folder.  ``dry_run`` only reports.

    The original's keywords: ``project_id`` (as the first argument), ``assets_root``,
    ``db_path``, ``thumbs_root`` (roots of the registry opened), ``remove_stale`` (remove the
    rows whose file is still missing; their sidecars go to the trash) and ``wait_for_thumbs``.
    """
    if project_id is not None:
        if registry_or_project is not None:
            raise ValueError("give the project either as the first argument or as project_id, not both")
        registry_or_project = project_id
    reg = _open(registry_or_project, workspace_root, recover=not dry_run, assets_root=assets_root,
                db_path=db_path, thumbnails_root=thumbs_root)
    report = _Report(reg, fix=not dry_run)
    rows_by_path = {r["path"]: r for r in reg.iter_assets()}
    plans = _plan_disk(reg, _scan(reg), rows_by_path)
    done = _apply_disk_plans(reg, plans, report, fix=not dry_run, fill_metadata=fill_metadata)
    stale: list[dict] = []
    if remove_stale and not dry_run:
        for row in list(reg.iter_assets()):
            if not Path(row["abs_path"]).exists() and reg.remove_asset(row["uid"]):  # False: another process was first
                stale.append({"uid": row["uid"], "path": row["path"]})
    if wait_for_thumbs and not dry_run:
        reg.wait_for_thumbnails(300)
    return RebuildSummary({"project": reg.project_id, "dry_run": dry_run, **done, "removed_stale": stale})


# ------------------------------------------------------------------------------ audit
def _diff_fields(actual: dict, expected: dict) -> list[str]:
    keys = sorted(set(actual) | set(expected))
    return [k for k in keys if actual.get(k, object()) != expected.get(k, object())]


def audit_sidecars(registry_or_project: AssetRegistry | str | None = None, *, fix: bool = False,
                   fill_metadata: bool = False, overwrite: bool = False, verify_hashes: bool = True,
                   workspace_root: str | os.PathLike | None = None) -> dict:
    """Audit (and with ``fix=True`` repair) one project's sidecars, files and metadata.

    Returns ``{"ok", "project", "counts": {kind: n}, "findings": [{"kind", "uid", "path",
    "detail", "fixed"}], "unfilled": [{"uid", "path", "field", "reason"}], ...}``; ``ok`` is
    true when no finding remains unfixed.  Without ``fix`` nothing on disk changes.

    * ``fix``: finish interrupted operations, delete dead writers' temp files, register
      unregistered files (:func:`rebuild_from_disk`), write missing sidecars, remake missing
      thumbnails.
    * ``overwrite`` (with ``fix``): also rewrite existing sidecars from the database -- every
      one of them, including invalid or disagreeing ones.
    * ``fill_metadata``: derive missing tags (folders and file name words) and licences
      (a licence token in the file name, or a LICENSE file in the folder or above); what
      cannot be derived is listed under ``unfilled``.
    * ``verify_hashes=False`` compares file sizes only (fast, misses same-size edits).
    """
    reg = _open(registry_or_project, workspace_root, recover=False)
    report = _Report(reg, fix=fix)

    for intent in reg.pending_recovery():
        report.add("interrupted_operation", intent["uid"], intent["dest"],
                   f"{intent['op']} by a process that is no longer running", False)
    if fix:  # also finishes sidecar writes a killed process left pending
        reg.recover()
        for finding in report.findings:
            finding["fixed"] = True
            finding["detail"] += "; finished or undone by recover()"

    scan = _scan(reg)
    for path in scan.stale_temps:
        rel = path.relative_to(reg.assets_root).as_posix()
        fixed = False
        if fix:
            path.unlink(missing_ok=True)
            fixed = True
        report.add("stale_temp_file", None, rel, "temporary file of a process that is no longer running"
                   + ("; deleted" if fixed else ""), fixed)

    rows_by_path = {r["path"]: r for r in reg.iter_assets()}
    plans = _plan_disk(reg, scan, rows_by_path)
    relocating = {p["uid"] for p in plans if p["action"] == "relocate"}
    done = _apply_disk_plans(reg, plans, report, fix=fix, fill_metadata=fill_metadata)
    if fix:  # rows may have been added or moved; let new thumbnails finish before checking them
        rows_by_path = {r["path"]: r for r in reg.iter_assets()}
        if any(item["done"] for item in done["registered"]):
            reg.wait_for_thumbnails(300)

    thumbs_requested: list[tuple[dict, dict]] = []
    for rel, row in rows_by_path.items():
        uid, file_path = row["uid"], Path(row["abs_path"])
        if not file_path.exists():
            if uid not in relocating:
                report.add("missing_file", uid, rel, f"{file_path} is gone; restore it, or remove the asset "
                           "(AssetRegistry.remove_asset) if it was deleted on purpose")
            continue
        size = file_path.stat().st_size
        if size != row["bytes"]:
            report.add("file_changed", uid, rel, f"size {size} bytes, registered {row['bytes']}; the bytes of a "
                       "registered asset must not change: restore them, or register the new file as a new asset")
        elif verify_hashes and sha256_file(file_path)[0] != row["hash"]:
            report.add("file_changed", uid, rel, f"SHA-256 differs from the registered {row['hash'][:16]}...; "
                       "restore the original bytes, or register the new file as a new asset")

        sidecar_ok = _audit_sidecar(reg, row, report, fix=fix, overwrite=overwrite)
        _audit_thumbnails(reg, row, report, fix=fix, requested=thumbs_requested)
        _audit_metadata(reg, row, report, fix=fix, fill_metadata=fill_metadata, sidecar_ok=sidecar_ok)

    if thumbs_requested:
        reg.wait_for_thumbnails(300)
        for row, finding in thumbs_requested:
            status = reg.thumbnail_status(row["uid"])
            bad = {s: v for s, v in status.items() if v["status"] != "ready" or not Path(v["path"]).is_file()}
            if bad:
                finding["detail"] += "; regenerating failed: " + "; ".join(
                    f"{s}: {v['error'] or v['status']}" for s, v in sorted(bad.items()))
            else:
                finding["fixed"] = True
                finding["detail"] += "; regenerated"
    result = report.result()
    log.log(logging.INFO if fix else logging.DEBUG, "enforcer %s project %s: %s", "fix" if fix else "dry run",
            reg.project_id, result["summary"])
    return result


def _audit_sidecar(reg: AssetRegistry, row: dict, report: _Report, *, fix: bool, overwrite: bool) -> bool:
    """Check one sidecar; returns True when, after any fix, it agrees with the database."""
    uid, rel = row["uid"], row["path"]
    path = reg.sidecar_path_for(rel)
    expected = reg.sidecar_document(row)
    if not path.exists():
        finding = report.add("missing_sidecar", uid, rel, f"{path.name} is missing")
        if fix:
            reg.rewrite_sidecar(uid, reason="enforcer: missing sidecar")
            report.rewritten += 1
            finding["fixed"], finding["detail"] = True, finding["detail"] + "; rewritten from the database"
        return finding["fixed"]
    data, error = read_json_object(path)
    if error:
        finding = report.add("invalid_sidecar", uid, rel, f"{path.name} is {error}")
    elif data != expected:
        fields = _diff_fields(data, expected)
        finding = report.add("sidecar_mismatch", uid, rel, f"{path.name} disagrees with the database on: "
                             + ", ".join(fields))
    else:
        if fix and overwrite:
            reg.rewrite_sidecar(uid, reason="enforcer: overwrite")
            report.rewritten += 1
        return True
    if fix and overwrite:
        reg.rewrite_sidecar(uid, reason=f"enforcer: {finding['kind']}")
        report.rewritten += 1
        finding["fixed"], finding["detail"] = True, finding["detail"] + "; rewritten from the database"
    else:
        finding["detail"] += "; rerun with --overwrite to rewrite it from the database"
    return finding["fixed"]


def _audit_thumbnails(reg: AssetRegistry, row: dict, report: _Report, *, fix: bool,
                      requested: list[tuple[dict, dict]]) -> None:
    preview = row.get("preview") or {}
    if not preview.get("kind"):
        return
    expected = list(preview.get("thumbnails", {})) or ["waveform"]
    status = reg.thumbnail_status(row["uid"])
    problems = []
    for size in expected:
        entry = status.get(size)
        if entry is None:
            problems.append(f"{size}: never made")
        elif entry["status"] != "ready":
            problems.append(f"{size}: {entry['status']}" + (f" ({entry['error']})" if entry["error"] else ""))
        elif not Path(entry["path"]).is_file():
            problems.append(f"{size}: file missing")
    if not problems:
        return
    finding = report.add("missing_thumbnail", row["uid"], row["path"], "; ".join(problems))
    if fix:
        reg.regenerate_thumbnails(row["uid"])
        requested.append((row, finding))


def _audit_metadata(reg: AssetRegistry, row: dict, report: _Report, *, fix: bool, fill_metadata: bool,
                    sidecar_ok: bool) -> None:
    uid, rel = row["uid"], row["path"]
    missing = []
    if not row["tags"]:
        missing.append(("tags", report.add("missing_tags", uid, rel, "no tags")))
    if not row["license"]:
        missing.append(("license", report.add("missing_license", uid, rel, "no licence")))
    if not missing:
        return
    if not fill_metadata:
        for _, finding in missing:
            finding["detail"] += "; --fill-metadata derives one from folders and file names where it can"
        return
    add_tags: list[str] = []
    license_tag: str | None = None
    for field_name, finding in missing:
        if field_name == "tags":
            add_tags = derive_tags(rel, row["type"])
            source = "folders and file name"
            value: Any = add_tags
        else:
            license_tag, source = derive_license(reg.assets_root, rel)
            value = license_tag
        if not value:
            reason = "no usable words in the folders or file name" if field_name == "tags" else source
            report.unfilled.append({"uid": uid, "path": rel, "field": field_name, "reason": reason})
            finding["detail"] += f"; could not fill: {reason}"
        elif not sidecar_ok and fix:
            reason = "its sidecar disagrees with the database; rerun with --overwrite first"
            report.unfilled.append({"uid": uid, "path": rel, "field": field_name, "reason": reason})
            finding["detail"] += f"; not filled: {reason}"
        elif fix:
            finding["fixed"] = True
            finding["detail"] += f"; set to {value!r} from {source}"
        else:
            finding["detail"] += f"; would set {value!r} from {source}"
    if fix and sidecar_ok and (add_tags or license_tag):
        kwargs: dict[str, Any] = {"add_tags": add_tags}
        if license_tag:
            kwargs["license_tag"] = license_tag
        reg.update_asset_meta(uid, **kwargs)


# ------------------------------------------------------------------------------ CLI
def _print_summary(report: dict, out=None) -> None:
    out = out or sys.stdout
    mode = "dry run (nothing changed)" if report["dry_run"] else "fix"
    s = report["summary"]
    print(f"project {report['project']} - {s['assets']} assets - {mode}", file=out)
    for f in report["findings"]:
        mark = "fixed" if f["fixed"] else "OPEN "
        print(f"  [{mark}] {f['kind']:<22} {f['path'] or '-'}: {f['detail']}", file=out)
    for u in report["unfilled"]:
        print(f"  [unfilled] {u['field']} of {u['path']}: {u['reason']}", file=out)
    if report["ok"]:
        print(f"OK: {s['findings']} findings, all fixed" if s["findings"] else "OK: no problems found", file=out)
    else:
        print(f"PROBLEMS REMAIN: {s['remaining']} of {s['findings']} findings open "
              f"({', '.join(f'{k}={n}' for k, n in report['counts'].items())})", file=out)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Audit and repair asset sidecars, files and metadata of one "
                                "registry project. Exit status 0 when no problem remains, 1 otherwise, 2 on bad "
                                "usage or configuration.")
    p.add_argument("--dry-run", action="store_true", help="report only; change nothing on disk")
    p.add_argument("--fill-metadata", action="store_true",
                   help="derive missing tags from folders/file names and licences from licence tokens or files")
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite existing sidecars from the database (also invalid or disagreeing ones)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--project", default=None, help="registry project (default: registry.default_project)")
    p.add_argument("--workspace", default=None, help="workspace folder (default: $COMFYVN_HOME or the current one)")
    p.add_argument("--quick", action="store_true", help="compare file sizes only instead of re-hashing every file")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        existing_workspace(args.workspace)  # a folder that is not a workspace is refused, never created
        report = audit_sidecars(args.project, fix=not args.dry_run, fill_metadata=args.fill_metadata,
                                overwrite=args.overwrite, verify_hashes=not args.quick,
                                workspace_root=args.workspace)
    except (ConfigError, ValueError, NotAWorkspaceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_summary(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m comfyvn.registry.rebuild"))
