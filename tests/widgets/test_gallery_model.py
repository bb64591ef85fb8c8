"""GalleryModel: filters, paging, selection across pages, bulk edit on disk, export, detail."""

from __future__ import annotations

import base64
import json
import re

import pytest
from comfyvn_widgets.gallery_model import UNLICENSED, GalleryModel
from sqltrace import traced


def names(model: GalleryModel) -> list[str]:
    return [r["path"].rsplit("/", 1)[-1].removesuffix(".png") for r in model.items]


def test_first_page_is_newest_first_with_total(registry, seeded):
    m = GalleryModel(registry, page_size=4)
    m.load()
    assert m.total == 7 and m.pages == 2
    assert names(m) == ["letter", "umbrella", "ren", "aoi"]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"asset_type": "backgrounds"}, {"classroom", "rooftop", "station"}),
    ({"tags": "school"}, {"classroom", "rooftop"}),
    ({"tags": "school, day"}, {"rooftop"}),
    ({"license": "cc-by-4.0"}, {"station", "aoi"}),
    ({"license": UNLICENSED}, {"ren", "letter"}),
    ({"text": "AMOUR"}, {"letter"}),
    ({"text": "neutral"}, {"aoi"}),
    ({"asset_type": "props", "license": "cc0"}, {"umbrella"}),
])
def test_filters_narrow_the_grid(registry, seeded, changes, expected):
    m = GalleryModel(registry, page_size=48)
    m.set_filter(**changes)
    assert set(names(m)) == expected
    assert m.total == len(expected)


def test_sort_orders_and_bad_sort_is_a_clear_error(registry, seeded):
    m = GalleryModel(registry)
    m.set_filter(sort="name")
    assert names(m) == ["classroom", "rooftop", "station", "aoi", "ren", "letter", "umbrella"]
    with pytest.raises(ValueError, match="unknown sort"):
        m.set_filter(sort="sideways")


def test_paging_forward_back_and_jump_clamps(registry, seeded):
    m = GalleryModel(registry, page_size=3)
    m.load()
    first = names(m)
    m.next_page()
    second = names(m)
    m.next_page()
    assert (m.page_index, len(m.items)) == (2, 1)
    m.next_page()  # stays on the last page
    assert m.page_index == 2
    m.prev_page()
    assert names(m) == second
    m.goto_page(99)
    assert m.page_index == 2
    m.goto_page(0)
    assert names(m) == first
    assert len(set(first) | set(second)) == 6


def test_filter_change_returns_to_page_one(registry, seeded):
    m = GalleryModel(registry, page_size=2)
    m.load()
    m.next_page()
    m.set_filter(tags="sprite")
    assert m.page_index == 0 and set(names(m)) == {"aoi", "ren"}


def test_a_page_emptied_by_deletions_clamps_to_the_last_page(registry, seeded):
    m = GalleryModel(registry, page_size=3)
    m.load()
    m.goto_page(2)
    gone = m.items[0]["uid"]
    registry.remove_asset(gone)
    m.apply_events([{"event": "on_asset_removed", "data": {"uid": gone, "project_id": "default"}}])
    assert m.page_index == 1 and m.total == 6


def test_select_page_and_all_matching_span_pages(registry, seeded):
    m = GalleryModel(registry, page_size=2)
    m.set_filter(license="cc0")
    assert m.select_page() == 2
    m.next_page()
    m.click(m.page_uids[0], toggle=True)
    assert len(m.selection) == 3
    m.clear_selection()
    assert m.select_all_matching() == 3
    cc0 = {r["uid"] for r in seeded if r["license"] == "cc0"}
    assert set(m.selection.selected) == cc0


def test_bulk_edit_adds_removes_tags_and_sets_licence_in_sidecars_on_disk(registry, seeded):
    m = GalleryModel(registry)
    m.set_filter(asset_type="backgrounds")
    m.click(m.page_uids[0])
    m.click(m.page_uids[2], shift=True)
    result = m.bulk_edit(add_tags="Final, reviewed", remove_tags="school", license_action="set",
                         license_value="cc-by-sa-4.0")
    assert (result.updated, result.requested) == (3, 3)
    for uid in m.selection.selected:
        side = json.loads(registry.sidecar_path_for(registry.get_asset(uid)["path"]).read_text("utf-8"))
        assert {"final", "reviewed"} <= set(side["tags"])
        assert "school" not in side["tags"]
        assert side["license"] == "cc-by-sa-4.0"
    untouched = [r for r in seeded if r["type"] != "backgrounds"]
    assert all("final" not in registry.read_sidecar(r["uid"])["tags"] for r in untouched)
    m.bulk_edit(license_action="clear")
    assert all(registry.read_sidecar(uid)["license"] is None for uid in m.selection.selected)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "Nothing to change"),
    ({"license_action": "set", "license_value": "  "}, "Enter the licence"),
    ({"add_tags": "x", "remove_tags": "X"}, "both added and removed"),
    ({"license_action": "maybe"}, "license_action"),
])
def test_bulk_edit_rejects_unclear_requests(registry, seeded, kwargs, message):
    m = GalleryModel(registry)
    m.load()
    m.select_page()
    with pytest.raises(ValueError, match=message):
        m.bulk_edit(**kwargs)


def test_bulk_edit_without_selection_says_what_to_do(registry, seeded):
    m = GalleryModel(registry)
    m.load()
    with pytest.raises(ValueError, match="Select at least one asset"):
        m.bulk_edit(add_tags="x")


