"""What the gallery does on a render, a filter change and a page turn (issue 19: a million assets):
no work twice, nothing slow held in front of the person's change."""

from __future__ import annotations

import threading

import ipywidgets as W
import pytest
from comfyvn_widgets.gallery import AssetGallery
from comfyvn_widgets.live import LiveUpdater
from sqltrace import traced
from widget_helpers import wait_until


@pytest.fixture
def gallery(registry, seeded):
    g = AssetGallery(registry, page_size=4, live=False)
    yield g
    g.close()


def test_the_widget_tree_shares_layouts_and_styles(registry, seeded, monkeypatch):
    made: list[str] = []
    init = W.Widget.__init__

    def counting(self, **kwargs):
        made.append(type(self).__name__)
        init(self, **kwargs)

    monkeypatch.setattr(W.Widget, "__init__", counting)
    g = AssetGallery(registry, page_size=4, live=False)
    g.close()
    # every Layout and style is a widget of its own (a comm, its state serialised when it opens):
    # one per widget made the tree 103 widgets, 38 of them Layouts
    assert len(made) <= 70, sorted(made)
    assert made.count("Layout") <= 16


def test_the_first_render_reads_each_thumbnail_once(registry, seeded):
    with traced(registry.db) as statements:
        g = AssetGallery(registry, page_size=4, live=True)
    try:
        thumbnail_reads = [s for s in statements if "FROM thumbnails" in s]
        assert len(thumbnail_reads) == len(g.grid.tiles) == 4  # one render, not one before and one after the worker
        assert "live" in g.header.value
    finally:
        g.close()


def test_a_render_sends_the_grid_one_message(gallery, monkeypatch):
    sent: list[set[str]] = []
    monkeypatch.setattr(gallery.grid, "_send", lambda msg, buffers=None: sent.append(set(msg["state"])))
    gallery.set_filter(asset_type="characters")
    assert len(sent) == 1 and {"tiles", "thumbs", "status", "empty_text"} <= sent[0]


def test_paging_does_not_count_the_matches_again(gallery):
    assert gallery.model.total == 7
    with traced(gallery.registry.db) as statements:
        gallery.next_button.click()
        gallery.prev_button.click()
    assert not [s for s in statements if "COUNT(" in s]
    assert gallery.model.total == 7 and "of 2" in gallery.page_label.value


def test_the_detail_pane_is_read_again_only_when_the_focus_or_the_registry_changes(gallery, monkeypatch):
    reads: list[str] = []
    read_sidecar = gallery.registry.read_sidecar

    def counting(uid):
        reads.append(uid)
        return read_sidecar(uid)

    monkeypatch.setattr(gallery.registry, "read_sidecar", counting)
    uid = gallery.grid.tiles[0]["uid"]
    gallery.grid.click(uid)
    assert reads == [uid]
    gallery.select_page_button.click()
    gallery.next_button.click()
    gallery.prev_button.click()
    assert reads == [uid]  # renders without a change: the pane is not rebuilt
    gallery.add_tags.value = "reviewed"
    gallery.apply_button.click()  # the focused asset changed: read again, the pane shows it
    assert reads[-1] == uid and len(reads) == 2
    assert "reviewed" in gallery.detail.value


def test_a_filter_change_does_not_wait_for_the_drop_down_recount(registry, seeded, monkeypatch):
    g = AssetGallery(registry, page_size=4, live=False)
    recounting, release = threading.Event(), threading.Event()
    facets = registry.facets

    def slow_facets():
        recounting.set()
        release.wait(10)  # a million assets under load: seconds
        return facets()

    monkeypatch.setattr(registry, "facets", slow_facets)
    recount = threading.Thread(target=g._sync_facets, kwargs={"refresh": True})
    try:
        recount.start()
        assert recounting.wait(5)
        change = threading.Thread(target=g.set_filter, kwargs={"asset_type": "characters"})
        change.start()
        change.join(5)
        assert not change.is_alive(), "the filter change waited for the recount"
        assert {t["name"] for t in g.grid.tiles} == {"aoi.png", "ren.png"}
    finally:
        release.set()
        recount.join(10)
        g.close()
    assert "characters (2)" in [label for label, _ in g.type_filter.options]


def test_a_live_filter_change_shows_the_page_then_its_count(registry, seeded, monkeypatch):
    g = AssetGallery(registry, page_size=2, live=True)
    counting, release = threading.Event(), threading.Event()
    count_assets = registry.count_assets

    def slow_count(*args, **kwargs):
        counting.set()
        release.wait(10)
        return count_assets(*args, **kwargs)

    try:
        wait_until(lambda: not g.model.facets_stale, what="the drop-downs")
        monkeypatch.setattr(registry, "count_assets", slow_count)
        g.set_filter(asset_type="backgrounds")  # 3 matches: more than a page, so a count is needed
        assert [t["name"] for t in g.grid.tiles] == ["station.png", "rooftop.png"]
        assert g.model.total_pending and "of …" in g.page_label.value
        assert not g.next_button.disabled  # the page's cursor says there is more
        assert counting.wait(5)  # the worker counts, after the page
        release.set()
        wait_until(lambda: "1–2 of 3" in g.page_label.value, what="the count")
        assert g.model.total == 3 and not g.model.total_pending and "3 of 7 assets" in g.header.value
    finally:
        release.set()
        g.close()


def test_a_count_for_a_filter_changed_meanwhile_is_dropped(registry, seeded):
    g = AssetGallery(registry, page_size=2, live=False)
    try:
        g.model.set_filter(count="later", asset_type="backgrounds")
        assert g.model.total_pending
        g.model.set_filter(count="later", asset_type="props")  # 2 matches: the page is all of them
        assert not g.model.total_pending and g.model.total == 2
        assert not g.model.count_total()
        g.model.set_filter(count="later", asset_type="backgrounds")
        assert g.model.count_total() and g.model.total == 3
        with pytest.raises(ValueError, match="count must be"):
            g.model.load("sometimes")
    finally:
        g.close()


def test_an_urgent_request_skips_the_debounce(registry):
    calls: list[list[dict]] = []
    updater = LiveUpdater(registry.db, calls.append, debounce=30.0).start()
    try:
        updater.request(debounce=False)
        wait_until(lambda: calls == [[]], timeout=5, what="the refresh, without the 30 s debounce")
    finally:
        updater.stop()
