"""Provider tokens: gated / login-only files, clear errors, and tokens that never leak."""

from __future__ import annotations

import json
import logging

import pytest

from comfyvn.ingest.errors import RemoteError
from comfyvn.ingest.remote import download, plan_remote, resume_meta_path
from tests.fakes import CIVITAI_VERSION_ID, HF_GATED_REPO, FakeProviders
from tests.fakes.provider_server import provider_servers_fixture  # noqa: F401

MiB = 1024 * 1024
GATED = FakeProviders.hf_resolve_url("heroine_ckpt_v1.safetensors", repo=HF_GATED_REPO)


@pytest.fixture(autouse=True)
def _no_tokens(monkeypatch):
    for name in ("CIVITAI_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_gated_repo_without_token_says_to_set_hf_token(provider_servers, ws):
    fp = provider_servers
    with pytest.raises(RemoteError) as err:
        plan_remote("huggingface", GATED, None, ws)
    e = err.value
    assert (e.code, e.retryable, e.status) == ("remote.gated", False, 401)
    assert "requires a Hugging Face token with access: set HF_TOKEN" in e.message
    assert fp.requests("hf_cdn") == []


def test_gated_repo_with_a_token_not_yet_approved(provider_servers, ws, monkeypatch):
    fp = provider_servers
    monkeypatch.setenv("HF_TOKEN", fp.hf_pending_token)
    with pytest.raises(RemoteError) as err:
        plan_remote("huggingface", GATED, None, ws)
    assert (err.value.code, err.value.status) == ("remote.gated", 403)
    assert "has not been granted access yet" in err.value.message
    assert fp.hf_pending_token not in err.value.message


def test_gated_repo_with_a_granted_token_downloads(provider_servers, ws, tmp_path, monkeypatch):
    fp = provider_servers
    monkeypatch.setenv("HF_TOKEN", fp.hf_token)
    plan = plan_remote("huggingface", GATED, None, ws)
    payload = fp.hf_file("heroine_ckpt_v1.safetensors", repo=HF_GATED_REPO)
    assert (plan.expected_sha256, plan.expected_size) == (payload.sha256, payload.size)  # from X-Linked-*
    assert download(plan, tmp_path / "g.part", ws=ws, max_bytes=200 * MiB) == (payload.sha256, payload.size)
    hub = fp.requests("hf", f"/{HF_GATED_REPO}/resolve/*")
    assert hub and all(r.headers.get("authorization") == f"Bearer {fp.hf_token}" for r in hub)
    assert "authorization" not in fp.requests("hf_cdn")[0].headers  # never forwarded to the CDN


def test_invalid_hf_token_is_named(provider_servers, ws, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_42")
    with pytest.raises(RemoteError) as err:
        plan_remote("huggingface", FakeProviders.hf_resolve_url(), None, ws)
    assert err.value.code == "remote.auth_invalid"
    assert "HF_TOKEN" in err.value.message and "hf_not_a_real_token_42" not in err.value.message


def test_civitai_login_required_without_and_with_token(provider_servers, ws, tmp_path, monkeypatch):
    fp = provider_servers
    fp.civitai_require_auth.add(CIVITAI_VERSION_ID)
    plan = plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "c.part", ws=ws, max_bytes=200 * MiB)
    assert (err.value.code, err.value.status) == ("remote.auth_required", 401)
    assert "requires you to be logged in" in err.value.message and "CIVITAI_API_TOKEN" in err.value.message

    monkeypatch.setenv("CIVITAI_API_TOKEN", fp.civitai_token)
    plan = plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
    assert download(plan, tmp_path / "c.part", ws=ws, max_bytes=200 * MiB)[0] == plan.expected_sha256
    assert fp.requests("civitai", "/api/download/*")[-1].headers["authorization"] == f"Bearer {fp.civitai_token}"
    assert all("authorization" not in r.headers for r in fp.requests("civitai_cdn"))


def test_civitai_downloads_disabled_is_final(provider_servers, ws, tmp_path, monkeypatch):
    fp = provider_servers
    monkeypatch.setenv("CIVITAI_API_TOKEN", fp.civitai_token)
    fp.civitai_disabled.add(CIVITAI_VERSION_ID)
    plan = plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "c.part", ws=ws, max_bytes=200 * MiB)
    assert (err.value.code, err.value.retryable) == ("remote.downloads_disabled", False)
    assert "disabled downloads" in err.value.message


@pytest.mark.parametrize("case, code", [("archived", "remote.gone"), ("early_access_non_browser",
                                                                        "remote.early_access"),
                                        ("not_found", "remote.not_found"), ("blocked", "remote.forbidden")])
def test_civitai_documented_refusals(provider_servers, ws, tmp_path, case, code):
    fp = provider_servers
    plan = plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
    fp.inject("civitai", "/api/download/models/*", "case", name=case)
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "c.part", ws=ws, max_bytes=200 * MiB)
    assert err.value.code == code and not err.value.retryable


def test_tokens_never_reach_logs_errors_plans_or_resume_files(provider_servers, ws, tmp_path, monkeypatch, caplog):
    fp = provider_servers
    monkeypatch.setenv("HF_TOKEN", fp.hf_token)
    monkeypatch.setenv("CIVITAI_API_TOKEN", fp.civitai_token)
    secrets = (fp.hf_token, fp.civitai_token)
    caplog.set_level(logging.DEBUG)  # comfyvn, httpx and httpcore at their chattiest
    texts: list[str] = []

    hf = plan_remote("huggingface", GATED, None, ws)
    civ = plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
    for plan in (hf, civ):
        texts += [repr(plan), str(plan), json.dumps(plan.to_dict()), repr(plan.headers), str(plan.headers)]
    assert hf.headers["Authorization"].endswith(fp.hf_token)  # it is there to be used ...

    # a cut download leaves validators on disk; a failing one raises
    fp.inject("hf_cdn", "/xet-bridge-us/*", "cut", after=100_000, times=4)
    with pytest.raises(RemoteError) as cut:
        download(hf, tmp_path / "h.part", ws=ws, max_bytes=200 * MiB)
    texts.append(resume_meta_path(tmp_path / "h.part").read_text())
    fp.inject("civitai", "/api/download/models/*", "status", status=500,
              body={"error": f"echoing your header: Bearer {fp.civitai_token}"})
    with pytest.raises(RemoteError) as echoed:
        download(civ, tmp_path / "c.part", ws=ws, max_bytes=200 * MiB)
    monkeypatch.setenv("HF_TOKEN", fp.hf_pending_token)
    with pytest.raises(RemoteError) as denied:
        plan_remote("huggingface", GATED, None, ws)
    secrets += (fp.hf_pending_token,)
    for exc in (cut.value, echoed.value, denied.value):
        texts += [str(exc), repr(exc), exc.message, json.dumps(exc.to_dict()), repr(exc.__cause__)]
    assert "***" in echoed.value.message  # the echoed token was scrubbed, the rest of the message kept

    texts.append(caplog.text)
    texts += [json.dumps(r.args, default=str) for r in caplog.records]
    assert caplog.records, "expected log lines to check"
    for secret in secrets:
        assert not any(secret in t for t in texts), secret
