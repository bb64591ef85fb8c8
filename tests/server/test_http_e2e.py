"""End to end, the way a user runs it: the built wheel installed into a fresh virtual
environment (the extension is enabled by the installed ``etc/jupyter`` file alone), a plain
``jupyter server`` process with a token, httpx for the API and a WebSocket for the events."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from server_helpers import png_bytes
from websockets.sync.client import connect

from comfyvn.config import Workspace, init_workspace, set_feature, workspace
from comfyvn.studio.core.asset_registry import AssetRegistry

REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token"
BUILD_INPUTS = ("pyproject.toml", "README.md", "comfyvn", "server_ext", "widgets", "etc", "notebooks")


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    ws: Workspace
    log: Path
    python: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {TOKEN}"}

    def url(self, path: str) -> str:
        return self.base + path.lstrip("/")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the comfyvn wheel installed (dependencies borrowed)."""
    root = tmp_path_factory.mktemp("e2e-install")
    src = root / "src"
    src.mkdir()
    for name in BUILD_INPUTS:  # build from a copy: never write build/ into the shared checkout
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(
            REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                       if (REPO / name).is_dir() else {}))
    uv = Path(sys.executable).parent / "uv"
    run = {"check": True, "capture_output": True, "timeout": 300}
    subprocess.run([str(uv), "build", "--wheel", "--out-dir", str(root / "dist"), str(src)], **run)
    (wheel,) = (root / "dist").glob("comfyvn_workbench-*.whl")
    env_dir = root / "venv"
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(env_dir)], **run)
    python = env_dir / "bin" / "python"
    subprocess.run([str(uv), "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheel)], **run)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               text=True, **run).stdout.strip())
    # the pinned stack comes from the project's venv (a path entry: its editable finder is not loaded)
    (site / "_e2e_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert (env_dir / "etc/jupyter/jupyter_server_config.d/comfyvn_server_ext.json").is_file()
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(venv, tmp_path_factory) -> Iterator[Server]:
    """``jupyter server`` from that environment, on a workspace with ingest enabled."""
    tmp = tmp_path_factory.mktemp("e2e-server")
    ws = init_workspace(workspace(tmp / "workspace"))
    set_feature("enable_asset_ingest", True, ws)
    env = {k: v for k, v in os.environ.items()
           if k not in ("JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH", "JUPYTER_PATH", "PYTHONPATH", "VIRTUAL_ENV")}
    for name in ("config", "data", "runtime", "ipython"):
        (tmp / name).mkdir()
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"),
               COMFYVN_HOME=str(ws.root), PYTHONUNBUFFERED="1")
    log = tmp / "server.log"
    proc = None
    for _ in range(3):  # a free port can be taken between probing and binding: try another
        port = free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(venv), "-m", "jupyter_server", "--allow-root", f"--port={port}",
                                     "--ServerApp.port_retries=0", "--ip=127.0.0.1", "--no-browser",
                                     f"--IdentityProvider.token={TOKEN}"],
                                    cwd=ws.root, env=env, stdout=out, stderr=subprocess.STDOUT)
        srv = Server(proc, f"http://127.0.0.1:{port}/", ws, log, venv)
        if _wait_ready(srv):
            break
        proc.wait(timeout=30)
    else:
        pytest.fail(f"jupyter server did not start:\n{log.read_text()[-3000:]}")
    try:
        text = log.read_text()
        assert "comfyvn_server_ext | extension was successfully loaded" in text, text[-3000:]
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_ready(srv: Server, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            return False
        try:
            if httpx.get(srv.url("api/status"), headers=srv.headers, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    srv.proc.kill()
    return False


def next_event(sock, timeout: float = 30) -> dict:
    while True:
        msg = json.loads(sock.recv(timeout=timeout))
        if msg["type"] == "event":
            return msg


def test_installed_server_ingests_applies_and_streams_events(server):
    loaded = subprocess.run([str(server.python), "-c", "import comfyvn_server_ext as m; print(m.__file__)"],
                            capture_output=True, text=True, timeout=60, cwd=server.ws.root).stdout
    assert "site-packages" in loaded, loaded  # the installed copy, not the checkout
    ws_url = "ws" + server.url("api/modder/hooks/ws")[len("http"):]
    topics = "on_asset_ingest_enqueued,on_asset_ingest_applied,on_asset_registered"
    with httpx.Client(headers=server.headers, timeout=30) as http, \
            connect(f"{ws_url}?topics={topics}", additional_headers=server.headers, open_timeout=30) as sock:
        ack = json.loads(sock.recv(timeout=30))
        assert ack["type"] == "ack" and ack["topics"] == topics.split(",")

        source = server.ws.root / "incoming" / "hero.png"
        source.parent.mkdir()
        source.write_bytes(png_bytes((10, 200, 30), (300, 200)))
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        r = http.post(server.url("api/ingest/queue"), json={"source_path": str(source), "asset_type_hint": "images"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "staged" and job["digest"] == digest
        r = http.post(server.url("api/ingest/apply"), json={"job_ids": [job["job_id"]]})
        assert r.status_code == 200, r.text
        [applied] = r.json()["applied"]
        uid = applied["asset_uid"]
        assert uid == digest[:16]

        events = [next_event(sock) for _ in range(3)]
        assert [e["event"] for e in events] == ["on_asset_ingest_enqueued", "on_asset_registered",
                                                "on_asset_ingest_applied"]
        assert events[0]["data"]["job_id"] == job["job_id"] and events[0]["data"]["status"] == "staged"
        assert events[1]["data"]["uid"] == uid and events[1]["data"]["hook_event"] == "asset_registered"
        assert events[2]["data"]["asset_uid"] == uid
        assert all(e["id"] < f["id"] for e, f in zip(events, events[1:], strict=False))

        got = http.get(server.url(f"assets/{uid}/download"))
        assert got.status_code == 200 and got.content == source.read_bytes()
        sidecar = http.get(server.url(f"assets/{uid}/sidecar")).json()["sidecar"]
        assert sidecar["hash"] == digest and sidecar["type"] == "images"

        # a change made by another process (this test, on the same workspace) reaches the socket
        other = server.ws.root / "incoming" / "villain.png"
        other.write_bytes(png_bytes((200, 10, 30)))
        rec = AssetRegistry(ws=server.ws, make_thumbnails=False).register_file(other, "images")
        from_other = next_event(sock)
        assert from_other["event"] == "on_asset_registered" and from_other["data"]["uid"] == rec["uid"]

    # a new connection resumes from the event log
    with connect(f"{ws_url}?topics=on_asset_registered&last_event_id=0", additional_headers=server.headers,
                 open_timeout=30) as sock:
        assert json.loads(sock.recv(timeout=30))["last_event_id"] == 0
        assert [next_event(sock)["data"]["uid"] for _ in range(2)] == [uid, rec["uid"]]

    anonymous = httpx.get(server.url("assets"), timeout=30)
    assert anonymous.status_code == 403 and anonymous.json()["error"] == "forbidden"


def test_system_checker_passes_against_the_installed_server(server):
    """``tools/check_current_system.py`` as a user runs it (installed package, token from JUPYTER_TOKEN):
    flag defaults of the shipped config, every route really answered, the WebSocket handshake and
    the repository's docs naming every route and hook."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JUPYTER_TOKEN"] = TOKEN
    for profile in ("p7_asset_ingest_cache", "all"):
        proc = subprocess.run([str(server.python), str(REPO / "tools" / "check_current_system.py"),
                               "--profile", profile, "--base", server.base, "--json"],
                              capture_output=True, text=True, env=env, cwd=server.ws.root, timeout=120)
        report = json.loads(proc.stdout)
        failed = [c for c in report["checks"] if not c["ok"]]
        assert (proc.returncode, failed) == (0, []), proc.stderr[-2000:]
        names = {c["name"] for c in report["checks"]}
        assert {"route POST /api/ingest/queue", "route GET /api/ingest/status", "docs name every route",
                "docs name every hook"} <= names
