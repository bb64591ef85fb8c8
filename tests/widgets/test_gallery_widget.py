"""AssetGallery's widget tree: clicks, filters, bulk edit, copy, errors, live refresh from another process."""

from __future__ import annotations

import json

import pytest
from comfyvn_widgets.gallery import AssetGallery
from widget_helpers import from_browser, register_in_subprocess, run_in_subprocess, wait_until


@pytest.fixture
def gallery(registry, seeded):
    g = AssetGallery(registry, page_size=4, live=False)
    yield g
    g.close()


def test_grid_shows_the_page_with_thumbnails_and_pager(gallery, seeded):
    assert len(gallery.grid.tiles) == 4
    assert all(gallery.grid.thumbs[t["uid"]].startswith("data:image/png;base64,") for t in gallery.grid.tiles)
    assert gallery.grid.tiles[0]["title"] == "Lettre d'amour ✉"
    assert "of 2" in gallery.page_label.value and gallery.prev_button.disabled
    gallery.next_button.click()
    assert len(gallery.grid.tiles) == 3 and gallery.next_button.disabled


def test_filter_widgets_narrow_the_grid_and_reset(gallery):
    gallery.type_filter.value = "characters"
    assert {t["name"] for t in gallery.grid.tiles} == {"aoi.png", "ren.png"}
    assert "2 of 7 assets" in gallery.header.value
    gallery.license_filter.value = "__none__"
    assert [t["name"] for t in gallery.grid.tiles] == ["ren.png"]
    gallery.search.value = "nothing-like-this"
    assert gallery.grid.tiles == [] and "No assets match" in gallery.grid.empty_text
    gallery.reset_button.click()
    assert len(gallery.grid.tiles) == 4 and gallery.model.total == 7


def test_shift_click_selects_a_range_and_shows_the_detail(gallery):
    uids = [t["uid"] for t in gallery.grid.tiles]
    from_browser(gallery.grid, {"kind": "click", "uid": uids[0], "shift": False, "toggle": False})
    from_browser(gallery.grid, {"kind": "click", "uid": uids[2], "shift": True, "toggle": False})
    assert gallery.grid.selected == uids[:3]
    assert "<b>3</b> selected" in gallery.selection_label.value
    assert gallery.grid.focused == uids[2]
    assert "Sidecar" in gallery.detail.value and uids[2] in gallery.detail.value
    from_browser(gallery.grid, {"kind": "click", "uid": uids[1], "shift": False, "toggle": True})
    assert gallery.grid.selected == [uids[0], uids[2]]


def test_selection_survives_paging(gallery):
    gallery.select_page_button.click()
    first = list(gallery.grid.selected)
    gallery.next_button.click()
    assert gallery.grid.selected == []
    assert "<b>4</b> selected" in gallery.selection_label.value
    gallery.prev_button.click()
    assert gallery.grid.selected == first


def test_bulk_edit_form_writes_sidecars_and_reports(gallery, registry):
    uids = [t["uid"] for t in gallery.grid.tiles][:2]
    gallery.grid.click(uids[0])
    gallery.grid.click(uids[1], toggle=True)
    gallery.add_tags.value = "approved"
    gallery.license_action.value = "set"
    gallery.license_value.value = "cc0"
    gallery.apply_button.click()
    assert gallery.status.kind == "ok" and "Updated 2 of 2" in gallery.status.text
    for uid in uids:
        side = json.loads(registry.sidecar_path_for(registry.get_asset(uid)["path"]).read_text("utf-8"))
        assert "approved" in side["tags"] and side["license"] == "cc0"
    assert gallery.add_tags.value == ""
    assert "approved" in gallery.tag_filter.options
    # the licence choice does not linger for the next selection (after Apply, and after Clear)
    assert gallery.license_action.value == "keep" and gallery.license_value.value == ""
    assert gallery.license_value.disabled
    gallery.grid.click(uids[0])
    gallery.license_action.value = "clear"
    gallery.clear_button.click()
    assert gallery.license_action.value == "keep" and not gallery.model.selection


def test_errors_are_readable_messages_not_tracebacks(gallery):
    gallery.add_tags.value = "x"
    gallery.apply_button.click()  # nothing selected
    assert gallery.status.kind == "error"
    assert "Select at least one asset" in gallery.status.text
    assert "Traceback" not in gallery.status.widget.value


