"""An httpx client for the comfyvn HTTP API served by the Jupyter server extension.

    from comfyvn.client import ComfyvnClient

    with ComfyvnClient("http://127.0.0.1:8888/", token="...") as api:   # or JUPYTER_TOKEN
        job = api.upload("art/hero.png", asset_type_hint="characters")
        api.apply([job["job_id"]])
        for env in api.subscribe(["on_asset_ingest_*"]):
            print(env["event"], env["data"])

Errors are typed: :class:`ApiError` (``status``, ``code``, ``message``) and its subclasses
:class:`AuthError` (401/403), :class:`NotFoundError` (404), :class:`RateLimited` (429, with
``retry_after`` seconds), :class:`FeatureDisabled` (403 ``feature_disabled``),
:class:`BadRequest` (400/413), :class:`Conflict` (409) and :class:`ServerUnreachable`.
Each also derives from its meaning in :mod:`comfyvn.errors` (``NotFoundError`` is a
``comfyvn.errors.NotFound``...), so one ``except`` serves in-process and remote calls alike.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

import httpx

from . import errors

DEFAULT_TIMEOUT = 30.0


# ---------------------------------------------------------------------------- errors
class ApiError(errors.ComfyvnError):
    """An error answer of the API: ``status`` (HTTP), ``code`` (machine-readable) and ``message``."""

    def __init__(self, status: int, code: str, message: str, *, body: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.headers = headers or {}


class AuthError(errors.Refused, ApiError):
    """401/403: no token, a wrong token, or not authorised for this action."""


class NotFoundError(errors.NotFound, ApiError):
    """404: no such asset, job, webhook or route."""


class RateLimited(errors.RateLimited, ApiError):
    """429: retry after ``retry_after`` seconds."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class FeatureDisabled(errors.Refused, ApiError):
    """403 ``feature_disabled``: a feature flag (e.g. ``enable_asset_ingest``) is off on the server."""


class BadRequest(errors.InvalidInput, ApiError):
    """400/413: the request was invalid; ``message`` says what to change."""


class Conflict(errors.Conflict, ApiError):
    """409: e.g. releasing an applied job, a stale ``expected_version``, a path collision."""


class ServerUnreachable(errors.UpstreamFailure, ApiError):
    """The server could not be reached (connection refused, DNS, timeout)."""


def error_from_response(resp: httpx.Response) -> ApiError:
    """Turn an error response into the matching :class:`ApiError` subclass."""
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text[:2000]
    if isinstance(body, dict):
        code = str(body.get("error") or body.get("reason") or f"http_{resp.status_code}")
        message = str(body.get("message") or body.get("reason") or resp.reason_phrase)
    else:
        code, message = f"http_{resp.status_code}", (body or resp.reason_phrase).strip()
    status = resp.status_code
    kwargs = {"body": body, "headers": dict(resp.headers)}
    if status == 429:
        retry = resp.headers.get("Retry-After")
        try:
            retry_after = float(retry) if retry is not None else None
        except ValueError:
            retry_after = None
        return RateLimited(status, code, message, retry_after=retry_after, **kwargs)
    if status == 403 and code == "feature_disabled":
        return FeatureDisabled(status, code, message, **kwargs)
    cls = {401: AuthError, 403: AuthError, 404: NotFoundError, 400: BadRequest, 413: BadRequest,
           409: Conflict}.get(status, ApiError)
    return cls(status, code, message, **kwargs)


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None`` values; lists become comma-separated, booleans ``true``/``false``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple, set)):
            out[key] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            out[key] = json.dumps(value)
        else:
            out[key] = value
    return out


def _rewind(content: Any) -> bool:
    """Can ``content`` be sent again? (bytes can; a seekable file is rewound; a generator cannot)"""
    if content is None or isinstance(content, (bytes, bytearray, str)):
        return True
    if hasattr(content, "seek") and getattr(content, "seekable", lambda: False)():
        content.seek(0)
        return True
    return False


def _seg(value: str) -> str:
    return quote(str(value), safe="")


