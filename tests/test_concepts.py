"""One answer per concept: the rules that used to be written two or three times and disagreed.

* asset kind: a file gets the same type on ingest, on upload and on the enforcer's rebuild;
* host allow-list: the enqueue check and the download's check give the same answer;
* providers: every alias is accepted wherever a provider is.
"""

from __future__ import annotations

import json

import pytest
from traitlets.config import Config

from comfyvn.config import update_config
from comfyvn.ingest.errors import IngestError, RemoteError
from comfyvn.ingest.mappers import normalise_metadata
from comfyvn.ingest.netguard import check_url
from comfyvn.ingest.providers import get_provider
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.kinds import guess_type
from comfyvn.provider_names import ALIASES, canonical_provider
from comfyvn.registry import rebuild_from_disk
from comfyvn.studio.core.asset_registry import AssetRegistry

# name -> the type every route must give it (the ones that used to differ first)
TYPED_FILES = {
    "song.mp3": "audio", "theme.ogg": "audio", "voice.flac": "audio", "line.opus": "audio", "take.m4a": "audio",
    "lora.sft": "models", "llm.gguf": "models", "net.onnx": "models", "hero.png": "images", "bell.wav": "audio",
    "weights.safetensors": "models",
}


@pytest.fixture
def queue(ws):
    q = AssetIngestQueue(ws)
    yield q
    q.stop_worker()


@pytest.fixture
def jp_server_config(ws):
    return Config({"ServerApp": {"jpserver_extensions": {"comfyvn_server_ext": True, "jupyter_server_terminals": False},
                                 "allow_unauthenticated_access": False},
                   "ComfyvnExtension": {"workspace": str(ws.root)}})


def _write(folder, name: str) -> bytes:
    data = f"bytes of {name}".encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return data


# ---------------------------------------------------------------------------- asset kinds
def test_the_kind_rule_names_the_expected_types():
    assert {name: guess_type(name) for name in TYPED_FILES} == TYPED_FILES
    assert guess_type("notes.xyz") == "misc" and guess_type("SONG.MP3") == "audio"
    assert guess_type("blob", provider="civitai") == "models" and guess_type("blob", provider="hf") == "models"
    assert guess_type("hero.png", provider="civitai") == "images" and guess_type("blob", provider="generic") == "misc"


def test_ingest_gives_each_file_the_kind_rules_type(ws, queue):
    for name, expected in TYPED_FILES.items():
        _write(ws.root / "incoming", name)
        job = queue.enqueue("local", source_path=ws.root / "incoming" / name)
        applied = queue.apply([job["job_id"]])["applied"]
        assert AssetRegistry("default", ws=ws).get_asset(applied[0]["asset_uid"])["type"] == expected, name


def test_rebuild_gives_each_file_the_kind_rules_type(ws):
    root = ws.assets_root / "default"
    for name in TYPED_FILES:
        _write(root, name)  # at the top of the assets root: no folder names a type
    result = rebuild_from_disk("default")
    reg = AssetRegistry("default", ws=ws)
    got = {rec["path"]: reg.get_asset(rec["uid"])["type"] for rec in result["registered"]}
    assert got == TYPED_FILES


async def test_upload_gives_each_file_the_kind_rules_type(jp_fetch):
    for name, expected in TYPED_FILES.items():
        resp = await jp_fetch("assets/upload", method="POST", params={"filename": name}, body=f"up {name}".encode())
        assert resp.code == 201 and json.loads(resp.body)["type"] == expected, name
    resp = await jp_fetch("assets/upload", method="POST", params={"filename": "notes.xyz"}, body=b"?",
                          raise_error=False)
    assert resp.code == 400 and json.loads(resp.body)["error"] == "invalid_parameter"  # no kind: name a type


# ---------------------------------------------------------------------------- host allow-list
def _enqueue_check(queue, url: str) -> bool:
    try:
        job = queue.enqueue("generic", remote_url=url, terms_acknowledged=True)  # queued: no worker runs here
    except IngestError as exc:
        assert exc.code == "host_not_allowed"
        return False
    assert job["status"] == "queued"
    return True


