"""``AssetGallery``: the thumbnail grid dashboard (a thin widget tree over :class:`GalleryModel`)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import ipywidgets as W
from ipywidgets.widgets.widget_description import DescriptionStyle
from ipywidgets.widgets.widget_string import HTMLStyle, TextStyle

from comfyvn.studio.core.asset_registry import AssetRegistry
from comfyvn.workbench import get_workbench

from . import theme
from .clipboard import ClipboardButton
from .gallery_model import (
    ANY,
    ASSET_TOPICS,
    PAGE_SIZE,
    RIGHTS,
    SORTS,
    UNLICENSED,
    GalleryModel,
    rights_summary,
)
from .grid import ThumbGrid
from .live import LiveDashboard, LiveUpdater
from .theme import chip, esc, human_bytes

_ANY_KEY, _NONE_KEY = "__any__", "__none__"
COPY_LIMIT = 5000
FACETS_EVERY = 2.0  # seconds between recounts of the filter drop-downs during live updates, at least
FACETS_SHARE = 0.1  # ... and at most this share of the live worker's time (0.5-1.5 s a recount at a million)


def _when(ts: Any) -> str:
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return esc(ts)


def detail_html(detail: dict | None) -> str:
    """The detail pane: preview, key facts, tags, provenance and the parsed sidecar."""
    if not detail:
        return ('<div class="cvn-empty">Click a tile to see its sidecar and provenance.<br>'
                '<span class="cvn-muted">Shift-click selects a range, Ctrl/Cmd-click or the check mark toggles.</span>'
                '</div>')
    if detail.get("missing"):
        return f'<div class="cvn-msg warn">Asset {esc(detail["uid"])} no longer exists (removed elsewhere).</div>'
    rec = detail["record"]
    audio = detail.get("audio")
    if audio and audio.get("uri"):
        img = f'<audio class="cvn-detail-audio" controls preload="metadata" src="{audio["uri"]}"></audio>'
    elif audio:
        img = f'<div class="cvn-empty">Sound {esc(audio.get("note"))}</div>'
    elif detail.get("thumbnail"):
        img = f'<img class="cvn-detail-img" src="{detail["thumbnail"]}" alt="">'
    else:
        img = f'<div class="cvn-empty">{esc(detail.get("thumbnail_status"))} preview</div>'

    title = (rec.get("meta") or {}).get("title") if isinstance((rec.get("meta") or {}).get("title"), str) else None
    rows = [("uid", f'<span class="cvn-mono">{esc(rec["uid"])}</span>'), ("type", esc(rec["type"])),
            ("path", f'<span class="cvn-mono">{esc(rec["path"])}</span>'), ("size", human_bytes(rec.get("bytes"))),
            ("sha-256", f'<span class="cvn-mono" title="{esc(rec["hash"])}">{esc(rec["hash"][:24])}…</span>'),
            ("licence", chip(rec["license"], "ok") if rec.get("license") else chip("none", "warn")),
            ("rights", esc(rights_summary(rec.get("license_terms")))),
            ("origin", esc(rec.get("origin"))), ("version", esc(rec.get("version"))),
            ("created", _when(rec.get("created_at"))), ("updated", _when(rec.get("updated_at")))]
    kv = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    tags = "".join(chip(t, "accent") for t in rec.get("tags") or []) or '<span class="cvn-muted">no tags</span>'
    prov = rec.get("provenance") or {}
    prov_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
                        for k, v in prov.items()) or '<tr><td class="cvn-muted">none recorded</td></tr>'
    if detail.get("sidecar_error"):
        sidecar = f'<div class="cvn-msg warn">{esc(detail["sidecar_error"])}</div>'
    else:
        sidecar = theme.json_html(detail["sidecar"])
    return (f'<div class="cvn-detail">{img}'
            f'<div class="cvn-detail-title">{esc(title or PurePosixPath(rec["path"]).name)}</div>'
            f'<table class="cvn-kv">{kv}</table>'
            f'<div class="cvn-section">Tags</div><div>{tags}</div>'
            f'<div class="cvn-section">Provenance</div><table class="cvn-kv">{prov_rows}</table>'
            f'<details class="cvn-sidecar" open><summary class="cvn-section">Sidecar '
            f'<span class="cvn-mono cvn-muted">{esc(PurePosixPath(rec["sidecar"]).name)}</span></summary>'
            f'{sidecar}</details></div>')


_DETAIL_CSS = """
.cvn-detail-img { width: 100%; max-height: 260px; object-fit: contain; border-radius: 8px; background: #f3f4f6;
  margin-bottom: 8px; display: block; }
