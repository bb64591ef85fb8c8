"""Shared pieces of the provider resolvers and the downloader.

- :class:`RemotePlan`: what to download (the agreed interface; re-exported by ``remote``).
- :class:`GuardedSession`: an httpx client that follows redirects *manually*, running
  :func:`comfyvn.ingest.netguard.check_url` on every hop and connecting to the checked address;
  auth headers go only to the origin they were meant for.
- Error helpers: HTTP answers become :class:`RemoteError` with a code and a message a person
  can act on; secrets are scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import json
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import certifi
import httpx

from ...config import Workspace, get_setting
from ...names import safe_filename as safe_filename  # re-exported: the one file-name rule
from ..errors import RemoteError
from ..netguard import Target, allowed_host_rules, check_url, display_url

log = logging.getLogger("comfyvn.ingest.remote")

USER_AGENT = "comfyvn-workbench/0.1 (+python-httpx)"
MAX_REDIRECTS = 10
DEFAULT_RETRY_AFTER_S = 30.0  # when a 429 carries no Retry-After (Civitai never sends one)
ERROR_BODY_LIMIT = 64 * 1024
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


class _RedactedHeaders(dict):
    """A dict of request headers whose repr never shows the values (tokens)."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: '***'" for k in self) + "}"

    __str__ = __repr__


def auth_headers(token: str | None) -> dict[str, str]:
    return _RedactedHeaders({"Authorization": f"Bearer {token}"}) if token else _RedactedHeaders()


def env_token(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


@dataclass
class RemotePlan:
    """A resolved remote pull.

    ``headers`` holds auth headers (a provider token) for the provider's own host: it is left
    out of ``repr()`` and :meth:`to_dict`; never store or log it.
    """

    provider: str
    source_url: str
    download_url: str
    filename: str
    expected_sha256: str | None = None  # lower-case hex when the provider publishes it
    expected_size: int | None = None
    provider_metadata: dict = field(default_factory=dict, repr=False)  # raw API JSON
    headers: dict = field(default_factory=_RedactedHeaders, repr=False)
    # bytes the published size may be off by (Civitai publishes kilobytes as a rounded float)
    size_tolerance: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.headers, _RedactedHeaders):
            self.headers = _RedactedHeaders(self.headers or {})
        if self.expected_sha256:
            self.expected_sha256 = self.expected_sha256.strip().lower()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view for jobs and events (no headers, so no token)."""
        return {
            "provider": self.provider,
            "source_url": self.source_url,
            "download_url": self.download_url,
            "filename": self.filename,
            "expected_sha256": self.expected_sha256,
            "expected_size": self.expected_size,
            "size_tolerance": self.size_tolerance,
        }

    def secrets(self) -> list[str]:
        return secrets_of(self.headers)


def secrets_of(headers: Mapping[str, str] | None) -> list[str]:
    out: list[str] = []
    for key, value in (headers or {}).items():
        if key.lower() in ("authorization", "cookie", "x-api-key") and value:
            out.append(value)
            if " " in value:
                out.append(value.split(" ", 1)[1])
    return [s for s in out if len(s) >= 4]


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def remote_error(message: str, *, code: str, secrets: Iterable[str] = (), retryable: bool = False,
                 retry_after: float | None = None, status: int | None = None) -> RemoteError:
    return RemoteError(redact(message, secrets), code=code, retryable=retryable,
                       retry_after=retry_after, status=status)


def check_reference_url(url: str) -> None:
    """Refuse, before any job exists, a remote URL longer than a webhook URL may be or with a
    port that is no port (0, above 65535, not a number)."""
    from ...hooks.webhooks import MAX_URL_LENGTH  # one cap for every URL the server will call

    if len(url) > MAX_URL_LENGTH:
        raise RemoteError(f"remote_url is {len(url)} characters long; the limit is {MAX_URL_LENGTH}.",
                          code="remote.bad_url")
    if "://" not in url:
        return
    from ...netpolicy import url_port  # the one port rule, webhooks' too

    try:
        url_port(urlsplit(url))
    except ValueError as exc:
        raise RemoteError(f"remote_url has an {exc}.", code="remote.bad_url") from None


# ----------------------------------------------------------------------------- HTTP errors


def parse_retry_after(headers: Mapping[str, str], *, ratelimit: bool = True) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date), else (``ratelimit``) the draft
    ``RateLimit: "bucket";r=0;t=N`` header the Hugging Face Hub sends instead."""
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    draft = headers.get("ratelimit") if ratelimit else None
    if draft:
        m = re.search(r"(?:^|;)\s*t=(\d+)", draft)
        if m:
            return float(m.group(1))
    return None


def error_text(body: bytes) -> tuple[str | None, dict]:
    """The ``error`` / ``message`` text of a JSON (or plain) error body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        return (text[:300] or None), {}
    if isinstance(doc, dict):
        msg = doc.get("message") or doc.get("error")
        return (str(msg)[:500] if msg else None), doc
    return None, {}


@dataclass
class HttpFailure:
    """An unsuccessful HTTP answer, as handed to the provider's error mapper."""

    status: int
    headers: httpx.Headers
    body: bytes
    target: Target
    first_target: Target
    token_sent: bool
    subject: str  # what was being fetched, for messages ("Civitai model version 1184630")

    @property
    def on_storage_host(self) -> bool:
        return self.target.origin != self.first_target.origin


