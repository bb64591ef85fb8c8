"""``/api/licences/*`` (issue 17): the check, the manifest and overrides over HTTP, behind Jupyter auth."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from comfyvn.hooks import get_hook_bus
from comfyvn.store import open_store
from tests.test_licences import PROJECT, build_project

_SERVER_TESTS = Path(__file__).resolve().parent / "server"
sys.path.insert(0, str(_SERVER_TESTS))  # server_helpers, as tests/server/conftest.py imports it
_spec = importlib.util.spec_from_file_location("comfyvn_server_test_fixtures_licences", _SERVER_TESTS / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
pytest_configure = _fixtures.pytest_configure
jp_server_config = _fixtures.jp_server_config
api = _fixtures.api

from server_helpers import assert_error  # noqa: E402


@pytest.fixture
def project(ws, tmp_path):
    return build_project(ws, tmp_path)


async def test_check_route_classifies_the_project(api, project, ws):
    _reg, uid = project
    r = await api("GET", "/api/licences/check", params={"project": PROJECT, "use": "commercial"})
    assert r.code == 200, r.body
    assert r.json["counts"] == {"allowed": 2, "allowed_with_duties": 5, "blocked": 7, "unknown": 1}
    assert r.json["ok"] is False
    verdicts = {a["uid"]: a["verdict"] for a in r.json["assets"]}
    assert verdicts[uid["flux_lora"]] == "blocked" and verdicts[uid["bought"]] == "allowed"
    r = await api("GET", "/api/licences/check", params={"project": PROJECT, "limit": "4", "offset": "12"})
    assert [len(r.json["assets"]), r.json["total"], r.json["next_offset"]] == [3, 15, None]
    assert r.json["counts"]["blocked"] == 7  # the counts are the whole project's, whatever the page
    r = await api("GET", "/api/licences/check", params={"project": PROJECT, "verdict": "unknown,blocked", "limit": "5"})
    assert r.json["total"] == 8 and r.json["next_offset"] == 5
    assert {a["verdict"] for a in r.json["assets"]} <= {"unknown", "blocked"}
    for params in ({"verdict": "fine"}, {"limit": "0"}, {"limit": "10001"}, {"offset": "-1"}):
        assert_error(await api("GET", "/api/licences/check", params={"project": PROJECT, **params}), 400,
                     "invalid_parameter")
    r = await api("GET", "/api/licences/check", params={"project": PROJECT, "use": "internal"})
    assert r.json["counts"]["blocked"] == 0 and r.json["use"] == "internal"
    assert_error(await api("GET", "/api/licences/check", params={"project": PROJECT, "use": "resell"}), 400,
                 "invalid_request", "unknown use profile")
    assert_error(await api("GET", "/api/licences/check", params={"project": "nobody"}), 404, "project_not_found",
                 "nobody")
    assert not (ws.assets_root / "nobody").exists()  # a read creates no project
    assert_error(await api("GET", "/api/licences/check", params={"project": "../x"}), 400, "invalid_request")


async def test_manifest_route_is_a_deterministic_download(api, project):
    first = await api("GET", "/api/licences/manifest", params={"project": PROJECT, "format": "md"})
    assert first.code == 200, first.body
    assert first.headers["Content-Type"].startswith("text/markdown")
    assert first.headers["Content-Disposition"] == f'attachment; filename="licences-{PROJECT}.md"'
    again = await api("GET", "/api/licences/manifest", params={"project": PROJECT, "format": "md"})
    assert again.body == first.body and b"invoice 123" in first.body
    html = await api("GET", "/api/licences/manifest", params={"project": PROJECT, "format": "html"})
    assert html.headers["Content-Disposition"].startswith("attachment") and b"<h1>" in html.body
    data = await api("GET", "/api/licences/manifest", params={"project": PROJECT, "format": "json"})
    assert data.json["counts"]["unknown"] == 1 and data.json["licences"]
    assert_error(await api("GET", "/api/licences/manifest", params={"project": PROJECT, "format": "pdf"}), 400,
                 "invalid_parameter", "format")


async def test_overrides_over_http_record_the_jupyter_user_and_emit_the_hook(api, project, ws):
    _reg, uid = project
    target = uid["no_licence"]
    url = f"/api/licences/overrides/{target}"
    bus = get_hook_bus(open_store(ws))
    start = bus.last_id()
    r = await api("POST", url, params={"project": PROJECT},
                  body={"license": "cc0", "note": "drawn in the studio, timesheet 42"})
    assert r.code == 201, r.body
    assert r.json["action"] == "set" and r.json["decided_by"] and r.json["license"] == "cc0-1.0"
    who = r.json["decided_by"]
    [event] = bus.events_after(start, ["on_asset_licence_override"])
    assert event["data"]["uid"] == target and event["data"]["decided_by"] == who
    check = await api("GET", "/api/licences/check", params={"project": PROJECT, "use": "internal"})
    assert {a["uid"]: a["verdict"] for a in check.json["assets"]}[target] == "allowed"
    got = await api("GET", url, params={"project": PROJECT})
    assert got.json["override"]["note"] == "drawn in the studio, timesheet 42" and len(got.json["history"]) == 1

    assert_error(await api("DELETE", url, params={"project": PROJECT}), 400, "invalid_parameter", "note")
    r = await api("DELETE", url, params={"project": PROJECT, "note": "wrong asset"})
    assert r.code == 200 and r.json["action"] == "cleared"
    assert_error(await api("DELETE", url, params={"project": PROJECT, "note": "again"}), 404, "override_not_found")
    got = await api("GET", url, params={"project": PROJECT})
    assert got.json["override"] is None and [h["action"] for h in got.json["history"]] == ["set", "cleared"]

    for body, code, error, word in (
            ({"license": "cc0"}, 400, "invalid_body", "note"),
            ({"license": "cc0", "note": "   "}, 400, "invalid_request", "note is required"),
            ({"note": "why"}, 400, "invalid_request", "licence or at least one term"),
            ({"note": "why", "terms": {"commercial_use": "resell"}}, 400, "invalid_request", "commercial_use"),
            ({"note": "why", "license": "cc0", "decided_by": "someone else"}, 400, "invalid_body", "decided_by"),
            ({"note": "why", "license": 5}, 400, "invalid_body", "license")):
        assert_error(await api("POST", url, params={"project": PROJECT}, body=body), code, error, word)
    assert_error(await api("POST", f"/api/licences/overrides/{'0' * 16}", params={"project": PROJECT},
                           body={"note": "x", "license": "cc0"}), 404, "asset_not_found")
    assert len(got.json["history"]) == 2  # the refusals recorded nothing
    after = await api("GET", url, params={"project": PROJECT})
    assert len(after.json["history"]) == 2


async def test_every_licences_route_requires_the_token(api, project):
    _reg, uid = project
    calls = [("GET", "/api/licences/check", None), ("GET", "/api/licences/manifest", None),
             ("GET", f"/api/licences/overrides/{uid['cc0']}", None),
             ("POST", f"/api/licences/overrides/{uid['cc0']}", {"license": "mit", "note": "x"}),
             ("DELETE", f"/api/licences/overrides/{uid['bought']}", None)]
    for method, path, body in calls:
        for headers in ({"Authorization": ""}, {"Authorization": "token nope"}):
            r = await api(method, path, params={"project": PROJECT, "note": "x"}, body=body, headers=headers)
            assert_error(r, 403, "forbidden", "token")
    r = await api("GET", f"/api/licences/overrides/{uid['bought']}", params={"project": PROJECT})
    assert r.json["override"]["note"] == "bought a commercial licence, invoice 123"  # nothing changed


async def test_openapi_documents_the_licence_routes(api):
    r = await api("GET", "/api/comfyvn/openapi.json")
    paths = r.json["paths"]
    assert paths["/api/licences/check"]["get"]["x-jupyter-auth"] == {"resource": "comfyvn:licences", "action": "read"}
    assert paths["/api/licences/overrides/{uid}"]["post"]["x-jupyter-auth"]["action"] == "write"
    assert json.dumps(paths["/api/licences/manifest"])
