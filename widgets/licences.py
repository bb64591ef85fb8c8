"""``LicencesDashboard``: the project's assets by licence verdict for a use profile.

A chart of the verdict counts, the table behind it (filter by verdict, click for the reasons),
click-through to the asset in the gallery (in the workbench), bulk-fix of unknowns (set a licence,
or record a licence decision with a note) and export of the manifest.  Logic: :class:`LicencesModel`.
"""

from __future__ import annotations

import getpass
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from comfyvn.licences.manifest import MANIFEST_FORMATS
from comfyvn.rights import COMMERCIAL_LEVELS
from comfyvn.studio.core.asset_registry import AssetRegistry
from comfyvn.workbench import get_workbench

from . import theme
from .licences_model import COLOURS, LABELS, LIVE_TOPICS, TONES, LicencesModel
from .live import LiveDashboard, LiveUpdater
from .table import DataTable
from .theme import esc

COLUMNS = [
    {"key": "verdict", "label": "Verdict", "kind": "chip", "width": "150px"},
    {"key": "title", "label": "Asset", "kind": "text", "width": "190px"},
    {"key": "path", "label": "Path", "kind": "mono"},
    {"key": "license", "label": "Licence", "kind": "mono", "width": "150px"},
    {"key": "why", "label": "Why / duties", "kind": "text"},
]

MAX_ROWS = 1000

_CSS = """
.cvn-licences .cvn-lic-stack { display: flex; height: 18px; border-radius: 9px; overflow: hidden; margin: 4px 0 12px 0;
  background: #f3f4f6; }
.cvn-licences .cvn-lic-stack div { height: 100%; }
.cvn-licences .cvn-lic-detail { font-size: 13px; line-height: 1.45; }
.cvn-licences .cvn-lic-detail ul { margin: 4px 0 8px 18px; padding: 0; }
"""


def chart_html(counts: dict[str, int]) -> str:
    """One stacked bar (the whole project at a glance) and a labelled bar per verdict (pure HTML)."""
    total = sum(counts.values())
    if not total:
        return '<div class="cvn-muted">No assets in this project yet.</div>'
    stack = "".join(f'<div title="{LABELS[v]}: {n}" style="width:{100 * n / total:.2f}%;background:{COLOURS[v]}">'
                    f"</div>" for v, n in counts.items() if n)
    top = max(counts.values())
    rows = "".join(
        f'<div class="cvn-lic-label" data-verdict="{v}">{LABELS[v]}</div><div class="cvn-bar-track">'
        + (f'<div class="cvn-bar" style="width:{max(2.0, 100 * n / top):.1f}%;background:{COLOURS[v]}"></div>'
           if n else "") + "</div>"
        f'<div><b class="cvn-lic-count" data-verdict="{v}">{n:,}</b>'
        f' <span class="cvn-muted">({100 * n / total:.0f}%)</span></div>'
        for v, n in counts.items())
    return f'<div class="cvn-lic-stack">{stack}</div><div class="cvn-bars">{rows}</div>'


def detail_html(asset: dict | None) -> str:
    if asset is None:
        return '<div class="cvn-empty">Click an asset to see why it got its verdict.</div>'
    parts = [f'<div><b>{esc(asset["title"])}</b> {theme.chip(LABELS[asset["verdict"]], TONES[asset["verdict"]])}</div>',
             f'<div class="cvn-muted cvn-mono">{esc(asset["path"])} · {esc(asset["uid"])}</div>',
             f'<div>Licence: <b>{esc(asset["license_name"] or "none")}</b>'
             + (f' <span class="cvn-muted">(terms from {esc(asset["terms_source"])})</span>'
                if asset["terms_source"] else "") + "</div>"]
    if asset["creator"] or asset["source_url"]:
        parts.append(f'<div>By {esc(asset["creator"] or "?")}'
                     + (f' · <span class="cvn-mono">{esc(asset["source_url"])}</span>' if asset["source_url"] else "")
                     + "</div>")
    for title, items in (("Why", asset["reasons"]), ("Duties", asset["duties"])):
        if items:
            lines = "".join(f'<li>{esc(i["text"])} <span class="cvn-muted">[{esc(i["source"] or "nothing stated")}]'
                            f"</span></li>" for i in items)
            parts.append(f"<div>{title}:<ul>{lines}</ul></div>")
    if asset["override"]:
        o = asset["override"]
        parts.append(f'<div class="cvn-msg info">Licence decision by <b>{esc(o["decided_by"])}</b> on '
                     f'{esc(o["decided_at_utc"])}: {esc(o["note"])}</div>')
    return '<div class="cvn-lic-detail">' + "".join(parts) + "</div>"


