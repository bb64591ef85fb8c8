"""Shared handler plumbing: JSON errors, auth, the worker pool, bounded bodies and validation.

Every HTTP handler of the extension derives from :class:`ComfyvnAPIHandler`:

* errors are JSON ``{"error": code, "message": text}`` (also Jupyter's own 403/404/405);
* ``prepare`` authenticates *and* authorises before any request body is read, so an anonymous
  or read-only client cannot stream a body to disk (methods keep the usual
  ``@web.authenticated`` / ``@authorized`` decorators as well);
* request bodies are streamed into a bounded buffer: a ``Content-Length`` over the limit is
  refused with 413 before the body is read, a chunked body over it after;
* a refusal decided before the body was read (403, 413, feature disabled, bad query
  parameters, the upload limit's 503) keeps the connection usable: a body of at most
  :data:`DRAIN_BYTES` is read and discarded first, then the answer is sent on a kept-alive
  connection; a larger or chunked body is answered at once with ``Connection: close``;
* a body that arrives too slowly (see :class:`BodyPolicy`) is cut with 408 and ``Connection: close``;
* :meth:`ComfyvnAPIHandler.run` runs blocking work (SQLite, hashing, copies) in the
  extension's thread pool and turns core exceptions into clear HTTP errors.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.client import responses
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_core.utils import ensure_async
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback

from comfyvn.config import NotAWorkspaceError
from comfyvn.confined import RefusedFileError
from comfyvn.errors import (
    Conflict,
    InvalidInput,
    Misconfigured,
    NotFound,
    RateLimited,
    Refused,
    UpstreamFailure,
)
from comfyvn.fsutil import UnsafePathError
from comfyvn.hooks import UnknownHookError
from comfyvn.ingest.errors import IngestError
from comfyvn.netpolicy import AddressRefused
from comfyvn.store import StoreUnavailable
from comfyvn.studio.core.asset_registry import AssetCollisionError, AssetNotFoundError, AssetRegistryError

if TYPE_CHECKING:
    from ..services import ComfyvnServices

log = logging.getLogger("comfyvn.server")
T = TypeVar("T")

#: error codes for HTTP errors raised outside our own code (Jupyter auth, Tornado routing)
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "payload_too_large",
                429: "rate_limited", 500: "internal_error", 502: "bad_gateway", 503: "unavailable"}
_MISSING: Any = object()
AUTH_REQUIRED = "authentication required: send 'Authorization: token <jupyter token>' (or ?token=)"
#: a refused request body up to this size is read and discarded, so the connection stays usable
DRAIN_BYTES = 64 * 1024
#: a refused body being discarded must arrive within this time (else the connection is closed)
DRAIN_SECONDS = 5.0


@dataclass(frozen=True)
class BodyPolicy:
    """How slowly a request body may arrive: at least ``min_bytes_per_s`` over every
    ``window_s`` seconds, and all of it within ``max_seconds`` (else 408, connection closed)."""

    min_bytes_per_s: float
    window_s: float
    max_seconds: float


class ApiError(web.HTTPError):
    """An HTTP error with a machine-readable ``code`` and a message a person can act on."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, *,
                 drain: bool = True) -> None:
        super().__init__(status, message.replace("%", "%%"))
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.drain = drain  # False: answer at once (Connection: close), never read a refused body


