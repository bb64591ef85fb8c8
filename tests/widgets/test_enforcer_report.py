"""EnforcerReport: dry run grouped by kind, confirmed fix, export, staleness from other processes."""

from __future__ import annotations

import json

import pytest
from comfyvn_widgets.enforcer_model import EnforcerModel
from comfyvn_widgets.enforcer_report import EnforcerReport
from widget_helpers import run_in_subprocess, wait_until


@pytest.fixture
def damaged(registry, seeded):
    """Break things the enforcer knows: a missing, a corrupt and a disagreeing sidecar, a lost thumbnail."""
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in seeded}
    registry.sidecar_path_for(by_name["classroom.png"]["path"]).unlink()
    registry.sidecar_path_for(by_name["rooftop.png"]["path"]).write_text("{not json", "utf-8")
    side = registry.sidecar_path_for(by_name["station.png"]["path"])
    doc = json.loads(side.read_text("utf-8"))
    doc["tags"] = ["edited", "by", "hand"]
    side.write_text(json.dumps(doc), "utf-8")
    registry.resolve_thumbnail_path(by_name["umbrella.png"]["uid"], 256).unlink()
    return by_name


def test_dry_run_groups_findings_by_kind_and_changes_nothing(registry, damaged):
    report = EnforcerReport(registry, live=False)
    try:
        counts = report.model.counts()
        assert counts["missing_sidecar"] == 1 and counts["invalid_sidecar"] == 1
        assert counts["sidecar_mismatch"] == 1 and counts["missing_thumbnail"] == 1
        assert counts["missing_license"] == 2  # ren and letter have none
        assert list(counts.values()) == sorted(counts.values(), reverse=True)
        for group in report.model.groups():
            assert f"<div>{group['label']}</div>" in report.chart.value
            assert f"<b>{group['count']:,}</b>" in report.chart.value
        assert len(report.table.rows) == sum(counts.values())
        assert report.status.kind == "warn" and "nothing was changed" in report.status.text
        assert not registry.sidecar_path_for(damaged["classroom.png"]["path"]).exists()
        report.kind_filter.value = "missing_license"
        assert {r["cells"]["uid"] for r in report.table.rows} == {damaged["ren.png"]["uid"],
                                                                  damaged["letter.png"]["uid"]}
    finally:
        report.close()


def test_fix_asks_for_confirmation_then_repairs_what_the_options_allow(registry, damaged):
    report = EnforcerReport(registry, live=False)
    try:
        report.fix_button.click()
        assert report.confirm_box.layout.display == ""
        plan = report.confirm_text.value
        assert "write 1 missing sidecar(s)" in plan and "remake thumbnails of 1 asset(s)" in plan
        assert "leave 2 invalid or disagreeing sidecar(s)" in plan
        assert not registry.sidecar_path_for(damaged["classroom.png"]["path"]).exists()  # nothing yet
        report.cancel_button.click()
        assert report.confirm_box.layout.display == "none"

        report.fix_button.click()
        report.confirm_button.click()
        assert registry.read_sidecar(damaged["classroom.png"]["uid"])["uid"] == damaged["classroom.png"]["uid"]
        assert registry.resolve_thumbnail_path(damaged["umbrella.png"]["uid"], 256) is not None
        left = report.model.counts()
        assert "missing_sidecar" not in left and "missing_thumbnail" not in left
        assert left["invalid_sidecar"] == 1 and left["sidecar_mismatch"] == 1
        assert report.status.kind == "ok" and "Fixed 2 finding(s)" in report.status.text

        report.overwrite.value = True
        report.fix_button.click()
        assert "rewrite 2 invalid or disagreeing sidecar(s)" in report.confirm_text.value
        report.confirm_button.click()
        assert set(report.model.counts()) == {"missing_license"}
        station = registry.read_sidecar(damaged["station.png"]["uid"])
        assert station["tags"] == ["city", "night"]
    finally:
        report.close()


def test_export_writes_the_report_as_utf8_json(registry, damaged, ws):
    report = EnforcerReport(registry, live=False)
    try:
        report.export_path.value = "reports/audit ü.json"
        report.export_button.click()
        target = ws.root / "reports" / "audit ü.json"
        assert report.status.kind == "ok" and str(target) in report.status.text
        doc = json.loads(target.read_text("utf-8"))
        assert doc["counts"] == report.model.counts()
        assert len(doc["report"]["findings"]) == sum(doc["counts"].values())
        report.export_path.value = ""
        report.export_button.click()
        [default] = ws.logs_dir.glob("enforcer-report-*.json")
        assert str(default) in report.status.text and json.loads(default.read_text("utf-8"))["report"]
    finally:
        report.close()


def test_model_refuses_fix_and_export_before_an_audit(registry, seeded):
    m = EnforcerModel(registry)
    with pytest.raises(ValueError, match="Run the audit first"):
        m.fix_plan(False, False)
    with pytest.raises(ValueError, match="Run the audit first"):
        m.export()


def test_changes_from_another_process_mark_the_report_stale(registry, seeded, subprocess_env):
    report = EnforcerReport(registry, live=True)
    try:
        assert "since" not in report.summary.value
        uid = seeded[0]["uid"]
        run_in_subprocess(subprocess_env, f"""
            from comfyvn.studio.core.asset_registry import AssetRegistry
            AssetRegistry().update_asset_meta({uid!r}, add_tags=["late-edit"])
        """)
        wait_until(lambda: "1 change since this audit: run it again" in report.summary.value, what="the stale marker")
        report.run_button.click()
        assert "since" not in report.summary.value
    finally:
        report.close()


def test_without_an_automatic_run_the_report_waits_for_the_button(registry, seeded):
    report = EnforcerReport(registry, live=False, run=False)
    try:
        assert report.model.report is None and report.fix_button.disabled and report.export_button.disabled
        assert "press Run audit" in report.status.text
        report.fix_button.click()  # disabled in the browser; from Python it explains itself
        assert report.status.kind == "error" and "Run the audit first" in report.status.text
        report.run_button.click()
        assert report.model.report is not None and not report.fix_button.disabled
    finally:
        report.close()


def test_finding_labels_spell_licence_like_the_rest_of_the_ui():
    from comfyvn_widgets.enforcer_model import humanise

    assert humanise("missing_license") == "Missing licence"
    assert humanise("license_mismatch") == "Licence mismatch"
    assert humanise("missing_sidecar") == "Missing sidecar"