def open_in_gallery(gallery: Any, uid: str) -> None:
    """Show one asset in an :class:`~comfyvn_widgets.gallery.AssetGallery`: filter to its path, focus it."""
    rec = gallery.registry.get_asset(uid)
    if rec is None:
        raise ValueError(f"asset {uid} no longer exists (removed elsewhere)")
    gallery.search.value = rec["path"]
    gallery.set_filter(text=rec["path"])
    with gallery.model.lock:
        gallery.model.click(uid)
        gallery.render()


def link_workbench(tabs: W.Tab, dashboards: dict[str, Any], order: list[str]) -> None:
    """In the workbench: the Licences tab's "Open in gallery" switches to the gallery tab on that asset."""
    licences, gallery = dashboards.get("licences"), dashboards.get("gallery")
    if licences is None or gallery is None:
        return
    index = order.index("gallery")

    def show(uid: str) -> None:
        open_in_gallery(gallery, uid)
        tabs.selected_index = index

    licences.open_asset = show
    licences.render()


class LicencesDashboard(LiveDashboard):
    """The project's assets by licence verdict; fix unknowns and export the manifest from here."""

    def __init__(self, registry: AssetRegistry | None = None, *, project_id: str | None = None, use: str | None = None,
                 live: bool = True, open_asset: Callable[[str], None] | None = None) -> None:
        self.registry = registry or get_workbench().registry(project_id)
        self.model = LicencesModel(self.registry, use)
        self.open_asset = open_asset
        self.status = theme.StatusBar()
        self.updater: LiveUpdater | None = None
        self._sync = threading.local()
        self._build()
        theme.guarded(self.status, "The licence check failed:")(self.model.run)()
        self.render()
        if live:
            self.start_live()

    def _build(self) -> None:
        g = theme.guarded(self.status)
        self.header = theme.header("Licences")
        self.use = W.Dropdown(description="Use", options=self.model.profiles(), value=self.model.use,
                              layout=W.Layout(width="460px"))
        self.use.style.description_width = "40px"
        self.run_button = W.Button(description="Check again", layout=W.Layout(width="auto"))
        self.verdict = W.Dropdown(description="Show", options=[("All assets", "")], value="",
                                  layout=W.Layout(width="280px"))
        self.verdict.style.description_width = "40px"
        self.use.observe(g(lambda ch: self._use_changed(ch["new"])), "value")
        self.run_button.on_click(g(lambda _b: self.check()))
        self.verdict.observe(g(lambda ch: self._verdict_changed(ch["new"])), "value")
        bar = W.HBox([self.use, self.run_button])
        bar.add_class("cvn-toolbar")
        bar.add_class("cvn-card")

        self.summary = W.HTML()
        self.chart = W.HTML()
        self.chart.add_class("cvn-licences-chart")
        chart_card = W.VBox([theme.section("Assets by verdict"), self.summary, self.chart])
        chart_card.add_class("cvn-card")
        self.detail = W.HTML(detail_html(None))
        self.detail.add_class("cvn-licences-detail")
        self.open_button = W.Button(description="Open in gallery", layout=W.Layout(width="auto"))
        self.open_button.on_click(g(lambda _b: self._open_focused()))
        detail_card = W.VBox([theme.section("Asset"), self.detail, self.open_button])
        detail_card.add_class("cvn-card")
        self.table = DataTable(columns=COLUMNS, max_height=460, empty_text="No assets.")
        self.table.on_click(g(self._row_clicked))
        self.more = W.HTML()
        table_box = W.VBox([self.verdict, self.table, self.more], layout=W.Layout(flex="1 1 auto", min_width="0",
                                                                       grid_gap="6px"))
        side = W.VBox([chart_card, detail_card], layout=W.Layout(grid_gap="10px", width="390px", flex="0 0 auto"))
        body = W.HBox([side, table_box],
                      layout=W.Layout(grid_gap="14px", align_items="flex-start", margin="10px 0 8px 0"))

        self.select_unknown = W.Button(description="Select unknowns", layout=W.Layout(width="auto"))
        self.select_unknown.on_click(g(lambda _b: self._select_unknown()))
        self.licence = W.Combobox(placeholder="licence, e.g. cc0-1.0", options=["cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0",
                                                                                "mit", "apache-2.0"],
                                  ensure_option=False, layout=W.Layout(width="200px"))
        self.set_button = W.Button(description="Set licence", button_style="primary", layout=W.Layout(width="auto"))
        self.set_button.on_click(g(lambda _b: self._set_licence()))
        self.commercial = W.Dropdown(options=[("commercial use: as the licence says", "")]
                                     + [(f"commercial use: {lvl}", lvl) for lvl in COMMERCIAL_LEVELS],
                                     value="", layout=W.Layout(width="250px"))
        self.note = W.Text(placeholder="why (e.g. bought a licence, invoice 123)", layout=W.Layout(width="300px"))
        self.override_button = W.Button(description="Record decision", layout=W.Layout(width="auto"))
        self.override_button.on_click(g(lambda _b: self._record()))
        self.selected_label = W.HTML()
        fix = W.VBox([theme.section("Fix unknowns"), W.HBox([self.select_unknown, self.selected_label]),
                      W.HBox([self.licence, self.set_button]),
                      W.HBox([self.commercial, self.note, self.override_button])])
        fix.add_class("cvn-card")

        self.format = W.Dropdown(options=list(MANIFEST_FORMATS), value="md", layout=W.Layout(width="90px"))
        self.export_path = W.Text(placeholder="release/licences-<project>-<use>.md (relative to the workspace)",
                                  layout=W.Layout(width="420px"))
        self.export_button = W.Button(description="Export manifest", layout=W.Layout(width="auto"))
        self.export_button.on_click(g(lambda _b: self.export()))
        export = W.HBox([self.format, self.export_path, self.export_button])
        export.add_class("cvn-toolbar")
        for w, cls in ((self.use, "use"), (self.run_button, "run"), (self.verdict, "verdict"),
                       (self.open_button, "open"), (self.select_unknown, "select-unknown"), (self.licence, "licence"),
                       (self.set_button, "set"), (self.commercial, "commercial"), (self.note, "note"),
                       (self.override_button, "override"), (self.format, "format"),
                       (self.export_path, "export-path"), (self.export_button, "export")):
            w.add_class(f"cvn-licences-{cls}")
        self.widget = theme.root_box([W.HTML(f"<style>{_CSS}</style>", layout=W.Layout(height="0px")), self.header,
                                      bar, body, fix, export, self.status.widget], "cvn-licences")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- rendering ---------------------------------------------------------------------------
    def render(self) -> None:
        m = self.model
        with m.lock:
            counts = m.counts()
            total = sum(counts.values())
            if m.result is not None:
                gate = (theme.chip("may ship", "ok") if m.result["ok"]
                        else theme.chip(f"{counts['blocked'] + counts['unknown']:,} stop the release", "bad"))
                self.summary.value = (f'<div style="margin-bottom:6px"><b>{total:,}</b> asset{"s" if total != 1 else ""}'
                                      f" for use <b>{esc(m.use)}</b> {gate}</div>")
            self.chart.value = chart_html(counts)
            options = [("All assets", "")] + [(f"{LABELS[v]} ({n:,})", v) for v, n in counts.items()]
            if list(self.verdict.options) != options:
                self._sync.active = True
                try:
                    self.verdict.options = options
                    self.verdict.value = m.verdict or ""
                finally:
                    self._sync.active = False
            everything = m.visible()
            visible = everything[:MAX_ROWS]  # the browser gets a bounded table; the counts stay exact
            self.table.rows = [self._row(a) for a in visible]
            self.more.value = (f'<span class="cvn-muted">Showing the first {MAX_ROWS:,} of {len(everything):,} '
                               "(blocked and unknown first); filter by verdict or export the manifest for all.</span>"
                               if len(everything) > MAX_ROWS else "")
            self.table.selected = m.selection.on([a["uid"] for a in visible])
            self.table.focused = m.selection.focused or ""
            focused = m.asset(m.selection.focused) if m.selection.focused else None
            self.detail.value = detail_html(focused)
            self.open_button.disabled = focused is None or self.open_asset is None
            self.open_button.layout.display = "none" if self.open_asset is None else ""
            n = len(m.selection)
            self.selected_label.value = (f'<span class="cvn-selbar"><b>{n:,}</b> selected</span>' if n else
                                         '<span class="cvn-muted">Click rows (Shift/Ctrl for more) or select the '
                                         "unknowns; fixes apply to the selection.</span>")
            for button in (self.set_button, self.override_button):
                button.disabled = n == 0
            self.export_button.disabled = m.result is None
            when = time.strftime("%H:%M:%S", time.localtime(m.checked_at)) if m.checked_at else "never"
            theme.set_header(self.header, "Licences", f"project {self.registry.project_id} · checked {when}",
                             live=self.updater is not None and self.updater.running)

    @staticmethod
    def _row(a: dict) -> dict:
        why = "; ".join(dict.fromkeys(r["text"] for r in a["reasons"])) or "; ".join(
            dict.fromkeys(d["text"] for d in a["duties"]))
        return {"id": a["uid"], "cells": {"verdict": [LABELS[a["verdict"]], TONES[a["verdict"]]], "title": a["title"],
                                          "path": a["path"], "license": a["license"] or "", "why": why}}

    # -- actions -------------------------------------------------------------------------------
    def check(self) -> dict:
        self.status.info("Checking…")
        result = self.model.run(self.use.value)
        self.render()
        c = result["counts"]
        if result["ok"]:
            self.status.ok(f"Nothing blocked or unknown for use {result['use']}.")
        else:
            self.status.warn(f"{c['blocked']} blocked and {c['unknown']} unknown for use {result['use']}.")
        return result

    def _use_changed(self, use: str) -> None:
        if use and use != self.model.use:
            self.check()

    def _verdict_changed(self, verdict: str) -> None:
        if getattr(self._sync, "active", False):
            return
        self.model.set_verdict(verdict or None)
        self.render()

    def _row_clicked(self, uid: str, shift: bool, toggle: bool) -> None:
        self.model.click(uid, shift=shift, toggle=toggle)
        self.render()

    def _select_unknown(self) -> None:
        n = self.model.select_unknown()
        self.render()
        self.status.info(f"{n} unknown asset{'s' if n != 1 else ''} selected.")

    def _set_licence(self) -> None:
        n = self.model.set_licence(self.licence.value)
        self.render()
        self.status.ok(f"Licence {self.licence.value.strip()} set on {n} asset{'s' if n != 1 else ''}.")

    def _record(self) -> None:
        n = self.model.record_override(licence=self.licence.value, commercial_use=self.commercial.value or None,
                                       note=self.note.value, who=getpass.getuser())
        self.note.value = ""
        self.render()
        self.status.ok(f"Licence decision recorded for {n} asset{'s' if n != 1 else ''}.")

    def _open_focused(self) -> None:
        uid = self.model.selection.focused
        if uid is None or self.open_asset is None:
            raise ValueError("Click an asset first.")
        self.open_asset(uid)

    def export(self) -> None:
        path = self.model.export(self.format.value, self.export_path.value)
        self.status.ok(f"Manifest written to {path}")

    # -- live ------------------------------------------------------------------------------------
    def start_live(self) -> None:
        if self.updater is not None and self.updater.running:
            return
        from comfyvn.hooks import get_hook_bus

        self.updater = LiveUpdater(self.registry.db, self._on_live, topics=LIVE_TOPICS, debounce=0.3,
                                   on_error=lambda e: self.status.error(e, "Live update failed:"),
                                   name="comfyvn-licences-live")
        self.updater.start(after_id=get_hook_bus(self.registry.db).last_id())
        self.render()

    def _on_live(self, batch: list[dict]) -> None:
        """A registry change or a licence decision anywhere: check again."""
        if self.model.relevant(batch):
            self.model.run()
            self.render()