def _download_check(ws, url: str) -> bool:
    try:
        check_url(url, provider="generic", ws=ws)
    except RemoteError as exc:
        assert exc.code == "remote.host_not_allowed"
        return False
    return True


@pytest.mark.parametrize(("extra", "allowed"), [
    ({"generic": ["mirror.example.org"]}, True),   # by provider: the enqueue check used to refuse it
    (["mirror.example.org"], True),                # for every provider
    ({"*": ["mirror.example.org"]}, True),
    ("mirror.example.org", True),
    ({"civitai": ["mirror.example.org"]}, False),  # another provider's host
    ({"generic": ["other.example.org"]}, False),
    ({"mirror.example.org": ["x"]}, False),        # a mapping's keys are providers, never hosts
])
def test_an_extra_allowed_host_gets_one_answer_at_enqueue_and_download(ws, queue, extra, allowed):
    update_config({"ingest": {"extra_allowed_hosts": extra, "host_overrides": {"mirror.example.org": "93.184.216.34"}}},
                  ws)
    url = "https://mirror.example.org/files/pack.zip"
    assert (_enqueue_check(queue, url), _download_check(ws, url)) == (allowed, allowed)


# ---------------------------------------------------------------------------- provider aliases
@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_provider_alias_is_accepted_wherever_a_provider_is(ws, queue, alias):
    provider = ALIASES[alias]
    assert canonical_provider(alias) == provider == canonical_provider(alias.upper(), "https://example.org/x")
    assert normalise_metadata(alias, {"title": "T"})["provider"] == provider
    assert get_provider(alias) is get_provider(provider) is not None
    _write(ws.root / "incoming", f"{alias}.png")
    job = queue.enqueue(alias, source_path=ws.root / "incoming" / f"{alias}.png")
    assert job["provider"] == provider
    url = ("https://civitai.com/models/1?modelVersionId=2" if provider == "civitai"
           else "https://huggingface.co/org/repo/resolve/main/w.safetensors")
    job = queue.enqueue(alias, remote_url=url, terms_acknowledged=True)
    assert job["provider"] == provider and job["status"] == "queued"


async def test_every_provider_alias_is_accepted_by_the_http_api(ws, jp_fetch):
    from comfyvn.config import set_feature

    set_feature("enable_asset_ingest", True, ws)
    for alias, provider in sorted(ALIASES.items()):
        _write(ws.root / "incoming", f"http-{alias}.png")
        body = {"provider": alias, "source_path": str(ws.root / "incoming" / f"http-{alias}.png")}
        resp = await jp_fetch("api/ingest/queue", method="POST", body=json.dumps(body), raise_error=False)
        assert resp.code == 201 and json.loads(resp.body)["provider"] == provider, (alias, resp.body)


# ---------------------------------------------------------------------------- file names
NAMES = {
    "a:b?.png": "a_b_.png", "..\\..\\x.png": "x.png", "dir/sub/.hidden.wav": "hidden.wav",
    "invoice\u202egpj.exe": "invoicegpj.exe", "zero\u200bwidth\ufeff.png": "zerowidth.png",
    "line\u2028break.png": "line_break.png", "tab\there.png": "tab_here.png", "x" * 300 + ".safetensors":
    "x" * (200 - len(".safetensors")) + ".safetensors",
}


def test_one_file_name_rule_for_uploads_local_files_and_remote_names():
    from comfyvn_server_ext.handlers.uploads import sanitise_filename

    from comfyvn.ingest import queue as queue_module
    from comfyvn.ingest.providers import base
    from comfyvn.names import safe_filename

    assert queue_module.safe_filename is base.safe_filename is safe_filename
    for raw, expected in NAMES.items():
        assert (safe_filename(raw), sanitise_filename(raw)) == (expected, expected), raw
        assert safe_filename(safe_filename(raw)) == expected  # remote names pass the rule twice: no change
    assert safe_filename("\u202e\u200b. .") == "download.bin" and safe_filename(None, "f.bin") == "f.bin"


