"""``/api/ingest/*``: thin handlers over :class:`comfyvn.ingest.queue.AssetIngestQueue`.

Every route is gated by ``features.enable_asset_ingest`` (403 ``feature_disabled`` when off).
The original comfyvn's ``asset_type`` is accepted as an alias of ``asset_type_hint`` (queue,
upload) and of ``asset_type_override`` (apply); both given with different values is a 400.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from comfyvn.config import ConfigError, feature_enabled
from comfyvn.ingest.jobs import PENDING, STATUSES, JobStatus

from .assets import json_bytes, page_cache
from .base import ApiError, ComfyvnAPIHandler, field, map_exception, string_list
from .uploads import StreamedUploadMixin

if TYPE_CHECKING:
    from comfyvn.ingest.queue import AssetIngestQueue

    from ..services import ComfyvnServices

AUTH_RESOURCE = "comfyvn:ingest"
FLAG = "enable_asset_ingest"
_ENQUEUE_FIELDS = ("provider", "metadata", "source_path", "remote_url", "dest_relative", "asset_type_hint", "pin",
                   "terms_acknowledged", "project_id", "wait", "asset_type", "items")
MAX_BATCH_ITEMS = 10_000  # items of one POST /api/ingest/queue (one enqueue_many call)
#: the queue of each server's services once a status request built it (the loop never builds one)
_built_queues: weakref.WeakKeyDictionary[ComfyvnServices, AssetIngestQueue] = weakref.WeakKeyDictionary()
_ITEM_FIELDS = ("source_path", "metadata", "dest_relative", "asset_type_hint", "pin", "project_id", "provider",
                "terms_acknowledged")


def with_alias(name: str, value: str | None, alias: str, alias_value: str | None,
               error: str = "invalid_body") -> str | None:
    """``value`` or the original's ``alias`` for it (400 ``error`` when both are given and differ)."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ApiError(400, error, f"'{alias}' is the original's name for '{name}'; both are given, with different "
                                   f"values ({alias_value!r} and {value!r}): send one")
    return alias_value


def enqueue_status(job: dict[str, Any]) -> int:
    """202 while a remote pull is pending, 201 for a newly staged file, 200 otherwise (duplicate...)."""
    status = job.get("status")
    if status in PENDING:
        return 202
    return 201 if status == JobStatus.STAGED else 200


class IngestHandler(ComfyvnAPIHandler):
    auth_resource = AUTH_RESOURCE

    async def check_enabled(self) -> None:
        try:
            enabled = feature_enabled(FLAG, self.services.ws)
        except ConfigError as exc:
            raise map_exception(exc) from exc
        if not enabled:
            raise ApiError(403, "feature_disabled",
                           f"{FLAG} disabled: set features.{FLAG} to true in {self.services.ws.config_file}")

    async def queue(self) -> Any:
        return await self.run(self.services.queue)

    def job_id_body(self) -> str:
        body = self.json_body(["job_id"])
        job_id = field(body, "job_id", str)
        if not job_id.strip():
            raise ApiError(400, "invalid_body", "field 'job_id' must not be empty")
        return job_id


def enqueue_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """Validated keyword arguments of ``AssetIngestQueue.enqueue`` from a JSON body."""
    kwargs: dict[str, Any] = {
        "provider": field(body, "provider", str, "local"),
        "metadata": field(body, "metadata", dict, None, nullable=True),
        "source_path": field(body, "source_path", str, None, nullable=True),
        "remote_url": field(body, "remote_url", str, None, nullable=True),
        "dest_relative": field(body, "dest_relative", str, None, nullable=True),
        "asset_type_hint": with_alias("asset_type_hint", field(body, "asset_type_hint", str, None, nullable=True),
                                      "asset_type", field(body, "asset_type", str, None, nullable=True)),
        "pin": field(body, "pin", bool, False),
        "terms_acknowledged": field(body, "terms_acknowledged", bool, False),
        "project_id": field(body, "project_id", str, None, nullable=True),
        "wait": field(body, "wait", bool, False),
    }
    if (kwargs["source_path"] is None) == (kwargs["remote_url"] is None):
        raise ApiError(400, "invalid_body", "give exactly one of 'source_path' (a file on the server) or "
                                            "'remote_url' (a Civitai / Hugging Face URL); to send a file from "
                                            "your machine use POST /api/ingest/upload")
    return kwargs


