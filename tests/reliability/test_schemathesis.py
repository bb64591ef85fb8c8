"""Schemathesis against the live server's OpenAPI document: no 500, every error a clear 4xx JSON.

Every operation of ``/api/comfyvn/openapi.json`` (fetched from the running server) gets
schema-shaped (valid) and schema-breaking (invalid) requests: bounded examples per operation in CI,
``COMFYVN_FUZZ_SCALE`` raises them for the long run.  (Schemathesis' own pytest plugin does
not run under pytest 9, so each operation's hypothesis strategy is driven here.)  The server
runs with source roots limited to its workspace and no private webhook targets, so generated
paths and URLs reach nothing outside the test.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from comfyvn_server_ext.openapi import build_openapi
from hypothesis import given, settings
from schemathesis import GenerationMode

from .fuzzkit import SCALE, count

CONFIG = {
    "features": {"enable_asset_ingest": True},
    "ingest": {"allowed_source_roots": ["$COMFYVN_HOME"]},
    "hooks": {"allow_private_webhook_targets": False},
}
WEBSOCKETS = ("/api/modder/hooks/ws", "/api/modder/hooks/stream")  # upgrades: see test_security
DOCUMENT = "/api/comfyvn/openapi.json"  # schemathesis leaves out the document's own URL
OPERATIONS = sorted(f"{method.upper()} {path}" for path, ops in build_openapi()["paths"].items()
                    for method in ops if path not in (*WEBSOCKETS, DOCUMENT))


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    from relkit import start_server

    server = start_server(tmp_path_factory.mktemp("schemathesis"), CONFIG)
    src = server.ws.root / "hero.png"  # one registered asset, so {uid} routes can answer 200 too
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    httpx.post(server.url("api/ingest/queue"), headers=server.headers, json={"source_path": str(src)},
               timeout=30).raise_for_status()
    httpx.post(server.url("api/ingest/apply"), headers=server.headers, json={}, timeout=30).raise_for_status()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live_operations(api_server) -> dict:
    schema = schemathesis.openapi.from_url(api_server.url("api/comfyvn/openapi.json"), headers=api_server.headers)
    ops = {}
    for result in schema.get_all_operations():
        op = result.ok()
        ops[op.label] = op
    return ops


def test_live_document_lists_every_route(api_server, live_operations):
    live = httpx.get(api_server.url(DOCUMENT.lstrip("/")), headers=api_server.headers, timeout=30).json()
    labels = sorted(f"{m.upper()} {p}" for p, ops in live["paths"].items() for m in ops)
    assert labels == sorted([*OPERATIONS, f"GET {DOCUMENT}", *(f"GET {w}" for w in WEBSOCKETS)])
    assert sorted(label for label in live_operations if label.split(" ", 1)[1] not in WEBSOCKETS) == OPERATIONS


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("label", OPERATIONS)
def test_no_500_and_errors_are_clear_json(label, mode, live_operations, api_server):
    operation = live_operations[label]
    base = api_server.base_url.rstrip("/")
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception as exc:  # an operation with nothing to make invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, exc
        assert not operation.definition.raw.get("parameters") and "requestBody" not in operation.definition.raw
        return

    @given(case=strategy)
    @settings(max_examples=8 * SCALE, deadline=None, derandomize=SCALE == 1, database=None)
    def check(case):
        count("schemathesis.requests")
        response = case.call(base_url=base, headers=api_server.headers, timeout=30)
        assert response.status_code < 500, (f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                            f"{response.text[:500]}")
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error"), str) and body["error"], body
            assert isinstance(body.get("message"), str) and body["message"].strip(), body

    check()