def test_copy_debug_json_sends_the_selection_as_utf8_json(gallery, registry):
    sent = []
    gallery.copy_button.send = lambda content, buffers=None: sent.append(content)
    gallery.grid.click(gallery.grid.tiles[0]["uid"])
    from_browser(gallery.copy_button, {"kind": "copy"})
    assert sent and sent[0]["kind"] == "write"
    doc = json.loads(sent[0]["text"])
    assert doc["assets"][0]["meta"]["note"]["ü"] == [1, 2]
    from_browser(gallery.copy_button, {"kind": "result", "ok": True, "how": "clipboard"})
    assert gallery.status.kind == "ok" and "Copied JSON of 1 asset" in gallery.status.text
    from_browser(gallery.copy_button, {"kind": "result", "ok": False, "why": "denied"})
    assert gallery.status.kind == "warn" and "Ctrl+C" in gallery.status.text


def test_live_refresh_shows_an_asset_registered_by_another_process(registry, seeded, subprocess_env,
                                                                   png_factory):
    g = AssetGallery(registry, page_size=4, live=True)
    try:
        keep = [t["uid"] for t in g.grid.tiles][1:3]
        g.grid.click(keep[0])
        g.grid.click(keep[1], toggle=True)
        new_uid = register_in_subprocess(subprocess_env, png_factory(100), "backgrounds",
                                         "backgrounds/from_elsewhere.png", tags="remote")
        wait_until(lambda: g.grid.tiles and g.grid.tiles[0]["uid"] == new_uid, what="the new tile")
        assert g.model.total == 8 and "8 assets" in g.header.value
        assert set(g.model.selection.selected) == set(keep)  # the person's selection is kept
        assert set(keep) <= set(g.grid.selected)
        wait_until(lambda: new_uid in g.grid.thumbs, what="its thumbnail")
        wait_until(lambda: "remote" in g.tag_filter.options, what="the tag drop-down to learn the new tag")
        assert "live" in g.header.value
    finally:
        g.close()


def test_live_refresh_drops_assets_removed_elsewhere_from_the_selection(registry, seeded, subprocess_env):
    g = AssetGallery(registry, page_size=4, live=True)
    try:
        victim, other = g.grid.tiles[0]["uid"], g.grid.tiles[1]["uid"]
        g.grid.click(victim)
        g.grid.click(other, toggle=True)
        run_in_subprocess(subprocess_env, f"""
            from comfyvn.studio.core.asset_registry import AssetRegistry
            AssetRegistry().remove_asset({victim!r})
        """)
        wait_until(lambda: victim not in [t["uid"] for t in g.grid.tiles], what="the removed tile to vanish")
        assert g.model.selection.selected == [other]
        assert g.model.total == 6
    finally:
        g.close()


def test_live_search_typing_is_debounced_through_the_worker(gallery):
    gallery.start_live()
    gallery.search.value = "sta"
    gallery.search.value = "stat"
    gallery.search.value = "station"
    wait_until(lambda: [t["name"] for t in gallery.grid.tiles] == ["station.png"], what="search results")


def test_a_capped_total_reads_as_cap_plus_in_the_pager(registry, seeded, monkeypatch):
    import comfyvn_widgets.gallery_model as gm

    monkeypatch.setattr(gm, "TOTAL_CAP", 5)
    g = AssetGallery(registry, page_size=4, live=False)
    try:
        assert "of 2+" in g.page_label.value and "1–4 of 5+" in g.page_label.value
        assert "5+ of 7 assets" in g.header.value  # the exact count of every asset comes with the facets
        g.next_button.click()
        assert len(g.grid.tiles) == 3 and g.next_button.disabled  # the cursor ran out: no third page
        g.select_all_button.click()
        assert "Selected all 7 assets" in g.status.widget.value
    finally:
        g.close()


def test_slow_drop_down_recounts_are_spaced_out_so_live_renders_do_not_wait(gallery):
    import time

    gallery.model.facets_stale = True
    gallery._facets_at = time.monotonic() - 3
    gallery._facets_cost = 0.05  # a small registry: every FACETS_EVERY (2 s)
    assert gallery._facets_due()
    gallery._facets_cost = 1.0  # a million assets: at most a tenth of the worker's time
    assert not gallery._facets_due()
    gallery._facets_at = time.monotonic() - 10.5
    assert gallery._facets_due()
    gallery.model.facets_stale = False
    assert not gallery._facets_due()
