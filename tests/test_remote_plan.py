"""plan_remote(): what a person pastes -> the file, its published hash and size, via the provider API."""

from __future__ import annotations

import json

import pytest

from comfyvn.ingest.errors import RemoteError
from comfyvn.ingest.remote import plan_remote
from tests.fakes import CIVITAI_OLD_VERSION_ID, CIVITAI_VERSION_ID, HF_REPO, FakeProviders
from tests.fakes.provider_server import load_fixtures, provider_servers_fixture  # noqa: F401

V20_SHA = "5aa7e63d24217f0d43de816446389fe5e45ae125274f8f0702638689470e5cc9"
V10_SHA = "49f1527441d0d29bf9bc874ebeb8033cb5ccf850f80ab55e57db3417e90bd4f5"
ZIP_SHA = "5dd335cc26d5c1d3339caad1666483120f63a24cbe01ec1de78477d28995d681"
HF_SHA = "b22bf75fe033635108ca7e75a809cbbb5ece93e5642afa9895ee619dbb5f585c"
HF_COMMIT = "f3fb0dd9e030580c6da440e94234897434a6d237"


@pytest.fixture(autouse=True)
def _no_tokens(monkeypatch):
    for name in ("CIVITAI_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("ref, sha, size, name", [
    (FakeProviders.civitai_model_page(), V20_SHA, 2731337, "inkwashHeroine_v20.safetensors"),
    (FakeProviders.civitai_model_page(CIVITAI_OLD_VERSION_ID), V10_SHA, 2698021, "inkwashHeroine_v10.safetensors"),
    ("https://civitai.com/models/913572", V20_SHA, 2731337, "inkwashHeroine_v20.safetensors"),  # newest version
    ("civitai:1021947", V10_SHA, 2698021, "inkwashHeroine_v10.safetensors"),
    ("civitai:913572@1184630", V20_SHA, 2731337, "inkwashHeroine_v20.safetensors"),
    ("urn:air:sdxl:lora:civitai:913572@1021947", V10_SHA, 2698021, "inkwashHeroine_v10.safetensors"),
    ("https://civitai.com/api/download/models/1184630", V20_SHA, 2731337, "inkwashHeroine_v20.safetensors"),
    ("https://civitai.com/api/download/models/1184630?type=Training%20Data", ZIP_SHA, 1048893,
     "inkwashHeroine_v20_trainingData.zip"),
    ("https://civitai.com/api/download/models/1184630?fileId=1094418", ZIP_SHA, 1048893,
     "inkwashHeroine_v20_trainingData.zip"),
    # by-hash is case-insensitive on Civitai: a lower-case hash finds v1.0
    (f"civitai:sha256:{V10_SHA}", V10_SHA, 2698021, "inkwashHeroine_v10.safetensors"),
])
def test_civitai_references_resolve_to_the_published_file(provider_servers, ws, ref, sha, size, name):
    fp = provider_servers
    plan = plan_remote("civitai", ref, None, ws)
    assert (plan.expected_sha256, plan.expected_size, plan.filename) == (sha, size, name)
    assert plan.provider == "civitai"
    # the API's https://civitai.com/... download URL is moved onto the configured base URL
    assert plan.download_url.startswith(fp.civitai_base + "/api/download/models/")
    assert fp.requests("civitai_cdn") == []  # planning downloads nothing


def test_civitai_plan_keeps_raw_model_version_json(provider_servers, ws):
    fp = provider_servers
    plan = plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
    raw = load_fixtures()["civitai_versions"][CIVITAI_VERSION_ID]
    assert {k: v for k, v in plan.provider_metadata.items() if k != "model"} == {
        k: v for k, v in raw.items() if k != "model"}
    # licence terms, creator and tags live on /models/{modelId}: fetched and merged into "model"
    model = plan.provider_metadata["model"]
    assert model["name"] == raw["model"]["name"] and model["allowCommercialUse"] == ["Image", "RentCivit"]
    assert model["creator"]["username"] == "fixture_inkmaker" and "style" in model["tags"]
    assert [r.path for r in fp.requests("civitai")] == [f"/api/v1/model-versions/{CIVITAI_VERSION_ID}",
                                                        "/api/v1/models/913572"]
    assert plan.provider_metadata["files"][0]["hashes"]["SHA256"].startswith("5AA7E63D")  # untouched, upper-case
    assert plan.source_url == FakeProviders.civitai_model_page()


def test_civitai_model_page_without_version_asks_the_models_endpoint(provider_servers, ws):
    fp = provider_servers
    plan_remote("civitai", "https://civitai.com/models/913572/some-slug", None, ws)
    paths = [r.path for r in fp.requests("civitai")]
    assert paths == ["/api/v1/models/913572", f"/api/v1/model-versions/{CIVITAI_VERSION_ID}"]


