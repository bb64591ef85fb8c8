"""The Licences dashboard's logic: check a project for a use profile, filter by verdict, select,
bulk-fix unknowns (set a licence, or record a licence decision), export the manifest.

It calls :mod:`comfyvn.licences` (the code behind ``comfyvn-licences`` and the HTTP routes), so
the dashboard, the CLI and the API always agree.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from comfyvn.licences.check import VERDICTS, check_project
from comfyvn.licences.manifest import MANIFEST_FORMATS, render_manifest, write_manifest
from comfyvn.licences.overrides import TOPIC as OVERRIDE_TOPIC
from comfyvn.licences.overrides import set_overrides
from comfyvn.licences.profiles import default_use, use_profiles
from comfyvn.studio.core.asset_registry import AssetRegistry

from .gallery_model import ASSET_TOPICS
from .selection import SelectionModel

LIVE_TOPICS = [*ASSET_TOPICS, OVERRIDE_TOPIC]
LABELS = {"allowed": "Allowed", "allowed_with_duties": "Allowed with duties", "blocked": "Blocked",
          "unknown": "Unknown"}
TONES = {"allowed": "ok", "allowed_with_duties": "warn", "blocked": "bad", "unknown": "accent"}
COLOURS = {"allowed": "#10b981", "allowed_with_duties": "#f59e0b", "blocked": "#ef4444", "unknown": "#6366f1"}


class LicencesModel:
    def __init__(self, registry: AssetRegistry, use: str | None = None) -> None:
        self.registry = registry
        self.use = use or default_use(registry.ws)
        self.result: dict | None = None
        self.checked_at: float | None = None
        self.verdict: str | None = None  # table filter
        self.selection = SelectionModel()
        self.lock = threading.RLock()

    # -- checking --------------------------------------------------------------------------
    def profiles(self) -> list[tuple[str, str]]:
        """``(label, name)`` of every use profile of the workspace."""
        return [(f"{name} — {p.description}" if p.description else name, name)
                for name, p in sorted(use_profiles(self.registry.ws).items())]

    def run(self, use: str | None = None) -> dict:
        result = check_project(self.registry, use or self.use)
        with self.lock:
            self.result, self.use, self.checked_at = result, result["use"], time.time()
            self.selection.retain(a["uid"] for a in result["assets"])
        return result

    @property
    def assets(self) -> list[dict]:
        return list((self.result or {}).get("assets") or [])

    def counts(self) -> dict[str, int]:
        return dict((self.result or {}).get("counts") or dict.fromkeys(VERDICTS, 0))

    def visible(self) -> list[dict]:
        order = {v: i for i, v in enumerate(("blocked", "unknown", "allowed_with_duties", "allowed"))}
        rows = [a for a in self.assets if self.verdict is None or a["verdict"] == self.verdict]
        return sorted(rows, key=lambda a: (order[a["verdict"]], a["path"]))

    def set_verdict(self, verdict: str | None) -> None:
        if verdict and verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        self.verdict = verdict or None

    def asset(self, uid: str) -> dict | None:
        return next((a for a in self.assets if a["uid"] == uid), None)

    # -- selection ----------------------------------------------------------------------------
    def click(self, uid: str, *, shift: bool = False, toggle: bool = False) -> None:
        with self.lock:
            self.selection.click(uid, [a["uid"] for a in self.visible()], shift=shift, toggle=toggle)

    def select_unknown(self) -> int:
        """Select every asset whose verdict is unknown (the bulk fix's usual target)."""
        with self.lock:
            self.selection.set(a["uid"] for a in self.assets if a["verdict"] == "unknown")
            return len(self.selection)

    # -- fixing ------------------------------------------------------------------------------
    def _targets(self) -> list[str]:
        uids = self.selection.selected
        if not uids:
            raise ValueError("Select assets in the table first (Select unknowns picks every unknown one).")
        return uids

    def set_licence(self, licence: str) -> int:
        """Set the registry licence of the selected assets (their rights follow; hooks fire)."""
        if not isinstance(licence, str) or not licence.strip():
            raise ValueError("Type the licence to set (e.g. cc0-1.0, cc-by-4.0).")
        updated = self.registry.bulk_update_tags(self._targets(), license_tag=licence.strip())
        self.run()
        return len(updated)

    def record_override(self, *, licence: str | None, commercial_use: str | None, note: str, who: str) -> int:
        """Record a licence decision (with the paper trail) for each selected asset."""
        terms = {"commercial_use": commercial_use} if commercial_use else None
        done = set_overrides(self.registry, self._targets(), license=(licence or "").strip() or None, terms=terms,
                             note=note, decided_by=who)
        self.run()
        return len(done)

    # -- export -------------------------------------------------------------------------------
    def export(self, fmt: str = "md", path: str | Path | None = None) -> Path:
        """Write the manifest of the current check (relative paths are inside the workspace)."""
        if fmt not in MANIFEST_FORMATS:
            raise ValueError(f"format must be one of {', '.join(MANIFEST_FORMATS)}")
        if self.result is None:
            raise ValueError("Run the check first.")
        if path is None or not str(path).strip():
            target = self.registry.ws.root / "release" / f"licences-{self.registry.project_id}-{self.use}.{fmt}"
        else:
            target = Path(str(path).strip()).expanduser()
            if not target.is_absolute():
                target = self.registry.ws.root / target
        return write_manifest(target, render_manifest(self.result, fmt))

    @staticmethod
    def relevant(envelopes: list[dict]) -> bool:
        """Do these events change a verdict (sidecar writes alone do not)?"""
        return any(e.get("event") != "on_asset_sidecar_written" for e in envelopes)

    def detail(self, uid: str) -> dict[str, Any] | None:
        return self.asset(uid)
