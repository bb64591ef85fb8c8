"""Errors are JSON everywhere (405, 413 for streamed bodies, config errors), and
``COMFYVN_LOG_LEVEL=DEBUG`` mirrors hook payloads into ``logs/server.log``."""

from __future__ import annotations

import asyncio
import json

import pytest
from server_helpers import assert_error


async def test_unsupported_methods_and_json_errors(api, ws):
    r = await api("PUT", "/assets", body={})
    assert_error(r, 405, "method_not_allowed")
    assert_error(await api("DELETE", "/api/modder/hooks"), 405, "method_not_allowed")
    assert_error(await api("GET", "/api/ingest/apply"), 403, "feature_disabled")  # the gate answers first
    ws.config_file.write_text('{"features": {"enable_asset_ingest": tru', encoding="utf-8")
    assert_error(await api("GET", "/api/ingest/status"), 500, "config_error", str(ws.config_file), "not valid JSON")


@pytest.mark.comfyvn(max_json_bytes=1024)
async def test_chunked_json_body_over_the_limit_is_413(api, jp_fetch, make_png):
    big = json.dumps({"path": str(make_png()), "asset_type": "images", "metadata": {"x": "y" * 4000}}).encode()

    async def producer(write):  # no Content-Length: Transfer-Encoding: chunked
        for i in range(0, len(big), 500):
            await write(big[i:i + 500])

    resp = await jp_fetch("assets", "register", method="POST", body_producer=producer, raise_error=False)
    assert resp.code == 413 and json.loads(resp.body)["error"] == "payload_too_large"
    assert (await api("GET", "/assets")).json["items"] == []
    small = {"path": str(make_png()), "asset_type": "images"}
    assert (await api("POST", "/assets/register", body=small)).code == 201


@pytest.fixture
def debug_log(monkeypatch):
    monkeypatch.setenv("COMFYVN_LOG_LEVEL", "DEBUG")


async def test_debug_level_mirrors_hook_payloads_into_server_log(debug_log, api, ws, make_png):
    rec = (await api("POST", "/assets/register", body={"path": str(make_png()), "asset_type": "images"})).json
    sent = (await api("POST", "/api/modder/hooks/test", body={"message": "mirrored"})).json
    log_path = ws.logs_dir / "server.log"
    text = ""
    for _ in range(400):  # the mirror runs on the bus thread: give it a moment
        text = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
        if f"event {sent['id']} on_modder_test" in text:
            break
        await asyncio.sleep(0.025)
    lines = [line for line in text.splitlines() if " DEBUG comfyvn.studio.core.asset_registry " in line]
    assert any("hook on_asset_registered" in line and rec["uid"] in line for line in lines), text[-2000:]
    mirrored = [line for line in lines if f"event {sent['id']} on_modder_test" in line]
    assert mirrored and json.loads(mirrored[0].split(" on_modder_test ", 1)[1])["message"] == "mirrored"
