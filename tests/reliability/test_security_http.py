"""Security of the HTTP surface (a real server): authentication on every route, XSRF, WebSocket
origins, oversize and malformed bodies.  Each attack is one test case (see docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from comfyvn_server_ext.openapi import build_openapi

from .fuzzkit import count

CONFIG = {
    "features": {"enable_asset_ingest": True},
    "ingest": {"allowed_source_roots": ["$COMFYVN_HOME"], "max_remote_bytes": 256 * 1024},  # upload limit
}
ROUTES = sorted((method.upper(), path) for path, ops in build_openapi()["paths"].items() for method in ops)
HTTP_ROUTES = [r for r in ROUTES if not r[1].endswith(("/hooks/ws", "/hooks/stream"))]
WS_ROUTES = [r[1] for r in ROUTES if r[1].endswith(("/hooks/ws", "/hooks/stream"))]
WRITE_ROUTES = [r for r in HTTP_ROUTES if r[0] in ("POST", "PATCH", "DELETE", "PUT")]
JSON_POSTS = ["api/ingest/queue", "api/ingest/apply", "api/ingest/release", "api/ingest/retry", "api/ingest/cancel",
              "assets/register", "assets/bulk", "api/modder/hooks/webhooks", "api/modder/hooks/test"]


def _fill(path: str) -> str:
    return re.sub(r"\{\w+\}", "0123456789abcdef", path).lstrip("/")


def _events(server) -> int:
    from relkit import WorkspaceView

    return WorkspaceView(server.ws).last_event_id()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from relkit import start_server

    srv = start_server(tmp_path_factory.mktemp("sec-http"), CONFIG)
    yield srv
    srv.stop()


def _refused(resp: httpx.Response) -> None:
    assert resp.status_code in (401, 403), (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["error"] in ("forbidden", "unauthorized") and body["message"], body


@pytest.mark.parametrize("method,path", HTTP_ROUTES, ids=[f"{m} {p}" for m, p in HTTP_ROUTES])
@pytest.mark.parametrize("credential", ["none", "wrong-header", "wrong-query"])
def test_every_route_refuses_missing_or_wrong_token(server, method, path, credential):
    count("attacks.auth")
    before = _events(server)
    headers, params = {}, {}
    if credential == "wrong-header":
        headers["Authorization"] = "token not-the-token"
    elif credential == "wrong-query":
        params["token"] = "not-the-token"
    with httpx.Client(base_url=server.base_url, timeout=30) as fresh:  # no login cookie from earlier requests
        resp = fresh.request(method, _fill(path), headers=headers, params=params,
                             content=b'{"message": "x"}' if method != "GET" else None)
    _refused(resp)
    assert _events(server) == before, "a refused request changed something"


@pytest.mark.parametrize("path", WS_ROUTES)
@pytest.mark.parametrize("credential", ["none", "wrong"])
def test_websockets_refuse_missing_or_wrong_token(server, path, credential):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    count("attacks.auth")
    headers = {"Authorization": "token not-the-token"} if credential == "wrong" else {}
    with pytest.raises(InvalidStatus) as info:
        with connect(server.ws_url(path.lstrip("/")), additional_headers=headers, open_timeout=15):
            pass
    assert info.value.response.status_code in (401, 403)


def _browser_session(server) -> httpx.Client:
    """A client holding the login cookie (as a browser would after opening the token URL) and _xsrf."""
    client = httpx.Client(base_url=server.base_url, timeout=30)
    client.get("login")  # the login page sets the _xsrf cookie
    client.get("api/status", params={"token": server.token}).raise_for_status()  # sets the login cookie
    assert any(name.startswith("username-") for name in client.cookies), dict(client.cookies)
    assert client.cookies.get("_xsrf")
    return client


@pytest.mark.parametrize("method,path", WRITE_ROUTES, ids=[f"{m} {p}" for m, p in WRITE_ROUTES])
@pytest.mark.parametrize("origin", [None, "https://evil.example"], ids=["no-origin", "foreign-origin"])
def test_cross_site_write_with_cookie_but_without_xsrf_is_refused(server, method, path, origin):
    """A forged request riding the browser's login cookie: 403 (XSRF) without an Origin header;
    with a foreign Origin Jupyter refuses it even earlier (it answers 404 to hide the route)."""
    count("attacks.xsrf")
    before = _events(server)
    headers = {"Content-Type": "application/json", **({"Origin": origin} if origin else {})}
    browser = _browser_session(server)
    try:
        resp = browser.request(method, _fill(path), content=b'{"message": "forged"}', headers=headers)
    finally:
        browser.close()
    if origin is None:
        assert resp.status_code == 403, (resp.status_code, resp.text[:300])
        assert "xsrf" in resp.json()["message"].lower()
    else:
        assert resp.status_code in (403, 404), (resp.status_code, resp.text[:300])
        assert resp.json()["error"] in ("forbidden", "not_found")
    assert _events(server) == before


def test_same_session_with_xsrf_token_is_accepted(server):
    """The control for the test above: the cookie session works once the XSRF token is sent."""
    browser = _browser_session(server)
    try:
        resp = browser.post("api/modder/hooks/test", json={"message": "legit"},
                            headers={"X-XSRFToken": browser.cookies.get("_xsrf")})
    finally:
        browser.close()
    assert resp.status_code == 201, resp.text


def test_websocket_with_cookie_from_a_foreign_origin_is_refused(server):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    count("attacks.ws_origin")
    browser = _browser_session(server)
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    browser.close()
    url = server.ws_url("api/modder/hooks/ws")
    with pytest.raises(InvalidStatus) as info:
        with connect(url, additional_headers={"Cookie": cookie}, origin="https://evil.example", open_timeout=15):
            pass
    assert info.value.response.status_code == 403
    # control: the same cookie from the server's own origin is accepted
    with connect(url, additional_headers={"Cookie": cookie}, origin=server.base_url.rstrip("/"), open_timeout=15) as ws:
        ws.send(json.dumps({"topics": ["on_modder_test"]}))
        assert json.loads(ws.recv(timeout=15))["type"] == "ack"


# ---------------------------------------------------------------------------- oversize bodies
def _stream(total: int, chunk: int = 64 * 1024):
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        sent += n
        yield b" " * n


@pytest.mark.parametrize("path", JSON_POSTS)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversize_json_body_is_413(server, path, framing):
    count("attacks.oversize")
    size = 2 * 1024 * 1024  # over the 1 MiB JSON limit
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as http:
        try:
            content = b" " * size if framing == "content-length" else _stream(size)
            resp = http.post(path, content=content, headers={"Content-Type": "application/json"})
        except (httpx.RemoteProtocolError, httpx.WriteError):  # the server may close the socket mid-body
            return
    assert resp.status_code == 413, (resp.status_code, resp.text[:300])
    assert resp.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("path", ["api/ingest/upload", "assets/upload"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversize_upload_is_413_and_leaves_nothing(server, path, framing):
    count("attacks.oversize")
    size = 1024 * 1024  # limit is 256 KiB in this workspace
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as http:
        try:
            content = b"x" * size if framing == "content-length" else _stream(size)
            resp = http.post(path, params={"filename": "big.bin", "asset_type": "misc"}, content=content)
        except (httpx.RemoteProtocolError, httpx.WriteError):
            resp = None
    if resp is not None:
        assert resp.status_code == 413, (resp.status_code, resp.text[:300])
    uploads = server.ws.data_dir / "uploads"
    assert not any(p.is_file() for p in uploads.rglob("*")) if uploads.exists() else True
    assert not list((server.ws.assets_root).rglob("big*"))


# ---------------------------------------------------------------------------- malformed JSON
MALFORMED = {
    "not-json": b"{not json",
    "truncated": b'{"source_path": "/x"',
    "list": b"[1, 2, 3]",
    "string": b'"just a string"',
    "number": b"42",
    "not-utf8": b'{"message": "\xff\xfe"}',
    "nested-200k": b"[" * 200_000 + b"]" * 200_000,
    "nested-object": b'{"message": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
    "nul": b'{"message": "\x00"}'.replace(b"\x00", b"\\u0000") + b"\x00",
}


@pytest.mark.parametrize("path", JSON_POSTS)
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_json_is_a_clear_400(server, path, kind):
    count("attacks.malformed_json")
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as http:
        resp = http.post(path, content=MALFORMED[kind], headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["error"] in ("invalid_json", "invalid_body") and body["message"], body


WRONG_TYPES = [
    ("api/ingest/queue", {"source_path": 5}),
    ("api/ingest/queue", {"source_path": "/x", "remote_url": "https://civitai.com/models/1"}),
    ("api/ingest/queue", {"source_path": "/x", "metadata": [1, 2]}),
    ("api/ingest/queue", {"source_path": "/x", "pin": "yes"}),
    ("api/ingest/apply", {"job_ids": [1, 2]}),
    ("api/ingest/release", {"job_id": ["a"]}),
    ("assets/bulk", {"uids": {"a": 1}, "add_tags": ["x"]}),
    ("assets/bulk", {"uids": ["a"], "add_tags": [{"x": 1}]}),
    ("assets/register", {"path": None, "asset_type": "images"}),
    ("api/modder/hooks/webhooks", {"event": 5, "url": "https://example.org/h"}),
    ("api/modder/hooks/test", {"data": "not an object"}),
    ("api/ingest/queue", {"source_path": "/x", "surprise": True}),
]


@pytest.mark.parametrize("path,body", WRONG_TYPES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(WRONG_TYPES)])
def test_wrong_field_types_are_a_clear_400(server, path, body):
    count("attacks.malformed_json")
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=30) as http:
        resp = http.post(path, json=body)
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    assert resp.json()["message"]


def test_deeply_nested_metadata_inside_a_valid_body_is_not_a_500(server):
    count("attacks.malformed_json")
    src = server.ws.root / "nested.bin"
    src.write_bytes(b"nested metadata")
    nested = (b'{"source_path": ' + json.dumps(str(src)).encode() + b', "metadata": ' + b'{"a": ' * 3000 + b"1"
              + b"}" * 3001)
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as http:
        resp = http.post("api/ingest/queue", content=nested, headers={"Content-Type": "application/json"})
        assert resp.status_code in (200, 201, 400), (resp.status_code, resp.text[:300])
        if resp.status_code >= 400:
            assert resp.json()["message"]
        ok = http.post("api/ingest/queue", json={"source_path": str(src)})  # the server still works
        assert ok.status_code in (200, 201), ok.text


def test_deeply_nested_json_in_a_query_parameter_is_a_clear_400(server):
    count("attacks.malformed_json")
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=30) as http:
        resp = http.post("api/ingest/upload", params={"filename": "q.bin", "metadata": "[" * 5000 + "]" * 5000},
                         content=b"query metadata")
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    assert resp.json()["error"] == "invalid_parameter"


def test_deeply_nested_websocket_message_gets_an_error_and_the_socket_stays_usable(server):
    from websockets.sync.client import connect

    count("attacks.malformed_json")
    with connect(server.ws_url("api/modder/hooks/ws"), additional_headers=server.headers, open_timeout=15) as ws:
        assert json.loads(ws.recv(timeout=15))["type"] == "ack"  # the default subscription on connect
        ws.send("[" * 100_000 + "]" * 100_000)
        reply = json.loads(ws.recv(timeout=15))
        assert reply["type"] == "error" and reply["message"], reply
        ws.send(json.dumps({"topics": ["on_modder_test"]}))  # still answering
        assert json.loads(ws.recv(timeout=15))["type"] == "ack"


@pytest.mark.parametrize("body", [
    {"event": "*", "url": "http://127.0.0.1:8888/api/contents"},
    {"event": "*", "url": "http://169.254.169.254/latest/meta-data/"},
    {"event": "*", "url": "http://localhost/hook"},
], ids=["loopback", "metadata", "localhost"])
def test_webhook_registration_to_the_local_network_is_a_400_over_http(server, body):
    count("attacks.ssrf")
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=30) as http:
        resp = http.post("api/modder/hooks/webhooks", json=body)
        assert resp.status_code == 400, (resp.status_code, resp.text[:300])
        assert resp.json()["message"]
        assert http.get("api/modder/hooks/webhooks").json() in ([], {"items": []}, {"webhooks": []})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8888/x.safetensors", "https://169.254.169.254/x",
                                 "https://civitai.com.evil.example/x"])
def test_remote_pull_of_a_local_or_foreign_url_is_a_4xx_over_http(server, url):
    count("attacks.ssrf")
    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=30) as http:
        resp = http.post("api/ingest/queue", json={"provider": "generic", "remote_url": url,
                                                   "terms_acknowledged": True})
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    assert resp.json()["message"]
