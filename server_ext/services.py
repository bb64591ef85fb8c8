"""The services one server process shares between its handlers (built once at start-up).

The workspace's database, hook bus, asset registries (one per project), the ingest queue and
its worker, the webhook manager and dispatcher, and the thread pool that runs every blocking
call of the handlers.  Nothing here keeps state another process could change: all of it lives
in the workspace's SQLite database.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from comfyvn.config import Workspace, get_setting, init_workspace, setup_logging
from comfyvn.hooks import ModderHookBus, Subscription, get_hook_bus
from comfyvn.store import Database, get_database
from comfyvn.studio.core.asset_registry import AssetRegistry, check_project_id

log = logging.getLogger("comfyvn.server")
#: every event of the log is mirrored here at DEBUG (COMFYVN_LOG_LEVEL=DEBUG), as the seed says
mirror_log = logging.getLogger("comfyvn.studio.core.asset_registry")


class ComfyvnServices:
    def __init__(self, ws: Workspace, *, max_workers: int = 8, max_json_bytes: int = 1024 * 1024,
                 max_upload_bytes: int = 0, ws_ping_seconds: float = 15.0,
                 ws_max_pending: int = 10_000) -> None:
        self.ws = init_workspace(ws)
        setup_logging(self.ws.logs_dir)
        self.db: Database = get_database(self.ws.db_path)
        self.bus: ModderHookBus = get_hook_bus(self.db)
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="comfyvn-http")
        self.max_json_bytes = max_json_bytes
        self._max_upload_bytes = max_upload_bytes
        self.ws_ping_seconds = ws_ping_seconds
        self.ws_max_pending = ws_max_pending
        self._registries: dict[str, AssetRegistry] = {}
        self._lock = threading.Lock()
        self._build_lock = threading.RLock()
        self._queue: Any = None
        self._webhooks: Any = None
        self._dispatcher: Any = None
        self._mirror: Subscription | None = None
        self._closed = False
        self.uploads_dir = self.ws.data_dir / "uploads"
        self._uploads_in_progress = 0  # changed on the server's event loop only
        self.default_project = str(get_setting("registry.default_project", "default", self.ws))

    # ------------------------------------------------------------------ start / stop
    def start(self) -> None:
        """Open the default registry, the queue (and its worker) and the webhook dispatcher.

        Runs in a worker thread after the server's loop started; a part that fails to start is
        logged and reported by the routes that need it.
        """
        if mirror_log.isEnabledFor(logging.DEBUG):
            self._mirror = self.bus.subscribe(self._mirror_event)
        for name, starter in (("asset registry", lambda: self.registry(None)), ("ingest queue", self.queue),
                              ("webhook dispatcher", self.dispatcher)):
            if self._closed:
                return
            try:
                starter()
            except Exception:
                log.exception("comfyvn: could not start the %s", name)

    def close(self) -> None:
        self._closed = True
        with self._build_lock:  # wait for a service being built, then build no more
            pass
        if self._mirror is not None:
            self._mirror.close()
        dispatcher, queue = self._dispatcher, self._queue
        for name, stop in (("webhook dispatcher", getattr(dispatcher, "stop", None)),
                           ("ingest worker", getattr(queue, "stop_worker", None))):
            if stop is not None:
                try:
                    stop()
                except Exception:
                    log.exception("comfyvn: stopping the %s failed", name)
        self.bus.close()  # its tailer thread; a later subscriber in this process restarts it
        self.executor.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _mirror_event(env: dict) -> None:
        mirror_log.debug("event %s %s %s", env["id"], env["event"],
                         json.dumps(env["data"], ensure_ascii=False, default=str))

    # ------------------------------------------------------------------ services (blocking: call off the loop)
    def registry(self, project: str | None) -> AssetRegistry:
        """The registry of ``project`` (default project when None); ValueError for a bad name."""
        name = project or self.default_project
        with self._lock:
            reg = self._registries.get(name)
        if reg is None:
            reg = AssetRegistry(name, ws=self.ws)
            with self._lock:
                reg = self._registries.setdefault(name, reg)
        return reg

    def existing_registry(self, project: str | None) -> AssetRegistry | None:
        """The registry of ``project`` if the project exists (has its folder or rows), else None.

        Read routes use this: a read of a project nobody wrote to creates no folder and no row.
        """
        name = project or self.default_project
        with self._lock:
            reg = self._registries.get(name)
        if reg is not None:
            return reg
        check_project_id(name)
        if not (self.ws.assets_root / name).is_dir() and self.db.query_one(
                "SELECT 1 FROM assets WHERE project_id = ? LIMIT 1", (name,)) is None:
            return None
        return self.registry(name)

    def _once(self, attr: str, build) -> Any:
        """Build a shared service once (a failed build is retried on the next use)."""
        value = getattr(self, attr)
        if value is not None:
            return value
        with self._build_lock:
            if self._closed:
                raise RuntimeError("the comfyvn server extension is shutting down")
            value = getattr(self, attr)
            if value is None:
                value = build()
                setattr(self, attr, value)
        return value

    def queue(self) -> Any:
        """The workspace's ingest queue, with its background worker running."""
        def build() -> Any:
            from comfyvn.ingest.queue import get_ingest_queue

            queue = get_ingest_queue(self.ws)
            queue.start_worker()
            return queue
        return self._once("_queue", build)

    def webhooks(self) -> Any:
        """The webhook manager (registrations and delivery logs)."""
        def build() -> Any:
            from comfyvn.hooks.webhooks import WebhookManager

            return WebhookManager(self.db)
        return self._once("_webhooks", build)

    def dispatcher(self) -> Any:
        """The webhook dispatcher thread (delivers from the event log, resumes after restarts)."""
        def build() -> Any:
            from comfyvn.hooks.webhooks import WebhookDispatcher

            dispatcher = WebhookDispatcher(self.db)
            dispatcher.start()
            return dispatcher
        return self._once("_dispatcher", build)

    def upload_limits(self) -> dict[str, float]:
        """``uploads.*`` of the workspace config: concurrency and slow-body limits."""
        section = get_setting("uploads", {}, self.ws) or {}
        return {"max_concurrent": max(1, int(section.get("max_concurrent", 8))),
                "min_bytes_per_s": max(0.0, float(section.get("min_bytes_per_s", 1024))),
                "slow_window_s": max(0.1, float(section.get("slow_window_s", 30))),
                "max_seconds": max(0.1, float(section.get("max_seconds", 3600))),
                "json_body_seconds": max(0.1, float(section.get("json_body_seconds", 30)))}

    def acquire_upload_slot(self) -> bool:
        """Count one more upload in progress, unless ``uploads.max_concurrent`` are running (call on the loop)."""
        if self._uploads_in_progress >= self.upload_limits()["max_concurrent"]:
            return False
        self._uploads_in_progress += 1
        return True

    def release_upload_slot(self) -> None:
        self._uploads_in_progress = max(0, self._uploads_in_progress - 1)

    @property
    def uploads_in_progress(self) -> int:
        return self._uploads_in_progress

    def max_upload_bytes(self) -> int:
        """Upload size limit: the extension's setting, else the workspace's ``ingest.max_remote_bytes``."""
        if self._max_upload_bytes > 0:
            return self._max_upload_bytes
        return int(get_setting("ingest.max_remote_bytes", 200 * 1024 * 1024, self.ws))
