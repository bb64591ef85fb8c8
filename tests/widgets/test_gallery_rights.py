"""The gallery's "rights" filter beside the licence one (issue 13): model and widget."""

from __future__ import annotations

import pytest
from comfyvn_widgets.gallery import AssetGallery
from comfyvn_widgets.gallery_model import RIGHTS, GalleryModel, rights_summary
from widget_helpers import from_browser


def names(model: GalleryModel) -> set[str]:
    return {r["path"].rsplit("/", 1)[-1].removesuffix(".png") for r in model.items}


@pytest.mark.parametrize(("rights", "expected"), [
    ("any", {"classroom", "rooftop", "station", "aoi", "ren", "umbrella", "letter"}),
    ("sell", {"classroom", "rooftop", "station", "aoi", "umbrella"}),  # cc0 and cc-by-4.0
    ("commercial", {"classroom", "rooftop", "station", "aoi", "umbrella"}),
    ("no-credit", {"classroom", "rooftop", "umbrella"}),  # cc0 only
    ("derivatives", {"classroom", "rooftop", "station", "aoi", "umbrella"}),
    ("unknown", {"ren", "letter"}),
])
def test_rights_filter_narrows_the_grid(registry, seeded, rights, expected):
    m = GalleryModel(registry, page_size=48)
    m.set_filter(rights=rights)
    assert names(m) == expected and m.total == len(expected)


def test_rights_combines_with_the_licence_filter_and_follows_a_licence_change(registry, seeded):
    m = GalleryModel(registry, page_size=48)
    m.set_filter(license="cc-by-4.0", rights="no-credit")
    assert names(m) == set() and m.filter.describe() == "licence cc-by-4.0, no credit needed"
    m.set_filter(license=None, rights="unknown")
    ren = next(r for r in m.items if r["path"].endswith("ren.png"))
    registry.update_asset_meta(ren["uid"], license_tag="cc-by-nc-4.0")
    m.load()
    assert names(m) == {"letter"}
    m.set_filter(rights="commercial")
    assert "ren" not in names(m)  # non-commercial
    with pytest.raises(ValueError, match="unknown rights filter"):
        m.set_filter(rights="free-for-all")


def test_rights_dropdown_filters_and_resets(registry, seeded):
    gallery = AssetGallery(registry, page_size=4, live=False)
    try:
        assert [v for _, v in gallery.rights_filter.options] == list(RIGHTS)
        gallery.rights_filter.value = "unknown"
        assert {t["name"] for t in gallery.grid.tiles} == {"ren.png", "letter.png"}
        gallery.reset_button.click()
        assert gallery.rights_filter.value == "any" and gallery.model.total == 7
    finally:
        gallery.close()


def test_the_detail_shows_the_rights(registry, seeded):
    assert rights_summary(None) == "commercial use: not stated · credit required: not stated · derivatives: not stated"
    gallery = AssetGallery(registry, page_size=48, live=False)
    try:
        station = next(t for t in gallery.grid.tiles if t["name"] == "station.png")
        from_browser(gallery.grid, {"kind": "click", "uid": station["uid"], "shift": False, "toggle": False})
        assert "commercial use: sell · credit required: yes · derivatives: yes · from user" in gallery.detail.value
    finally:
        gallery.close()