@pytest.mark.parametrize("ref, code, words", [
    ("civitai:999999", "remote.not_found", "Model not found"),
    ("https://civitai.com/models/424242", "remote.not_found", "No model with id 424242"),
    ("https://civitai.com/api/download/models/1184630?type=VAE", "remote.not_found", "no file matches type=VAE"),
    ("https://example.com/models/1", "remote.bad_url", "Not a Civitai URL"),
    ("civitai:abc", "remote.bad_url", "must be a number"),
    (f"civitai:sha256:{'0' * 64}", "remote.not_found", "Model not found"),
])
def test_civitai_bad_references_give_clear_errors(provider_servers, ws, ref, code, words):
    with pytest.raises(RemoteError) as err:
        plan_remote("civitai", ref, None, ws)
    assert err.value.code == code
    assert words in err.value.message


def test_civitai_token_in_url_is_used_but_not_kept(provider_servers, ws):
    fp = provider_servers
    plan = plan_remote("civitai", "https://civitai.com/api/download/models/1184630?token=secret-key-123", None, ws)
    assert "secret-key-123" not in plan.source_url + plan.download_url + repr(plan) + json.dumps(plan.to_dict())
    assert plan.headers["Authorization"] == "Bearer secret-key-123"
    assert fp.requests("civitai")[-1].headers["authorization"] == "Bearer secret-key-123"


@pytest.mark.parametrize("ref", [
    FakeProviders.hf_resolve_url(),
    FakeProviders.hf_resolve_url() + "?download=true",
    f"https://huggingface.co/{HF_REPO}/blob/main/inkwash_style_xl.safetensors",
    f"hf://{HF_REPO}/inkwash_style_xl.safetensors",
    f"hf://{HF_REPO}@{HF_COMMIT}/inkwash_style_xl.safetensors",
])
def test_huggingface_lfs_file_resolves_with_sha256_and_pins_the_commit(provider_servers, ws, ref):
    fp = provider_servers
    plan = plan_remote("huggingface", ref, None, ws)
    assert plan.expected_sha256 == HF_SHA
    assert plan.expected_size == 4718613
    assert plan.filename == "inkwash_style_xl.safetensors"
    assert plan.download_url == f"{fp.hf_base}/{HF_REPO}/resolve/{HF_COMMIT}/inkwash_style_xl.safetensors"
    assert plan.provider_metadata["id"] == HF_REPO and plan.provider_metadata["siblings"][3]["lfs"]["sha256"] == HF_SHA
    api = fp.requests("hf", "/api/models/*")[0]
    assert "blobs=true" in api.query
    assert fp.requests("hf", f"/{HF_REPO}/resolve/*")[0].method == "HEAD"
    assert fp.requests("hf_cdn") == []


def test_huggingface_small_file_follows_the_relative_redirect(provider_servers, ws):
    fp = provider_servers
    plan = plan_remote("huggingface", FakeProviders.hf_resolve_url("README.md"), None, ws)
    assert plan.expected_size == 393
    assert plan.expected_sha256 is None  # its etag is a git sha1, not a content sha256
    assert fp.requests("hf", "/api/resolve-cache/*")[0].method == "HEAD"


def test_huggingface_png_in_a_folder(provider_servers, ws):
    plan = plan_remote("hf", f"hf://{HF_REPO}/images/preview-01.png", None, ws)
    assert plan.provider == "huggingface"
    assert plan.filename == "preview-01.png"
    assert plan.expected_sha256 == "fc03b94695ab9cfc03791620ada4e46d4ee5c875d2e8b6716c8cc77d7114195f"


@pytest.mark.parametrize("ref, code, words", [
    (FakeProviders.hf_resolve_url("missing.safetensors"), "remote.not_found", "no file 'missing.safetensors'"),
    ("https://huggingface.co/fixture-lab/does-not-exist/resolve/main/x.bin", "remote.not_found",
     "repository not found (a private repo needs HF_TOKEN)"),
    (FakeProviders.hf_resolve_url(rev="no-such-branch"), "remote.not_found", "no such revision"),
    ("https://huggingface.co/fixture-lab/inkwash-style-lora-xl", "remote.bad_url", "must point at one file"),
    ("hf://datasets/org/name/file.csv", "remote.bad_url", "Only model repos"),
    ("https://evil.example/fixture-lab/x/resolve/main/y", "remote.bad_url", "Not a Hugging Face file URL"),
])
def test_huggingface_bad_references_give_clear_errors(provider_servers, ws, ref, code, words):
    with pytest.raises(RemoteError) as err:
        plan_remote("huggingface", ref, None, ws)
    assert err.value.code == code
    assert words in err.value.message


def test_generic_provider_needs_an_allow_listed_host(provider_servers, ws):
    from comfyvn.config import update_config
    from tests.fakes import CIVITAI_CDN_HOST

    url = provider_servers.add_file("sprite.png", b"x" * 10)
    with pytest.raises(RemoteError) as err:
        plan_remote("generic", url, None, ws)
    assert err.value.code == "remote.provider_unsupported"
    update_config({"ingest": {"extra_allowed_hosts": [CIVITAI_CDN_HOST]}}, ws)
    plan = plan_remote("generic", url, {"sha256": "A" * 64, "size": "10"}, ws)
    assert (plan.filename, plan.expected_sha256, plan.expected_size) == ("sprite.png", "a" * 64, 10)