def generic_http_error(f: HttpFailure, secrets: Iterable[str] = ()) -> RemoteError:
    text, _doc = error_text(f.body)
    detail = f": {text}" if text else ""
    where = f"{f.subject} ({f.target.host})"
    if f.status == 429:
        after = parse_retry_after(f.headers)
        wait = after if after is not None else DEFAULT_RETRY_AFTER_S
        how = "as the server asked" if after is not None else "no Retry-After was sent; default back-off"
        return remote_error(f"{where}: rate limited by the provider (HTTP 429{detail}); retry in {wait:g} s ({how}).",
                            code="remote.rate_limited", retryable=True, retry_after=wait, status=429, secrets=secrets)
    if f.status >= 500:
        after = parse_retry_after(f.headers, ratelimit=False)
        return remote_error(f"{where}: the provider failed with HTTP {f.status}{detail}; try again later.",
                            code="remote.server_error", retryable=True, retry_after=after, status=f.status,
                            secrets=secrets)
    if f.status in (401, 403) and f.on_storage_host:
        return remote_error(f"{where}: the storage host refused the signed download link (HTTP {f.status}); "
                            "it has probably expired. Retrying asks the provider for a fresh link.",
                            code="remote.link_expired", retryable=True, status=f.status, secrets=secrets)
    if f.status == 401:
        return remote_error(f"{where}: authentication required (HTTP 401{detail}).", code="remote.auth_required",
                            status=401, secrets=secrets)
    if f.status == 403:
        return remote_error(f"{where}: access denied (HTTP 403{detail}).", code="remote.forbidden", status=403,
                            secrets=secrets)
    if f.status == 404:
        return remote_error(f"{where}: not found (HTTP 404{detail}); check the URL or id.", code="remote.not_found",
                            status=404, secrets=secrets)
    if f.status == 410:
        return remote_error(f"{where}: no longer available (HTTP 410{detail}).", code="remote.gone", status=410,
                            secrets=secrets)
    if f.status == 416:
        return remote_error(f"{where}: the server refused the byte range (HTTP 416).", code="remote.range",
                            retryable=True, status=416, secrets=secrets)
    return remote_error(f"{where}: unexpected HTTP {f.status}{detail}.", code="remote.http_error",
                        status=f.status, secrets=secrets)


ErrorMapper = Callable[[HttpFailure], RemoteError | None]


# ----------------------------------------------------------------------------- guarded session


_tls_lock = threading.Lock()
_tls_cache: dict[tuple, ssl.SSLContext] = {}


def tls_context(extra_ca: str | None = None) -> ssl.SSLContext:
    """A verifying client TLS context (certifi + ``extra_ca``), built once and shared.

    Loading the CA bundle costs ~80 ms; a context is safe to share between connections/threads.
    """
    key: tuple = (certifi.where(),)
    try:
        if extra_ca:
            st = os.stat(extra_ca)
            key += (extra_ca, st.st_mtime_ns, st.st_size)
        with _tls_lock:
            ctx = _tls_cache.get(key)
            if ctx is None:
                ctx = ssl.create_default_context(cafile=certifi.where())
                if extra_ca:
                    ctx.load_verify_locations(cafile=extra_ca)
                _tls_cache[key] = ctx
            return ctx
    except (OSError, ssl.SSLError) as exc:
        raise RemoteError(f"ingest.ca_bundle {extra_ca!r} cannot be loaded ({exc}); point it at a PEM file "
                          "of CA certificates, or remove the setting.", code="remote.tls") from None


def _no_cookies() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def read_limited(resp: httpx.Response, limit: int = ERROR_BODY_LIMIT) -> bytes:
    buf = bytearray()
    try:
        for chunk in resp.iter_raw():
            buf += chunk
            if len(buf) >= limit:
                break
    except httpx.HTTPError:
        pass
    finally:
        resp.close()
    return bytes(buf[:limit])