def test_export_json_keeps_nested_metadata_and_unicode(registry, seeded):
    m = GalleryModel(registry)
    m.set_filter(asset_type="props")
    m.select_page()
    text = m.export_json()
    assert "Lettre d'amour ✉" in text  # not \u-escaped
    doc = json.loads(text.encode("utf-8").decode("utf-8"))
    assert doc["count"] == 2 and doc["project_id"] == "default"
    letter = next(a for a in doc["assets"] if a["path"].endswith("letter.png"))
    assert letter["meta"]["note"] == {"lang": "fr", "ü": [1, 2]}
    assert letter["sidecar"].endswith("letter.png.asset.json")
    assert letter == {**registry.read_sidecar(letter["uid"]), "updated_at": letter["updated_at"],
                      "abs_path": letter["abs_path"], "sidecar": letter["sidecar"]}


def test_thumbnails_only_for_the_visible_page(registry, seeded):
    m = GalleryModel(registry, page_size=3)
    m.load()
    uris, status = m.page_thumbnails()
    assert set(uris) == set(m.page_uids) and set(status.values()) == {"ready"}
    png = base64.b64decode(uris[m.page_uids[0]].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_detail_shows_sidecar_and_explains_a_missing_one(registry, seeded):
    m = GalleryModel(registry)
    aoi = next(r for r in seeded if r["path"].endswith("aoi.png"))
    d = m.detail(aoi["uid"])
    assert d["sidecar"]["meta"]["pose"] == {"mood": "neutral"}
    assert d["thumbnail"].startswith("data:image/png;base64,")
    registry.sidecar_path_for(aoi["path"]).unlink()
    d = m.detail(aoi["uid"])
    assert d["sidecar"] is None and "missing" in d["sidecar_error"]
    assert m.detail("0" * 16)["missing"] is True


def test_a_sound_gets_a_player_in_the_detail_pane(registry, tmp_path):
    import wave

    from comfyvn_widgets.gallery import detail_html

    src = tmp_path / "knock.wav"
    with wave.open(str(src), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)) * 40)
    rec = registry.register_file(src, "audio", tags="sfx")
    m = GalleryModel(registry)
    detail = m.detail(rec["uid"])
    uri = detail["audio"]["uri"]
    assert uri.startswith("data:audio/wav;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == src.read_bytes()
    html = detail_html(detail)
    assert '<audio class="cvn-detail-audio" controls' in html and "cvn-detail-img" not in html


def test_more_matches_than_the_cap_show_as_cap_plus_and_paging_goes_on(registry, seeded, monkeypatch):
    import comfyvn_widgets.gallery_model as gm

    monkeypatch.setattr(gm, "TOTAL_CAP", 3)  # seven assets, counted up to three
    m = GalleryModel(registry, page_size=2)
    m.load()
    assert (m.total, m.total_capped, m.total_text, m.count_all_text) == (3, True, "3+", "3+")
    seen = list(m.page_uids)
    while m.has_next:  # beyond the counted pages, the keyset cursor says whether a next page exists
        m.next_page()
        seen += m.page_uids
    assert len(seen) == len(set(seen)) == 7 and m.page_index == 3
    m.set_filter(license="cc0")  # three match: counted exactly
    assert (m.total, m.total_capped, m.total_text) == (3, False, "3")


def test_select_all_matching_reads_ids_in_one_query(registry, seeded):
    m = GalleryModel(registry, page_size=2)
    m.set_filter(tags="item")
    with traced(registry.db) as statements:
        assert m.select_all_matching(progress=lambda done, total: statements.append(f"progress {done}/{total}")) == 2
    assert [s.split(" FROM")[0] for s in statements if s.startswith("SELECT a.")] == ["SELECT a.uid"]
    assert statements[-1] == "progress 2/2"
    assert set(m.selection.selected) == {r["uid"] for r in seeded if "item" in r["tags"]}


def test_the_count_of_every_asset_is_capped_redone_only_after_a_change_and_exact_from_the_facets(
        registry, seeded, png_factory, monkeypatch):
    import comfyvn_widgets.gallery_model as gm

    monkeypatch.setattr(gm, "TOTAL_CAP", 5)
    m = GalleryModel(registry, page_size=2)
    m.load()  # every asset: the page's capped total is the count
    assert (m.count_all, m.count_all_capped, m.count_all_text) == (5, True, "5+")
    every_asset = re.compile(r"^SELECT COUNT\(\*\) FROM \(SELECT 1 FROM assets a WHERE a\.project_id = \S+ LIMIT")
    with traced(registry.db) as statements:
        m.set_filter(asset_type="props")
        m.set_filter(asset_type="characters")
        assert not [s for s in statements if every_asset.match(s)]
        m.facets()  # the drop-downs' counts add up to the exact figure
        assert (m.count_all, m.count_all_capped) == (7, False)
        registry.register_file(png_factory(99), "props")
        m.load()  # a change: counted again, but "5+" would say less than the facets knew
        assert (m.count_all, m.count_all_capped) == (7, False)
        m.facets(refresh=True)
    assert (m.count_all, m.count_all_capped) == (8, False)
    assert not [s for s in statements if s.startswith("SELECT COUNT(*) FROM assets WHERE")]  # no full count


def test_a_small_project_is_counted_exactly_after_every_change(registry, seeded, png_factory):
    m = GalleryModel(registry, page_size=2)
    m.set_filter(asset_type="props")
    assert (m.count_all, m.count_all_capped) == (7, False)
    registry.register_file(png_factory(98), "props")
    m.load()
    assert (m.count_all, m.total) == (8, 3)
