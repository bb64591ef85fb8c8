"""The sidecar enforcer's entry point: rebuild a registry from the files on disk, and audit it.

:func:`rebuild_from_disk` registers files that lie under the assets root without a database
row, using their sidecars when they are valid; :func:`audit_sidecars` finds what disagrees
between the database and the disk (and fixes what it safely can, through the registry API so
the usual hooks fire).  ``tools/assets_enforcer.py``, ``python -m comfyvn.registry.rebuild``
and the ``comfyvn-enforcer`` console script all run :func:`main`.

The parts live beside it: :mod:`.scan` (walking the assets root, planning what to do with
files that have no row), :mod:`.audit` (checking registered rows; the report),
:mod:`.derive` (tags and licences from names and licence files).  The disk half and
:func:`audit_sidecars` stay here because both need :func:`guess_type`.

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
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import ConfigError, NotAWorkspaceError, existing_workspace
from ..kinds import MODEL_SUFFIXES as MODEL_SUFFIXES  # re-exported: still importable from here
from ..kinds import guess_type as kind_type
from ..kinds import is_type_name
from ..studio.core.asset_registry import AssetRegistry, AssetRegistryError
from .audit import FINDING_KINDS, Report, audit_rows, check_regenerated, iter_records
from .derive import LICENSE_FILE_NAMES, derive_license, derive_tags, license_from_file, spdx_to_tag
from .paths import SIDECAR_SUFFIX
from .scan import open_registry, parse_time, plan_disk, rows_without_file, scan_unregistered

__all__ = [  # what this module offered before the enforcer was split (and still does)
    "FINDING_KINDS", "LICENSE_FILE_NAMES", "MODEL_SUFFIXES", "RebuildSummary", "audit_sidecars", "build_parser",
    "derive_license", "derive_tags", "guess_type", "license_from_file", "main", "rebuild_from_disk", "spdx_to_tag",
]

log = logging.getLogger("comfyvn.registry.rebuild")


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


# ------------------------------------------------------------------------------ rebuild
def register_plan(reg: AssetRegistry, plan: dict, *, fill_metadata: bool) -> dict:
    """Register one file where it lies, taking what its sidecar says when the sidecar is valid."""
    rel, sidecar = plan["rel"], plan["sidecar"] or {}
    asset_type = guess_type(rel, sidecar)
    meta = sidecar.get("meta") if isinstance(sidecar.get("meta"), dict) else {}
    tags = [t for t in sidecar.get("tags") or [] if isinstance(t, str)] if isinstance(sidecar.get("tags"), list) else []
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
                             created_at=parse_time(sidecar.get("created_at")))


def trash_orphan(reg: AssetRegistry, rel: str, sidecar_path: Path) -> Path:
    dest = reg.ws.trash_dir / reg.project_id / "orphan-sidecars" / time.strftime("%Y%m%dT%H%M%S") / (
        rel + SIDECAR_SUFFIX)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(sidecar_path), str(dest))
    return dest


def apply_disk_plans(reg: AssetRegistry, plans: list[dict], report: Report, *, fix: bool,
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
                moved_to = trash_orphan(reg, rel, plan["sidecar_path"])
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
                    rec = register_plan(reg, plan, fill_metadata=fill_metadata)
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
    reg = open_registry(registry_or_project, workspace_root, recover=not dry_run, assets_root=assets_root,
                db_path=db_path, thumbnails_root=thumbs_root)
    report = Report(reg, fix=not dry_run)
    scan = scan_unregistered(reg)  # streamed: only what has no row is kept
    plans = plan_disk(reg, scan, rows_without_file(reg) if scan.files else {})
    done = apply_disk_plans(reg, plans, report, fix=not dry_run, fill_metadata=fill_metadata)
    stale: list[dict] = []
    if remove_stale and not dry_run:
        for row in rows_without_file(reg).values():
            if not Path(row["abs_path"]).exists() and reg.remove_asset(row["uid"]):  # False: another process was first
                stale.append({"uid": row["uid"], "path": row["path"]})
    if wait_for_thumbs and not dry_run:
        reg.wait_for_thumbnails(300)
    return RebuildSummary({"project": reg.project_id, "dry_run": dry_run, **done, "removed_stale": stale})


# ------------------------------------------------------------------------------ audit
def audit_sidecars(registry_or_project: AssetRegistry | str | None = None, *, fix: bool = False,
                   fill_metadata: bool = False, overwrite: bool = False, verify_hashes: bool = True,
                   workspace_root: str | os.PathLike | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
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
    * ``progress(done, total)``: called as the rows are checked (streamed in chunks of 500:
      memory stays flat at a million assets; the CLI draws a tqdm bar from it).
    """
    reg = open_registry(registry_or_project, workspace_root, recover=False)
    report = Report(reg, fix=fix)

    for intent in reg.pending_recovery():
        report.add("interrupted_operation", intent["uid"], intent["dest"],
                   f"{intent['op']} by a process that is no longer running", False)
    if fix:  # also finishes sidecar writes a killed process left pending
        reg.recover()
        for finding in report.findings:
            finding["fixed"] = True
            finding["detail"] += "; finished or undone by recover()"

    scan = scan_unregistered(reg)  # streamed: only what has no row is kept
    for path in scan.stale_temps:
        rel = path.relative_to(reg.assets_root).as_posix()
        fixed = False
        if fix:
            path.unlink(missing_ok=True)
            fixed = True
        report.add("stale_temp_file", None, rel, "temporary file of a process that is no longer running"
                   + ("; deleted" if fixed else ""), fixed)

    plans = plan_disk(reg, scan, rows_without_file(reg) if scan.files else {})  # relocations need a lost file
    relocating = {p["uid"] for p in plans if p["action"] == "relocate"}
    done = apply_disk_plans(reg, plans, report, fix=fix, fill_metadata=fill_metadata)
    if fix and any(item["done"] for item in done["registered"]):  # let new thumbnails finish before checking them
        reg.wait_for_thumbnails(300)

    total, checked = reg.count(), 0

    def rows_checked(n: int) -> None:
        nonlocal checked
        checked += n
        if progress:
            progress(checked, max(total, checked))

    requested = audit_rows(reg, iter_records(reg), report, fix=fix, overwrite=overwrite, fill_metadata=fill_metadata,
                           verify_hashes=verify_hashes, relocating=relocating, progress=rows_checked)
    check_regenerated(reg, requested)
    result = report.result()
    log.log(logging.INFO if fix else logging.DEBUG, "enforcer %s project %s: %s", "fix" if fix else "dry run",
            reg.project_id, result["summary"])
    return result


# ------------------------------------------------------------------------------ CLI
class ProgressBar:
    """A tqdm bar on stderr for :func:`audit_sidecars`' ``progress(done, total)`` (nothing when off)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="asset", unit_scale=True, desc="audit", file=sys.stderr)
        self.bar.total = total
        self.bar.update(done - self.bar.n)


def print_summary(report: dict, out=None) -> None:
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is drawn on a terminal only)")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        existing_workspace(args.workspace)  # a folder that is not a workspace is refused, never created
        with ProgressBar(not args.json and not args.no_progress and sys.stderr.isatty()) as bar:
            report = audit_sidecars(args.project, fix=not args.dry_run, fill_metadata=args.fill_metadata,
                                    overwrite=args.overwrite, verify_hashes=not args.quick,
                                    workspace_root=args.workspace, progress=bar.update)
    except (ConfigError, ValueError, NotAWorkspaceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_summary(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m comfyvn.registry.rebuild"))
