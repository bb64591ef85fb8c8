"""``/api/ingest/*``: thin handlers over :class:`comfyvn.ingest.queue.AssetIngestQueue`.

Every route is gated by ``features.enable_asset_ingest`` (403 ``feature_disabled`` when off).
The original comfyvn's ``asset_type`` is accepted as an alias of ``asset_type_hint`` (queue,
upload) and of ``asset_type_override`` (apply); both given with different values is a 400.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from comfyvn.config import ConfigError, feature_enabled
from comfyvn.ingest.jobs import PENDING, STATUSES, JobStatus

from .assets import json_bytes, page_cache
from .base import ApiError, ComfyvnAPIHandler, field, map_exception, string_list
from .uploads import StreamedUploadMixin

AUTH_RESOURCE = "comfyvn:ingest"
FLAG = "enable_asset_ingest"
_ENQUEUE_FIELDS = ("provider", "metadata", "source_path", "remote_url", "dest_relative", "asset_type_hint", "pin",
                   "terms_acknowledged", "project_id", "wait", "asset_type")


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


class QueueHandler(IngestHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        kwargs = enqueue_kwargs(self.json_body(_ENQUEUE_FIELDS))
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

        def collect() -> bytes:  # one trip to the thread pool (the queue is built there once); JSON made there
            queue = self.services.queue()
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
