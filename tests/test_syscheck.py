"""tools/check_current_system.py against live servers: passing, and failing for the right reasons."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from live_server import live_server, live_server_context  # noqa: F401

from comfyvn.hooks import HOOK_SPECS
from comfyvn.syscheck import (
    HOOK_TABLE_BEGIN,
    HOOK_TABLE_END,
    PROFILES,
    Probe,
    all_routes,
    check_docs,
    hook_reference_markdown,
    judge,
    route_pattern,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOL = REPO_ROOT / "tools" / "check_current_system.py"

# The routes as the seeds and the issue name them, written the ways docs write placeholders.
DOC_ROUTES = """
POST /api/ingest/queue, POST /api/ingest/upload, GET /api/ingest/status?include_cache=true,
GET /api/ingest/jobs, GET /api/ingest/jobs/<job_id>, POST /api/ingest/apply, /api/ingest/release,
/api/ingest/retry and /api/ingest/cancel.
GET /assets?type=, /assets/{asset_uid}, /assets/{uid}/sidecar, /assets/:uid/thumbnail,
/assets/{uid}/download, POST /assets/upload, /assets/register, /assets/bulk,
/assets/debug/hooks, /assets/debug/modder-hooks, /assets/debug/history?limit=25.
POST /api/assets/register, GET /api/assets/search?q=, GET /api/assets/{id}.
/api/modder/hooks, /api/modder/hooks/history, ws://host/api/modder/hooks/ws, /api/modder/hooks/stream,
POST /api/modder/hooks/webhooks, DELETE /api/modder/hooks/webhooks/{id},
GET /api/modder/hooks/webhooks/{id}/deliveries, POST /api/modder/hooks/test, /api/comfyvn/openapi.json.
GET /api/licences/check, /api/licences/manifest?format=md, POST /api/licences/overrides/{uid}.
GET /assets/by-hash/{hash}, GET /api/library, POST /api/library/scan, POST /api/library/identify,
GET /api/library/duplicates.
"""


def write_docs(folder: Path, *, drop: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = DOC_ROUTES + "\n".join(f"- `{name}`" for name in HOOK_SPECS)
    if drop:
        assert drop in text
        text = text.replace(drop, "")
    (folder / "API.md").write_text(text)
    return folder


def _load_tool():
    spec = importlib.util.spec_from_file_location("check_current_system", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL_MODULE = _load_tool()


def run_tool(*args: str, env: dict | None = None, subprocess_run: bool = False) -> tuple[int, dict | str]:
    """Run the checker: in this process (fast), or as the real command line."""
    if subprocess_run:
        proc = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120,
                              env=env)
        code, out = proc.returncode, proc.stdout + proc.stderr
    else:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                code = TOOL_MODULE.main(list(args))
            except SystemExit as exc:  # argparse usage errors
                code = exc.code
        out = buf.getvalue()
    try:
        return code, json.loads(out)
    except ValueError:
        return code, out


def failed(report: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}


# ------------------------------------------------------------------------------ unit: the judge
def _resp(status: int, body: dict | str, ctype: str = "application/json") -> httpx.Response:
    content = json.dumps(body) if isinstance(body, dict) else body
    return httpx.Response(status, content=content.encode(), headers={"Content-Type": ctype})


@pytest.mark.parametrize("status, body, ok, words", [
    (200, {"items": []}, True, ""),
    (400, {"error": "invalid_body", "message": "must be a JSON object"}, True, "invalid_body"),
    (403, {"error": "feature_disabled", "message": "enable_asset_ingest disabled"}, True, "feature_disabled"),
    (404, {"error": "asset_not_found", "message": "no asset"}, True, "asset_not_found"),
    (404, {"message": "Not Found", "reason": None}, False, "no route"),
    (404, "<html>404: Not Found</html>", False, "no route"),
    (405, {"error": "method_not_allowed", "message": "Method Not Allowed"}, False, "405"),
    (403, {"error": "forbidden", "message": "authentication required"}, False, "JUPYTER_TOKEN"),
    (500, {"error": "internal_error", "message": "boom"}, False, "server error"),
    (200, "<html>a page</html>", False, "not JSON"),
])
def test_judge_accepts_only_answers_of_our_handlers(status, body, ok, words):
    verdict, detail = judge(Probe("/assets/{uid}"), _resp(status, body))
    assert verdict is ok and words in detail


def test_route_patterns_accept_placeholder_styles_but_not_longer_routes():
    pat = route_pattern("/assets/{uid}/sidecar")
    for text in ("GET /assets/{uid}/sidecar", "/assets/<uid>/sidecar", "`/assets/:uid/sidecar`",
                 "/assets/{asset_uid}/sidecar?x=1", "/assets/${UID}/sidecar |"):
        assert pat.search(text), text
    assert not pat.search("/assets/{uid}/sidecars")
    assert not route_pattern("/api/ingest/jobs").search("GET /api/ingest/jobs/{job_id}")
    assert route_pattern("/assets").search("curl http://host/assets?limit=5")
    assert not route_pattern("/assets").search("see /assets/{uid} and /assets/bulk")


def test_usage_errors_exit_2():
    code, out = run_tool("--base", "http://127.0.0.1:1/")
    assert code == 2 and "--profile" in out
    code, out = run_tool("--profile", "hook_bus", "--base", "127.0.0.1:8888")
    assert code == 2 and "http://" in out


# ------------------------------------------------------------------------------ live
@pytest.mark.parametrize("profile", ["p7_asset_ingest_cache", "asset_gallery", "hook_bus", "library", "all"])
def test_every_profile_passes_against_a_complete_server(live_server, tmp_path, profile):  # noqa: F811
    docs = write_docs(tmp_path / "docs")
    code, report = run_tool("--profile", profile, "--base", live_server.base_url, "--token", live_server.token,
                            "--docs", str(docs), "--json")
    assert (code, failed(report)) == (0, {}), failed(report)
    assert (code, failed(report)) == (0, {})
    assert report["profile"] == profile and report["base"] == live_server.base_url and report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    for probe in PROFILES[profile]["probes"]:
        assert f"route {probe.method} {probe.route}" in names
    if profile in ("p7_asset_ingest_cache", "all"):
        assert any(n.startswith("flag defaults: ") and n.endswith("comfyvn/config/defaults.json") for n in names)
        assert "ingest constants" in names
    if profile == "hook_bus":
        ws_checks = [c for c in report["checks"] if c["name"].startswith("websocket ")]
        assert len(ws_checks) == 4 and all(c["ok"] for c in ws_checks)
        assert "ack" in ws_checks[0]["detail"] and "pong" in ws_checks[0]["detail"]


def test_ingest_profile_with_the_flag_off_as_a_command_with_the_env_token(live_server, tmp_path):  # noqa: F811
    docs = write_docs(tmp_path / "docs")
    live_server.set_feature("enable_asset_ingest", False)
    try:
        env = {**live_server.env, "JUPYTER_TOKEN": live_server.token}
        code, report = run_tool("--profile", "p7_asset_ingest_cache", "--base", live_server.base_url,
                                "--docs", str(docs), "--json", env=env, subprocess_run=True)
    finally:
        live_server.set_feature("enable_asset_ingest", True)
    assert (code, failed(report)) == (0, {})
    checks = {c["name"]: c["detail"] for c in report["checks"]}
    assert "feature_disabled" in checks["route GET /api/ingest/status"]
    assert "off" in checks["ingest flag on this server"]


def test_docs_missing_a_route_or_a_hook_fail(live_server, tmp_path):  # noqa: F811
    docs = write_docs(tmp_path / "docs", drop="/api/ingest/retry and ")
    code, report = run_tool("--profile", "p7_asset_ingest_cache", "--base", live_server.base_url,
                            "--token", live_server.token, "--docs", str(docs), "--json")
    assert code == 1 and report["ok"] is False
    assert failed(report) == {"docs name every route": f"not in {docs}/*.md: /api/ingest/retry"}
    (docs / "API.md").write_text((docs / "API.md").read_text().replace("`on_asset_removed`", ""))
    code, report = run_tool("--profile", "asset_gallery", "--base", live_server.base_url,
                            "--token", live_server.token, "--docs", str(docs), "--json")
    assert code == 1 and failed(report) == {"docs name every hook": f"not in {docs}/*.md: on_asset_removed"}
    code, report = run_tool("--profile", "hook_bus", "--base", live_server.base_url, "--token", live_server.token,
                            "--docs", str(tmp_path / "nowhere"), "--json")
    assert code == 1 and list(failed(report)) == ["docs coverage"]


def test_wrong_token_and_bad_flag_defaults_fail(live_server, tmp_path):  # noqa: F811
    docs = write_docs(tmp_path / "docs")
    code, report = run_tool("--profile", "hook_bus", "--base", live_server.base_url, "--token", "wrong",
                            "--docs", str(docs), "--json")
    assert code == 1 and "refused the token" in failed(report)["server reachable"]
    shipped = tmp_path / "comfyvn.json"
    shipped.write_text(json.dumps({"features": {"enable_asset_ingest": True, "require_remote_terms_ack": True}}))
    code, report = run_tool("--profile", "p7_asset_ingest_cache", "--base", live_server.base_url,
                            "--token", live_server.token, "--docs", str(docs), "--config", str(shipped), "--json")
    assert code == 1
    assert failed(report) == {f"flag defaults: {shipped}": "features.enable_asset_ingest is true, expected false"}


def test_a_server_without_the_extension_fails_every_route(tmp_path):
    docs = write_docs(tmp_path / "docs")
    with live_server_context(tmp_path / "bare", extension=False) as bare:
        code, report = run_tool("--profile", "asset_gallery", "--base", bare.base_url, "--token", bare.token,
                                "--docs", str(docs), "--json")
        code_text, text = run_tool("--profile", "hook_bus", "--base", bare.base_url, "--token", bare.token,
                                   "--docs", str(docs), subprocess_run=True)
    assert code == 1
    bad = failed(report)
    assert set(bad) == {f"route {p.method} {p.route}" for p in PROFILES["asset_gallery"]["probes"]}
    assert all("no route" in d or "not an answer of the comfyvn handler" in d for d in bad.values())
    assert code_text == 1 and "FAILED" in text and "[FAIL] websocket /api/modder/hooks/ws" in text


# ------------------------------------------------------------------------------ docs/MODDER_HOOKS.md
MODDER_HOOKS = REPO_ROOT / "docs" / "MODDER_HOOKS.md"


def test_modder_hooks_reference_is_generated_from_the_hook_specs():
    text = MODDER_HOOKS.read_text(encoding="utf-8")
    start, end = text.index(HOOK_TABLE_BEGIN), text.index(HOOK_TABLE_END) + len(HOOK_TABLE_END)
    assert text[start:end] == hook_reference_markdown(), (
        "docs/MODDER_HOOKS.md is out of date: run python -c \"from comfyvn.syscheck import "
        "update_hook_reference; update_hook_reference('docs/MODDER_HOOKS.md')\"")
    for name, spec in HOOK_SPECS.items():
        assert f"#### `{name}` ({spec.category})" in text
        assert all(f"| `{field}` |" in text for field in spec.payload)


def test_modder_hooks_doc_alone_covers_the_hook_bus_profile(tmp_path):
    (tmp_path / "MODDER_HOOKS.md").write_text(MODDER_HOOKS.read_text(encoding="utf-8"))
    checks = check_docs(tmp_path, all_routes("hook_bus"), PROFILES["hook_bus"]["hooks"])
    assert [(c.name, c.ok) for c in checks] == [("docs name every route", True), ("docs name every hook", True)]
    text = MODDER_HOOKS.read_text(encoding="utf-8")
    for header in ("X-Comfyvn-Event", "X-Comfyvn-Delivery", "X-Comfyvn-Timestamp", "X-Comfyvn-Signature"):
        assert f"`{header}`" in text
    assert "at least once" in text.lower() and "last_event_id" in text