class GuardedSession:
    """httpx client for one provider: manual redirects, every hop checked and address-pinned.

    ``auth`` headers are sent only to the provider's own API origin (its
    configured ``base_url``), never to a CDN/storage host a redirect leads to.
    """

    def __init__(self, provider: str, ws: Workspace | None, *, auth: Mapping[str, str] | None = None,
                 error_mapper: ErrorMapper | None = None, read_timeout: float | None = None) -> None:
        self.provider = provider
        self.ws = ws
        self.rules = allowed_host_rules(provider, ws)
        self.auth = dict(auth or {})
        self.secrets = secrets_of(self.auth)
        self.error_mapper = error_mapper
        read = read_timeout if read_timeout is not None else float(get_setting("ingest.remote_timeout_s", 60, ws))
        extra_ca = get_setting("ingest.ca_bundle", None, ws)  # e.g. a studio proxy's or a test CA
        self.client = httpx.Client(
            verify=tls_context(str(extra_ca) if extra_ca else None),
            trust_env=False,  # no proxy / netrc surprises; we pin addresses ourselves
            follow_redirects=False,
            timeout=httpx.Timeout(connect=15.0, read=read, write=30.0, pool=15.0),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            cookies=_no_cookies(),
        )
        self.auth_origins: set[tuple[str, str, int]] = set()
        base = get_setting(f"ingest.providers.{provider}.base_url", None, ws)
        if isinstance(base, str) and base:
            parts = urlsplit(base)
            scheme = parts.scheme.lower()
            if parts.hostname:
                self.auth_origins.add((scheme, parts.hostname.lower(), parts.port or (443 if scheme == "https" else 80)))

    def __enter__(self) -> GuardedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def check(self, url: str) -> Target:
        return check_url(url, provider=self.provider, ws=self.ws, rules=self.rules)

    def open(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, subject: str,
             follow: str = "all", on_redirect: Callable[[httpx.Response, Target, str], None] | None = None,
             ok: Iterable[int] = (200,)) -> tuple[httpx.Response, Target, list[httpx.Response]]:
        """Send ``method url`` following redirects (``follow``: ``"all"``, ``"relative"`` or ``"none"``).

        Returns the streamed final response (caller closes it), its target, and the redirect
        responses seen (closed, headers kept).  A status outside ``ok`` that is not a followed
        redirect raises :class:`RemoteError` via the provider's error mapper.
        """
        ok = set(ok)
        first = target = self.check(url)
        hops: list[httpx.Response] = []
        for _ in range(MAX_REDIRECTS + 1):
            send_headers = dict(headers or {})
            if target.origin in self.auth_origins:
                send_headers.update(self.auth)
            send_headers["Host"] = target.host_header
            request = self.client.build_request(method, target.connect_url, headers=send_headers,
                                                extensions=target.request_extensions())
            try:
                resp = self.client.send(request, stream=True)
            except httpx.TimeoutException:
                raise remote_error(f"{subject}: {target.host} did not answer in time; try again later.",
                                   code="remote.timeout", retryable=True, secrets=self.secrets) from None
            except httpx.HTTPError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                    raise remote_error(f"{subject}: the TLS certificate of {target.host} could not be verified "
                                       f"({exc}); if a proxy re-signs traffic, set ingest.ca_bundle to its CA file.",
                                       code="remote.tls", secrets=self.secrets) from None
                raise remote_error(f"{subject}: cannot connect to {target.host} ({type(exc).__name__}: {exc}).",
                                   code="remote.connection", retryable=True, secrets=self.secrets) from None
            location = resp.headers.get("location")
            if resp.status_code in REDIRECT_STATUSES and location and follow != "none":
                relative = not urlsplit(location).netloc and not urlsplit(location).scheme
                if follow == "relative" and not relative:
                    return resp, target, hops
                read_limited(resp, 4096)
                next_url = urljoin(target.url, location)
                if on_redirect is not None:
                    on_redirect(resp, target, next_url)
                hops.append(resp)
                log.debug("%s %s -> %s %s", method, display_url(target.url), resp.status_code, display_url(next_url))
                target = self.check(next_url)
                if resp.status_code == 303:
                    method = "GET" if method != "HEAD" else "HEAD"
                continue
            if resp.status_code in ok:
                return resp, target, hops
            body = read_limited(resp) if method != "HEAD" else b""
            raise self.http_error(resp, body, target, first, subject)
        raise remote_error(f"{subject}: more than {MAX_REDIRECTS} redirects; giving up.",
                           code="remote.too_many_redirects", secrets=self.secrets)

    def http_error(self, resp: httpx.Response, body: bytes, target: Target, first: Target,
                   subject: str) -> RemoteError:
        failure = HttpFailure(status=resp.status_code, headers=resp.headers, body=body, target=target,
                              first_target=first, token_sent=bool(self.auth) and target.origin in self.auth_origins,
                              subject=subject)
        err = self.error_mapper(failure) if self.error_mapper else None
        err = err or generic_http_error(failure, self.secrets)
        err.message = redact(err.message, self.secrets)
        err.args = (err.message,)
        return err

    def get_json(self, url: str, *, subject: str) -> dict:
        resp, _target, _hops = self.open("GET", url, headers={"Accept": "application/json"}, subject=subject)
        try:
            body = resp.read()
        except httpx.HTTPError as exc:
            raise remote_error(f"{subject}: connection failed while reading the answer ({type(exc).__name__}).",
                               code="remote.connection", retryable=True, secrets=self.secrets) from None
        finally:
            resp.close()
        try:
            doc = json.loads(body)
        except ValueError:
            raise remote_error(f"{subject}: the provider did not answer with JSON "
                               f"({resp.headers.get('content-type', 'no content type')}).",
                               code="remote.bad_response", retryable=True, secrets=self.secrets) from None
        if not isinstance(doc, dict):
            raise remote_error(f"{subject}: unexpected JSON answer (not an object).", code="remote.bad_response",
                               secrets=self.secrets)
        return doc


def base_url(provider: str, ws: Workspace | None, default: str) -> str:
    value = get_setting(f"ingest.providers.{provider}.base_url", default, ws) or default
    return str(value).rstrip("/")
