"""The Licences dashboard's logic and widget tree (issue 17), without a browser (see tests/browser)."""

from __future__ import annotations

import time

import pytest

from comfyvn.licences import override_history
from tests.test_licences import PROJECT, build_project


@pytest.fixture
def project(ws, tmp_path):
    return build_project(ws, tmp_path)


def test_dashboard_shows_verdicts_fixes_unknowns_and_exports(project, ws):
    from comfyvn_widgets.licences import LicencesDashboard

    reg, uid = project
    dash = LicencesDashboard(reg, live=False)
    assert dash.model.use == "commercial"
    assert dash.model.counts() == {"allowed": 2, "allowed_with_duties": 5, "blocked": 7, "unknown": 1}
    assert "Blocked" in dash.chart.value and 'data-verdict="blocked">7<' in dash.chart.value
    assert [r["cells"]["verdict"][0] for r in dash.table.rows][:8] == ["Blocked"] * 7 + ["Unknown"]

    dash.verdict.value = "unknown"
    assert [r["id"] for r in dash.table.rows] == [uid["no_licence"]]
    dash.table.click(uid["no_licence"])
    assert "no licence and no terms stated" in dash.detail.value
    assert dash.open_button.layout.display == "none"  # no gallery to open it in outside the workbench

    dash.verdict.value = ""
    dash.select_unknown.click()
    assert dash.model.selection.selected == [uid["no_licence"]]
    dash.licence.value = "cc0-1.0"
    dash.set_button.click()
    assert reg.get_asset(uid["no_licence"])["license"] == "cc0-1.0"
    assert dash.model.counts()["unknown"] == 0 and 'data-verdict="unknown">0<' in dash.chart.value

    dash.table.click(uid["civitai_rent"])
    dash.commercial.value = "sell"
    dash.note.value = ""
    dash.override_button.click()  # a decision needs its reason: refused, nothing recorded
    assert "note is required" in dash.status.widget.value
    dash.note.value = "upgraded the licence on Civitai, receipt 77"
    dash.override_button.click()
    [trail] = override_history(reg.db, PROJECT, uid["civitai_rent"])
    assert trail["terms"] == {"commercial_use": "sell"} and trail["note"].endswith("receipt 77")
    assert dash.model.asset(uid["civitai_rent"])["verdict"] == "allowed_with_duties"

    dash.format.value = "json"
    dash.export_path.value = "release/credits.json"
    dash.export_button.click()
    assert (ws.root / "release" / "credits.json").is_file() and "Manifest written" in dash.status.widget.value

    dash.use.value = "internal"
    assert dash.model.use == "internal" and dash.model.counts()["blocked"] == 0
    dash.close()


def test_use_profile_change_and_live_recheck(project, tmp_path):
    from comfyvn_widgets.licences import LicencesDashboard

    reg, uid = project
    dash = LicencesDashboard(reg, live=True)
    try:
        reg.update_asset_meta(uid["cc_by_nc"], license_tag="cc-by-4.0")  # anyone, any process: the tab follows
        deadline = time.monotonic() + 10
        while dash.model.asset(uid["cc_by_nc"])["verdict"] != "allowed_with_duties":
            assert time.monotonic() < deadline, "the dashboard did not re-check after the change"
            time.sleep(0.05)
    finally:
        dash.close()


def test_open_in_gallery_focuses_the_asset_in_the_workbench(project, monkeypatch):
    import ipywidgets as W
    from comfyvn_widgets.gallery import AssetGallery
    from comfyvn_widgets.licences import LicencesDashboard, link_workbench

    reg, uid = project
    gallery = AssetGallery(reg, live=False)
    dash = LicencesDashboard(reg, live=False)
    tabs = W.Tab(children=[gallery.widget, dash.widget])
    tabs.selected_index = 1
    link_workbench(tabs, {"gallery": gallery, "licences": dash}, ["gallery", "licences"])
    dash.table.click(uid["flux_image"])
    assert dash.open_button.layout.display == "" and not dash.open_button.disabled
    dash.open_button.click()
    assert tabs.selected_index == 0
    assert gallery.model.selection.focused == uid["flux_image"]
    assert gallery.search.value == "cgs/cg_flux.png"
    assert [a["uid"] for a in gallery.model.items] == [uid["flux_image"]]
    assert "cg_flux.png" in gallery.detail.value
    gallery.close()
    dash.close()


def test_the_table_sent_to_the_browser_is_bounded(project, monkeypatch):
    import comfyvn_widgets.licences as mod

    reg, uid = project
    monkeypatch.setattr(mod, "MAX_ROWS", 5)
    dash = mod.LicencesDashboard(reg, live=False)
    assert len(dash.table.rows) == 5 and "first 5 of 15" in dash.more.value
    assert sum(dash.model.counts().values()) == 15  # the chart still counts everything
    dash.verdict.value = "unknown"
    assert len(dash.table.rows) == 1 and dash.more.value == ""
    dash.close()
