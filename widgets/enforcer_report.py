"""``EnforcerReport``: the sidecar audit as a dashboard (dry run, findings by kind, confirmed fix, export)."""

from __future__ import annotations

import threading
import time
from typing import Any

import ipywidgets as W

from comfyvn.studio.core.asset_registry import AssetRegistry
from comfyvn.workbench import get_workbench

from . import theme
from .enforcer_model import EnforcerModel, humanise
from .gallery_model import ASSET_TOPICS
from .live import LiveDashboard, LiveUpdater
from .table import DataTable
from .theme import esc

COLUMNS = [
    {"key": "kind", "label": "Kind", "kind": "chip", "width": "170px"},
    {"key": "uid", "label": "Asset", "kind": "mono", "width": "140px"},
    {"key": "path", "label": "Path", "kind": "mono"},
    {"key": "detail", "label": "Detail", "kind": "text"},
    {"key": "fixed", "label": "Fixed", "kind": "chip", "width": "70px"},
]
AUTO_RUN_MAX = 2000  # larger projects audit on request: the dry run hashes every file

_CSS = """
.cvn-enforcer .cvn-chart { min-width: 320px; }
.cvn-confirm { background: #fff7ed; border: 1px solid #fed7aa; border-radius: 10px; padding: 10px 12px; }
"""


def chart_html(groups: list[dict]) -> str:
    """Horizontal bars, one per finding kind (pure HTML: crisp, offline, no plotting library)."""
    if not groups:
        return '<div class="cvn-msg ok"><b>All clear.</b> Every asset has a valid, up-to-date sidecar.</div>'
    top = max(g["count"] for g in groups)
    rows = "".join(
        f'<div>{esc(g["label"])}</div><div class="cvn-bar-track"><div class="cvn-bar" '
        f'style="width:{max(2.0, 100 * g["count"] / top):.1f}%"></div></div><div><b>{g["count"]:,}</b></div>'
        for g in groups)
    return f'<div class="cvn-bars">{rows}</div>'


