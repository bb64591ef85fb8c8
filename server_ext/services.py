"""The services one server process shares between its handlers (built once at start-up).

The core objects (database, hook bus, the registries, the ingest queue and its worker, the
webhook manager and dispatcher) come from one :class:`comfyvn.workbench.Workbench` of the
configured class (``ComfyvnExtension.workbench_class``); this module adds only what HTTP needs:
the thread pool that runs every blocking call of the handlers, the request and upload limits and
the upload counters.  Nothing here keeps state another process could change: all of it lives in
the workspace's database.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from comfyvn.config import get_setting, max_remote_bytes
from comfyvn.hooks import ModderHookBus, Subscription
from comfyvn.store import Database
from comfyvn.studio.core.asset_registry import AssetRegistry
from comfyvn.workbench import Workbench

if TYPE_CHECKING:
    from comfyvn.hooks.webhooks import WebhookDispatcher, WebhookManager
    from comfyvn.ingest.queue import AssetIngestQueue

log = logging.getLogger("comfyvn.server")
#: every event of the log is mirrored here at DEBUG (COMFYVN_LOG_LEVEL=DEBUG), as the seed says
mirror_log = logging.getLogger("comfyvn.studio.core.asset_registry")


class ComfyvnServices:
    """A :class:`Workbench` plus the HTTP-only parts; closing it closes the workbench."""

    def __init__(self, workbench: Workbench, *, max_workers: int = 8, max_json_bytes: int = 1024 * 1024,
                 max_upload_bytes: int = 0, ws_ping_seconds: float = 15.0,
                 ws_max_pending: int = 10_000) -> None:
        self.workbench = workbench
        self.ws = workbench.ws
        self.db: Database = workbench.db
        self.bus: ModderHookBus = workbench.bus
        self.default_project = workbench.default_project
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="comfyvn-http")
        self.max_json_bytes = max_json_bytes
        self._max_upload_bytes = max_upload_bytes
        self.ws_ping_seconds = ws_ping_seconds
        self.ws_max_pending = ws_max_pending
        self._mirror: Subscription | None = None
        self.uploads_dir = self.ws.data_dir / "uploads"
        self._uploads_in_progress = 0  # changed on the server's event loop only

    # ------------------------------------------------------------------ start / stop
    def start(self) -> None:
        """Recover, start the queue's worker and the webhook dispatcher (see :meth:`Workbench.start`).

        Runs in a worker thread after the server's loop started; a part that fails to start is
        logged and reported by the routes that need it.
        """
        if mirror_log.isEnabledFor(logging.DEBUG):
            self._mirror = self.bus.subscribe(self._mirror_event)
        self.workbench.start()

    def close(self) -> None:
        if self._mirror is not None:
            self._mirror.close()
        self.workbench.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _mirror_event(env: dict) -> None:
        mirror_log.debug("event %s %s %s", env["id"], env["event"],
                         json.dumps(env["data"], ensure_ascii=False, default=str))

    # ------------------------------------------------------------------ the workbench's parts (blocking: call off the loop)
    def registry(self, project: str | None) -> AssetRegistry:
        """The registry of ``project`` (default project when None); ValueError for a bad name."""
        return self.workbench.registry(project)

    def existing_registry(self, project: str | None) -> AssetRegistry | None:
        """The registry of ``project`` if the project exists (has its folder or rows), else None."""
        return self.workbench.existing_registry(project)

    def queue(self) -> AssetIngestQueue:
        """The workspace's ingest queue (its worker started by :meth:`start`)."""
        return self.workbench.queue()

    def webhooks(self) -> WebhookManager:
        return self.workbench.webhooks()

    def dispatcher(self) -> WebhookDispatcher:
        return self.workbench.dispatcher()

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
        return max_remote_bytes(self.ws)