def local_fields(body: dict[str, Any], where: str = "") -> dict[str, Any]:
    """The local-file arguments of ``enqueue_many`` present in ``body`` (an item, or the defaults
    of every item), type-checked; 400 ``invalid_body`` naming ``where`` otherwise."""
    try:
        out = {name: field(body, name, kind, nullable=nullable) for name, kind, nullable in (
            ("provider", str, False), ("metadata", dict, True), ("dest_relative", str, True),
            ("asset_type_hint", str, True), ("pin", bool, False), ("terms_acknowledged", bool, False),
            ("project_id", str, True)) if name in body}
    except ApiError as exc:
        raise ApiError(400, "invalid_body", f"{where}{exc.message}") from None
    return out


def batch_kwargs(body: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """``(items, defaults)`` of ``AssetIngestQueue.enqueue_many`` from a JSON body with ``items``."""
    items = body["items"]
    if not isinstance(items, list) or not items:
        raise ApiError(400, "invalid_body", "field 'items' must be a non-empty list of paths or objects")
    if len(items) > MAX_BATCH_ITEMS:
        raise ApiError(400, "invalid_body", f"field 'items' has {len(items)} entries; at most {MAX_BATCH_ITEMS} "
                                            "per request (send the rest in further requests)")
    single = sorted(k for k in ("source_path", "remote_url", "wait") if k in body)
    if single:
        raise ApiError(400, "invalid_body", f"{', '.join(single)} cannot be given with 'items': name each file in "
                                            "its item; remote pulls are queued one per request")
    defaults = local_fields(body)
    alias = field(body, "asset_type", str, None, nullable=True)
    if alias is not None:
        defaults["asset_type_hint"] = with_alias("asset_type_hint", defaults.get("asset_type_hint"), "asset_type", alias)
    checked: list[Any] = []
    for index, item in enumerate(items):
        where = f"items[{index}]: "
        if isinstance(item, str):
            checked.append(item)
            continue
        if not isinstance(item, dict):
            raise ApiError(400, "invalid_body", f"{where}must be a path or an object, got {type(item).__name__}")
        unknown = sorted(set(item) - set(_ITEM_FIELDS))
        if unknown:
            hint = " (remote pulls are queued one per request without 'items')" if {"remote_url", "wait"} & set(unknown) else ""
            raise ApiError(400, "invalid_body", f"{where}unknown field(s) {', '.join(unknown)}; allowed: "
                                                f"{', '.join(_ITEM_FIELDS)}{hint}")
        try:
            source_path = field(item, "source_path", str)
        except ApiError as exc:
            raise ApiError(400, "invalid_body", f"{where}{exc.message}") from None
        checked.append({"source_path": source_path, **local_fields(item, where)})
    return checked, defaults


class QueueHandler(IngestHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(_ENQUEUE_FIELDS)
        if "items" in body:  # many local files: one enqueue_many call, 200 {"jobs", "errors"}
            items, defaults = batch_kwargs(body)
            queue = await self.queue()

            def enqueue_many() -> bytes:  # the answer (up to 10,000 jobs) is encoded off the event loop too
                return json_bytes(queue.enqueue_many(items, **defaults))

            self.set_header("Content-Type", "application/json")
            self.finish(await self.run(enqueue_many))
            return
        kwargs = enqueue_kwargs(body)
        queue = await self.queue()
        job = await self.run(queue.enqueue, **kwargs)
        self.reply(job, enqueue_status(job))


class UploadHandler(StreamedUploadMixin, IngestHandler):
    """``POST /api/ingest/upload?filename=...``: the body is the file; it is staged like a local file."""

    def validate_upload_params(self) -> None:
        self.upload_options = {
            "metadata": self.q_json_object("metadata"),
            "dest_relative": self.q_str("dest_relative"),
            "asset_type_hint": with_alias("asset_type_hint", self.q_str("asset_type_hint", max_len=64),
                                          "asset_type", self.q_str("asset_type", max_len=64), "invalid_parameter"),
            "pin": self.q_bool("pin"),
            "project_id": self.q_str("project_id", max_len=64),
        }

    @web.authenticated
    @authorized
    async def post(self) -> None:
        opts = self.upload_options
        try:
            path = await self.finish_upload()
            queue = await self.queue()
            job = await self.run(queue.enqueue, "local", opts["metadata"], source_path=str(path),
                                 dest_relative=opts["dest_relative"], asset_type_hint=opts["asset_type_hint"],
                                 pin=opts["pin"], project_id=opts["project_id"], handoff=True)
        finally:
            await self.discard_upload()  # the queue copied it into staging
        self.reply(job, enqueue_status(job))


class StatusHandler(IngestHandler):
    """Summary and recent jobs, or one job (``?job_id=``); ``?include_cache=true`` adds the dedup cache."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        job_id = self.q_str("job_id", max_len=128)
        limit = self.q_int("limit", 20, minimum=1, maximum=500) or 20
        include_cache = self.q_bool("include_cache")

        if not job_id and not include_cache and (body := self.kept_status(limit)) is not None:
            self.finish(body)
            return

        def collect() -> bytes:  # one trip to the thread pool (the queue is built there once); JSON made there
            queue = self.services.queue()
            _built_queues[self.services] = queue
            if job_id:
                job = queue.get(job_id)
                if job is None:
                    raise ApiError(404, "job_not_found", f"no ingest job {job_id!r}")
                body = b'{"enabled": true, "job": ' + json_bytes(job)
            else:
                # what the database says is read again only after a commit; the rate limits (they
                # refill with time), the worker's state and the config are read for every answer
                stored, jobs = page_cache(queue.db).get(("ingest.status", limit), lambda: (
                    queue.summary_rows(), json_bytes(queue.list_jobs(limit=limit))), size=lambda made: len(made[1]))
                body = b'{"enabled": true, "summary": ' + json_bytes(queue.summary(stored)) + b', "jobs": ' + jobs
            if include_cache:
                body += b', "cache": ' + json_bytes(queue.dedup_snapshot())
            return body + b"}"

        self.finish(await self.run(collect))

    def kept_status(self, limit: int) -> bytes | None:
        """The status from the database's part kept since the last commit, made here on the loop
        (the rate limits, the worker's state and the config are in-memory reads); None: ask the pool."""
        queue = _built_queues.get(self.services)
        kept = page_cache(queue.db).current(("ingest.status", limit)) if queue is not None else None
        if queue is None or kept is None:
            return None
        stored, jobs = kept
        try:
            summary = json_bytes(queue.summary(stored))
        except Exception:  # a broken config: the pool path answers it with its error
            return None
        return b'{"enabled": true, "summary": ' + summary + b', "jobs": ' + jobs + b"}"


class JobsHandler(IngestHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        status = self.q_str("status", max_len=32)
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid_parameter", f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        provider = self.q_str("provider", max_len=64)
        limit = self.q_int("limit", 50, minimum=1, maximum=500)
        cursor = self.q_int("cursor", None, minimum=0, maximum=2**63 - 1)  # next_cursor of the previous page
        queue = await self.queue()
        page = await self.run(queue.page_jobs, limit=limit, status=status, provider=provider,
                              cursor=None if cursor is None else str(cursor))
        self.reply(page)


class JobHandler(IngestHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        queue = await self.queue()
        job = await self.run(queue.get, job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no ingest job {job_id!r}")
        self.reply(job)


class ApplyHandler(IngestHandler):
    """Move staged jobs into the registry: ``{"job_ids": [...]}`` (omit for every staged job)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["job_ids", "asset_type_override", "asset_type"], required=False)
        job_ids = string_list(body, "job_ids")
        if body.get("job_ids") is not None and not job_ids:
            raise ApiError(400, "invalid_body", "field 'job_ids' is empty; omit it to apply every staged job")
        override = with_alias("asset_type_override", field(body, "asset_type_override", str, None, nullable=True),
                              "asset_type", field(body, "asset_type", str, None, nullable=True))
        queue = await self.queue()
        self.reply(await self.run(queue.apply, job_ids, asset_type_override=override))


class ReleaseHandler(IngestHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        job_id = self.job_id_body()
        queue = await self.queue()
        self.reply(await self.run(queue.release, job_id))


class RetryHandler(IngestHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        job_id = self.job_id_body()
        queue = await self.queue()
        job = await self.run(queue.retry, job_id)
        self.reply(job, 202 if job.get("status") in PENDING else 200)


class CancelHandler(IngestHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        job_id = self.job_id_body()
        queue = await self.queue()
        self.reply(await self.run(queue.cancel, job_id))
