"""Local fake Civitai and Hugging Face servers that answer like the real ones (tests, benches, demos).

Built from ``tests/fixtures/providers`` (see its README): the fixture JSON is served
verbatim and file bodies are made from ``payloads.json``'s recipes, so sizes and SHA-256s
match what the API advertises.  Five threaded ``http.server`` instances on 127.0.0.1, random
ports:

=============  ==================================  ==========================================
role           stands for                          serves
=============  ==================================  ==========================================
civitai        ``https://civitai.com``             ``/api/v1/models/{id}``, ``/api/v1/model-versions/{id}``,
                                                   ``/api/v1/model-versions/by-hash/{hash}`` (any case),
                                                   ``POST /api/v1/model-versions/by-hash`` (bulk, <= 100 SHA-256),
                                                   ``/api/download/models/{versionId}`` → 307 to civitai_cdn
civitai_cdn    ``civitai-delivery-worker-prod.     signed ``/model/...`` objects (200/206, Content-Disposition,
               <hex>.r2.cloudflarestorage.com``    ETag, Last-Modified, Range + If-Range), and ``/files/{name}``
                                                   for ad-hoc test files (:meth:`FakeProviders.add_file`)
hf             ``https://huggingface.co``          ``/api/models/{repo}[?blobs=true]``, ``.../revision/{rev}``,
                                                   ``/{repo}/resolve/{rev}/{path}`` (HEAD + GET): LFS → 302 to
                                                   hf_cdn with X-Linked-Etag / X-Linked-Size / X-Repo-Commit,
                                                   small files → relative 307 to ``/api/resolve-cache/...``;
                                                   gated repo → 401/403 ``X-Error-Code: GatedRepo``
hf_cdn         ``cas-bridge.xethub.hf.co``         signed ``/xet-bridge-us/...`` objects (Range + If-Range)
evil           ``downloads.evil.example``          anything, 200: a host that is *not* allow-listed
=============  ==================================  ==========================================

How code under test reaches them
--------------------------------
``fp.config_patch()`` (written by ``fp.configure(ws)``) sets, in the workspace config::

    ingest.providers.civitai.base_url      = "http://127.0.0.1:<civitai port>"
    ingest.providers.huggingface.base_url  = "http://127.0.0.1:<hf port>"
    ingest.host_overrides = {"civitai-delivery-worker-prod.<hex>.r2.cloudflarestorage.com": "127.0.0.1:<port>",
                             "cas-bridge.xethub.hf.co": "127.0.0.1:<port>",
                             "downloads.evil.example": "127.0.0.1:<port>"}
    ingest.allow_insecure_http = true,  ingest.allow_private_addresses = true

The CDN redirects use the *real* host names (``http://cas-bridge.xethub.hf.co/...``), so the
production allow-list is what gets checked; ``ingest.host_overrides`` is the downloader's
static resolver that sends those names to 127.0.0.1.  API JSON keeps its real
``https://civitai.com/...`` URLs; the resolvers move them onto the configured base URL.

Use in a test::

    from tests.fakes.provider_server import provider_servers_fixture  # noqa: F401  (registers it)

    def test_pull(provider_servers, ws, monkeypatch):
        fp = provider_servers                      # started, and configured into ``ws``
        monkeypatch.setenv("HF_TOKEN", fp.hf_token)    # only for the gated repo
        plan = plan_remote("civitai", fp.civitai_model_page(), None, ws)
        ...
        fp.inject("civitai_cdn", "/model/*", "cut", after=100_000)   # next CDN GET dies after 100 kB
        assert fp.requests("civitai_cdn")[-1].headers["range"] == "bytes=100000-"

or without pytest: ``with FakeProviders() as fp: fp.configure(ws); ...``.

``FakeProviders(tls=True)`` is the production-like variant: every server speaks HTTPS with a
certificate for the real names (made by ``trustme``), the base URLs are ``https://civitai.com``
and ``https://huggingface.co`` themselves (mapped by ``ingest.host_overrides``),
``ingest.allow_insecure_http`` stays false and ``ingest.ca_bundle`` trusts the throw-away CA.

From another process (benches, a Jupyter server under test): run, from the repo root,
``python -m tests.fakes.provider_server [--tls] [--file NAME:SIZE ...]``; it prints one JSON line
(``ports``, ``config_patch``, ``files`` with URL / size / sha256) and serves until stdin closes.
Apply ``config_patch`` with ``comfyvn.config.update_config(patch, ws)`` in the workspace the
process under test uses (tokens go in that process's environment).

Other hosts: ``fp.add_file(name, bytes_or_Payload)`` serves any bytes on the civitai storage
host (allow-listed for ``civitai``); for a host of your own add ``"name:port"`` to
``ingest.extra_allowed_hosts`` (and ``ingest.host_overrides`` if it is not 127.0.0.1).

Misbehaviour on demand: :meth:`FakeProviders.inject` (``status``, ``case`` from
``download_behaviour.json`` / ``resolve_behaviour.json``, ``redirect``, ``cut``, ``corrupt``,
``oversize`` with or without Content-Length, ``slow``, ``ignore_range``, ``change_etag``), each
for ``times`` requests (default 1; ``None`` = until :meth:`reset`), after ``skip`` unharmed ones.
Civitai access rules:
``fp.civitai_require_auth`` / ``fp.civitai_disabled`` / ``fp.civitai_archived`` (sets of version
ids) and ``fp.civitai_token``; Hugging Face tokens: ``fp.hf_token`` (granted on the gated repo),
``fp.hf_pending_token`` (valid, not approved).  Every request is recorded
(:meth:`FakeProviders.requests`) with lower-cased header names.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import fnmatch
import hashlib
import hmac
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
# the shape-faithful provider responses (a copy of ../shared/fixtures/providers, so a bare clone tests)
FIXTURES_DIR = Path(os.environ.get("COMFYVN_PROVIDER_FIXTURES", REPO_ROOT / "tests" / "fixtures" / "providers"))

CIVITAI_CDN_HOST = "civitai-delivery-worker-prod.0f1e2d3c4b5a69788796a5b4c3d2e1f0.r2.cloudflarestorage.com"
HF_CDN_HOST = "cas-bridge.xethub.hf.co"
EVIL_HOST = "downloads.evil.example"
HF_REPO = "fixture-lab/inkwash-style-lora-xl"
HF_GATED_REPO = "fixture-lab/gated-heroine-checkpoint"
CIVITAI_MODEL_ID = 913572
CIVITAI_VERSION_ID = 1184630  # v2.0 (newest): primary file 1094417 + a training-data zip
CIVITAI_OLD_VERSION_ID = 1021947  # v1.0, the by_hash.json document
ROLES = ("civitai", "civitai_cdn", "hf", "hf_cdn", "evil")
BULK_BY_HASH = "/api/v1/model-versions/by-hash"
_CHUNK = 256 * 1024
_BROWSERS = ("mozilla", "chrome", "safari", "firefox", "opera", "edge")


# ----------------------------------------------------------------------------- payloads


class Payload:
    """Bytes a fake serves: either held in memory or ``seed`` repeated to ``size`` (no memory)."""

    def __init__(self, *, data: bytes | None = None, seed: bytes | None = None, size: int | None = None,
                 filename: str = "file.bin", content_type: str = "application/octet-stream",
                 last_modified: str = "Tue, 11 Feb 2025 16:04:58 GMT") -> None:
        if data is None and (seed is None or size is None):
            raise ValueError("Payload needs data, or seed and size")
        self.data = data
        self.seed = seed
        self.size = len(data) if data is not None else int(size)  # type: ignore[arg-type]
        if seed is not None:
            reps = math.ceil((_CHUNK + len(seed)) / len(seed))
            self._block = seed * reps
        self.filename = filename
        self.content_type = content_type
        self.last_modified = last_modified
        self._sha256: str | None = None

    def read(self, start: int, n: int) -> bytes:
        n = max(0, min(n, self.size - start))
        if self.data is not None:
            return self.data[start : start + n]
        out = bytearray()
        while n > 0:
            take = min(n, _CHUNK)
            off = start % len(self.seed)  # type: ignore[arg-type]
            out += self._block[off : off + take]
            start += take
            n -= take
        return bytes(out)

    def iter_range(self, start: int, end: int) -> Iterator[bytes | memoryview]:
        """Chunks of bytes ``start..end`` (inclusive), as zero-copy views where possible."""
        pos = start
        view = memoryview(self.data if self.data is not None else self._block)
        while pos <= end:
            take = min(_CHUNK, end - pos + 1)
            off = pos if self.data is not None else pos % len(self.seed)  # type: ignore[arg-type]
            yield view[off : off + take]
            pos += take

    def all_bytes(self) -> bytes:
        return self.data if self.data is not None else self.read(0, self.size)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            h = hashlib.sha256()
            for chunk in self.iter_range(0, self.size - 1):
                h.update(chunk)
            self._sha256 = h.hexdigest()
        return self._sha256


def payload_from_recipe(entry: dict, filename: str) -> Payload:
    if "base64" in entry:
        return Payload(data=base64.b64decode(entry["base64"]), filename=filename, content_type="image/png")
    if "text" in entry:
        return Payload(data=entry["text"].encode("utf-8"), filename=filename, content_type="text/plain; charset=utf-8")
    return Payload(seed=entry["seed"].encode("utf-8"), size=int(entry["size"]), filename=filename)


@lru_cache(maxsize=1)
def load_fixtures() -> dict[str, Any]:
    """Fixture JSON + payloads (checked against the advertised SHA-256 once per process)."""
    d = FIXTURES_DIR

    def j(rel: str) -> Any:
        return json.loads((d / rel).read_text(encoding="utf-8"))

    payloads = j("payloads.json")
    fx: dict[str, Any] = {
        "civitai_model": j("civitai/model.json"),
        "civitai_versions": {CIVITAI_VERSION_ID: j("civitai/model_version.json"),
                             CIVITAI_OLD_VERSION_ID: j("civitai/by_hash.json")},
        "civitai_download": j("civitai/download_behaviour.json"),
        "hf_info": j("huggingface/model_info.json"),
        "hf_info_gated": j("huggingface/model_info_gated.json"),
        "hf_resolve": j("huggingface/resolve_behaviour.json"),
        "civitai_files": {},
        "hf_files": {},
    }
    for file_id, entry in payloads["civitai"].items():
        p = payload_from_recipe(entry, entry["name"])
        if p.sha256 != entry["sha256"].lower() or p.size != entry["size"]:
            raise RuntimeError(f"payload recipe for civitai file {file_id} does not match its digest")
        fx["civitai_files"][int(file_id)] = p
    repo = payloads["huggingface"][HF_REPO]
    for path, entry in repo["files"].items():
        p = payload_from_recipe(entry, path.rsplit("/", 1)[-1])
        if entry.get("sha256") and p.sha256 != entry["sha256"]:
            raise RuntimeError(f"payload recipe for {HF_REPO}/{path} does not match its digest")
        fx["hf_files"][(HF_REPO, path)] = (p, entry)
    # The gated repo's files are not in payloads.json: made up here, same recipes.
    gated = {
        "heroine_ckpt_v1.safetensors": Payload(seed=b"comfyvn-fixture gated heroine checkpoint v1\n", size=1_572_864,
                                               filename="heroine_ckpt_v1.safetensors"),
        "README.md": Payload(data=b"---\nlicense: other\n---\n# Gated heroine checkpoint (fixture)\n",
                             filename="README.md", content_type="text/plain; charset=utf-8"),
        "LICENSE.md": Payload(data=b"Fixture community licence. Do not redistribute.\n", filename="LICENSE.md",
                              content_type="text/plain; charset=utf-8"),
    }
    for path, p in gated.items():
        lfs = path.endswith(".safetensors")
        fx["hf_files"][(HF_GATED_REPO, path)] = (p, {"size": p.size, "lfs": lfs, "sha256": p.sha256 if lfs else None,
                                                     "git_blob_sha1": _git_sha1(p.all_bytes())})
    return fx


def _git_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


# ----------------------------------------------------------------------------- faults & log


@dataclass
class Fault:
    """One injected misbehaviour (see :meth:`FakeProviders.inject`)."""

    server: str
    path: str
    action: str
    times: int | None = 1
    method: str | None = None
    params: dict = field(default_factory=dict)
    skip: int = 0  # let this many matching requests through first
    hits: int = 0
    seen: int = 0

    def matches(self, server: str, method: str, path: str) -> bool:
        if self.server != server or (self.times is not None and self.hits >= self.times):
            return False
        if self.method and self.method.upper() != method:
            return False
        return fnmatch.fnmatchcase(path, self.path)


@dataclass
class Recorded:
    server: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""


BODY_ACTIONS = ("cut", "corrupt", "oversize", "slow", "ignore_range", "change_etag")
ACTIONS = ("status", "case", "redirect", *BODY_ACTIONS)


# ----------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, app: FakeProviders, role: str) -> None:
        self.app = app
        self.role = role
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # a client that hung up (cut tests, size limits): not the fake's fault
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        """Only Civitai's bulk by-hash lookup takes a POST; anything else is unsupported, as before."""
        if self.server.role != "civitai" or urlsplit(self.path).path.rstrip("/") != BULK_BY_HASH:
            return self.send_error(501, f"Unsupported method ('{self.command}')")
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(min(length, 16 * 1024 * 1024))
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        parts = urlsplit(self.path)
        self.req_path = unquote(parts.path)
        self.raw_path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.method = method
        self.headers_lc = {k.lower(): v for k, v in self.headers.items()}
        app._record(Recorded(self.server.role, method, self.req_path, parts.query, self.headers_lc,
                             getattr(self, "body", b"")))
        self.body_faults = (app._take_faults(self.server.role, method, self.req_path, BODY_ACTIONS)
                            if method == "GET" else [])
        try:
            for fault in app._take_faults(self.server.role, method, self.req_path, ("status", "case", "redirect")):
                return self._apply_fault(fault)
            getattr(app, f"_route_{self.server.role}")(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- responses
    def send(self, status: int, headers: dict[str, str] | None = None, body: bytes | str | dict | None = b"") -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode("utf-8")
            headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        elif isinstance(body, str):
            body = body.encode("utf-8")
        body = body or b""
        self.send_response(status)
        sent = {k.lower() for k in (headers or {})}
        for k, v in (headers or {}).items():
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if "date" not in sent:
            self.send_header("Date", email.utils.formatdate(usegmt=True))
        self.end_headers()
        if self.method != "HEAD" and body:
            self.wfile.write(body)

    def _apply_fault(self, fault: Fault) -> None:
        p = fault.params
        if fault.action == "status":
            return self.send(int(p.get("status", 500)), dict(p.get("headers") or {}), p.get("body", b""))
        if fault.action == "redirect":
            return self.send(int(p.get("status", 307)), {"Location": p["location"]}, b"")
        if fault.action == "case":
            resp = copy.deepcopy(p["response"])
            body = resp.get("body", resp.get("body_on_GET", b""))
            if isinstance(body, dict) and ("payload_ref" in body or "sha256" in body):
                body = b""
            return self.send(int(resp["status"]), resp.get("headers", {}), body)
        raise AssertionError(fault.action)

    def serve_payload(self, payload: Payload, headers: dict[str, str], *, etag: str | None) -> None:
        """200 / 206 / 416 with Range + If-Range, then the body faults of this request."""
        faults = {f.action: f for f in self.body_faults}
        if "change_etag" in faults:
            etag = f'"changed-{faults["change_etag"].hits}-{time.time_ns()}"'
        size = payload.size
        start, end, status = 0, size - 1, 200
        rng = self.headers_lc.get("range")
        if_range = self.headers_lc.get("if-range")
        honour = rng and "ignore_range" not in faults and (
            if_range is None or if_range == etag or if_range == payload.last_modified)
        if honour and rng.startswith("bytes=") and "," not in rng:
            a, _, b = rng[6:].strip().partition("-")
            try:
                if a == "":
                    start, end = max(0, size - int(b)), size - 1
                else:
                    start, end = int(a), min(size - 1, int(b)) if b else size - 1
            except ValueError:
                start, end = 0, size - 1
            else:
                if start >= size:
                    return self.send(416, {"Content-Range": f"bytes */{size}"}, b"")
                status = 206
        base = {"Content-Type": payload.content_type, "Accept-Ranges": "bytes",
                "Last-Modified": payload.last_modified, **headers}
        if etag:
            base["ETag"] = etag
        if status == 206:
            base["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        chunked = False
        extra = 0
        if "oversize" in faults:
            extra = int(faults["oversize"].params.get("extra", 1024 * 1024))
            chunked = bool(faults["oversize"].params.get("chunked", False))
        self.send_response(status)
        for k, v in base.items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length + extra))
        self.send_header("Date", email.utils.formatdate(usegmt=True))
        self.end_headers()
        if self.method == "HEAD":
            return
        cut_after = int(faults["cut"].params.get("after", 0)) if "cut" in faults else None
        corrupt_at = int(faults["corrupt"].params.get("at", size // 2)) if "corrupt" in faults else None
        slow = faults.get("slow")
        sent = 0

        def chunks() -> Iterator[bytes]:
            yield from payload.iter_range(start, end)
            remaining = extra
            while remaining > 0:
                take = min(_CHUNK, remaining)
                yield b"\0" * take
                remaining -= take

        pos = start
        for chunk in chunks():
            if slow is not None:
                chunk_limit = int(slow.params.get("chunk", 16 * 1024))
                pieces = [chunk[i : i + chunk_limit] for i in range(0, len(chunk), chunk_limit)]
            else:
                pieces = [chunk]
            for piece in pieces:
                if corrupt_at is not None and pos <= corrupt_at < pos + len(piece):
                    b = bytearray(piece)  # a copy: the payload itself stays intact
                    b[corrupt_at - pos] ^= 0xFF
                    piece = bytes(b)
                if cut_after is not None and sent + len(piece) > cut_after:
                    piece = piece[: cut_after - sent]
                    self._write(piece, chunked)
                    self.wfile.flush()
                    self._cut()
                    return
                self._write(piece, chunked)
                sent += len(piece)
                pos += len(piece)
                if slow is not None:
                    time.sleep(float(slow.params.get("delay", 0.05)))
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, data: bytes | memoryview, chunked: bool) -> None:
        if not data:
            return
        if chunked:
            self.wfile.write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        else:
            self.wfile.write(data)

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ----------------------------------------------------------------------------- the fake


class FakeProviders:
    """The five fake servers, their data, faults and request log.  A context manager."""

    def __init__(self, fixtures_dir: Path | None = None, *, tls: bool = False) -> None:
        if fixtures_dir is not None:
            global FIXTURES_DIR
            FIXTURES_DIR = Path(fixtures_dir)
            load_fixtures.cache_clear()
        self.fx = {**load_fixtures()}
        self.fx["hf_files"] = dict(self.fx["hf_files"])  # add_real_hf_repo adds to this instance only
        self.secret = os.urandom(16)
        self.link_ttl = 86400  # seconds a signed CDN link stays valid (negative: already expired)
        self.civitai_token = "civitai-fixture-token-7f3a9c"
        self.civitai_require_auth: set[int] = set()
        self.civitai_disabled: set[int] = set()
        self.civitai_archived: set[int] = set()
        self.hf_token = "hf_fixtureGrantedToken0123456789abcdef"
        self.hf_pending_token = "hf_fixturePendingToken0123456789abcdef"
        self.files: dict[str, tuple[Payload, str]] = {}  # name -> (payload, etag) served by /files/
        # real API bodies (tests/fixtures/providers/real) served beside the invented fixtures
        self.real_models: dict[int, dict] = {}
        self.real_versions: dict[int, dict] = {}
        self.real_files: dict[int, Payload] = {}  # Civitai file id -> bytes
        self.hf_real: dict[str, dict] = {}  # repo id -> model info (blobs=true view)
        self.hf_aliases: dict[str, str] = {}  # "bert-base-uncased" -> "google-bert/bert-base-uncased"
        self._faults: list[Fault] = []
        self._log: list[Recorded] = []
        self._lock = threading.Lock()
        self.servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []
        # tls=True: every server speaks HTTPS with a certificate for the real host names, signed by
        # a throw-away CA (``ca_file``); the config then uses https://civitai.com etc. and keeps
        # ingest.allow_insecure_http off, like production.
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.ca_file: Path | None = None
        self._tmp: Any = None

    # -- lifecycle
    def start(self) -> FakeProviders:
        ctx = self._tls_context() if self.tls else None
        for role in ROLES:
            srv = _Server(self, role)
            if ctx is not None:
                srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                 name=f"fake-{role}", daemon=True)
            t.start()
            self.servers[role] = srv
            self._threads.append(t)
        return self

    def _tls_context(self) -> Any:
        import ssl
        import tempfile

        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("civitai.com", "huggingface.co", CIVITAI_CDN_HOST, HF_CDN_HOST, EVIL_HOST, "127.0.0.1")
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-providers-ca-")
        self.ca_file = Path(self._tmp.name) / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        return ctx

    def stop(self) -> None:
        stoppers = [threading.Thread(target=srv.shutdown) for srv in self.servers.values()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout=5)
        for srv in self.servers.values():
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self.servers.clear()
        self._threads.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakeProviders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and configuration
    def port(self, role: str) -> int:
        return self.servers[role].server_address[1]

    def url(self, role: str) -> str:
        """``http(s)://127.0.0.1:<port>`` of a server."""
        return f"{self.scheme}://127.0.0.1:{self.port(role)}"

    @property
    def civitai_base(self) -> str:
        """The configured Civitai base URL (``https://civitai.com`` itself in TLS mode)."""
        return "https://civitai.com" if self.tls else self.url("civitai")

    @property
    def hf_base(self) -> str:
        return "https://huggingface.co" if self.tls else self.url("hf")

    def config_patch(self) -> dict[str, Any]:
        overrides = {CIVITAI_CDN_HOST: f"127.0.0.1:{self.port('civitai_cdn')}",
                     HF_CDN_HOST: f"127.0.0.1:{self.port('hf_cdn')}",
                     EVIL_HOST: f"127.0.0.1:{self.port('evil')}"}
        ingest: dict[str, Any] = {
            "allow_insecure_http": not self.tls,
            "allow_private_addresses": True,
            "providers": {"civitai": {"base_url": self.civitai_base}, "huggingface": {"base_url": self.hf_base}},
            "host_overrides": overrides,
        }
        if self.tls:
            overrides.update({"civitai.com": f"127.0.0.1:{self.port('civitai')}",
                              "huggingface.co": f"127.0.0.1:{self.port('hf')}"})
            ingest["ca_bundle"] = str(self.ca_file)
        return {"ingest": ingest}

    def configure(self, ws: Any) -> None:
        """Write :meth:`config_patch` into the workspace config (``comfyvn.config.update_config``)."""
        from comfyvn.config import update_config

        update_config(self.config_patch(), ws)

    # -- user-facing references (what a person would paste)
    @staticmethod
    def civitai_model_page(version_id: int | None = CIVITAI_VERSION_ID) -> str:
        q = f"?modelVersionId={version_id}" if version_id else ""
        return f"https://civitai.com/models/{CIVITAI_MODEL_ID}/inkwash-heroine-style{q}"

    @staticmethod
    def hf_resolve_url(path: str = "inkwash_style_xl.safetensors", repo: str = HF_REPO, rev: str = "main") -> str:
        return f"https://huggingface.co/{repo}/resolve/{rev}/{path}"

    def civitai_file(self, file_id: int) -> Payload:
        return self.fx["civitai_files"][file_id]

    def hf_file(self, path: str, repo: str = HF_REPO) -> Payload:
        return self.fx["hf_files"][(repo, path)][0]

    def add_file(self, name: str, payload: Payload | bytes, *, etag: str | None = None) -> str:
        """Serve ``payload`` at ``http://<civitai CDN host>/files/<name>`` (Range, faults); returns that URL."""
        if isinstance(payload, bytes):
            payload = Payload(data=payload, filename=name)
        self.files[name] = (payload, etag or f'"{hashlib.sha256(name.encode()).hexdigest()[:32]}-1"')
        return f"{self.scheme}://{CIVITAI_CDN_HOST}/files/{quote(name)}"

    # -- faults & log
    # -- real shapes
    def add_real_civitai_model(self, model: dict, sizes: dict[int, int] | None = None) -> dict[int, Payload]:
        """Serve a real ``/api/v1/models/{id}`` body and its versions as ``/model-versions/{id}``.

        Real files are gigabytes, so each file gets synthetic bytes (``sizes[file_id]`` bytes,
        default 64 KiB + its id) and its ``sizeKB`` / ``hashes`` are rewritten to match: ``sizeKB``
        rounded to two decimals as Civitai's JSON rounds it, ``SHA256`` upper-case.  Everything
        else (names, twins, primary flags, permissions, creator, tags) stays as captured.
        """
        model = copy.deepcopy(model)
        made: dict[int, Payload] = {}
        for version in model.get("modelVersions", []):
            for f in version.get("files", []):
                fid = int(f["id"])
                size = (sizes or {}).get(fid, 65_536 + fid % 4096)
                payload = Payload(seed=f"real-shape civitai file {fid} {f['name']}\n".encode(), size=size,
                                  filename=f["name"])
                f["sizeKB"] = round(size / 1024, 2)
                f["hashes"] = {**(f.get("hashes") or {}), "SHA256": payload.sha256.upper(),
                               "AutoV2": payload.sha256.upper()[:10]}
                made[fid] = payload
            self.real_versions[int(version["id"])] = {**version, "modelId": model["id"],
                                                     "model": {k: model[k] for k in ("name", "type", "nsfw", "poi")
                                                               if k in model}}
        self.real_models[int(model["id"])] = model
        self.real_files.update(made)
        return made

    def add_real_civitai_version(self, version: dict, size: int = 70_000) -> Payload:
        """Serve a real version body alone (its model then answers 404, as a hidden model does)."""
        version = copy.deepcopy(version)
        f = next(x for x in version["files"] if x.get("primary")) if version.get("files") else None
        payload = Payload(seed=f"real-shape civitai version {version['id']}\n".encode(), size=size,
                          filename=f["name"] if f else "file.bin")
        if f is not None:
            f["sizeKB"] = round(size / 1024, 2)
            f["hashes"] = {**(f.get("hashes") or {}), "SHA256": payload.sha256.upper()}
            self.real_files[int(f["id"])] = payload
        self.real_versions[int(version["id"])] = version
        return payload

    def add_real_hf_repo(self, info: dict, files: dict[str, Payload], alias: str | None = None) -> None:
        """Serve a real ``model_info`` body; ``files`` become LFS files with their ``lfs`` blobs
        (what ``?blobs=true`` adds); ``alias`` is a legacy id without organisation that redirects."""
        info = copy.deepcopy(info)
        repo = info["id"]
        for sib in info.get("siblings", []):
            p = files.get(sib["rfilename"])
            if p is not None:
                sib.update(size=p.size, lfs={"sha256": p.sha256, "size": p.size, "pointerSize": 134})
        self.hf_real[repo] = info
        for path, p in files.items():
            self.fx["hf_files"][(repo, path)] = (p, {"size": p.size, "lfs": True, "sha256": p.sha256,
                                                     "git_blob_sha1": _git_sha1(p.all_bytes())})
        if alias:
            self.hf_aliases[alias] = repo

    def inject(self, server: str, path: str = "*", action: str = "status", *, times: int | None = 1,
               method: str | None = None, skip: int = 0, **params: Any) -> Fault:
        """Misbehave on the next ``times`` matching requests (``path`` is a glob on the decoded path),
        after letting ``skip`` of them through unharmed.  Body actions only apply to GET.

        actions: ``status`` (status=, headers=, body=), ``case`` (name= of a case in
        download_behaviour.json / resolve_behaviour.json), ``redirect`` (location=, status=307),
        ``cut`` (after= bytes of body, then the connection is shut), ``corrupt`` (at= byte
        offset of the file, flipped), ``oversize`` (extra= bytes appended; chunked=True drops
        Content-Length), ``slow`` (chunk= bytes per write, delay= seconds between writes),
        ``ignore_range`` (answer 200 to Range), ``change_etag`` (a new ETag, as if the file changed).
        """
        if server not in ROLES or action not in ACTIONS:
            raise ValueError(f"unknown server {server!r} or action {action!r}")
        if action == "case":
            name = params.pop("name")
            cases = {**self.fx["civitai_download"]["cases"], **self.fx["hf_resolve"]["cases"]}
            params["response"] = cases[name]["response"]
        if action == "redirect" and params.get("location") == "evil":
            params["location"] = f"{self.scheme}://{EVIL_HOST}/model/payload.safetensors"
        fault = Fault(server=server, path=path, action=action, times=times, method=method, params=params, skip=skip)
        with self._lock:
            self._faults.append(fault)
        return fault

    def _take_faults(self, server: str, method: str, path: str, actions: tuple[str, ...]) -> list[Fault]:
        out = []
        with self._lock:
            for f in self._faults:
                if f.action in actions and f.matches(server, method, path):
                    f.seen += 1
                    if f.seen > f.skip:
                        f.hits += 1
                        out.append(f)
        return out

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self._log.append(rec)

    def requests(self, server: str | None = None, path: str | None = None) -> list[Recorded]:
        """Requests seen so far (optionally by server role and path glob), oldest first."""
        with self._lock:
            return [r for r in self._log if (server is None or r.server == server)
                    and (path is None or fnmatch.fnmatchcase(r.path, path))]

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._log.clear()

    # -- signed CDN links
    def _sign(self, path: str, date: str) -> str:
        return hmac.new(self.secret, f"{path}|{date}".encode(), hashlib.sha256).hexdigest()

    def _signed_ok(self, h: _Handler, date_key: str) -> bool:
        date = h.query.get(date_key, "")
        sig = h.query.get("X-Amz-Signature") or h.query.get("Signature", "")
        if not hmac.compare_digest(sig, self._sign(h.req_path, date)):
            return False
        try:
            issued = float(date)
        except ValueError:
            return False
        return time.time() < issued + self.link_ttl

    @staticmethod
    def _denied(h: _Handler) -> None:
        h.send(403, {"Content-Type": "application/xml"},
               "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
               "<Message>Request has expired</Message></Error>")

    # -- Civitai API
    def _civitai_versions(self) -> dict[int, dict]:
        return {**self.fx["civitai_versions"], **self.real_versions}

    def _route_civitai(self, h: _Handler) -> None:
        path = h.req_path.rstrip("/")
        cache = {"Cache-Control": "public, s-maxage=300, stale-while-revalidate=150",
                 "Access-Control-Allow-Origin": "*"}
        if h.method == "POST":
            return self._civitai_bulk_by_hash(h)
        seg = path.split("/")
        if path.startswith("/api/v1/models/") and len(seg) == 5:
            mid = seg[4]
            if not mid.isdigit():
                return h.send(400, cache, {"error": f"Invalid input: expected number, received {mid!r}"})
            if int(mid) == CIVITAI_MODEL_ID:
                return h.send(200, cache, self.fx["civitai_model"])
            if int(mid) in self.real_models:
                return h.send(200, cache, self.real_models[int(mid)])
            return h.send(404, cache, {"error": f"No model with id {mid}"})
        if path.startswith("/api/v1/model-versions/by-hash/") and len(seg) == 6:
            wanted = seg[5].upper()
            for vid in sorted(self._civitai_versions()):  # oldest published first, as the server does
                doc = self._civitai_versions()[vid]
                for f in doc.get("files", []):
                    if wanted in {str(v).upper() for v in (f.get("hashes") or {}).values()}:
                        return h.send(200, {**cache, "Cache-Control": "public, s-maxage=3600"}, doc)
            return h.send(404, cache, {"error": "Model not found"})
        if path.startswith("/api/v1/model-versions/") and len(seg) == 5:
            vid = seg[4]
            doc = self._civitai_versions().get(int(vid)) if vid.isdigit() else None
            if doc is None:
                return h.send(404, cache, {"error": "Model not found"})
            return h.send(200, cache, doc)
        if path.startswith("/api/download/models/") and len(seg) == 5:
            return self._civitai_download(h, seg[4])
        if path.startswith("/login"):
            return h.send(200, {"Content-Type": "text/html"}, "<html><body>Log in to Civitai</body></html>")
        return h.send(404, {"Content-Type": "text/html"}, "<html>404</html>")

    def _civitai_published(self, doc: dict) -> bool:
        model = self.real_models.get(int(doc.get("modelId") or 0)) or doc.get("model") or {}
        return doc.get("status", "Published") == "Published" and model.get("status", "Published") == "Published"

    def _civitai_bulk_by_hash(self, h: _Handler) -> None:
        """``POST /api/v1/model-versions/by-hash`` as civitai/civitai's handler answers it: a JSON array
        of at most 100 SHA-256 (64 characters each, any case) -> 200 with one version object per
        published file whose SHA256 hash matches (a client keeps the first per hash); else 400."""
        try:
            hashes = json.loads(h.body or b"null")
        except ValueError:
            hashes = None
        problem = None
        if not isinstance(hashes, list) or not all(isinstance(x, str) for x in hashes):
            problem = "Expected array, received " + type(hashes).__name__
        elif any(len(x) != 64 for x in hashes):
            problem = "Invalid hash"
        elif len(hashes) > 100:
            problem = "Too many hashes"
        if problem is not None:
            return h.send(400, {"Content-Type": "application/json"},
                          {"error": f"Request must include an array of SHA256 Hashes. {problem}"})
        wanted = {x.upper() for x in hashes}
        out = []
        versions = self._civitai_versions()
        for vid in sorted(versions):
            doc = versions[vid]
            if not self._civitai_published(doc):
                continue
            for f in doc.get("files", []):
                if str((f.get("hashes") or {}).get("SHA256", "")).upper() in wanted:
                    out.append(doc)
        h.send(200, {"Content-Type": "application/json"}, json.dumps(out))

    def _civitai_case(self, h: _Handler, name: str) -> None:
        resp = self.fx["civitai_download"]["cases"][name]["response"]
        h.send(resp["status"], resp["headers"], resp.get("body") or b"")

    def _civitai_download(self, h: _Handler, vid_text: str) -> None:
        browser = any(b in h.headers_lc.get("user-agent", "").lower() for b in _BROWSERS)
        if not vid_text.isdigit():
            return self._civitai_case(h, "bad_request")
        vid = int(vid_text)
        doc = self._civitai_versions().get(vid)
        if doc is None:
            return self._civitai_case(h, "not_found")
        if vid in self.civitai_archived:
            return self._civitai_case(h, "archived")
        if vid in self.civitai_disabled:
            return self._civitai_case(h, "downloads_disabled")
        auth = h.headers_lc.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else h.query.get("token")
        if vid in self.civitai_require_auth and token != self.civitai_token:
            if browser:
                return self._civitai_case(h, "login_required_browser")
            return self._civitai_case(h, "login_required_non_browser")
        files = doc.get("files", [])
        chosen = None
        if h.query.get("fileId"):
            chosen = next((f for f in files if str(f.get("id")) == h.query["fileId"]), None)
        else:
            prefs = {k: h.query[k] for k in ("type", "format", "size", "fp") if h.query.get(k)}
            cands = [f for f in files if all(
                str({"type": f.get("type"), **(f.get("metadata") or {})}.get(k) or "").lower() == v.lower()
                for k, v in prefs.items())]
            chosen = next((f for f in cands if f.get("primary")), cands[0] if cands else None)
        if chosen is None:
            return self._civitai_case(h, "not_found")
        fid = int(chosen["id"])
        date = f"{time.time():.3f}"
        obj = (f"/model/real-{fid}/{chosen['name']}" if fid in self.real_files
               else f"/model/{7730000 + fid % 10000}/{chosen['name']}")
        disp = f'attachment; filename="{chosen["name"]}"'
        query = urlencode({"X-Amz-Expires": "86400", "response-content-disposition": disp,
                           "X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Date": date,
                           "X-Amz-SignedHeaders": "host", "X-Amz-Signature": self._sign(obj, date)}, quote_via=quote)
        location = f"{self.scheme}://{CIVITAI_CDN_HOST}{quote(obj)}?{query}"
        h.send(307, {"Location": location, "Cache-Control": "no-store, max-age=0", "Server": "cloudflare",
                     "Access-Control-Allow-Origin": "*"}, b"")

    # -- Civitai storage host (R2 stand-in)
    def _route_civitai_cdn(self, h: _Handler) -> None:
        if h.req_path.startswith("/files/"):
            name = h.req_path[len("/files/"):]
            if name not in self.files:
                return h.send(404, {"Content-Type": "application/xml"}, "<Error><Code>NoSuchKey</Code></Error>")
            payload, etag = self.files[name]
            return h.serve_payload(payload, {"Content-Disposition": f'attachment; filename="{payload.filename}"'},
                                   etag=etag)
        if not h.req_path.startswith("/model/"):
            return h.send(404, {"Content-Type": "application/xml"}, "<Error><Code>NoSuchKey</Code></Error>")
        if not self._signed_ok(h, "X-Amz-Date"):
            return self._denied(h)
        name = h.req_path.rsplit("/", 1)[-1]
        folder = h.req_path.split("/")[2]
        if folder.startswith("real-") and folder[5:].isdigit():  # twins share a name: the id decides
            payload = self.real_files.get(int(folder[5:]))
        else:
            payload = next((p for p in self.fx["civitai_files"].values() if p.filename == name), None)
        if payload is None:
            return h.send(404, {"Content-Type": "application/xml"}, "<Error><Code>NoSuchKey</Code></Error>")
        disp = h.query.get("response-content-disposition", f'attachment; filename="{name}"')
        h.serve_payload(payload, {"Content-Disposition": disp, "Server": "cloudflare"},
                        etag=f'"{payload.sha256[:32]}-1"')

    # -- Hugging Face Hub
    def _hf_repo(self, repo: str) -> dict | None:
        if repo in self.hf_real:
            return self.hf_real[repo]
        if repo == HF_REPO:
            return self.fx["hf_info"]
        if repo == HF_GATED_REPO:
            return self.fx["hf_info_gated"]
        return None

    def _hf_headers(self, extra: dict | None = None) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": "https://huggingface.co", "X-Powered-By": "huggingface-moon",
                "Vary": "Origin, Accept", "RateLimit": '"resolvers";r=2987;t=211',
                "RateLimit-Policy": '"fixed window";"resolvers";q=3000;w=300', **(extra or {})}

    def _hf_error(self, h: _Handler, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
        headers = self._hf_headers({"Content-Type": "application/json; charset=utf-8",
                                    "X-Error-Message": message, **(extra or {})})
        if code:
            headers["X-Error-Code"] = code
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="Authentication required"'
        h.send(status, headers, {"error": message})

    def _hf_token_state(self, h: _Handler) -> str:
        auth = h.headers_lc.get("authorization", "")
        if not auth:
            return "anonymous"
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if token == self.hf_token:
            return "granted"
        if token == self.hf_pending_token:
            return "pending"
        return "invalid"

    def _route_hf(self, h: _Handler) -> None:
        path = h.req_path
        state = self._hf_token_state(h)
        if state == "invalid":
            return self._hf_error(h, 401, None, "Invalid credentials in Authorization header")
        first = path.strip("/").split("/", 1)
        if first[0] in self.hf_aliases and len(first) == 2 and first[1].startswith("resolve/"):
            return h.send(307, self._hf_headers({"Location": f"/{self.hf_aliases[first[0]]}/{first[1]}"}), b"")
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):].strip("/").split("/")
            if rest[0] in self.hf_aliases:  # the Hub's answer, as in huggingface_hub's cassettes
                target = f"/api/models/{self.hf_aliases[rest[0]]}"
                return h.send(307, self._hf_headers({"Location": target, "Content-Type": "text/plain; charset=utf-8"}),
                              f"Temporary Redirect. Redirecting to {target}")
            repo = "/".join(rest[:2])
            info = self._hf_repo(repo)
            if info is None:
                if state == "anonymous":
                    return h.send(401, self._hf_headers(), {"error": "Invalid username or password."})
                return self._hf_error(h, 404, "RepoNotFound", "Repository not found")
            if len(rest) >= 4 and rest[2] == "revision" and rest[3] not in ("main", info["sha"]):
                return self._hf_error(h, 404, "RevisionNotFound", f"Invalid rev id: {rest[3]}")
            doc = copy.deepcopy(info)
            if h.query.get("blobs") not in ("true", "1", "True"):
                doc["siblings"] = [{"rfilename": s["rfilename"]} for s in doc["siblings"]]
            return h.send(200, self._hf_headers(), doc)
        if path.startswith("/api/resolve-cache/models/"):
            rest = path[len("/api/resolve-cache/models/"):].split("/", 3)
            if len(rest) < 4:
                return self._hf_error(h, 404, "EntryNotFound", "Entry not found")
            repo, commit, fpath = "/".join(rest[:2]), rest[2], rest[3]
            entry = self.fx["hf_files"].get((repo, fpath))
            info = self._hf_repo(repo)
            if entry is None or info is None or commit != info["sha"]:
                return self._hf_error(h, 404, "EntryNotFound", "Entry not found")
            payload, meta = entry
            return h.serve_payload(payload, self._hf_headers({
                "X-Repo-Commit": info["sha"],
                "Content-Disposition": f"inline; filename*=UTF-8''{payload.filename}; filename=\"{payload.filename}\";"}),
                etag=f'"{meta["git_blob_sha1"]}"')
        parts = path.strip("/").split("/", 4)
        if len(parts) == 5 and parts[2] == "resolve":
            return self._hf_resolve(h, "/".join(parts[:2]), parts[3], parts[4], state)
        return h.send(404, {"Content-Type": "text/html"}, "<html>404</html>")

    def _hf_resolve(self, h: _Handler, repo: str, rev: str, fpath: str, state: str) -> None:
        info = self._hf_repo(repo)
        if info is None:
            if state == "anonymous":
                return self._hf_error(h, 401, "RepoNotFound", "Repository not found")
            return self._hf_error(h, 404, "RepoNotFound", "Repository not found")
        commit = info["sha"]
        if rev not in ("main", commit):
            return self._hf_error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if info.get("gated") and state != "granted":
            if state == "anonymous":
                return self._hf_error(h, 401, "GatedRepo", f"Access to model {repo} is restricted. You must have "
                                      "access to it and be authenticated to access it. Please log in.")
            return self._hf_error(h, 403, "GatedRepo", f"Access to model {repo} is restricted and you are not in "
                                  f"the authorized list. Visit https://huggingface.co/{repo} to ask for access.")
        entry = self.fx["hf_files"].get((repo, fpath))
        if entry is None:
            return self._hf_error(h, 404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        payload, meta = entry
        common = self._hf_headers({"X-Repo-Commit": commit, "Content-Type": "text/plain; charset=utf-8",
                                   "Access-Control-Expose-Headers": "X-Repo-Commit,X-Request-Id,X-Error-Code,"
                                   "X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,"
                                   "X-Linked-Size,X-Linked-ETag,X-Xet-Hash"})
        if meta.get("lfs"):
            xet = hashlib.sha256(b"xet:" + payload.sha256.encode()).hexdigest()
            obj = f"/xet-bridge-us/{info['_id']}/{xet}"
            date = f"{time.time():.3f}"
            disp = (f"inline; filename*=UTF-8''{payload.filename}; filename=\"{payload.filename}\";")
            query = urlencode({"Expires": date, "Signature": self._sign(obj, date), "Key-Pair-Id": "KFIXTURE0EXAMPLE",
                               "response-content-disposition": disp, "X-Xet-Cas-Uid": "public"}, quote_via=quote)
            location = f"{self.scheme}://{HF_CDN_HOST}{obj}?{query}"
            body = f"Found. Redirecting to {location}"
            return h.send(302, {**common, "Location": location, "X-Linked-Size": str(payload.size),
                                "X-Linked-Etag": f'"{payload.sha256}"', "ETag": f'"{xet}"', "X-Xet-Hash": xet,
                                "Accept-Ranges": "bytes"}, body)
        location = (f"/api/resolve-cache/models/{repo}/{commit}/{quote(fpath)}?"
                    f"{quote('/' + repo + '/resolve/' + rev + '/' + fpath, safe='')}=&etag=%22{meta['git_blob_sha1']}%22")
        return h.send(307, {**common, "Location": location, "X-Linked-Etag": f'"{meta["git_blob_sha1"]}"'},
                      f"Temporary Redirect. Redirecting to {location}")

    # -- Hugging Face CDN (cas-bridge stand-in)
    def _route_hf_cdn(self, h: _Handler) -> None:
        if not h.req_path.startswith("/xet-bridge-us/") or not self._signed_ok(h, "Expires"):
            return self._denied(h)
        xet = h.req_path.rsplit("/", 1)[-1]
        for (_repo, _path), (payload, meta) in self.fx["hf_files"].items():
            if meta.get("lfs") and hashlib.sha256(b"xet:" + payload.sha256.encode()).hexdigest() == xet:
                disp = h.query.get("response-content-disposition", "")
                return h.serve_payload(payload, {"Content-Disposition": disp, "X-Cache": "Miss from cloudfront"},
                                       etag=f'"{xet}"')
        return self._denied(h)

    # -- a host nobody allow-listed
    def _route_evil(self, h: _Handler) -> None:
        h.serve_payload(Payload(data=b"not the file you wanted\n" * 100, filename="evil.bin"), {}, etag='"evil"')


# ----------------------------------------------------------------------------- pytest fixture

try:
    import pytest
except ImportError:  # pragma: no cover - usable without pytest (benches)
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(name="provider_servers")
    def provider_servers_fixture(ws):
        """Fake providers started for one test and configured into the ``ws`` workspace."""
        with FakeProviders() as fp:
            fp.configure(ws)
            yield fp


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Serve the fake Civitai / Hugging Face providers on 127.0.0.1.")
    ap.add_argument("--tls", action="store_true", help="HTTPS with a throw-away CA (see FakeProviders(tls=True))")
    ap.add_argument("--file", action="append", default=[], metavar="NAME:SIZE",
                    help="also serve a generated file of SIZE bytes at /files/NAME on the CDN stand-in")
    args = ap.parse_args(argv)
    with FakeProviders(tls=args.tls) as fp:
        files = {}
        for spec in args.file:
            name, _, size = spec.rpartition(":")
            payload = Payload(seed=f"comfyvn bench payload {name}\n".encode(), size=int(size), filename=name)
            files[name] = {"url": fp.add_file(name, payload), "size": payload.size, "sha256": payload.sha256}
        print(json.dumps({"ports": {r: fp.port(r) for r in ROLES}, "config_patch": fp.config_patch(),
                          "files": files}), flush=True)
        try:
            sys.stdin.read()  # serve until stdin closes
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