class EnforcerReport(LiveDashboard):
    """Audit sidecars against the registry; fix and export from the same place."""

    def __init__(self, registry: AssetRegistry | None = None, *, project_id: str | None = None, live: bool = True,
                 run: bool | None = None) -> None:
        """``run``: audit at once (default: when the project has at most AUTO_RUN_MAX assets)."""
        self.registry = registry or get_workbench().registry(project_id)
        self.model = EnforcerModel(self.registry)
        self.status = theme.StatusBar()
        self.updater: LiveUpdater | None = None
        self._sync = threading.local()
        self._build()
        if run is None:
            run = self.registry.count() <= AUTO_RUN_MAX
        if run:
            theme.guarded(self.status, "The audit failed:")(self.run_audit)()
        else:
            self.status.info(f"{self.registry.count():,} assets: press Run audit to check them (it reads every file).")
        self.render()
        if live:
            self.start_live()

    def _build(self) -> None:
        g = theme.guarded(self.status)
        self.header = theme.header("Sidecar enforcer")
        self.run_button = W.Button(description="Run audit (dry run)", button_style="primary",
                                   layout=W.Layout(width="auto"))
        self.fill_metadata = W.Checkbox(description="Fill missing tags/licences from folders and names", indent=False,
                                        layout=W.Layout(width="auto"))
        self.overwrite = W.Checkbox(description="Overwrite sidecars from the registry", indent=False, layout=W.Layout(width="auto"))
        self.fix_button = W.Button(description="Fix…", button_style="danger", layout=W.Layout(width="auto"))
        self.run_button.on_click(g(lambda _b: self.run_audit()))
        self.fix_button.on_click(g(lambda _b: self.ask_fix()))
        for w, cls in ((self.run_button, "run"), (self.fix_button, "fix"), (self.fill_metadata, "fill"),
                       (self.overwrite, "overwrite")):
            w.add_class(f"cvn-enforcer-{cls}")
        bar = W.HBox([self.run_button, self.fix_button, self.fill_metadata, self.overwrite])
        bar.add_class("cvn-toolbar")
        bar.add_class("cvn-card")

        self.confirm_text = W.HTML()
        self.confirm_button = W.Button(description="Confirm fix", button_style="danger", layout=W.Layout(width="auto"))
        self.cancel_button = W.Button(description="Cancel", layout=W.Layout(width="auto"))
        self.confirm_button.add_class("cvn-enforcer-confirm")
        self.confirm_button.on_click(g(lambda _b: self.confirm_fix()))
        self.cancel_button.on_click(g(lambda _b: self._hide_confirm()))
        self.confirm_box = W.VBox([self.confirm_text, W.HBox([self.confirm_button, self.cancel_button],
                                                             layout=W.Layout(grid_gap="6px"))])
        self.confirm_box.add_class("cvn-confirm")
        self.confirm_box.layout.display = "none"

        self.summary = W.HTML()
        self.chart = W.HTML()
        self.kind_filter = W.Dropdown(description="Show", options=[("All findings", "")], value="",
                                      layout=W.Layout(width="300px"))
        self.kind_filter.style.description_width = "40px"
        self.kind_filter.add_class("cvn-enforcer-kind")
        self.kind_filter.observe(g(lambda ch: self._kind_changed(ch["new"])), "value")
        chart_card = W.VBox([theme.section("Findings by kind"), self.summary, self.chart])
        chart_card.add_class("cvn-card")
        chart_card.add_class("cvn-chart")
        chart_card.layout.width = "380px"
        self.table = DataTable(columns=COLUMNS, max_height=460, empty_text="No findings.")
        table_box = W.VBox([self.kind_filter, self.table], layout=W.Layout(flex="1 1 auto", min_width="0", grid_gap="6px"))

        self.export_path = W.Text(placeholder="logs/enforcer-report-<time>.json (relative to the workspace)",
                                  layout=W.Layout(width="420px"))
        self.export_button = W.Button(description="Export JSON report", layout=W.Layout(width="auto"))
        self.export_path.add_class("cvn-enforcer-export-path")
        self.export_button.add_class("cvn-enforcer-export")
        self.export_button.on_click(g(lambda _b: self.export()))
        export = W.HBox([self.export_path, self.export_button])
        export.add_class("cvn-toolbar")
        body = W.HBox([chart_card, table_box], layout=W.Layout(grid_gap="14px", align_items="flex-start",
                                                              margin="10px 0 8px 0"))
        self.widget = theme.root_box([W.HTML(f"<style>{_CSS}</style>", layout=W.Layout(height="0px")),
                                      self.header, bar, self.confirm_box, body, export, self.status.widget],
                                     "cvn-enforcer")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- rendering -------------------------------------------------------------------------
    def render(self) -> None:
        m = self.model
        with m.lock:
            groups = m.groups()
            if m.report is None:
                self.summary.value = '<div class="cvn-muted">No audit yet.</div>'
                self.chart.value = ""
            else:
                total = len(m.findings)
                changes = f"{m.changes_since:,} change{'s' if m.changes_since != 1 else ''}"
                stale = (f' {theme.chip(f"{changes} since this audit: run it again", "warn")}'
                         if m.changes_since else "")
                self.summary.value = (f'<div style="margin-bottom:8px"><b>{total:,}</b> finding'
                                      f'{"s" if total != 1 else ""} in <b>{m.assets_affected():,}</b> asset'
                                      f'{"s" if m.assets_affected() != 1 else ""}{stale}</div>')
                self.chart.value = chart_html(groups)
            options = [("All findings", "")] + [(f'{gr["label"]} ({gr["count"]:,})', gr["kind"]) for gr in groups]
            if list(self.kind_filter.options) != options:
                self._sync.active = True  # our own rewrite: not a choice of the person
                try:
                    self.kind_filter.options = options
                    self.kind_filter.value = m.kind or ""
                finally:
                    self._sync.active = False
            self.table.rows = [self._row(i, f) for i, f in enumerate(m.visible())]
            self.fix_button.disabled = m.report is None
            self.export_button.disabled = m.report is None
            when = time.strftime("%H:%M:%S", time.localtime(m.ran_at)) if m.ran_at else "never"
            live = self.updater is not None and self.updater.running
            theme.set_header(self.header, "Sidecar enforcer",
                             f"project {self.registry.project_id} · last audit {when}", live=live)

    @staticmethod
    def _row(i: int, f: dict) -> dict:
        fixed = f.get("fixed")
        return {"id": f"{i}:{f.get('kind')}:{f.get('uid') or f.get('path')}", "cells": {
            "kind": [humanise(str(f.get("kind", "unknown"))), "warn"], "uid": f.get("uid") or "",
            "path": f.get("path") or "", "detail": f.get("detail") or "",
            "fixed": ["yes", "ok"] if fixed else (["no", ""] if fixed is False else ["", ""])}}

    # -- actions ---------------------------------------------------------------------------
    def run_audit(self) -> dict:
        self.status.info("Auditing sidecars…")
        report = self.model.run(fill_metadata=self.fill_metadata.value)
        self._hide_confirm()
        self.render()
        n = len(self.model.findings)
        if n:
            self.status.warn(f"Dry run: {n} finding{'s' if n != 1 else ''}; nothing was changed.")
        else:
            self.status.ok("Dry run: no problems found.")
        return report

    def _kind_changed(self, kind: str) -> None:
        if getattr(self._sync, "active", False):
            return
        self.model.set_kind(kind or None)
        self.render()

    def ask_fix(self) -> None:
        """Show what a fix would do and wait for the person to confirm."""
        self.confirm_text.value = (f"<b>Apply fixes?</b> "
                                   f"{esc(self.model.fix_plan(self.fill_metadata.value, self.overwrite.value))}")
        self.confirm_box.layout.display = ""

    def _hide_confirm(self) -> None:
        self.confirm_box.layout.display = "none"

    def confirm_fix(self) -> None:
        self._hide_confirm()
        self.status.info("Fixing…")
        self.model.fix(self.fill_metadata.value, self.overwrite.value)
        self.render()
        left = len(self.model.findings)
        self.status.ok(f"Fixed {self.model.fixed_count()} finding(s); the new audit shows {left} left"
                       + (" (these need a person: see the detail column)." if left else "."))

    def export(self) -> None:
        path = self.model.export(self.export_path.value)
        self.status.ok(f"Report written to {path}")

    # -- live ------------------------------------------------------------------------------
    def start_live(self) -> None:
        if self.updater is not None and self.updater.running:
            return
        from comfyvn.hooks import get_hook_bus

        self.updater = LiveUpdater(self.registry.db, self._on_live, topics=ASSET_TOPICS, debounce=0.2,
                                   on_error=lambda e: self.status.error(e, "Live update failed:"),
                                   name="comfyvn-enforcer-live")
        self.updater.start(after_id=get_hook_bus(self.registry.db).last_id())
        self.render()

    def _on_live(self, batch: list[dict]) -> None:
        """Registry changes make the report stale; say so instead of re-auditing on every commit."""
        self.model.note_changes(batch)
        self.render()
