"""Every route of the route table needs Jupyter's token: no token and a wrong token get a JSON
403, the right token gets the route's normal answer.  An authoriser sees the documented
resource and action of each route, so a deployment can grant read-only or per-area access."""

from __future__ import annotations

import json
from typing import Any

import pytest
from comfyvn_server_ext.openapi import build_openapi
from comfyvn_server_ext.routes import ROUTES, http_methods
from jupyter_server.auth import Authorizer
from server_helpers import assert_error, png_bytes
from tornado.httpclient import HTTPClientError

from comfyvn.config import update_config
from comfyvn.hooks.webhooks import WebhookManager
from comfyvn.ingest.queue import get_ingest_queue
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry

WS_ROUTES = [path for path, handler in ROUTES if http_methods(handler) == ["GET"] and path.endswith(("/ws", "/stream"))]
HTTP_ROUTES = [(path, method) for path, handler in ROUTES if path not in WS_ROUTES for method in http_methods(handler)]
HTTP_ROUTES.sort(key=lambda pm: pm[1] == "DELETE")  # deletions last: they remove seeded things


@pytest.fixture
def seeded(ws, ingest_on, make_png, tmp_path) -> dict[str, Any]:
    """An asset (with thumbnails), one asset to delete, staged jobs, two webhooks and a library root."""
    reg = AssetRegistry(ws=ws)
    first = reg.register_file(make_png(), "images")
    uid = first["uid"]
    doomed = reg.register_file(make_png(), "images")["uid"]
    assert AssetRegistry.wait_for_thumbnails(30)
    queue = get_ingest_queue(ws)
    jobs = {name: queue.enqueue(source_path=str(make_png()))["job_id"] for name in ("show", "apply", "release",
                                                                                   "cancel", "retry")}
    queue.cancel(jobs["retry"])
    update_config({"hooks": {"allow_private_webhook_targets": True}}, ws)
    hooks = WebhookManager(open_store(ws))
    webhook = hooks.register("on_asset_ingest_failed", "http://127.0.0.1:9/hook")["id"]
    doomed_hook = hooks.register("on_asset_ingest_failed", "http://127.0.0.1:9/other")["id"]
    library = tmp_path / "library"
    library.mkdir()
    make_png().replace(library / "in_place.png")  # an image: identification asks no provider about it
    update_config({"library": {"roots": [{"name": "seeded", "path": str(library), "layout": "plain"}]}}, ws)
    return {"uid": uid, "hash": first["hash"], "doomed": doomed, "jobs": jobs, "webhook": webhook, "doomed_hook": doomed_hook,
            "png": make_png}


def sample(path: str, method: str, s: dict[str, Any]) -> dict[str, Any]:
    """A valid request for every (path, method) of the route table."""
    # a DELETE removes the doomed asset, but clears the licence decision the POST before it recorded
    uid = s["doomed"] if method == "DELETE" and "licences" not in path else s["uid"]
    hook = s["doomed_hook"] if method == "DELETE" else s["webhook"]
    url = path.replace("{uid}", uid).replace("{webhook_id}", hook).replace("{job_id}", s["jobs"]["show"]).replace("{hash}", s["hash"])
    jobs = s["jobs"]
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("/api/ingest/queue", "POST"): {"body": {"source_path": str(s["png"]())}},
        ("/api/ingest/upload", "POST"): {"raw": png_bytes((1, 1, 1)), "params": {"filename": "up.png"}},
        ("/api/ingest/apply", "POST"): {"body": {"job_ids": [jobs["apply"]]}},
        ("/api/ingest/release", "POST"): {"body": {"job_id": jobs["release"]}},
        ("/api/ingest/retry", "POST"): {"body": {"job_id": jobs["retry"]}},
        ("/api/ingest/cancel", "POST"): {"body": {"job_id": jobs["cancel"]}},
        ("/assets/upload", "POST"): {"raw": png_bytes((2, 2, 2)), "params": {"filename": "up2.png"}},
        ("/assets/register", "POST"): {"body": {"path": str(s["png"]()), "asset_type": "images"}},
        ("/api/assets/register", "POST"): {"body": {"path": str(s["png"]()), "asset_type": "images"}},
        ("/assets/bulk", "POST"): {"body": {"uids": [s["uid"]], "add_tags": ["auth"]}},
        ("/assets/{uid}", "PATCH"): {"body": {"metadata": {"checked": True}}},
        ("/api/modder/hooks/webhooks", "POST"): {"body": {"event": "on_modder_test", "url": "http://127.0.0.1:9/n"}},
        ("/api/modder/hooks/test", "POST"): {"body": {"message": "auth"}},
        ("/api/licences/overrides/{uid}", "POST"): {"body": {"license": "cc0", "note": "auth"}},
        ("/api/licences/overrides/{uid}", "DELETE"): {"params": {"note": "auth"}},
        ("/api/library/scan", "POST"): {"body": {"roots": ["seeded"]}},
        ("/api/library/identify", "POST"): {"body": {}},
    }
    req = bodies.get((path, method), {})
    if method in ("POST", "PATCH"):
        assert req, f"no sample request for {method} {path}: add one"
    return {"url": url, **req}


