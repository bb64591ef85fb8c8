"""The asset gallery's logic, without widgets: filters, paging, selection, bulk edit, export.

``GalleryModel`` reads one page at a time through :meth:`AssetRegistry.query_assets` (keyset
cursor for next/previous, offset for jumps, ``with_total`` for the pager), so 100,000 assets
cost one indexed page query.  Thumbnails are read only for the visible page, from
:meth:`AssetRegistry.resolve_thumbnail_path`, and cached by file modification time.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from comfyvn.fsutil import UnsafePathError
from comfyvn.hooks.events import utc_timestamp
from comfyvn.studio.core.asset_registry import AssetRegistry, AssetRegistryError, normalise_tags

from .library_model import hash_query
from .selection import SelectionModel

PAGE_SIZE = 48
TOTAL_CAP = 10_000  # the pager counts matches up to this ("10,000+"): no count of a million rows per change
THUMB_SIZE = 256
DETAIL_SIZE = 512
BULK_BATCH = 500
AUDIO_PREVIEW_BYTES = 8 * 1024 * 1024  # larger sounds are not inlined into the page
AUDIO_MIME = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg",
              ".flac": "audio/flac", ".m4a": "audio/mp4", ".opus": "audio/ogg"}
SORTS: dict[str, tuple[str, bool, str]] = {
    "newest": ("created_at", True, "Newest first"),
    "oldest": ("created_at", False, "Oldest first"),
    "updated": ("updated_at", True, "Recently changed"),
    "name": ("path", False, "Path A-Z"),
    "largest": ("bytes", True, "Largest first"),
    "type": ("type", False, "Type"),
}
ANY = None  # licence filter: any licence
UNLICENSED = ""  # licence filter: assets without a licence
# the "rights" filter beside the licence one: key -> (AssetRegistry.query_assets rights filters, label)
RIGHTS: dict[str, tuple[dict[str, Any], str]] = {
    "any": ({}, "Any rights"),
    "sell": ({"commercial_use": "sell"}, "May be sold"),
    "commercial": ({"commercial_use": "image"}, "Some commercial use"),
    "no-credit": ({"credit_required": False}, "No credit needed"),
    "derivatives": ({"derivatives": True}, "Derivatives allowed"),
    "unknown": ({"license_known": False}, "Rights unknown"),
}
ASSET_TOPICS = ["on_asset_registered", "on_asset_meta_updated", "on_asset_removed", "on_asset_sidecar_written"]


def rights_summary(terms: dict[str, Any] | None) -> str:
    """One line for an asset's ``license_terms`` ("not stated" where a term is None)."""
    terms = terms or {}

    def yes_no(value: Any) -> str:
        return "not stated" if value is None else ("yes" if value else "no")

    parts = [f"commercial use: {terms.get('commercial_use') or 'not stated'}",
             f"credit required: {yes_no(terms.get('credit_required'))}",
             f"derivatives: {yes_no(terms.get('derivatives_allowed'))}"]
    if terms.get("base_model_license"):
        parts.append(f"base model: {terms['base_model_license']}")
    if terms.get("source"):
        parts.append(f"from {terms['source']}")
    return " · ".join(parts)


@dataclass(frozen=True)
class GalleryFilter:
    """What the grid shows.  ``license=None`` is any licence, ``""`` means unlicensed."""

    asset_type: str | None = None
    tags: tuple[str, ...] = ()
    license: str | None = ANY
    text: str = ""
    sort: str = "newest"
    rights: str = "any"

    def query_kwargs(self) -> dict[str, Any]:
        if self.sort not in SORTS:
            raise ValueError(f"unknown sort {self.sort!r}; choose one of {', '.join(SORTS)}")
        if self.rights not in RIGHTS:
            raise ValueError(f"unknown rights filter {self.rights!r}; choose one of {', '.join(RIGHTS)}")
        col, desc, _ = SORTS[self.sort]
        return {"asset_type": self.asset_type or None, "tags": list(self.tags) or None, "tags_mode": "all",
                "license": self.license, "text": self.text.strip() or None, "sort": col, "descending": desc,
                **RIGHTS[self.rights][0]}

    def describe(self) -> str:
        parts = []
        if self.asset_type:
            parts.append(f"type {self.asset_type}")
        if self.tags:
            parts.append("tags " + " + ".join(self.tags))
        if self.license is not None:
            parts.append(f"licence {self.license}" if self.license else "no licence")
        if self.rights != "any":
            parts.append(RIGHTS[self.rights][1].lower())
        if self.text.strip():
            parts.append(f'"{self.text.strip()}"')
        return ", ".join(parts) or "all assets"


