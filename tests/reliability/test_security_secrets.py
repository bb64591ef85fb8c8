"""Secrets never leak: provider tokens, webhook secrets and the Jupyter token.

A real server runs with ``CIVITAI_API_TOKEN`` / ``HF_TOKEN`` in its environment and
``COMFYVN_LOG_LEVEL=DEBUG`` (every event mirrored into the log), pulls a Civitai file that needs
the token and a gated Hugging Face file, fails one pull, applies, registers a signed webhook and
delivers to it.  Then every secret is searched for in every API answer, every delivered webhook
body, every log file, every sidecar and staging file, and every database column (the webhook
secret is stored sealed with a key kept outside the database, in config/secrets.key).
"""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from .fuzzkit import count


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from relkit import HARNESS_CONFIG, WebhookReceiver, deep_merge, start_server

    from tests.fakes.provider_server import (
        CIVITAI_OLD_VERSION_ID,
        CIVITAI_VERSION_ID,
        HF_GATED_REPO,
        FakeProviders,
    )

    fp = FakeProviders().start()
    fp.civitai_require_auth = {CIVITAI_VERSION_ID}
    fp.civitai_disabled = {CIVITAI_OLD_VERSION_ID}
    receiver = WebhookReceiver()
    env = {"CIVITAI_API_TOKEN": fp.civitai_token, "HF_TOKEN": fp.hf_token, "COMFYVN_LOG_LEVEL": "DEBUG"}
    server = start_server(tmp_path_factory.mktemp("secrets"), deep_merge(HARNESS_CONFIG, fp.config_patch()),
                          env=env, token="jupyter-secret-token-5c1d")
    http = httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60)
    hook = http.post("api/modder/hooks/webhooks", json={"event": "*", "url": receiver.url,
                                                        "secret": receiver.secret})
    assert hook.status_code == 201, hook.text
    jobs = [http.post("api/ingest/queue", json={"provider": p, "remote_url": u, "terms_acknowledged": True}).json()
            for p, u in (("civitai", fp.civitai_model_page()),
                         ("civitai", fp.civitai_model_page(CIVITAI_OLD_VERSION_ID)),  # downloads disabled: fails
                         ("huggingface", fp.hf_resolve_url("heroine_ckpt_v1.safetensors", repo=HF_GATED_REPO)))]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [http.get(f"api/ingest/jobs/{j['job_id']}").json()["status"] for j in jobs]
        if all(s in ("staged", "failed", "duplicate") for s in states):
            break
        time.sleep(0.2)
    http.post("api/ingest/apply", json={})
    http.post("api/modder/hooks/test", json={"message": "secret scan"})
    httpx.get(server.url("api/no-such-route"), params={"token": server.token})  # a logged 404 with ?token=
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(d.event == "on_modder_test" for d in receiver.snapshot()):
        time.sleep(0.2)
    yield {"server": server, "http": http, "fp": fp, "receiver": receiver, "jobs": jobs, "hook": hook.json(),
           "secrets": {"civitai token": fp.civitai_token, "hf token": fp.hf_token,
                       "webhook secret": receiver.secret, "jupyter token": server.token}}
    http.close()
    server.stop()
    receiver.close()
    fp.stop()


def test_the_secrets_were_really_used(scene):
    """Without this the scan below could pass vacuously."""
    fp, http = scene["fp"], scene["http"]
    auth = [r.headers.get("authorization", "") for r in fp.requests("civitai")]
    assert any(fp.civitai_token in a for a in auth), "the Civitai token was never sent"
    assert any(fp.hf_token in r.headers.get("authorization", "") for r in fp.requests("hf")), "HF token never sent"
    statuses = {j["job_id"]: http.get(f"api/ingest/jobs/{j['job_id']}").json() for j in scene["jobs"]}
    assert sorted(s["status"] for s in statuses.values()) == ["applied", "applied", "failed"], statuses
    good = [d for d in scene["receiver"].snapshot() if d.signature_ok]
    assert good and len(good) == len(scene["receiver"].snapshot())  # signed with the secret


def _api_texts(scene) -> dict[str, str]:
    http = scene["http"]
    texts = {}
    paths = ["api/ingest/status?include_cache=true&limit=100", "api/ingest/jobs?limit=100",
             "api/modder/hooks/history?limit=1000", "assets/debug/history?limit=100", "assets?limit=100",
             "api/modder/hooks/webhooks", f"api/modder/hooks/webhooks/{scene['hook']['id']}",
             f"api/modder/hooks/webhooks/{scene['hook']['id']}/deliveries?limit=1000", "assets/debug/modder-hooks",
             "api/modder/hooks"]
    paths += [f"api/ingest/jobs/{j['job_id']}" for j in scene["jobs"]]
    for asset in http.get("assets", params={"limit": 100}).json()["items"]:
        paths += [f"assets/{asset['uid']}", f"assets/{asset['uid']}/sidecar"]
    for path in paths:
        resp = http.get(path)
        assert resp.status_code == 200, (path, resp.status_code)
        texts[f"GET /{path}"] = resp.text
    return texts


def _disk_texts(scene) -> dict[str, str]:
    server = scene["server"]
    ws = server.ws
    texts = {"jupyter server log": server.log_text()}
    for folder in (ws.logs_dir, ws.data_dir, ws.cache_dir):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".log", ".json", ".txt") or path.name.startswith("server.log"):
                texts[str(path)] = path.read_text(encoding="utf-8", errors="replace")
    conn = sqlite3.connect(f"file:{ws.db_path}?mode=ro", uri=True)
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            texts[f"db:{table}"] = json.dumps(rows, default=str)
    finally:
        conn.close()
    # the database files as bytes too (a copy of data/ is what leaks), WAL included
    for path in ws.db_path.parent.glob(ws.db_path.name + "*"):
        texts[f"file:{path.name}"] = path.read_bytes().decode("latin-1")
    texts["webhook bodies"] = "\n".join(b.decode("utf-8", "replace") for b in scene["receiver"].raw_bodies)
    return texts


@pytest.mark.parametrize("where", ["api", "disk"])
def test_no_secret_in_responses_events_logs_files_or_database(scene, where):
    texts = _api_texts(scene) if where == "api" else _disk_texts(scene)
    assert len(texts) > 5
    leaks = [(name, label) for name, text in texts.items() for label, secret in scene["secrets"].items()
             if secret in text]
    for _ in scene["secrets"]:
        count("attacks.secret_leak")
    assert leaks == [], f"secrets found: {leaks}"


def test_debug_log_really_mirrors_events(scene):
    """COMFYVN_LOG_LEVEL=DEBUG is on: the log holds event payloads, so the scan above covered them."""
    log = (scene["server"].ws.logs_dir / "server.log").read_text(errors="replace")
    assert "on_asset_ingest_applied" in log and "on_modder_test" in log