def error_body(status: int, exc: BaseException | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and extra headers of an error response."""
    if isinstance(exc, ApiError):
        return {"error": exc.code, "message": exc.message}, exc.headers
    if isinstance(exc, web.HTTPError):
        try:
            message = exc.log_message % exc.args if exc.log_message else ""
        except Exception:
            message = exc.log_message or ""
        return {"error": STATUS_CODES.get(status, f"http_{status}"),
                "message": message or exc.reason or responses.get(status, "error")}, {}
    if exc is not None:
        mapped = map_exception(exc)
        if mapped is not exc:  # a core error raised outside run() (e.g. a ConfigError in prepare)
            return error_body(status, mapped)
        return {"error": "internal_error",
                "message": f"unhandled {type(exc).__name__} in the comfyvn extension; see the server log"}, {}
    return {"error": STATUS_CODES.get(status, f"http_{status}"), "message": responses.get(status, "error")}, {}


class JsonErrorsMixin:
    """``write_error`` answering ``{"error", "message"}`` JSON (mixed into every handler)."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = (kwargs.get("exc_info") or (None, None, None))[1]
        mapped = map_exception(exc) if exc is not None else None
        if isinstance(mapped, web.HTTPError) and mapped is not exc:
            status_code = mapped.status_code
            self.set_status(status_code)  # type: ignore[attr-defined]
        body, headers = error_body(status_code, exc)
        if not body_read(self):  # answered before the body was read: do not reuse the connection
            self.set_header("Connection", "close")  # type: ignore[attr-defined]
        if status_code == 403 and body["error"] == "forbidden" and getattr(self, "_jupyter_current_user", None) is None:
            body["message"] = AUTH_REQUIRED
        for name, value in headers.items():
            self.set_header(name, value)  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.finish(json.dumps(body))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ErrorRow:
    """One row of :data:`ERROR_TABLE`: core exceptions of ``kind`` answer ``status``; the body's
    ``error`` is the exception's own ``code`` when it carries one, else ``code``."""

    kind: type[BaseException]
    status: int
    code: str
    hint: str = ""  # appended to the message


#: The one place HTTP statuses of core exceptions are decided, most specific first (the first
#: row the exception is an instance of wins).  The core's classes carry meanings
#: (:mod:`comfyvn.errors`), never statuses.
ERROR_TABLE: tuple[ErrorRow, ...] = (
    # named classes whose answer predates the meanings (the HTTP contract pins their codes)
    ErrorRow(RefusedFileError, 403, "file_refused",
             "; the server serves only regular files inside the workspace, never through a symlink"),
    ErrorRow(UnsafePathError, 400, "unsafe_path"),
    ErrorRow(AddressRefused, 400, "invalid_request"),  # a private webhook target is the request's fault
    ErrorRow(NotAWorkspaceError, 400, "file_not_found"),
    ErrorRow(UnknownHookError, 400, "unknown_hook"),
    ErrorRow(AssetNotFoundError, 404, "asset_not_found"),
    ErrorRow(AssetCollisionError, 409, "asset_collision"),
    ErrorRow(AssetRegistryError, 409, "asset_conflict"),  # the registry's files disagree with its rows
    ErrorRow(StoreUnavailable, 503, "store_unavailable"),  # the PostgreSQL store is unreachable; retry later
    # by meaning
    ErrorRow(RateLimited, 429, "rate_limited"),
    ErrorRow(NotFound, 404, "not_found"),
    ErrorRow(Conflict, 409, "conflict"),
    ErrorRow(Refused, 403, "forbidden"),
    ErrorRow(UpstreamFailure, 502, "bad_gateway"),
    ErrorRow(InvalidInput, 400, "invalid_request"),
    ErrorRow(Misconfigured, 500, "config_error"),
    ErrorRow(IngestError, 400, "ingest_error"),  # a request the queue cannot take
    # built-in errors the core raises for bad input
    ErrorRow(FileNotFoundError, 400, "file_not_found"),
    ErrorRow(ValueError, 400, "invalid_request"),  # TypeErrors are bugs: 500
)


def error_row(exc: BaseException) -> ErrorRow | None:
    """The row of :data:`ERROR_TABLE` that answers ``exc`` (None: an unexpected error, a 500)."""
    return next((row for row in ERROR_TABLE if isinstance(exc, row.kind)), None)


def map_exception(exc: BaseException) -> BaseException:
    """Translate a core exception into an :class:`ApiError` (unknown ones pass through as 500s)."""
    if isinstance(exc, web.HTTPError):
        return exc
    row = error_row(exc)
    if row is None:
        return exc
    own_code = getattr(exc, "code", None)
    code = own_code if isinstance(own_code, str) and own_code else row.code
    message = getattr(exc, "message", None) if isinstance(exc, IngestError) else None
    retry_after = getattr(exc, "retry_after", None)
    headers = ({"Retry-After": str(max(1, math.ceil(retry_after)))} if isinstance(retry_after, int | float)
               else {"Retry-After": "1"} if row.status == 429 else {})
    return ApiError(row.status, code, f"{message if message is not None else exc}{row.hint}", headers)


@web.stream_request_body
class ComfyvnAPIHandler(JsonErrorsMixin, APIHandler):
    """Base of every comfyvn HTTP handler (set ``auth_resource`` in subclasses)."""

    auth_resource = "comfyvn"
    #: routes whose bodies are files override :meth:`body_limit` / :meth:`data_received`
    _body: bytearray
    _too_large = False

    @property
    def services(self) -> ComfyvnServices:
        return self.settings["comfyvn_services"]

    # ------------------------------------------------------------------ request lifecycle
    _refusal: BaseException | None = None
    _received = 0
    _watchdog: Any = None

    async def prepare(self) -> None:  # type: ignore[override]
        self._body = bytearray()
        try:
            await self.admit()
        except Exception as exc:
            if self._finished:
                raise
            self.refuse(map_exception(exc))
            return
        if not self._finished and not body_read(self) and self.expects_body():  # a GET reads no config here
            self.watch_body(self.body_policy())

    async def admit(self) -> None:
        """Authenticate, authorise and check the request before any body byte is read."""
        await super().prepare()
        if self._finished or self.request.method == "OPTIONS":  # CORS preflight stays open, as in Jupyter
            return
        user = self.current_user
        if user is None:
            raise ApiError(403, "forbidden", AUTH_REQUIRED)
        action = HTTP_METHOD_TO_AUTH_ACTION[self.request.method or "GET"]
        allowed = await ensure_async(self.authorizer.is_authorized(self, user, action, self.auth_resource))
        if not allowed:
            raise ApiError(403, "forbidden", f"not authorized to {action} {self.auth_resource}")
        await self.check_enabled()
        declared = self.declared_length()
        if declared is not None and declared > self.body_limit():
            raise ApiError(413, "payload_too_large",
                           f"request body of {declared} bytes exceeds the limit of {self.body_limit()} bytes")
        await self.start_body()

    def declared_length(self) -> int | None:
        """The request's ``Content-Length`` (None for a chunked body or none given)."""
        length = self.request.headers.get("Content-Length")
        if length is None:
            return None
        try:
            return int(length)
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length {length!r}") from None

    def refuse(self, exc: BaseException) -> None:
        """Answer ``exc`` without reading a large body, or after discarding a small one.

        A body of at most :data:`DRAIN_BYTES` (or none) is read and thrown away first, so the
        client's connection stays usable for its next request; anything larger, chunked or
        unknown is answered now with ``Connection: close`` (see ``write_error``)."""
        chunked = "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        try:
            declared = self.declared_length()
        except ApiError:
            declared = None
            chunked = True
        drain = not chunked and (declared or 0) <= DRAIN_BYTES and getattr(exc, "drain", True)
        if not drain:
            raise exc
        self._refusal = exc
        method = (self.request.method or "get").lower()
        setattr(self, method, self._answer_refusal)  # runs once the (small) body was read and dropped
        self.watch_body(BodyPolicy(min_bytes_per_s=0, window_s=DRAIN_SECONDS, max_seconds=DRAIN_SECONDS))

    async def _answer_refusal(self, *args: Any, **kwargs: Any) -> None:
        assert self._refusal is not None
        raise self._refusal

    async def check_enabled(self) -> None:
        """Hook for feature gates (the ingest routes check ``enable_asset_ingest``)."""

    async def start_body(self) -> None:
        """Called after auth, before the first body chunk (uploads open their temp file here)."""

    def body_limit(self) -> int:
        return self.services.max_json_bytes

    def body_policy(self) -> BodyPolicy | None:
        """How slowly this route's body may arrive: a JSON body (at most ``max_json_bytes``) whole
        within ``uploads.json_body_seconds``, so slow bodies cannot hold descriptors for long
        (uploads set their own, rate-based policy)."""
        seconds = self.services.upload_limits()["json_body_seconds"]
        return BodyPolicy(min_bytes_per_s=0, window_s=seconds, max_seconds=seconds)

    def data_received(self, chunk: bytes) -> Any:
        self._received += len(chunk)
        if self._refusal is not None:
            if self._received > DRAIN_BYTES:  # more than declared: stop reading, answer and close
                self.cut_body(self._refusal)
            return None
        return self.body_chunk(chunk)

    def body_chunk(self, chunk: bytes) -> Any:
        """One chunk of an accepted body (uploads override this to stream to disk)."""
        if self._finished or self._too_large:
            return None
        if len(self._body) + len(chunk) > self.body_limit():
            self._too_large = True
            self._body = bytearray()
            return None
        self._body.extend(chunk)
        return None

    # ------------------------------------------------------------------ slow bodies
    def watch_body(self, policy: BodyPolicy | None) -> None:
        """Cut the request with 408 if its body arrives slower than ``policy`` allows."""
        if policy is None or body_read(self) or not self.expects_body():
            return
        if self._watchdog is not None:
            self._watchdog.stop()
        started = time.monotonic()
        window = {"start": started, "bytes": self._received}

        def check() -> None:
            if self._finished or body_read(self):
                self._watchdog.stop()
                return
            now = time.monotonic()
            if now - started > policy.max_seconds and self._refusal is not None:
                self.cut_body(self._refusal)  # a refused body that is not worth waiting for
            elif now - started > policy.max_seconds:
                self.cut_body(ApiError(408, "request_timeout",
                                       f"the request body was not complete within {policy.max_seconds:g} s "
                                       f"({self._received} bytes received); send it faster or in smaller parts"))
            elif now - window["start"] >= policy.window_s:
                rate = (self._received - window["bytes"]) / (now - window["start"])
                if rate < policy.min_bytes_per_s:
                    self.cut_body(ApiError(408, "request_timeout",
                                           f"the request body arrived at {rate:.0f} bytes/s over the last "
                                           f"{now - window['start']:.0f} s, below the minimum of "
                                           f"{policy.min_bytes_per_s:g} bytes/s"))
                else:
                    window.update(start=now, bytes=self._received)

        tick = max(0.05, min(1.0, policy.window_s / 4, policy.max_seconds / 4)) * 1000
        self._watchdog = PeriodicCallback(check, tick)
        self._watchdog.start()

    def expects_body(self) -> bool:
        return bool(self.declared_length_or_none()) or "chunked" in self.request.headers.get(
            "Transfer-Encoding", "").lower()

    def declared_length_or_none(self) -> int | None:
        try:
            return self.declared_length()
        except ApiError:
            return None

    def cut_body(self, exc: BaseException) -> None:
        """Answer now, while the body is still arriving (the connection is then closed)."""
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._finished:
            return
        self.on_body_cut()
        self.send_error(getattr(exc, "status_code", 500), exc_info=(type(exc), exc, None))

    def on_body_cut(self) -> None:
        """Called when the body is cut short (uploads drop their temporary file here)."""

    def on_finish(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        super().on_finish()

    # ------------------------------------------------------------------ helpers
    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking ``fn`` in the extension's thread pool; core errors become HTTP errors."""
        try:
            return await IOLoop.current().run_in_executor(self.services.executor,
                                                          functools.partial(fn, *args, **kwargs))
        except Exception as exc:
            mapped = map_exception(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def reply(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload, default=str, ensure_ascii=False))

    def json_body(self, allowed: Iterable[str], *, required: bool = True) -> dict[str, Any]:
        """The request body as a JSON object whose keys are all in ``allowed``."""
        if self._too_large:
            raise ApiError(413, "payload_too_large", f"request body exceeds the limit of {self.body_limit()} bytes")
        raw = bytes(self._body).strip()
        if not raw:
            if required:
                raise ApiError(400, "invalid_body", "a JSON object body is required")
            return {}
        try:
            body = loads_strict(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # too deep: tests/reliability
            raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", f"request body must be a JSON object, got {type(body).__name__}")
        allowed = set(allowed)
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(400, "invalid_body",
                           f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        return body

    # ------------------------------------------------------------------ validation
    def q_str(self, name: str, default: str | None = None, *, max_len: int = 1024) -> str | None:
        value = self.get_query_argument(name, None)
        if value is None or value == "":
            return default
        if len(value) > max_len:
            raise ApiError(400, "invalid_parameter", f"{name} is longer than {max_len} characters")
        return value

    def q_int(self, name: str, default: int | None, *, minimum: int = 0, maximum: int = 10_000) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, "invalid_parameter", f"{name} must be an integer, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ApiError(400, "invalid_parameter", f"{name} must be between {minimum} and {maximum}, got {value}")
        return value

    def q_bool(self, name: str, default: bool = False) -> bool:
        raw = self.get_query_argument(name, None)
        return default if raw is None or raw == "" else parse_bool(name, raw)

    def q_list(self, name: str) -> list[str] | None:
        """A list from repeated (``?t=a&t=b``) and/or comma-separated (``?t=a,b``) arguments."""
        values = [v.strip() for raw in self.get_query_arguments(name) for v in raw.split(",")]
        values = [v for v in values if v]
        return values or None

    def q_json_object(self, name: str) -> dict[str, Any] | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return None
        try:
            value = loads_strict(raw)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "invalid_parameter", f"{name} must be a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "invalid_parameter", f"{name} must be a JSON object, got {type(value).__name__}")
        return value


def body_read(handler: Any) -> bool:
    """Whether the whole request body has been received (always true for non-streamed handlers)."""
    future = getattr(handler.request, "_body_future", None)  # Tornado's streamed-body future
    return future is None or future.done()


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (strict parsers, browsers and webhook receivers refuse it)")


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` without Python's ``NaN``/``Infinity`` extensions: a value the server stores
    is served to browsers and signed into webhook bodies, which must stay strict JSON.  Raises
    ``ValueError`` (which :class:`json.JSONDecodeError` and :class:`UnicodeDecodeError` are)."""
    return json.loads(text, parse_constant=_not_json)


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false, got {raw!r}")


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING, *,
          nullable: bool = False) -> Any:
    """A typed field of a JSON body (missing -> ``default``, or 400 when there is none)."""
    if name not in body:
        if default is _MISSING:
            raise ApiError(400, "invalid_body", f"field {name!r} is required")
        return default
    value = body[name]
    if value is None and nullable:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if bool not in kinds and isinstance(value, bool) and int in kinds:
        value = _MISSING  # JSON true is not an integer
    if value is _MISSING or not isinstance(value, kinds):
        names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds) + (" or null" if nullable else "")
        raise ApiError(400, "invalid_body", f"field {name!r} must be {names}, got {json.dumps(body[name])[:80]}")
    return value


def string_list(body: dict[str, Any], name: str, *, max_items: int = 1000) -> list[str] | None:
    """A list of strings (a comma-separated string is accepted too); missing/null -> None."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in (p.strip() for p in value.split(",")) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid_body", f"field {name!r} must be a list of strings")
    if len(value) > max_items:
        raise ApiError(400, "invalid_body", f"field {name!r} has more than {max_items} items")
    return value


_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", dict: "a JSON object",
               list: "a list", float: "a number"}
