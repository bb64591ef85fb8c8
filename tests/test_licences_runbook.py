"""The ``licence_check`` runbook (issue 17): a papermill run that gates a release."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from comfyvn.studio.core.asset_registry import AssetRegistry
from tests.test_licences import PROJECT, build_project

_RUNBOOK_TESTS = Path(__file__).resolve().parent / "runbooks"
sys.path.insert(0, str(_RUNBOOK_TESTS))  # rbhelpers, as tests/runbooks/conftest.py imports it
_spec = importlib.util.spec_from_file_location("comfyvn_runbook_test_fixtures_licences", _RUNBOOK_TESTS / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
kernel_env = _fixtures.kernel_env
runbooks = _fixtures.runbooks


def test_licence_check_runbook_fails_on_blocked_assets_and_writes_the_manifest(ws, tmp_path, runbooks):
    reg, _uid = build_project(ws, tmp_path)
    run = runbooks.fail("licence_check", workspace=str(ws.root), project_id=PROJECT, use="commercial",
                        manifest_path="release/CREDITS.md")
    assert run.verdict == "VERDICT: FAIL — 7 blocked and 1 unknown of 15 assets for use 'commercial'"
    assert ("blocked: loras/flux_style.safetensors: base model licence FLUX.1 [dev] Non-Commercial License: "
            "non-commercial; the commercial use needs sell") in run.text
    assert run.images == 1 and run.html_tables() == 1
    credits = ws.root / "release" / "CREDITS.md"
    assert credits.read_text(encoding="utf-8").startswith(f"# Licences and credits: project {PROJECT}")


def test_licence_check_runbook_passes_a_project_that_may_ship(ws, tmp_path, runbooks):
    reg = AssetRegistry("clean", ws=ws, make_thumbnails=False)
    for name, licence in (("a.png", "cc0"), ("b.png", "cc-by-4.0")):
        src = tmp_path / name
        src.write_bytes(name.encode())
        reg.register_file(src, "cgs", license_tag=licence, metadata={"author": "studio"})
    run = runbooks.ok("licence_check", workspace=str(ws.root), project_id="clean", use="commercial")
    assert run.verdict == "VERDICT: OK — 2 assets of project 'clean' may ship for use 'commercial' (1 with duties)"
