"""The enforcer report's logic: dry-run audit, findings grouped by kind, fix after confirmation, JSON export.

It calls :func:`comfyvn.registry.rebuild.audit_sidecars` (the same helper the
``tools/assets_enforcer.py`` CLI uses), so the dashboard and the CLI always agree.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from comfyvn.fsutil import atomic_write_json
from comfyvn.studio.core.asset_registry import AssetRegistry


def _audit():
    try:
        from comfyvn.registry.rebuild import audit_sidecars
    except ImportError as exc:
        raise RuntimeError("the sidecar enforcer (comfyvn.registry.rebuild.audit_sidecars) is not available in "
                           f"this installation: {exc}") from None
    return audit_sidecars


def humanise(kind: str) -> str:
    """A finding kind as a label (``missing_license`` -> ``Missing licence``: the UI spells it licence)."""
    words = kind.replace("_", " ").replace("-", " ").strip().capitalize()
    return re.sub(r"\b([Ll])icense\b", r"\1icence", words)


class EnforcerModel:
    def __init__(self, registry: AssetRegistry) -> None:
        self.registry = registry
        self.report: dict | None = None
        self.ran_at: float | None = None
        self.last_fix: dict | None = None
        self.kind: str | None = None  # findings filter
        self.changes_since = 0
        self.audit_event_id = 0  # event-log position the last audit reflects
        self.lock = threading.RLock()

    def run(self, fill_metadata: bool = False) -> dict:
        """A dry run: what is wrong (and what ``fill_metadata`` would set), without touching any file."""
        from comfyvn.hooks import get_hook_bus

        report = _audit()(self.registry, fix=False, fill_metadata=fill_metadata)
        with self.lock:
            self.report, self.ran_at, self.changes_since = report, time.time(), 0
            self.audit_event_id = get_hook_bus(self.registry.db).last_id()
            if self.kind and self.kind not in self.counts():
                self.kind = None
        return report

    # -- reading the report ----------------------------------------------------------------
    @property
    def findings(self) -> list[dict]:
        return list((self.report or {}).get("findings") or [])

    def counts(self) -> dict[str, int]:
        """Findings per kind, largest first (from the findings themselves, so filters always agree)."""
        counted = Counter(f.get("kind", "unknown") for f in self.findings)
        return dict(sorted(counted.items(), key=lambda kv: (-kv[1], kv[0])))

    def groups(self) -> list[dict]:
        return [{"kind": k, "label": humanise(k), "count": n, "findings": [f for f in self.findings if f.get("kind") == k]}
                for k, n in self.counts().items()]

    def visible(self) -> list[dict]:
        return [f for f in self.findings if self.kind is None or f.get("kind") == self.kind]

    def set_kind(self, kind: str | None) -> None:
        if kind and kind not in self.counts():
            raise ValueError(f"no findings of kind {kind!r} in this report")
        self.kind = kind or None

    def assets_affected(self) -> int:
        return len({f.get("uid") or f.get("path") for f in self.findings})

    def fix_plan(self, fill_metadata: bool, overwrite: bool) -> str:
        """What a fix would do with these options, in words, for the confirmation step."""
        if self.report is None:
            raise ValueError("Run the audit first: the fix applies to what the dry run found.")
        c = self.counts()
        if not c and not overwrite:
            raise ValueError("Nothing to fix: the last audit found no problems.")
        will: list[str] = []
        wont: list[str] = []

        def n(*kinds: str) -> int:
            return sum(c.get(k, 0) for k in kinds)

        if n("missing_sidecar"):
            will.append(f"write {n('missing_sidecar')} missing sidecar(s) from the registry")
        if n("invalid_sidecar", "sidecar_mismatch"):
            (will if overwrite else wont).append(
                f"{'rewrite' if overwrite else 'leave'} {n('invalid_sidecar', 'sidecar_mismatch')} invalid or "
                f"disagreeing sidecar(s){'' if overwrite else ' (tick Overwrite to rewrite them)'}")
        if overwrite:
            will.append("rewrite every other sidecar from the registry")
        if n("missing_thumbnail"):
            will.append(f"remake thumbnails of {n('missing_thumbnail')} asset(s)")
        if n("unregistered_file", "orphan_sidecar"):
            will.append(f"register or tidy {n('unregistered_file', 'orphan_sidecar')} file(s) found without a "
                        "registry row")
        if n("stale_temp_file"):
            will.append(f"delete {n('stale_temp_file')} stale temporary file(s)")
        if n("interrupted_operation"):
            will.append(f"finish or undo {n('interrupted_operation')} interrupted operation(s)")
        if n("missing_tags", "missing_license"):
            (will if fill_metadata else wont).append(
                f"{'fill' if fill_metadata else 'leave'} {n('missing_tags', 'missing_license')} missing tag/licence "
                f"field(s){' from folder and file names where they allow' if fill_metadata else ' (tick Fill)'}")
        if n("missing_file", "file_changed"):
            wont.append(f"{n('missing_file', 'file_changed')} missing or changed file(s) need a person")
        text = ("This will " + "; ".join(will) + ".") if will else "With these options nothing would change."
        if wont:
            text += " Not fixed: " + "; ".join(wont) + "."
        return text + " Sidecars are written atomically."

    # -- changing --------------------------------------------------------------------------
    def fix(self, fill_metadata: bool = False, overwrite: bool = False) -> dict:
        """Apply the fixes, then audit again so the report shows what is left."""
        if self.report is None:
            raise ValueError("Run the audit first: the fix applies to what the dry run found.")
        result = _audit()(self.registry, fix=True, fill_metadata=fill_metadata, overwrite=overwrite)
        with self.lock:
            self.last_fix = result
        self.run(fill_metadata=fill_metadata)
        return result

    def note_changes(self, envelopes: list[dict]) -> int:
        """Count assets changed after the last audit (the report may be stale); returns the new total."""
        uids = {e.get("data", {}).get("uid") for e in envelopes
                if int(e.get("id", 0)) > self.audit_event_id and e.get("event") != "on_asset_sidecar_written"}
        with self.lock:
            self.changes_since += len(uids - {None})
            return self.changes_since

    def fixed_count(self) -> int:
        return sum(1 for f in (self.last_fix or {}).get("findings") or [] if f.get("fixed"))

    def export(self, path: str | Path | None = None) -> Path:
        """Write the last report (and the last fix, if any) as UTF-8 JSON; returns the file."""
        if self.report is None:
            raise ValueError("Run the audit first; there is no report to export yet.")
        if path is None or not str(path).strip():
            stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.ran_at or time.time()))
            target = self.registry.ws.logs_dir / f"enforcer-report-{stamp}.json"
        else:
            target = Path(str(path).strip()).expanduser()
            if not target.is_absolute():
                target = self.registry.ws.root / target
        if target.exists() and target.is_dir():
            raise ValueError(f"{target} is a folder; give a file name such as report.json")
        doc: dict[str, Any] = {"generated_by": "comfyvn_widgets.EnforcerReport", "ran_at": self.ran_at,
                               "project_id": self.registry.project_id, "report": self.report,
                               "counts": self.counts()}
        if self.last_fix is not None:
            doc["last_fix"] = self.last_fix
        atomic_write_json(target, doc)
        return target
