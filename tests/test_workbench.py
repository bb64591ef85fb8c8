"""The object graph of a workspace: one Workbench, one registry per project per process.

The server tests here run a real Jupyter server (pytest-jupyter) with the extension on the test's
workspace, in this process, so the test can see which objects the handlers use.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
from typing import Any

import pytest
from PIL import Image
from traitlets.config import Config

from comfyvn.config import NotAWorkspaceError, set_feature, workspace
from comfyvn.ingest.queue import AssetIngestQueue, get_ingest_queue
from comfyvn.studio.core.asset_registry import AssetRegistry
from comfyvn.workbench import Workbench, WorkbenchClosedError, get_workbench


class RecordingWorkbench(Workbench):
    """A configured subclass: counts the registries the server asked it for."""

    def __init__(self, ws) -> None:
        super().__init__(ws)
        self.registry_calls: list[str | None] = []

    def registry(self, project: str | None = None) -> AssetRegistry:
        self.registry_calls.append(project)
        return super().registry(project)


@pytest.fixture
def workbench_class() -> type[Workbench] | None:
    return None  # the extension's default


@pytest.fixture
def jp_server_config(ws, workbench_class):
    settings: dict[str, Any] = {"workspace": str(ws.root), "ws_ping_seconds": 60.0}
    if workbench_class is not None:
        settings["workbench_class"] = workbench_class
    return Config({"ServerApp": {"jpserver_extensions": {"comfyvn_server_ext": True,
                                                         "jupyter_server_terminals": False}},
                   "ComfyvnExtension": settings})


def png(path, seed: int):
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (seed * 40 % 256, 90, 150)).save(out, format="PNG")
    path.write_bytes(out.getvalue())
    return path


def live_registries(ws, project: str) -> list[AssetRegistry]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, AssetRegistry) and o.ws.root == ws.root
            and o.project_id == project]


async def call(jp_fetch, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
    resp = await jp_fetch(path.lstrip("/"), method=method, raise_error=False, params=params or None,
                          body=json.dumps(body) if body is not None else (b"" if method == "POST" else None))
    return resp.code, json.loads(resp.body or b"null")


async def started(jp_serverapp):
    services = jp_serverapp.web_app.settings["comfyvn_services"]
    await asyncio.to_thread(services.workbench.recover)  # waits for the start-up recovery to finish
    return services


# ---------------------------------------------------------------------------- the server
async def test_queue_and_server_share_one_registry_per_project(jp_fetch, jp_serverapp, ws):
    set_feature("enable_asset_ingest", True, ws)
    services = await started(jp_serverapp)
    seen: list[str] = []
    services.registry(None).add_hook(AssetRegistry.HOOK_ASSET_REGISTERED, lambda p: seen.append(p["uid"]))

    src = png(ws.root / "hero.png", 1)
    code, job = await call(jp_fetch, "POST", "/api/ingest/queue", {"source_path": str(src)})
    assert code == 201, job
    code, out = await call(jp_fetch, "POST", "/api/ingest/apply", {"job_ids": [job["job_id"]]})
    assert code == 200 and out["applied"][0]["status"] == "applied", out
    code, asset = await call(jp_fetch, "GET", f"/assets/{out['applied'][0]['asset_uid']}")
    assert code == 200 and asset["hash"] == hashlib.sha256(src.read_bytes()).hexdigest()
    code, listing = await call(jp_fetch, "GET", "/assets", project="other")  # a read of an unknown project
    assert code == 200 and listing["items"] == [], listing

    registry = services.registry(None)
    assert registry is services.queue().registry(None) is get_ingest_queue(ws).registry("default")
    assert registry is get_workbench(ws).registry("default")  # the widgets' and CLIs' way in
    assert live_registries(ws, "default") == [registry]  # the handlers built no second one
    assert live_registries(ws, "other") == [] and not (ws.assets_root / "other").exists()
    assert seen == [asset["uid"]]  # the queue's apply called the listener attached through the server


@pytest.mark.parametrize("workbench_class", [RecordingWorkbench])
async def test_the_extension_builds_its_objects_with_the_configured_workbench_class(jp_fetch, jp_serverapp, ws,
                                                                                    workbench_class):
    services = await started(jp_serverapp)
    assert type(services.workbench) is RecordingWorkbench and services.workbench.ws.root == ws.root
    assert get_workbench(ws) is services.workbench  # the process's workbench of this workspace
    before = len(services.workbench.registry_calls)
    code, body = await call(jp_fetch, "GET", "/assets")
    assert code == 200, body
    assert len(services.workbench.registry_calls) > before


def test_the_workbench_class_trait_accepts_only_workbench_classes():
    from comfyvn_server_ext.app import ComfyvnExtension
    from traitlets import TraitError

    app = ComfyvnExtension()
    assert app.workbench_class is Workbench
    app.workbench_class = RecordingWorkbench
    with pytest.raises(TraitError):
        app.workbench_class = AssetIngestQueue


# ---------------------------------------------------------------------------- lifecycle
def test_recovery_runs_once(ws, monkeypatch):
    calls = {"queue": 0, "registry": 0}
    queue_recover, registry_recover = AssetIngestQueue.recover, AssetRegistry.recover

    def count_queue(self):
        calls["queue"] += 1
        return queue_recover(self)

    def count_registry(self):
        calls["registry"] += 1
        return registry_recover(self)

    monkeypatch.setattr(AssetIngestQueue, "recover", count_queue)
    monkeypatch.setattr(AssetRegistry, "recover", count_registry)
    with Workbench.open(ws) as wb:
        wb.recover()
        wb.recover()
        wb.start()
        wb.registry(None)
        assert calls == {"queue": 1, "registry": 1}
    with Workbench.open(ws) as again:  # a second workbench in the same process recovers nothing again
        again.start()
        assert calls == {"queue": 1, "registry": 1}


def test_close_is_idempotent_and_stops_what_the_workbench_started(ws):
    wb = get_workbench(ws)
    wb.start()
    queue, dispatcher = wb.queue(), wb.dispatcher()
    assert queue.worker.running and dispatcher._thread.is_alive()
    wb.close()
    wb.close()
    assert wb.closed and not queue.worker.running and not dispatcher._thread.is_alive()
    with pytest.raises(WorkbenchClosedError, match="closed"):
        wb.webhooks()  # nothing is built after close
    fresh = get_workbench(ws)
    assert fresh is not wb and not fresh.closed
    assert fresh.registry(None) is queue.registry(None)  # still the process's one instance
    fresh.close()


def test_a_context_manager_closes_and_a_workbench_never_creates_a_workspace_unasked(tmp_path):
    with pytest.raises(NotAWorkspaceError):
        Workbench.open(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    with Workbench.open(tmp_path / "made", create=True) as wb:
        assert wb.ws.root == workspace(tmp_path / "made").root and wb.ws.db_path.exists()
    assert wb.closed


def test_existing_registry_opens_no_project_that_does_not_exist(ws):
    with Workbench.open(ws) as wb:
        assert wb.existing_registry("ghost") is None and not (ws.assets_root / "ghost").exists()
        made = wb.registry("ghost")
        assert wb.existing_registry("ghost") is made
        with pytest.raises(ValueError, match="project_id"):
            wb.registry("../escape")


# ---------------------------------------------------------------------------- the dashboards
def test_dashboards_get_their_objects_from_the_process_workbench(ws):
    from comfyvn_widgets.enforcer_report import EnforcerReport
    from comfyvn_widgets.gallery import AssetGallery
    from comfyvn_widgets.hook_monitor import HookMonitor
    from comfyvn_widgets.queue_inspector import QueueInspector

    wb = get_workbench(ws)
    try:
        assert AssetGallery(live=False).registry is wb.registry(None)
        assert EnforcerReport(live=False, run=False).registry is wb.registry(None)
        assert QueueInspector(live=False).queue is wb.queue()
        assert HookMonitor(live=False).db is wb.db
        assert live_registries(ws, "default") == [wb.registry(None)]
    finally:
        wb.close()