.cvn-detail-audio { width: 100%; margin-bottom: 8px; display: block; }
.cvn-detail-title { font-size: 15px; font-weight: 650; margin: 2px 0 6px 0; color: #111827; word-break: break-word; }
.cvn-sidecar summary { cursor: pointer; margin-top: 8px; }
.cvn-gallery .cvn-side { width: 360px; min-width: 300px; }
.cvn-gallery .cvn-main { flex: 1 1 auto; min-width: 0; }
.cvn-selbar { background: #eef2ff; border: 1px solid #c7d2fe; border-radius: 8px; padding: 2px 10px; }
.cvn-pager-label { font-variant-numeric: tabular-nums; }
"""


class _GalleryGrid(ThumbGrid):
    """The grid, carrying the gallery's page CSS too (anywidget injects it: no hidden <style> widget)."""

    _css = ThumbGrid._css + _DETAIL_CSS


class AssetGallery(LiveDashboard):
    """The asset gallery dashboard.

    ``AssetGallery()`` uses the current workspace (``COMFYVN_HOME``) and project; display
    ``gallery.widget`` (or the object itself in a notebook).  ``live=True`` starts the worker
    thread that follows changes made by any process.
    """

    def __init__(self, registry: AssetRegistry | None = None, *, project_id: str | None = None,
                 page_size: int = PAGE_SIZE, live: bool = True) -> None:
        self.registry = registry or get_workbench().registry(project_id)
        self.model = GalleryModel(self.registry, page_size=page_size)
        self.status = theme.StatusBar()
        self._sync = threading.local()  # set while *this thread* rewrites the filter widgets
        self._pending_filter: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._facets_at = 0.0
        self._facets_cost = 0.0  # seconds the last recount of the drop-downs took
        self._detail_key: tuple[str | None, int] | None = None  # (focused uid, event id) the detail pane shows
        self.updater: LiveUpdater | None = None
        self._build()
        self.model.load()
        if live:  # the grid first; the drop-down counts (a scan of every asset) follow from the worker
            self.model.facets_stale = True
            updater = self._start_updater()
            self.render()
            updater.request()
        else:
            self._sync_facets()
            self.render()

    # -- widget tree -----------------------------------------------------------------------
    def _build(self) -> None:
        # Widgets that never change their layout or style share one Layout / style model each:
        # every Layout and style is a widget of its own (a comm, ~40 traits serialised when it
        # opens), and they were 65 of the tree's 103 widgets.  CSS classes are given at
        # construction (``_dom_classes``): an ``add_class`` afterwards is one more message each.
        g = theme.guarded(self.status)
        plain, auto = W.Layout(), W.Layout(width="auto")
        button_style, html_style = W.ButtonStyle(), HTMLStyle()
        filter_style = DescriptionStyle(description_width="52px")
        filter_text_style = TextStyle(description_width="52px")
        bulk_text_style = TextStyle(description_width="64px")

        def button(description: str, cls: str, **kw: Any) -> W.Button:
            kw.setdefault("layout", auto)
            return W.Button(description=description, style=button_style, _dom_classes=(cls,), **kw)

        def html(value: str = "", *classes: str) -> W.HTML:
            return W.HTML(value, layout=plain, style=html_style, _dom_classes=classes)

        self.header = theme.header("Asset gallery")
        wide = W.Layout(width="210px")
        self.type_filter = W.Dropdown(description="Type", options=[("All types", "")], value="",
                                      layout=W.Layout(width="200px"), style=filter_style,
                                      _dom_classes=("cvn-filter-type",))
        self.tag_filter = W.Combobox(description="Tags", placeholder="tag, tag", ensure_option=False,
                                     continuous_update=True, layout=W.Layout(width="220px"), style=filter_text_style,
                                     _dom_classes=("cvn-filter-tags",))
        self.license_filter = W.Dropdown(description="Licence", options=[("Any licence", _ANY_KEY)], value=_ANY_KEY,
                                         layout=wide, style=filter_style, _dom_classes=("cvn-filter-license",))
        self.rights_filter = W.Dropdown(description="Rights", options=[(v[1], k) for k, v in RIGHTS.items()],
                                        value="any", layout=wide, style=filter_style,
                                        _dom_classes=("cvn-filter-rights",))
        self.search = W.Text(description="Search", placeholder="name, tag, metadata…", continuous_update=True,
                             layout=W.Layout(width="260px"), style=filter_text_style, _dom_classes=("cvn-filter-text",))
        self.sort = W.Dropdown(description="Sort", options=[(v[2], k) for k, v in SORTS.items()], value="newest",
                               layout=wide, style=filter_style, _dom_classes=("cvn-filter-sort",))
        self.reset_button = W.Button(description="Reset filters", layout=auto, style=button_style)
        self.type_filter.observe(g(lambda ch: self._filter_changed(asset_type=ch["new"] or None)), "value")
        self.license_filter.observe(g(lambda ch: self._filter_changed(license=self._license_value(ch["new"]))), "value")
        self.rights_filter.observe(g(lambda ch: self._filter_changed(rights=ch["new"])), "value")
        self.sort.observe(g(lambda ch: self._filter_changed(sort=ch["new"])), "value")
        self.tag_filter.observe(g(lambda ch: self._filter_changed(debounce=True, tags=ch["new"])), "value")
        self.search.observe(g(lambda ch: self._filter_changed(debounce=True, text=ch["new"])), "value")
        self.reset_button.on_click(g(lambda _b: self.reset_filters()))
        filters = W.HBox([self.type_filter, self.tag_filter, self.license_filter, self.rights_filter, self.search,
                          self.sort, self.reset_button], layout=plain, _dom_classes=("cvn-toolbar", "cvn-card"))

        self.selection_label = html()
        self.select_page_button = button("Select page", "cvn-btn-select-page")
        self.select_all_button = button("Select all matching", "cvn-btn-select-all")
        self.clear_button = button("Clear selection", "cvn-btn-clear")
        self.copy_button = ClipboardButton(self._copy_text, on_result=self._copy_result,
                                           on_error=lambda e: self.status.error(e, "Copy failed:"),
                                           layout=plain, _dom_classes=("cvn-btn-copy",))
        self.select_page_button.on_click(g(lambda _b: self._select_page()))
        self.select_all_button.on_click(g(lambda _b: self._select_all()))
        self.clear_button.on_click(g(lambda _b: self._clear()))
        selbar = W.HBox([self.selection_label, self.select_page_button, self.select_all_button, self.clear_button,
                         self.copy_button], layout=plain, _dom_classes=("cvn-toolbar",))

        self.grid = _GalleryGrid(layout=plain)
        self.grid.on_click(g(self._tile_clicked))
        self.prev_button = button("‹ Previous", "cvn-btn-prev")
        self.next_button = button("Next ›", "cvn-btn-next")
        self.page_label = html("", "cvn-pager-label")
        self.prev_button.on_click(g(lambda _b: self._page(-1)))
        self.next_button.on_click(g(lambda _b: self._page(+1)))
        pager = W.HBox([self.prev_button, self.page_label, self.next_button],
                       layout=W.Layout(justify_content="center", margin="10px 0 0 0"), _dom_classes=("cvn-toolbar",))
        # the status line sits under the selection bar, beside what the person just did (at the
        # bottom of a page of tiles it was below the fold)
        main = W.VBox([selbar, self.status.widget, self.grid, pager], layout=plain, _dom_classes=("cvn-main",))

        self.detail = html(detail_html(None), "cvn-detail-w")
        self.add_tags = W.Text(description="Add tags", placeholder="tag, tag", layout=auto, style=bulk_text_style,
                               _dom_classes=("cvn-bulk-add-tags",))
        self.remove_tags = W.Text(description="Remove", placeholder="tag, tag", layout=auto, style=bulk_text_style,
                                  _dom_classes=("cvn-bulk-remove-tags",))
        self.license_action = W.ToggleButtons(options=[("Keep licence", "keep"), ("Set", "set"), ("Clear", "clear")],
                                              value="keep", style={"button_width": "auto"}, layout=plain,
                                              _dom_classes=("cvn-bulk-license-action",))
        self.license_value = W.Combobox(description="Licence", placeholder="e.g. cc-by-4.0", ensure_option=False,
                                        disabled=True, layout=auto, style=bulk_text_style,
                                        _dom_classes=("cvn-bulk-license-value",))
        self.license_action.observe(lambda ch: setattr(self.license_value, "disabled", ch["new"] != "set"), "value")
        self.apply_button = button("Apply to selection", "cvn-bulk-apply", button_style="primary",
                                   layout=W.Layout(width="100%"))
        self.apply_button.on_click(g(lambda _b: self.apply_bulk_edit()))
        self.bulk_hint = html()
        bulk = W.VBox([theme.section("Bulk edit"), self.bulk_hint, self.add_tags, self.remove_tags,
                       self.license_action, self.license_value, self.apply_button], layout=plain,
                      _dom_classes=("cvn-card",))
        detail_card = W.VBox([theme.section("Details"), self.detail], layout=plain, _dom_classes=("cvn-card",))
        side = W.VBox([bulk, detail_card], layout=W.Layout(grid_gap="10px"), _dom_classes=("cvn-side",))
        body = W.HBox([main, side], layout=W.Layout(grid_gap="14px", margin="10px 0 0 0", align_items="flex-start"))
        self.widget = theme.root_box([self.header, filters, body], "cvn-gallery")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:  # a notebook displays the widget tree
        return self.widget._repr_mimebundle_(**kwargs)

    # -- rendering (called from the kernel thread or the live worker) ----------------------
    def render(self) -> None:
        m = self.model
        with m.lock:
            tiles = m.tiles()
            thumbs, status = m.page_thumbnails()
            with self.grid.hold_sync():  # one comm message for the grid, not one per trait
                self.grid.status = status
                self.grid.thumbs = thumbs
                self.grid.tiles = tiles
                self.grid.selected = m.selection.on(m.page_uids)
                self.grid.focused = m.selection.focused or ""
                self.grid.empty_text = (f"No assets match {m.filter.describe()}."
                                        if m.filter.describe() != "all assets" else
                                        "No assets registered yet. Register files with AssetRegistry.register_file "
                                        "or the ingest queue; they appear here at once.")
            self._render_counts()
            focused = m.selection.focused
            # the detail pane (a sidecar read, a preview, a sound inlined) only when the focus or the
            # registry moved on, not on every render (clicks, paging, counts)
            key = (focused, m.loaded_event_id)
            if key != self._detail_key:
                self.detail.value = detail_html(m.detail(focused) if focused else None)
                self._detail_key = key

    def _render_counts(self) -> None:
        """The header, the pager and the selection bar (what a count changes; no page query)."""
        m = self.model
        with m.lock:
            total_all = m.count_all
            shown = (f"{m.total_text} of {m.count_all_text} assets"
                     if (m.total, m.total_capped) != (total_all, m.count_all_capped) else f"{m.count_all_text} assets")
            theme.set_header(self.header, "Asset gallery", f"project {self.registry.project_id} · {shown}",
                             live=self.updater is not None and self.updater.running)
            first = m.page_index * m.page_size + 1 if m.items else 0
            last = m.page_index * m.page_size + len(m.items)
            pages = "…" if m.total_pending else f'{m.pages:,}{"+" if m.total_capped else ""}'
            self.page_label.value = (f'<span class="cvn-muted">Page</span> <b>{m.page_index + 1}</b> '
                                     f'<span class="cvn-muted">of {pages} · {first:,}–{last:,} of {m.total_text}</span>')
            self.prev_button.disabled = m.page_index == 0
            self.next_button.disabled = not m.has_next
            n = len(m.selection)
            on_page = len(self.grid.selected)
            self.selection_label.value = (
                f'<span class="cvn-selbar"><b>{n:,}</b> selected'
                + (f' <span class="cvn-muted">({on_page} on this page)</span>' if n and on_page != n else "")
                + "</span>")
            self.clear_button.disabled = n == 0
            self.copy_button.disabled = n == 0
            self.apply_button.disabled = n == 0
            self.bulk_hint.value = (f'<span class="cvn-muted">Applies to the <b>{n:,}</b> selected '
                                    f'asset{"s" if n != 1 else ""}; sidecars are rewritten.</span>' if n else
                                    '<span class="cvn-muted">Select assets in the grid first.</span>')

    def _sync_facets(self, refresh: bool = False) -> None:
        """Refresh the filter drop-downs from the registry's facets without firing filter changes.

        The recount (GROUP BYs over every asset: 0.35 s of CPU at a million, seconds under load)
        runs outside the model's lock, on this thread's own connection: a filter change or a click
        meanwhile does not wait for it."""
        started = time.monotonic()
        facets = self.model.facets(refresh=refresh)
        with self.model.lock:
            self._facets_at = time.monotonic()
            self._facets_cost = self._facets_at - started
            self._rewrite_filter_widgets(facets)

    def _facets_due(self) -> bool:
        """Stale drop-down counts are recounted every FACETS_EVERY seconds, or less often when a
        recount is slow (a million assets): the live worker's renders must not wait behind them."""
        wait = max(FACETS_EVERY, self._facets_cost / FACETS_SHARE)
        return self.model.facets_stale and time.monotonic() - self._facets_at >= wait

    def _rewrite_filter_widgets(self, facets: dict) -> None:
        self._sync.active = True
        try:
            types = [("All types", "")] + [(f"{t} ({n:,})", t) for t, n in facets["types"]]
            current = self.type_filter.value
            if current and current not in {v for _, v in types}:
                types.append((f"{current} (0)", current))
            if list(self.type_filter.options) != types:
                self.type_filter.options = types
                self.type_filter.value = current
            lic = [("Any licence", _ANY_KEY), ("No licence", _NONE_KEY)] + [(f"{x} ({n:,})", x)
                                                                             for x, n in facets["licenses"]]
            current = self.license_filter.value
            if current not in {v for _, v in lic}:
                lic.append((current, current))
            if list(self.license_filter.options) != lic:
                self.license_filter.options = lic
                self.license_filter.value = current
            tag_names = [t for t, _ in facets["tags"][:200]]
            if list(self.tag_filter.options) != tag_names:
                self.tag_filter.options = tag_names
            lic_names = [x for x, _ in facets["licenses"]]
            if list(self.license_value.options) != lic_names:
                self.license_value.options = lic_names
        finally:
            self._sync.active = False

    # -- filters ---------------------------------------------------------------------------
    @staticmethod
    def _license_value(key: str) -> str | None:
        return ANY if key == _ANY_KEY else UNLICENSED if key == _NONE_KEY else key

    def _filter_changed(self, debounce: bool = False, **changes: Any) -> None:
        if getattr(self._sync, "active", False):  # our own rewrite, not the person (other threads pass)
            return
        if debounce and self.updater is not None and self.updater.running:
            with self._pending_lock:
                self._pending_filter.update(changes)
            self.updater.request()
            return
        self.set_filter(**changes)

    def set_filter(self, **changes: Any) -> None:
        """Change the filter (``asset_type``, ``tags``, ``license``, ``text``, ``sort``) and re-render.

        With the live worker running the page shows first and the worker counts the matches
        (the pager reads "…" meanwhile): the count is off the path of the person's change."""
        live = self.updater is not None and self.updater.running
        with self.model.lock:
            self.model.set_filter(count="later" if live else "now", **changes)
            self.status.clear()
            self.render()
        if live and self.model.total_pending and self.updater is not None:
            self.updater.request(debounce=False)

    def reset_filters(self) -> None:
        self._sync.active = True
        try:
            self.type_filter.value = ""
            self.tag_filter.value = ""
            self.license_filter.value = _ANY_KEY
            self.rights_filter.value = "any"
            self.search.value = ""
            self.sort.value = "newest"
        finally:
            self._sync.active = False
        with self._pending_lock:
            self._pending_filter.clear()
        self.set_filter(asset_type=None, tags=(), license=ANY, rights="any", text="", sort="newest")

    # -- selection and paging --------------------------------------------------------------
    def _tile_clicked(self, uid: str, shift: bool, toggle: bool) -> None:
        with self.model.lock:
            self.model.click(uid, shift=shift, toggle=toggle)
            self.render()

    def _page(self, step: int) -> None:
        with self.model.lock:
            self.model.next_page() if step > 0 else self.model.prev_page()
            self.render()

    def _select_page(self) -> None:
        with self.model.lock:
            added = self.model.select_page()
            self.render()
        self.status.info(f"Selected the {len(self.model.items)} assets on this page ({added} newly).")

    def _select_all(self) -> None:
        count = "" if self.model.total_pending else f"{self.model.total_text} "
        self.status.info(f"Selecting all {count}matching assets…")
        matched = 0

        def counted(done: int, _total: int) -> None:
            nonlocal matched
            matched = done

        added = self.model.select_all_matching(progress=counted)
        self.render()
        self.status.ok(f"Selected all {matched:,} assets matching {self.model.filter.describe()} ({added:,} newly).")

    def _clear(self) -> None:
        with self.model.lock:
            self.model.clear_selection()
            self.render()
        self._reset_bulk_form()
        self.status.clear()

    def _reset_bulk_form(self) -> None:
        """Back to "change nothing": a licence choice must not linger for the next selection."""
        self.add_tags.value = ""
        self.remove_tags.value = ""
        self.license_action.value = "keep"
        self.license_value.value = ""

    # -- bulk edit and export --------------------------------------------------------------
    def apply_bulk_edit(self) -> None:
        """Apply the bulk-edit form to the selection (tags add/remove, licence set/clear)."""
        n = len(self.model.selection)
        if n > 1000:
            self.status.info(f"Updating {n:,} assets…")
        result = self.model.bulk_edit(
            self.add_tags.value, self.remove_tags.value, self.license_action.value, self.license_value.value,
            progress=(lambda done, tot: self.status.info(f"Updating… {done:,} of {tot:,}")) if n > 1000 else None)
        self._reset_bulk_form()
        self._sync_facets(refresh=True)
        self.render()
        self.status.ok(result.message() + " Their sidecars were rewritten.")

    def _copy_text(self) -> str:
        n = len(self.model.selection)
        if n == 0:
            raise ValueError("Select assets first; Copy Debug JSON copies the selection.")
        if n > COPY_LIMIT:
            raise ValueError(f"{n:,} assets are selected; Copy Debug JSON is limited to {COPY_LIMIT:,}. "
                             "Narrow the selection, or use AssetRegistry.to_dataframe() in a notebook.")
        return self.model.export_json()

    def _copy_result(self, ok: bool, detail: str) -> None:
        n = len(self.model.selection)
        size = len((self.copy_button.last_text or "").encode("utf-8"))
        if ok:
            self.status.ok(f"Copied JSON of {n:,} asset{'s' if n != 1 else ''} ({human_bytes(size)}, UTF-8) "
                           "to the clipboard.")
        else:
            self.status.warn("The browser blocked the clipboard: the JSON is shown under the Copy button; "
                             "press Ctrl+C to copy it.")

    # -- live updates ----------------------------------------------------------------------
    def start_live(self) -> None:
        """Follow changes from every process (a worker thread; see :mod:`comfyvn_widgets.live`)."""
        if self.updater is not None and self.updater.running:
            return
        self._start_updater()
        self.render()

    def _start_updater(self) -> LiveUpdater:
        self.updater = LiveUpdater(self.registry.db, self._on_live, topics=ASSET_TOPICS, tick=self._tick,
                                   tick_wanted=self._has_pending_thumbs, on_error=self._live_error,
                                   name="comfyvn-gallery-live")
        return self.updater.start(after_id=self.model.loaded_event_id)

    def _on_live(self, batch: list[dict]) -> None:
        with self._pending_lock:
            pending, self._pending_filter = self._pending_filter, {}
        if pending or batch:
            with self.model.lock:
                if pending:  # typed filters: the page first, its count right after
                    self.model.set_filter(count="later", **pending)
                if batch:
                    self.model.apply_events(batch)
                self.render()
        if self.model.count_total():  # a count left by a filter change (no page query, no tiles)
            self._render_counts()
        # the drop-down counts follow at most every FACETS_EVERY seconds (they cost a scan of every asset)
        if self._facets_due():
            self._sync_facets(refresh=True)
            self._render_counts()  # the header's exact count of every asset comes with them

    def _has_pending_thumbs(self) -> bool:
        return "pending" in self.grid.status.values() or self.model.facets_stale

    def _tick(self) -> None:
        if self._facets_due():
            self._sync_facets(refresh=True)
            self._render_counts()
        with self.model.lock:
            thumbs, status = self.model.page_thumbnails()
            if status != self.grid.status or thumbs != self.grid.thumbs:
                with self.grid.hold_sync():
                    self.grid.status = status
                    self.grid.thumbs = thumbs
                focused = self.model.selection.focused
                if focused:
                    self.detail.value = detail_html(self.model.detail(focused))

    def _live_error(self, exc: BaseException) -> None:
        self.status.error(exc, "Live update failed:")