@dataclass
class BulkResult:
    updated: int
    requested: int
    uids: list[str] = field(default_factory=list)

    def message(self) -> str:
        return f"Updated {self.updated} of {self.requested} selected asset{'s' if self.requested != 1 else ''}."


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def waveform_svg(doc: dict, width: int = 256, height: int = 256) -> bytes:
    """A waveform preview (bars of the peak amplitudes) as a small SVG."""
    peaks = [float(p) for p in doc.get("peaks", [])][:512] or [0.0]
    step = max(1, math.ceil(len(peaks) / 96))
    bars = [max(peaks[i:i + step]) for i in range(0, len(peaks), step)]
    bw = width / len(bars)
    mid = height / 2
    rects = "".join(
        f'<rect x="{i * bw + bw * 0.15:.2f}" y="{mid - max(1.0, p * mid * 0.9):.2f}" width="{bw * 0.7:.2f}" '
        f'height="{max(2.0, p * height * 0.9):.2f}" rx="1"/>' for i, p in enumerate(bars))
    secs = doc.get("duration_s")
    label = f'<text x="8" y="{height - 10}" font-size="16" fill="#475569" font-family="sans-serif">' \
            f'{float(secs):.1f} s</text>' if isinstance(secs, int | float) else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><rect width="100%" height="100%" fill="#eef2ff"/>'
            f'<g fill="#6366f1">{rects}</g>{label}</svg>').encode()


class ThumbnailCache:
    """Data URIs of thumbnails keyed by (uid, size), revalidated by file mtime; bounded LRU."""

    def __init__(self, registry: AssetRegistry, capacity: int = 600) -> None:
        self.registry = registry
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], tuple[int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, rec: dict, size: int = THUMB_SIZE) -> tuple[str, str | None]:
        """``(status, data_uri)``: status is ready, pending, failed or none (no preview for this type)."""
        kind = (rec.get("preview") or {}).get("kind")
        if kind not in ("image", "audio"):
            return "none", None
        key_size = "waveform" if kind == "audio" else str(size)
        path = self.registry.resolve_thumbnail_path(rec["uid"], key_size)
        if path is None and kind == "image" and size != THUMB_SIZE:
            return self.get(rec, THUMB_SIZE)
        if path is None:
            info = self.registry.thumbnail_status(rec["uid"]).get(key_size)
            if info and info["status"] == "failed":
                return "failed", None
            return ("pending", None) if info else ("none", None)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return "pending", None
        key = (rec["uid"], key_size)
        with self._lock:
            hit = self._items.get(key)
            if hit and hit[0] == mtime:
                self._items.move_to_end(key)
                return "ready", hit[1]
        data = path.read_bytes()
        if kind == "audio":
            uri = _data_uri("image/svg+xml", waveform_svg(json.loads(data)))
        else:
            uri = _data_uri("image/png", data)
        with self._lock:
            self._items[key] = (mtime, uri)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return "ready", uri