# ---------------------------------------------------------------------------- public addresses
@pytest.mark.parametrize(("answers", "public"), [
    (["93.184.216.34"], True), (["93.184.216.34", "10.0.0.5"], False), (["127.0.0.1", "93.184.216.34"], False),
    (["::ffff:192.168.1.1"], False),
])
def test_remote_pulls_and_webhooks_judge_a_host_by_one_address_rule(ws, monkeypatch, answers, public):
    """A name that resolves to a public and a private address was pinned to the public one by a
    pull but refused by a webhook; now both refuse it, and both accept an all-public answer."""
    import socket

    from comfyvn.hooks.webhooks import validate_url

    def fake_getaddrinfo(host, port, *args, **kwargs):
        assert host == "mixed.example.org"
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    update_config({"ingest": {"extra_allowed_hosts": ["mixed.example.org"]}}, ws)
    try:
        target = check_url("https://mixed.example.org/x.bin", provider="generic", ws=ws)
        pulled = target.address == answers[0]
    except RemoteError as exc:
        assert exc.code == "remote.private_address"
        pulled = False
    try:
        hooked = validate_url("https://mixed.example.org/hook") == "https://mixed.example.org/hook"
    except ValueError:
        hooked = False
    assert (pulled, hooked) == (public, public)


# ---------------------------------------------------------------------------- topics, routes, settings
def test_hook_topics_by_category_come_from_one_function():
    from comfyvn_server_ext.handlers.assets import ASSET_TOPICS

    from comfyvn.hooks import HOOK_SPECS
    from comfyvn.hooks.specs import CATEGORIES, topics

    assert {spec.category for spec in HOOK_SPECS.values()} == set(CATEGORIES)
    assert topics() == list(HOOK_SPECS) and sum(len(topics(c)) for c in CATEGORIES) == len(HOOK_SPECS)
    assert ASSET_TOPICS == topics("asset") and "on_asset_saved" in topics("asset")
    assert "on_asset_saved" not in topics("asset", aliases=False) and "on_asset_registered" in topics("asset")
    with pytest.raises(ValueError, match="category"):
        topics("assets")


def test_the_route_table_is_one_list_the_server_and_the_checker_read():
    from comfyvn_server_ext.routes import ROUTES, http_methods
    from tornado.websocket import WebSocketHandler

    from comfyvn import api_routes, syscheck

    assert [path for path, _ in ROUTES] == [r.path for r in api_routes.ROUTES]
    for route, (_path, handler) in zip(api_routes.ROUTES, ROUTES, strict=True):
        assert tuple(http_methods(handler)) == route.methods, route.path
        assert issubclass(handler, WebSocketHandler) is route.websocket, route.path
        assert handler.auth_resource == f"comfyvn:{route.area}", route.path
    probed = {(p.route, p.method) for p in syscheck.PROFILES["all"]["probes"]}
    assert probed | {(r, "GET") for r in syscheck.PROFILES["all"]["ws"]} == {
        (r.path, m) for r in api_routes.ROUTES for m in r.methods}


def test_settings_defaults_live_in_the_shipped_file(ws):
    from comfyvn.config import default_project, max_remote_bytes, shipped_default
    from comfyvn.ingest.queue import MAX_REMOTE_BYTES

    assert default_project(ws) == shipped_default("registry.default_project") == "default"
    assert max_remote_bytes(ws) == shipped_default("ingest.max_remote_bytes") == MAX_REMOTE_BYTES == 200 * 1024**2
    update_config({"registry": {"default_project": "vn2"}, "ingest": {"max_remote_bytes": 1024}}, ws)
    assert (default_project(ws), max_remote_bytes(ws)) == ("vn2", 1024)
    with pytest.raises(KeyError, match="no shipped default"):
        shipped_default("ingest.no_such_setting")