async def test_every_http_route_requires_the_token(api, seeded, ws):
    assert len(HTTP_ROUTES) == 44 and len(WS_ROUTES) == 2
    problems = []
    for path, method in HTTP_ROUTES:
        req = sample(path, method, seeded)
        url = req.pop("url")
        for label, headers in (("no token", {"Authorization": ""}), ("wrong token", {"Authorization": "token nope"})):
            r = await api(method, url, headers=headers, **req)
            if r.code != 403 or r.json.get("error") != "forbidden" or "token" not in r.json.get("message", ""):
                problems.append(f"{method} {path} with {label}: {r.code} {r.body[:120]!r}")
        r = await api(method, url, **req)
        if not 200 <= r.code < 300:
            problems.append(f"{method} {path} with the token: {r.code} {r.body[:200]!r}")
    assert problems == []
    # only the authorised requests changed anything: one upload job, one uploaded asset
    uploads = [j for j in get_ingest_queue(ws).list_jobs(500) if j["filename"] == "up.png"]
    assert len(uploads) == 1
    assert [a["path"] for a in AssetRegistry(ws=ws).list_assets(text="up2.png")] == ["images/up2.png"]
    assert not any(p.is_file() for p in (ws.data_dir / "uploads").rglob("*"))


async def test_every_websocket_route_requires_the_token(jp_ws_fetch):
    for path in WS_ROUTES:
        parts = path.strip("/").split("/")
        for headers in ({"Authorization": ""}, {"Authorization": "token nope"}):
            with pytest.raises(HTTPClientError) as err:
                await jp_ws_fetch(*parts, headers=headers)
            assert err.value.code == 403, path
        conn = await jp_ws_fetch(*parts)
        assert json.loads(await conn.read_message())["type"] == "ack"
        conn.close()


class RecordingAuthorizer(Authorizer):
    """Grants what ``grants`` lists (``(action, resource)``) and records every question."""

    grants: set[tuple[str, str]] = set()
    calls: list[tuple[str, str, str]] = []

    def is_authorized(self, handler, user, action, resource):
        if resource.startswith("comfyvn"):
            RecordingAuthorizer.calls.append((handler.request.path, action, resource))
            return (action, resource) in self.grants or ("*", resource) in self.grants
        return True


@pytest.mark.serverapp(authorizer_class=RecordingAuthorizer)
async def test_authoriser_sees_resource_and_action_per_route(api, jp_ws_fetch, jp_base_url, seeded):
    """Read-only access to assets and hooks, nothing on ingest: the authoriser decides per area."""
    RecordingAuthorizer.calls = []
    RecordingAuthorizer.grants = {("read", "comfyvn:assets"), ("read", "comfyvn:hooks"), ("read", "comfyvn:api")}
    doc = build_openapi()
    problems = []
    for path, method in HTTP_ROUTES:
        req = sample(path, method, seeded)
        url = req.pop("url")
        RecordingAuthorizer.calls = []
        r = await api(method, url, **req)
        expected = doc["paths"][path][method.lower()]["x-jupyter-auth"]
        asked = {(a, res) for _, a, res in RecordingAuthorizer.calls}
        if asked != {(expected["action"], expected["resource"])}:
            problems.append(f"{method} {path}: authoriser asked {asked}, documented {expected}")
        allowed = (expected["action"], expected["resource"]) in RecordingAuthorizer.grants
        if allowed != (200 <= r.code < 300):
            problems.append(f"{method} {path}: {r.code} although allowed={allowed}: {r.body[:160]!r}")
        if not allowed:
            try:
                assert_error(r, 403, "forbidden", f"not authorized to {expected['action']} {expected['resource']}")
            except AssertionError as exc:
                problems.append(f"{method} {path}: {exc}")
    assert problems == []

    for path in WS_ROUTES:  # subscribing is the 'execute' action on comfyvn:hooks
        with pytest.raises(HTTPClientError) as err:
            await jp_ws_fetch(*path.strip("/").split("/"))
        assert err.value.code == 403
    RecordingAuthorizer.grants.add(("execute", "comfyvn:hooks"))
    conn = await jp_ws_fetch("api", "modder", "hooks", "ws")
    assert json.loads(await conn.read_message())["type"] == "ack"
    conn.close()