# ---------------------------------------------------------------------------- client
class ComfyvnClient:
    """The comfyvn API of one Jupyter server (``base_url`` includes the server's base path)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT, *,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self.token = token if token is not None else os.environ.get("JUPYTER_TOKEN") or None
        self.timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": "comfyvn-client/1"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  follow_redirects=False, transport=transport)

    def __enter__(self) -> ComfyvnClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None,
                content: bytes | BinaryIO | Iterable[bytes] | None = None, headers: dict[str, str] | None = None,
                timeout: float | None = None, check: bool = True) -> httpx.Response:
        """Send one request; raises the matching :class:`ApiError` for a non-2xx answer (unless
        ``check=False``, which returns any answer; transport failures always raise)."""
        kwargs: dict[str, Any] = {"params": _clean(params or {}), "headers": headers}
        if json_body is not None:
            kwargs["json"] = json_body
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = timeout
        for attempt in (1, 2):
            try:
                resp = self._http.request(method, path.lstrip("/"), **kwargs)
                break
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                # A kept-alive connection the server closed just as we reused it (Tornado closes the
                # connection after refusing a request whose body it did not read): send once more.
                if attempt == 2 or not _rewind(content):
                    raise ServerUnreachable(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from exc
            except httpx.TimeoutException as exc:
                raise ServerUnreachable(0, "timeout", f"{method} {self.base_url}{path.lstrip('/')} timed out: "
                                                      f"{exc}") from exc
            except httpx.TransportError as exc:
                raise ServerUnreachable(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from exc
        if check and resp.status_code >= 300:
            raise error_from_response(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def _get(self, path: str, **params: Any) -> Any:
        return self._json("GET", path, params=params)

    def _post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self._json("POST", path, json_body={} if body is None else body, params=params)

    # -- ingest ------------------------------------------------------------------------
    def enqueue(self, source_path: str | os.PathLike[str] | None = None, *, remote_url: str | None = None,
                provider: str = "local", metadata: dict | None = None, dest_relative: str | None = None,
                asset_type_hint: str | None = None, pin: bool = False, terms_acknowledged: bool = False,
                project_id: str | None = None, wait: bool = False) -> dict:
        """Queue a file that is on the *server* (``source_path``) or a remote pull (``remote_url``)."""
        body = {"provider": provider, "metadata": metadata,
                "source_path": os.fspath(source_path) if source_path is not None else None,
                "remote_url": remote_url, "dest_relative": dest_relative, "asset_type_hint": asset_type_hint,
                "pin": pin, "terms_acknowledged": terms_acknowledged, "project_id": project_id, "wait": wait}
        return self._post("api/ingest/queue", {k: v for k, v in body.items() if v is not None})

    def enqueue_many(self, items: Iterable[str | os.PathLike[str] | dict], *, provider: str | None = None,
                     metadata: dict | None = None, dest_relative: str | None = None,
                     asset_type_hint: str | None = None, pin: bool | None = None,
                     terms_acknowledged: bool | None = None, project_id: str | None = None) -> dict:
        """Queue many files that are on the *server* in one request (at most 10,000): each item a
        path or a dict of :meth:`enqueue`'s local arguments (``source_path`` required); the keyword
        arguments are defaults for every item.  Returns ``{"jobs": [...], "errors": [{"index",
        "source_path", "error", "message"}]}``: a refused file does not stop the others."""
        body: dict[str, Any] = {
            "provider": provider, "metadata": metadata, "dest_relative": dest_relative,
            "asset_type_hint": asset_type_hint, "pin": pin, "terms_acknowledged": terms_acknowledged,
            "project_id": project_id,
            "items": [os.fspath(item) if isinstance(item, str | os.PathLike) else
                      {k: os.fspath(v) if k == "source_path" and isinstance(v, os.PathLike) else v
                       for k, v in item.items()} for item in items]}
        return self._post("api/ingest/queue", {k: v for k, v in body.items() if v is not None})

    def upload(self, path: str | os.PathLike[str], *, filename: str | None = None, metadata: dict | None = None,
               dest_relative: str | None = None, asset_type_hint: str | None = None, pin: bool = False,
               project_id: str | None = None) -> dict:
        """Stream a local file to the server's ingest queue; returns the (staged/duplicate) job."""
        path = Path(path)
        params = {"filename": filename or path.name, "metadata": metadata, "dest_relative": dest_relative,
                  "asset_type_hint": asset_type_hint, "pin": pin or None, "project_id": project_id}
        with path.open("rb") as fh:
            return self._json("POST", "api/ingest/upload", params=params, content=fh,
                              headers={"Content-Type": "application/octet-stream"})

    def status(self, job_id: str | None = None, *, limit: int | None = None, include_cache: bool = False) -> dict:
        return self._get("api/ingest/status", job_id=job_id, limit=limit, include_cache=include_cache or None)

    def jobs(self, *, status: str | None = None, provider: str | None = None, limit: int | None = None,
             cursor: str | None = None) -> dict:
        """One page ``{"items", "next_cursor"}`` of jobs, newest first."""
        return self._get("api/ingest/jobs", status=status, provider=provider, limit=limit, cursor=cursor)

    def iter_jobs(self, *, status: str | None = None, provider: str | None = None,
                  page_size: int = 100) -> Iterator[dict]:
        cursor = None
        while True:
            page = self.jobs(status=status, provider=provider, limit=page_size, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def job(self, job_id: str) -> dict:
        return self._get(f"api/ingest/jobs/{_seg(job_id)}")

    def apply(self, job_ids: str | Iterable[str] | None = None, *, asset_type_override: str | None = None) -> dict:
        """Apply staged jobs (all staged jobs when ``job_ids`` is None)."""
        body: dict[str, Any] = {}
        if job_ids is not None:
            body["job_ids"] = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        if asset_type_override is not None:
            body["asset_type_override"] = asset_type_override
        return self._post("api/ingest/apply", body)

    def release(self, job_id: str) -> dict:
        return self._post("api/ingest/release", {"job_id": job_id})

    def retry(self, job_id: str) -> dict:
        return self._post("api/ingest/retry", {"job_id": job_id})

    def cancel(self, job_id: str) -> dict:
        return self._post("api/ingest/cancel", {"job_id": job_id})

    # -- assets ------------------------------------------------------------------------
    def assets(self, *, type: str | None = None, tags: Iterable[str] | None = None,  # noqa: A002
               tags_mode: str | None = None, license: str | None = None, text: str | None = None,  # noqa: A002
               hash: str | None = None, limit: int | None = None, cursor: str | None = None,  # noqa: A002
               sort: str | None = None, descending: bool | None = None, with_total: bool | None = None,
               project: str | None = None) -> dict:
        """One page ``{"items", "next_cursor", "total"?, "project"}`` of assets matching the filters.

        ``tags_mode`` is ``all`` (default) or ``any``; ``sort`` a registry sort column
        (``created_at`` by default), newest first unless ``descending=False``.
        """
        order = None if descending is None else ("desc" if descending else "asc")
        return self._get("assets", type=type, tags=list(tags) if tags is not None else None, tags_mode=tags_mode,
                         license=license, text=text, hash=hash, limit=limit, cursor=cursor, sort=sort,
                         order=order, total=with_total, project=project)

    def iter_assets(self, page_size: int = 200, **filters: Any) -> Iterator[dict]:
        cursor = None
        while True:
            page = self.assets(limit=page_size, cursor=cursor, **filters)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def asset(self, uid: str, *, project: str | None = None) -> dict:
        return self._get(f"assets/{_seg(uid)}", project=project)

    def sidecar(self, uid: str, *, project: str | None = None) -> dict:
        return self._get(f"assets/{_seg(uid)}/sidecar", project=project)

    def thumbnail(self, uid: str, *, size: int | str | None = None, project: str | None = None) -> bytes:
        """The PNG preview (``size`` 256/512) or, with ``size="waveform"``, WAV peaks as JSON bytes."""
        return self.request("GET", f"assets/{_seg(uid)}/thumbnail", params={"size": size, "project": project}).content

    def download(self, uid: str, dest: str | os.PathLike[str], *, project: str | None = None) -> Path:
        """Stream an asset's file to ``dest`` (a file, or a folder to keep the server's name).

        Written to a temporary file beside the destination and renamed when complete.
        """
        dest = Path(dest)
        url = f"assets/{_seg(uid)}/download"
        try:
            with self._http.stream("GET", url, params=_clean({"project": project})) as resp:
                if resp.status_code >= 300:
                    resp.read()
                    raise error_from_response(resp)
                if dest.is_dir():
                    dest = dest / _filename_from(resp, uid)
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
                try:
                    with os.fdopen(fd, "wb") as out:
                        for chunk in resp.iter_bytes(1024 * 1024):
                            out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(tmp, dest)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        except httpx.TransportError as exc:
            raise ServerUnreachable(0, "unreachable", f"download of {uid} failed: {exc}") from exc
        return dest

    def upload_asset(self, path: str | os.PathLike[str], asset_type: str | None = None, *, filename: str | None = None,
                     dest_relative: str | None = None, metadata: dict | None = None,
                     tags: Iterable[str] | None = None, license_tag: str | None = None,
                     project: str | None = None) -> dict:
        """Stream a local file straight into the registry (no ingest queue); returns the asset."""
        path = Path(path)
        params = {"filename": filename or path.name, "asset_type": asset_type, "dest_relative": dest_relative,
                  "metadata": metadata, "tags": list(tags) if tags is not None else None,
                  "license": license_tag, "project": project}
        with path.open("rb") as fh:
            return self._json("POST", "assets/upload", params=params, content=fh,
                              headers={"Content-Type": "application/octet-stream"})

    def register_asset(self, source_path: str | os.PathLike[str], asset_type: str, *,
                       dest_relative: str | None = None, metadata: dict | None = None,
                       tags: Iterable[str] | None = None, license_tag: str | None = None,
                       copy: bool | None = None, project: str | None = None) -> dict:
        """Register a file that is already on the *server* (an absolute path in an allowed folder)."""
        body = {"path": os.fspath(source_path), "asset_type": asset_type, "dest_relative": dest_relative,
                "metadata": metadata, "tags": list(tags) if tags is not None else None, "license": license_tag,
                "copy": copy}
        return self._post("assets/register", {k: v for k, v in body.items() if v is not None}, project=project)

    _UNSET: Any = object()

    def update_meta(self, uid: str, metadata: dict | None = None, *, replace: bool = False,
                    add_tags: Iterable[str] | None = None, remove_tags: Iterable[str] | None = None,
                    license_tag: str | None | Any = _UNSET, expected_version: int | None = None,
                    project: str | None = None) -> dict:
        """Merge (or with ``replace`` swap) metadata, edit tags / licence; ``license_tag=None`` clears it."""
        body: dict[str, Any] = {}
        if metadata is not None:
            body["metadata"] = metadata
        if replace:
            body["replace"] = True
        if add_tags is not None:
            body["add_tags"] = list(add_tags)
        if remove_tags is not None:
            body["remove_tags"] = list(remove_tags)
        if license_tag is not self._UNSET:
            body["license"] = license_tag
        if expected_version is not None:
            body["expected_version"] = expected_version
        return self._json("PATCH", f"assets/{_seg(uid)}", json_body=body, params={"project": project})

    def bulk(self, uids: Iterable[str], *, add_tags: Iterable[str] | None = None,
             remove_tags: Iterable[str] | None = None, license_tag: str | None | Any = _UNSET,
             project: str | None = None) -> dict:
        """Bulk tag / licence edit; ``license_tag=None`` clears the licence of every asset."""
        body: dict[str, Any] = {"uids": list(uids)}
        if add_tags is not None:
            body["add_tags"] = list(add_tags)
        if remove_tags is not None:
            body["remove_tags"] = list(remove_tags)
        if license_tag is not self._UNSET:
            body["license"] = license_tag
        return self._json("POST", "assets/bulk", json_body=body, params={"project": project})

    def delete_asset(self, uid: str, *, delete_files: bool = False, project: str | None = None) -> dict:
        """Remove an asset (files go to the trash folder unless ``delete_files``)."""
        return self._json("DELETE", f"assets/{_seg(uid)}",
                          params={"delete_files": delete_files or None, "project": project})

    def debug_hooks(self, *, project: str | None = None) -> dict:
        return self._get("assets/debug/hooks", project=project)

    def debug_modder_hooks(self) -> dict:
        return self._get("assets/debug/modder-hooks")

    def debug_history(self, limit: int | None = None) -> dict:
        return self._get("assets/debug/history", limit=limit)

    # -- modder hooks ------------------------------------------------------------------
    def hooks(self, category: str | None = None) -> dict:
        """Hook discovery: ``{"hooks": [spec, ...], "last_event_id"}`` (``category`` asset/ingest/system)."""
        return self._get("api/modder/hooks", category=category)

    def history(self, limit: int | None = None, topics: Iterable[str] | None = None,
                before_id: int | None = None) -> dict:
        """``{"items": [envelope, ...]}``: the newest ``limit`` events, oldest first."""
        return self._get("api/modder/hooks/history", limit=limit,
                         topics=list(topics) if topics is not None else None, before_id=before_id)

    def webhooks(self, event: str | None = None) -> list[dict]:
        """Registered webhooks (never with their secrets: ``has_secret`` says whether one is set)."""
        return self._get("api/modder/hooks/webhooks", event=event)["items"]

    def webhook(self, webhook_id: str) -> dict:
        return self._get(f"api/modder/hooks/webhooks/{_seg(webhook_id)}")

    def register_webhook(self, event: str, url: str, secret: str | None = None) -> dict:
        body = {"event": event, "url": url}
        if secret is not None:
            body["secret"] = secret
        return self._post("api/modder/hooks/webhooks", body)

    def delete_webhook(self, webhook_id: str) -> dict | None:
        return self._json("DELETE", f"api/modder/hooks/webhooks/{_seg(webhook_id)}")

    def deliveries(self, webhook_id: str, limit: int | None = None) -> list[dict]:
        """Delivery attempts of a webhook, newest first."""
        return self._get(f"api/modder/hooks/webhooks/{_seg(webhook_id)}/deliveries", limit=limit)["items"]

    def test_event(self, message: str | None = None, data: dict | None = None) -> dict:
        """Ask the server to emit an ``on_modder_test`` event; returns its envelope."""
        body: dict[str, Any] = {}
        if message is not None:
            body["message"] = message
        if data is not None:
            body["data"] = data
        return self._post("api/modder/hooks/test", body)

    def openapi(self) -> dict:
        return self._get("api/comfyvn/openapi.json")

    # -- WebSocket ---------------------------------------------------------------------
    def subscribe(self, topics: Iterable[str] | None = None, last_event_id: int | None = None, *,
                  path: str = "api/modder/hooks/ws", open_timeout: float | None = None) -> HookSubscription:
        """Open the hook WebSocket; iterate the result for envelopes (see :class:`HookSubscription`)."""
        return HookSubscription(self, list(topics) if topics is not None else None, last_event_id, path,
                                open_timeout if open_timeout is not None else self.timeout)


def _filename_from(resp: httpx.Response, fallback: str) -> str:
    """The file name of a Content-Disposition header (``filename*=UTF-8''...`` or ``filename=``)."""
    names: dict[str, str] = {}
    for part in resp.headers.get("Content-Disposition", "").split(";"):
        key, _, value = part.strip().partition("=")
        value = value.strip().strip('"')
        if key.lower() == "filename*" and "''" in value:
            value = unquote(value.split("''", 1)[1])
        names[key.lower()] = value
    name = Path(names.get("filename*") or names.get("filename") or "").name
    return name if name and name not in (".", "..") else fallback


class HookSubscription:
    """A live subscription to the hook WebSocket (``/api/modder/hooks/ws``).

    Opening subscribes with ``?topics=...&last_event_id=N`` and waits for the server's
    acknowledgement (``self.ack``: ``{"type": "ack", "topics", "last_event_id"}``); an unknown
    topic raises :class:`BadRequest`.  Iterating (or :meth:`recv`) yields envelopes
    ``{"id", "event", "ts", "data"}`` in commit order; keep-alive pings are skipped.
    ``self.last_event_id`` is the id of the last envelope yielded: pass it to
    :meth:`ComfyvnClient.subscribe` after a disconnect to resume without a gap or duplicate.
    """

    def __init__(self, client: ComfyvnClient, topics: list[str] | None, last_event_id: int | None, path: str,
                 open_timeout: float) -> None:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        self.topics = topics
        self.last_event_id = last_event_id
        self.ack: dict = {}
        self._buffer: deque[dict] = deque()
        params = _clean({"topics": topics or None, "last_event_id": last_event_id})
        url = "ws" + (client.base_url + path.lstrip("/"))[len("http"):]
        if params:
            url += "?" + str(httpx.QueryParams(params))
        headers = {"Authorization": f"token {client.token}"} if client.token else {}
        try:
            self._ws = connect(url, additional_headers=headers, open_timeout=open_timeout,
                               max_size=16 * 1024 * 1024, user_agent_header="comfyvn-client/1")
        except InvalidStatus as exc:
            resp = exc.response
            status = resp.status_code
            try:
                body = json.loads(resp.body or b"{}")
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            cls = AuthError if status in (401, 403) else NotFoundError if status == 404 else ApiError
            raise cls(status, str(body.get("error", f"http_{status}")), str(body.get("message", exc)),
                      body=body) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ServerUnreachable(0, "unreachable", f"cannot open {url}: {exc}") from exc
        try:
            self._await_ack(open_timeout)
        except BaseException:
            self._ws.close()
            raise

    # -- protocol ----------------------------------------------------------------------
    def _recv_raw(self, timeout: float | None) -> dict:
        raw = self._ws.recv(timeout=timeout)
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            raise ApiError(0, "protocol_error", f"unexpected WebSocket message {str(raw)[:200]!r}")
        return msg

    def _handle(self, msg: dict) -> dict | None:
        """Returns an envelope, or None for control messages (an error raises)."""
        kind = msg.get("type")
        if kind == "error":
            raise BadRequest(400, "ws_error", str(msg.get("message", msg)), body=msg)
        if kind == "ack":
            self.ack = msg
            return None
        if kind == "event" or (kind is None and "event" in msg and "data" in msg):
            env = {k: v for k, v in msg.items() if k != "type"}
            if isinstance(env.get("id"), int):
                self.last_event_id = env["id"]
            return env
        return None  # ping, pong, or a message type this client does not know

    def _await(self, kind: str, timeout: float | None) -> dict:
        """Read until a ``kind`` control message, keeping envelopes that arrive before it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            msg = self._recv_raw(remaining)
            env = self._handle(msg)
            if env is not None:
                self._buffer.append(env)
            elif msg.get("type") == kind:
                return msg

    def _await_ack(self, timeout: float | None) -> dict:
        return self._await("ack", timeout)

    def ping(self, timeout: float = 10.0) -> dict:
        """Send ``{"type": "ping"}`` and wait for the server's ``{"type": "pong"}``."""
        self._ws.send(json.dumps({"type": "ping"}))
        return self._await("pong", timeout)

    def recv(self, timeout: float | None = None) -> dict:
        """The next envelope (``TimeoutError`` after ``timeout`` seconds without one)."""
        if self._buffer:
            return self._buffer.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            env = self._handle(self._recv_raw(remaining))
            if env is not None:
                return env

    def resubscribe(self, topics: Iterable[str] | None = None, last_event_id: int | None = None,
                    timeout: float = 30.0) -> dict:
        """Replace the topic filter on the open socket; returns the new acknowledgement."""
        self.topics = list(topics) if topics is not None else None
        request: dict[str, Any] = {"type": "subscribe", "topics": self.topics}
        if last_event_id is not None:
            request["last_event_id"] = last_event_id
        self._ws.send(json.dumps(request))
        return self._await_ack(timeout)

    def __iter__(self) -> Iterator[dict]:
        from websockets.exceptions import ConnectionClosedOK

        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> HookSubscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = [
    "ApiError",
    "AuthError",
    "BadRequest",
    "ComfyvnClient",
    "Conflict",
    "FeatureDisabled",
    "HookSubscription",
    "NotFoundError",
    "RateLimited",
    "ServerUnreachable",
    "error_from_response",
]
