"""The audit of registered assets: each row's file, sidecar, thumbnails and metadata, and the
findings report (:class:`Report`) the enforcer returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..fsutil import read_json_object
from ..hashing import sha256_file
from ..studio.core.asset_registry import AssetRegistry
from .derive import derive_license, derive_tags
from .records import Records
from .scan import iter_row_chunks

PROGRESS_EVERY = 1000  # rows between two progress reports of the audit
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


class Report:
    """The findings of one enforcer run, and what could not be filled."""

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


def diff_fields(actual: dict, expected: dict) -> list[str]:
    keys = sorted(set(actual) | set(expected))
    return [k for k in keys if actual.get(k, object()) != expected.get(k, object())]


def audit_sidecar(reg: AssetRegistry, row: dict, report: Report, *, fix: bool, overwrite: bool) -> bool:
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
        fields = diff_fields(data or {}, expected)
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


def audit_thumbnails(reg: AssetRegistry, row: dict, report: Report, *, fix: bool,
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


def audit_metadata(reg: AssetRegistry, row: dict, report: Report, *, fix: bool, fill_metadata: bool,
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


def audit_rows(reg: AssetRegistry, rows: Mapping[str, dict] | Iterable[dict], report: Report, *, fix: bool,
               overwrite: bool, fill_metadata: bool, verify_hashes: bool, relocating: set[str],
               progress: Callable[[int], None] | None = None) -> list[tuple[dict, dict]]:
    """Check registered rows: each file (present, same bytes), sidecar, thumbnails and metadata.

    ``rows`` is ``{path: record}`` or any iterable of records (:func:`iter_records` streams a
    project's in chunks).  Rows in ``relocating`` (their file was found elsewhere) are not
    reported missing.  ``progress(n)`` is called after every ``PROGRESS_EVERY`` rows and at the
    end with the rows checked since its last call.  Returns the thumbnails a fix asked to
    regenerate, as ``(row, finding)``, for :func:`check_regenerated`."""
    thumbs_requested: list[tuple[dict, dict]] = []
    pending = 0
    for row in rows.values() if isinstance(rows, Mapping) else rows:
        audit_row(reg, row, report, fix=fix, overwrite=overwrite, fill_metadata=fill_metadata,
                  verify_hashes=verify_hashes, relocating=relocating, thumbs_requested=thumbs_requested)
        pending += 1
        if progress and pending == PROGRESS_EVERY:
            progress(pending)
            pending = 0
    if progress and pending:
        progress(pending)
    return thumbs_requested


def audit_row(reg: AssetRegistry, row: dict, report: Report, *, fix: bool, overwrite: bool, fill_metadata: bool,
              verify_hashes: bool, relocating: set[str], thumbs_requested: list[tuple[dict, dict]]) -> None:
    rel, uid, file_path = row["path"], row["uid"], Path(row["abs_path"])
    if not file_path.exists():
        if uid not in relocating:
            report.add("missing_file", uid, rel, f"{file_path} is gone; restore it, or remove the asset "
                       "(AssetRegistry.remove_asset) if it was deleted on purpose")
        return
    size = file_path.stat().st_size
    if size != row["bytes"]:
        report.add("file_changed", uid, rel, f"size {size} bytes, registered {row['bytes']}; the bytes of a "
                   "registered asset must not change: restore them, or register the new file as a new asset")
    elif verify_hashes and sha256_file(file_path)[0] != row["hash"]:
        report.add("file_changed", uid, rel, f"SHA-256 differs from the registered {row['hash'][:16]}...; "
                   "restore the original bytes, or register the new file as a new asset")

    sidecar_ok = audit_sidecar(reg, row, report, fix=fix, overwrite=overwrite)
    audit_thumbnails(reg, row, report, fix=fix, requested=thumbs_requested)
    audit_metadata(reg, row, report, fix=fix, fill_metadata=fill_metadata, sidecar_ok=sidecar_ok)


def iter_records(reg: AssetRegistry, chunk: int | None = None) -> Iterator[dict]:
    """Every asset record of the project, in path order, read ``chunk`` rows a query: what the
    audit holds at once is one chunk, whatever the registry's size."""
    records = Records.of(reg)
    for rows in iter_row_chunks(reg, chunk=chunk):
        yield from (records.public(records.decode(r)) for r in rows)


def check_regenerated(reg: AssetRegistry, requested: list[tuple[dict, dict]]) -> None:
    """Wait for the thumbnails a fix asked for and mark their findings fixed (or say why not)."""
    if requested:
        reg.wait_for_thumbnails(300)
        for row, finding in requested:
            status = reg.thumbnail_status(row["uid"])
            bad = {s: v for s, v in status.items() if v["status"] != "ready" or not Path(v["path"]).is_file()}
            if bad:
                finding["detail"] += "; regenerating failed: " + "; ".join(
                    f"{s}: {v['error'] or v['status']}" for s, v in sorted(bad.items()))
            else:
                finding["fixed"] = True
                finding["detail"] += "; regenerated"