class GalleryModel:
    """Filter state, the current page, paging, the selection and the operations on it."""

    def __init__(self, registry: AssetRegistry, page_size: int = PAGE_SIZE) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        self.registry = registry
        self.page_size = page_size
        self.filter = GalleryFilter()
        self.page_index = 0
        self.items: list[dict] = []
        self.total = 0
        self.total_capped = False  # more than TOTAL_CAP assets match: ``total`` is the cap
        self.total_pending = False  # not counted yet (:meth:`count_total` follows): ``total`` is a lower bound
        self._count_kwargs: dict[str, Any] = {}  # the filters of the loaded page, for count_total
        self.selection = SelectionModel()
        self.thumbs = ThumbnailCache(registry)
        self._cursors: dict[int, str | None] = {0: None}
        self._facets: dict[str, list[tuple[str, int]]] | None = None
        self.facets_stale = False
        self.count_all = 0  # assets of the project, whatever the filter (the header's "of N")
        self.count_all_capped = False  # count_all is TOTAL_CAP and more assets exist (until the facets count them)
        self._count_all_at: int | None = None  # the event id count_all was counted at
        self.loaded_event_id = 0
        self.lock = threading.RLock()

    # -- loading ---------------------------------------------------------------------------
    @property
    def pages(self) -> int:
        """Pages of the current result (a lower bound when the total is capped)."""
        return max(1, math.ceil(self.total / self.page_size))

    @property
    def total_text(self) -> str:
        """The total as the pager shows it: ``"10,000+"`` when more assets match than are counted,
        ``"…"`` while the count is still to come (:meth:`count_total`)."""
        if self.total_pending:
            return "…"
        return f"{self.total:,}+" if self.total_capped else f"{self.total:,}"

    @property
    def has_next(self) -> bool:
        if self.total_pending or self.total_capped:
            return bool(self._cursors.get(self.page_index + 1))
        return self.page_index + 1 < self.pages

    @property
    def page_uids(self) -> list[str]:
        return [r["uid"] for r in self.items]

    def _page(self, kwargs: dict[str, Any], cursor: str | None, with_total: bool = True) -> dict:
        if cursor is not None:
            return self.registry.query_assets(limit=self.page_size, cursor=cursor, with_total=with_total,
                                             total_cap=TOTAL_CAP, **kwargs)
        return self.registry.query_assets(limit=self.page_size, offset=self.page_index * self.page_size,
                                         with_total=with_total, total_cap=TOTAL_CAP, **kwargs)

    def load(self, count: str = "now") -> list[dict]:
        """(Re)load the current page; clamps the page index when the result shrank.

        ``count``: ``"now"`` counts the matches with the page; ``"later"`` leaves them to
        :meth:`count_total` (a live worker calls it: the page shows without waiting for a count
        of up to TOTAL_CAP rows, 15 ms of CPU for a type + tag + licence filter at a million);
        ``"keep"`` keeps the total counted for this filter (paging: the filter did not change)."""
        if count not in ("now", "later", "keep"):
            raise ValueError("count must be now, later or keep")
        with self.lock:
            from comfyvn.hooks import get_hook_bus

            self.loaded_event_id = get_hook_bus(self.registry.db).last_id()
            kwargs = hash_query(self.registry, self.filter.query_kwargs())  # a pasted hash finds its asset
            cursor = self._cursors.get(self.page_index) if self.page_index else None
            page = self._page(kwargs, cursor, with_total=count == "now")
            if not page["items"] and self.page_index > 0:  # the page emptied (deletions elsewhere)
                self.total, self.total_capped = self._count(kwargs)
                self.total_pending = False
                self.page_index = min(self.page_index, self.pages - 1)
                self._cursors = {0: None}
                page = self._page(kwargs, None, with_total=count == "now")
            self.items = page["items"]
            self._cursors[self.page_index + 1] = page["next_cursor"]
            self._count_kwargs = {k: v for k, v in kwargs.items() if k not in ("sort", "descending")}
            if "total" in page:
                self.total, self.total_capped, self.total_pending = page["total"], page["total_capped"], False
            elif not page["next_cursor"] and cursor is None and self.page_index == 0:  # all of it is on this page
                self.total, self.total_capped, self.total_pending = len(self.items), False, False
            elif count == "later" or self.total_pending:  # a lower bound until count_total
                self.total = self.page_index * self.page_size + len(self.items) + bool(page["next_cursor"])
                self.total_capped, self.total_pending = False, True
            if self.filter == GalleryFilter(sort=self.filter.sort) and not self.total_pending:
                self._set_count_all(self.total, self.total_capped)  # every asset: the page's total is the count
            else:
                self.recount_all()
            return self.items

    def _count(self, kwargs: dict[str, Any]) -> tuple[int, bool]:
        return self.registry.count_assets(TOTAL_CAP, **{k: v for k, v in kwargs.items()
                                                         if k not in ("sort", "descending")})

    def count_total(self) -> bool:
        """Count the matches of a page loaded with ``count="later"`` (the query runs outside the
        lock, so the person's next filter change does not wait for it); True when the total changed
        (False when nothing was pending or the filter changed meanwhile: its own count follows)."""
        with self.lock:
            if not self.total_pending:
                return False
            flt, kwargs = self.filter, dict(self._count_kwargs)
        total, capped = self.registry.count_assets(TOTAL_CAP, **kwargs)
        with self.lock:
            if not self.total_pending or self.filter != flt:
                return False
            self.total, self.total_capped, self.total_pending = total, capped, False
            if self.filter == GalleryFilter(sort=self.filter.sort):
                self._set_count_all(total, capped)
            return True

    @property
    def count_all_text(self) -> str:
        return f"{self.count_all:,}+" if self.count_all_capped else f"{self.count_all:,}"

    def _set_count_all(self, n: int, capped: bool) -> None:
        if capped and not self.count_all_capped and self.count_all > n:
            return  # an exact count from the facets beats "10,000+" until the facets count again
        self.count_all, self.count_all_capped, self._count_all_at = n, capped, self.loaded_event_id

    def recount_all(self) -> int:
        """The header's "of N" (every asset of the project): counted up to TOTAL_CAP (an exact
        count of a million rows is 40-400 ms, too slow for every render), again only after a
        change (the event log's last id moved); :meth:`facets` sets the exact figure."""
        if self._count_all_at != self.loaded_event_id:
            self._set_count_all(*self.registry.count_assets(TOTAL_CAP))
        return self.count_all

    def set_filter(self, count: str = "now", **changes: Any) -> list[dict]:
        """Change filter fields (``asset_type``, ``tags``, ``license``, ``rights``, ``text``, ``sort``) and go
        to page 1 (``count``: see :meth:`load`)."""
        with self.lock:
            if "tags" in changes:
                changes["tags"] = tuple(normalise_tags(changes["tags"]))
            if "asset_type" in changes and not changes["asset_type"]:
                changes["asset_type"] = None
            if "text" in changes and changes["text"] is None:
                changes["text"] = ""
            new = replace(self.filter, **changes)
            new.query_kwargs()  # validates the sort
            if new != self.filter:
                self.filter = new
                self.page_index = 0
                self._cursors = {0: None}
            return self.load(count)

    def goto_page(self, index: int) -> list[dict]:
        with self.lock:
            self.page_index = max(0, min(int(index), self.pages - 1))
            return self.load()

    def next_page(self) -> list[dict]:
        """The next page (the filter is the same: its total is not counted again)."""
        with self.lock:
            if self.has_next:
                self.page_index += 1
            return self.load("keep")

    def prev_page(self) -> list[dict]:
        with self.lock:
            self.page_index = max(0, self.page_index - 1)
            return self.load("keep")

    def apply_events(self, envelopes: Iterable[dict]) -> dict[str, list[str]]:
        """React to hook envelopes from any process: reload the page, drop removed assets from the selection."""
        removed: list[str] = []
        changed: list[str] = []
        for env in envelopes:
            data = env.get("data") or {}
            if data.get("project_id") not in (None, self.registry.project_id):
                continue
            uid = data.get("uid")
            if env.get("event") == "on_asset_removed" and uid:
                removed.append(uid)
            elif uid:
                changed.append(uid)
        with self.lock:
            if removed:
                self.selection.deselect_many(removed)
                if self.selection.focused in removed:
                    self.selection.focused = None
            self.facets_stale = True  # recounted lazily: GROUP BYs over every asset are the slow part
            self.load()
        return {"removed": removed, "changed": changed}

    def facets(self, refresh: bool = False) -> dict[str, list[tuple[str, int]]]:
        """Types, licences and tags with counts (cached; ``refresh`` recounts)."""
        if self._facets is None or refresh:
            from comfyvn.hooks import get_hook_bus

            at = get_hook_bus(self.registry.db).last_id()
            self._facets = self.registry.facets()
            self.facets_stale = False
            with self.lock:  # every asset has one type: their counts add up to the exact count
                self.count_all, self.count_all_capped = sum(n for _, n in self._facets["types"]), False
                self._count_all_at = at
        return self._facets

    # -- tiles -----------------------------------------------------------------------------
    def tile(self, rec: dict) -> dict:
        """What one grid tile shows (no image bytes: see :meth:`page_thumbnails`)."""
        meta = rec.get("meta") or {}
        title = meta.get("title") if isinstance(meta.get("title"), str) else None
        name = PurePosixPath(rec["path"]).name
        return {"uid": rec["uid"], "name": name, "title": title or name, "type": rec["type"],
                "license": rec.get("license"), "tags": list(rec.get("tags") or []), "bytes": rec.get("bytes", 0),
                "ext": PurePosixPath(name).suffix.lstrip(".").upper()[:12] or "FILE",  # SAFETENSORS whole
                "kind": (rec.get("preview") or {}).get("kind")}

    def tiles(self) -> list[dict]:
        return [self.tile(r) for r in self.items]

    def page_thumbnails(self) -> tuple[dict[str, str], dict[str, str]]:
        """``(data_uris, statuses)`` for the visible page only."""
        uris: dict[str, str] = {}
        status: dict[str, str] = {}
        for rec in self.items:
            st, uri = self.thumbs.get(rec)
            status[rec["uid"]] = st
            if uri:
                uris[rec["uid"]] = uri
        return uris, status

    # -- selection -------------------------------------------------------------------------
    def click(self, uid: str, *, shift: bool = False, toggle: bool = False) -> None:
        with self.lock:
            self.selection.click(uid, self.page_uids, shift=shift, toggle=toggle)

    def select_page(self) -> int:
        with self.lock:
            return self.selection.select_many(self.page_uids)

    def deselect_page(self) -> int:
        with self.lock:
            return self.selection.deselect_many(self.page_uids)

    def select_all_matching(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Select every asset matching the filter (all pages); returns how many were added.

        One query reads the matching ids only (no rows decoded): 200,000 ids in well under a second."""
        with self.lock:
            kwargs = self.filter.query_kwargs()
        uids = self.registry.matching_uids(**kwargs)
        if progress:
            progress(len(uids), len(uids))
        with self.lock:
            return self.selection.select_many(uids)

    def clear_selection(self) -> None:
        with self.lock:
            self.selection.clear()

    # -- operations on the selection -------------------------------------------------------
    def bulk_edit(self, add_tags: Iterable[str] | str | None = None, remove_tags: Iterable[str] | str | None = None,
                  license_action: str = "keep", license_value: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> BulkResult:
        """Add/remove tags and set/clear the licence of the selection via ``bulk_update_tags``.

        ``license_action`` is ``keep``, ``set`` (to ``license_value``) or ``clear``.  Large selections
        are written in batches of 500 (one transaction each).
        """
        add, remove = normalise_tags(add_tags), normalise_tags(remove_tags)
        if license_action not in ("keep", "set", "clear"):
            raise ValueError("license_action must be keep, set or clear")
        kwargs: dict[str, Any] = {"add_tags": add, "remove_tags": remove}
        if license_action == "set":
            value = (license_value or "").strip()
            if not value:
                raise ValueError("Enter the licence to set (for example cc-by-4.0), or choose 'clear'.")
            kwargs["license_tag"] = value
        elif license_action == "clear":
            kwargs["license_tag"] = None
        if overlap := sorted(set(add) & set(remove)):
            raise ValueError(f"A tag cannot be both added and removed: {', '.join(overlap)}")
        if not add and not remove and license_action == "keep":
            raise ValueError("Nothing to change: enter tags to add or remove, or choose a licence action.")
        uids = self.selection.selected
        if not uids:
            raise ValueError("Select at least one asset first (click a tile; Shift-click selects a range).")
        updated: list[str] = []
        for start in range(0, len(uids), BULK_BATCH):
            chunk = uids[start:start + BULK_BATCH]
            for rec in self.registry.bulk_update_tags(chunk, **kwargs):
                updated.append(rec["uid"])
            if progress:
                progress(min(start + BULK_BATCH, len(uids)), len(uids))
        with self.lock:
            self.facets_stale = True
            self.load()
        return BulkResult(updated=len(updated), requested=len(uids), uids=updated)

    def selected_records(self, limit: int | None = None) -> list[dict]:
        out = []
        for uid in self.selection.selected[:limit]:
            rec = self.registry.get_asset(uid)
            if rec is not None:
                out.append(rec)
        return out

    def export_selection(self, limit: int | None = None) -> dict:
        """The selection as a JSON-ready document: each asset's sidecar fields, nested metadata intact."""
        assets = []
        for rec in self.selected_records(limit):
            doc = self.registry.sidecar_document(rec)
            doc["updated_at"] = utc_timestamp(rec["updated_at"])
            doc["abs_path"] = rec["abs_path"]
            doc["sidecar"] = rec["sidecar"]
            assets.append(doc)
        return {"project_id": self.registry.project_id, "exported_at": utc_timestamp(time.time()),
                "filter": self.filter.describe(), "count": len(assets), "assets": assets}

    def export_json(self, limit: int | None = None) -> str:
        """UTF-8-safe JSON text of :meth:`export_selection` (non-ASCII kept as is)."""
        return json.dumps(self.export_selection(limit), ensure_ascii=False, indent=2)

    # -- detail ----------------------------------------------------------------------------
    def detail(self, uid: str) -> dict:
        """Everything the detail pane shows for one asset (sidecar errors become a message)."""
        rec = self.registry.get_asset(uid)
        if rec is None:
            return {"uid": uid, "missing": True}
        try:
            sidecar, sidecar_error = self.registry.read_sidecar(uid), None
        except (AssetRegistryError, UnsafePathError) as exc:  # missing, corrupt, or a symlink (refused)
            sidecar, sidecar_error = None, str(exc)
        status, uri = self.thumbs.get(rec, DETAIL_SIZE)
        return {"uid": uid, "missing": False, "record": rec, "sidecar": sidecar, "sidecar_error": sidecar_error,
                "thumbnail": uri, "thumbnail_status": status, "audio": self._audio_preview(rec)}

    def _audio_preview(self, rec: dict) -> dict | None:
        """``{"uri"}`` (a data URI the detail pane's player plays) or ``{"note"}`` for a sound file."""
        mime = AUDIO_MIME.get(PurePosixPath(rec["path"]).suffix.lower())
        if mime is None:
            return None
        if (rec.get("bytes") or 0) > AUDIO_PREVIEW_BYTES:
            return {"note": f"too large to play here (over {AUDIO_PREVIEW_BYTES // (1024 * 1024)} MiB)"}
        try:
            data = Path(rec["abs_path"]).read_bytes()
        except OSError as exc:
            return {"note": f"cannot be read: {exc}"}
        return {"uri": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"}
