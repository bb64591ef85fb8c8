"""The object graph of one workspace in one process: :class:`Workbench`.

Every entry point (the server extension, the dashboards, the CLIs, the runbooks) gets its core
objects here instead of building its own::

    Workbench                 opens              closes
      .ws                     the workspace      -
      .db                     Database           this thread's connection (db.close())
      .bus                    ModderHookBus      its tailer thread (restarted by a later subscriber)
      .queue()                AssetIngestQueue   its worker thread, if running
      .registry(project)      AssetRegistry      - (owned by the queue: ONE per project per process)
      .webhooks()             WebhookManager     -
      .dispatcher()           WebhookDispatcher  its thread and delivery pool

The database, the bus and the queue are process-wide already (``open_store``,
``get_hook_bus``, ``get_ingest_queue``); a registry is the queue's registry of that project, so
the queue's apply and a handler's read share one instance, and with it one listener list.
Everything beyond the workspace is built on first use; :meth:`Workbench.start` builds the
long-lived parts (recovery, the queue's worker, the webhook dispatcher) for a server.

``get_workbench(home)`` is the per-process cache widgets and CLIs use; ``with
Workbench.open(home) as wb:`` closes what it opened.  :meth:`Workbench.close` is idempotent.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .config import (
    Workspace,
    default_project,
    init_workspace,
    open_existing_workspace,
    setup_logging,
    workspace,
)
from .errors import ComfyvnError
from .hooks import ModderHookBus, get_hook_bus
from .store import Database, open_store
from .studio.core.asset_registry import AssetRegistry, check_project_id

if TYPE_CHECKING:
    from .hooks.webhooks import WebhookDispatcher, WebhookManager
    from .ingest.queue import AssetIngestQueue

log = logging.getLogger("comfyvn.workbench")
W = TypeVar("W", bound="Workbench")
T = TypeVar("T")
Home = Workspace | str | os.PathLike[str] | None


class WorkbenchClosedError(ComfyvnError, RuntimeError):
    """The workbench was closed (the process is shutting down); open a new one (``get_workbench`` does)."""


class Workbench:
    """The core objects of one workspace, built once and closed together (see the module docstring)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        setup_logging(ws.logs_dir)
        self.db: Database = open_store(ws)
        self.bus: ModderHookBus = get_hook_bus(self.db)
        self._queue: AssetIngestQueue | None = None
        self._webhooks: WebhookManager | None = None
        self._dispatcher: WebhookDispatcher | None = None
        self._projects: set[str] = set()  # projects known to exist (their registry was opened)
        self._lock = threading.RLock()  # held while a part is built, so close() waits for it
        self._recovered = False
        self._started_worker = False
        self._closed = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls: type[W], home: Home = None, *, create: bool = False) -> W:
        """The workbench of ``home`` (a :class:`Workspace` or a folder; default ``COMFYVN_HOME``).

        A folder that is not a workspace is refused with ``NotAWorkspaceError`` unless ``create``.
        """
        if isinstance(home, Workspace):
            ws = init_workspace(home) if create else open_existing_workspace(home.root)
        else:
            ws = open_existing_workspace(home, create=create)
        return cls(ws)

    def __enter__(self: W) -> W:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def default_project(self) -> str:
        """``registry.default_project`` (read when asked: a broken config fails only what needs it)."""
        return default_project(self.ws)

    def _build(self, attr: str, build: Callable[[], T]) -> T:
        """Build a part once (a failed build is retried on the next use)."""
        value = getattr(self, attr)
        if value is not None:
            return value
        with self._lock:
            if self._closed:
                raise WorkbenchClosedError(f"the workbench of {self.ws.root} is closed")
            value = getattr(self, attr)
            if value is None:
                value = build()
                setattr(self, attr, value)
        return value

    # ------------------------------------------------------------------ the parts (blocking: call off an event loop)
    def queue(self) -> AssetIngestQueue:
        """The workspace's ingest queue (built, and its jobs recovered, on first use in the process)."""
        def build() -> AssetIngestQueue:
            from .ingest.queue import get_ingest_queue

            return get_ingest_queue(self.ws)
        return self._build("_queue", build)

    def registry(self, project: str | None = None) -> AssetRegistry:
        """The registry of ``project`` (default project when None): the queue's, the one instance
        of this process.  ``ValueError`` for a bad project name; opening a project creates its folder."""
        name = check_project_id(project or self.default_project)
        reg = self.queue().registry(name)
        self._projects.add(name)
        return reg

    def existing_registry(self, project: str | None = None) -> AssetRegistry | None:
        """The registry of ``project`` if the project exists (has its folder or rows), else None.

        Readers use this: reading a project nobody wrote to creates no folder and no row.
        """
        name = check_project_id(project or self.default_project)
        if name not in self._projects and not (self.ws.assets_root / name).is_dir() and self.db.query_one(
                "SELECT 1 FROM assets WHERE project_id = ? LIMIT 1", (name,)) is None:
            return None
        return self.registry(name)

    def webhooks(self) -> WebhookManager:
        """The webhook manager (registrations and delivery logs)."""
        def build() -> WebhookManager:
            from .hooks.webhooks import WebhookManager

            return WebhookManager(self.db)
        return self._build("_webhooks", build)

    def dispatcher(self) -> WebhookDispatcher:
        """The webhook dispatcher, started (delivers from the event log, resumes after restarts)."""
        def build() -> WebhookDispatcher:
            from .hooks.webhooks import WebhookDispatcher

            return WebhookDispatcher(self.db, ws=self.ws).start()
        return self._build("_dispatcher", build)

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> None:
        """Recover the workspace once: the queue's interrupted jobs and the default project's
        interrupted moves (each runs once per process however many workbenches ask)."""
        with self._lock:
            if self._recovered:
                return
            self.queue()  # its constructor recovers the jobs (and the registries they name)
            self.registry(None)  # a registry recovers its project the first time a process opens it
            self._recovered = True

    def start(self, *, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        """Recover, then start the queue's worker and the webhook dispatcher (a server's long-lived parts).

        A part that fails is reported to ``on_error(name, exc)`` (default: logged) and the
        others still start; the routes that need it retry building it.
        """
        def start_worker() -> None:
            self.queue().start_worker()
            self._started_worker = True

        parts: list[tuple[str, Callable[[], Any]]] = [
            ("recovery", self.recover), ("ingest worker", start_worker), ("webhook dispatcher", self.dispatcher)]
        for name, part in parts:
            if self._closed:
                return
            try:
                part()
            except Exception as exc:
                if on_error is None:
                    log.exception("comfyvn: could not start the %s", name)
                else:
                    on_error(name, exc)

    def close(self) -> None:
        """Stop what this workbench started (dispatcher, worker, bus tailer); idempotent.

        The process-wide objects stay usable by their other holders: a later subscriber restarts
        the bus's tailer, a later ``get_workbench`` builds a new workbench.
        """
        with self._lock:  # waits for a part being built; nothing is built after this
            if self._closed:
                return
            self._closed = True
        _forget(self)
        stops: list[tuple[str, Callable[[], Any] | None]] = [
            ("webhook dispatcher", self._dispatcher.stop if self._dispatcher is not None else None),
            ("ingest worker", self._queue.stop_worker if self._queue is not None and self._started_worker else None),
            ("hook bus", self.bus.close), ("database", self.db.close)]
        for name, stop in stops:
            if stop is None:
                continue
            try:
                stop()
            except Exception:
                log.exception("comfyvn: stopping the %s failed", name)


# ---------------------------------------------------------------------------- one per workspace and process
_workbenches: dict[tuple[int, Path], Workbench] = {}
_workbenches_lock = threading.Lock()


def _home_root(home: Home) -> Path:
    return home.root if isinstance(home, Workspace) else workspace(home).root


def get_workbench(home: Home = None, *, create: bool = False, cls: type[Workbench] = Workbench) -> Workbench:
    """This process's workbench of ``home`` (default ``COMFYVN_HOME``), opened on first use.

    ``cls`` is the class to open (the server extension passes its configured class); a cached
    workbench of another class is replaced.  A closed workbench is never returned.
    """
    key = (os.getpid(), _home_root(home))
    with _workbenches_lock:
        wb = _workbenches.get(key)
        if wb is None or wb.closed or not isinstance(wb, cls):
            wb = _workbenches[key] = cls.open(home, create=create)
        return wb


def _forget(wb: Workbench) -> None:
    with _workbenches_lock:
        for key, cached in list(_workbenches.items()):
            if cached is wb:
                del _workbenches[key]


__all__ = ["Workbench", "WorkbenchClosedError", "get_workbench"]
