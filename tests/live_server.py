"""A real ``jupyter server`` process for end-to-end tests (and benches).

Start one with :func:`start_live_server` (or the ``live_server`` fixture: one server per test
module, ingest enabled, private webhook targets allowed).  The server runs the installed
package the way a user would start it, with its own Jupyter config/data/runtime folders and
its own workspace (``COMFYVN_HOME``)::

    from live_server import live_server  # noqa: F401  (the fixture)

    def test_something(live_server):
        client = live_server.client()
        ...
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyvn.config import Workspace, init_workspace, set_feature, update_config, workspace

DEFAULT_TOKEN = "live-server-token"
#: settings the ``live_server`` fixture applies: ingest on, local webhook receivers, fast retries
TEST_CONFIG: dict[str, Any] = {
    "features": {"enable_asset_ingest": True},
    "hooks": {"allow_private_webhook_targets": True, "webhook_backoff_s": 0.2, "webhook_timeout_s": 5},
}

OTHER_EXTENSIONS = ("jupyterlab", "voila.server_extension", "jupyter_lsp", "jupyter_server_terminals",
                    "notebook_shim")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    proc: subprocess.Popen
    base_url: str  # ends with "/"
    token: str
    ws: Workspace
    port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    def ws_url(self, path: str) -> str:
        return "ws" + self.url(path)[len("http"):]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def client(self, **kwargs: Any):
        from comfyvn.client import ComfyvnClient

        kwargs.setdefault("token", self.token)
        return ComfyvnClient(self.base_url, **kwargs)

    def set_feature(self, name: str, value: bool) -> None:
        """Flip a flag in the server's workspace config (the server re-reads it per request)."""
        set_feature(name, value, self.ws)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_live_server(tmp_dir: Path, *, token: str = DEFAULT_TOKEN, config: dict[str, Any] | None = None,
                      extension: bool | None = True, others: bool = False, extra_args: tuple[str, ...] = (),
                      env: dict[str, str] | None = None, timeout: float = 90,
                      new_session: bool = False, python_config: str | None = None) -> LiveServer:
    """Start ``jupyter server`` on a free 127.0.0.1 port and wait until it answers.

    ``config`` is deep-merged into the workspace's ``config/comfyvn.json`` first.
    ``extension``: True enables ``comfyvn_server_ext`` in the server's own config folder,
    False disables it (a server without our routes), None relies on the installation alone.
    ``others=False`` switches the other installed extensions (JupyterLab, Voila, LSP...) off
    to halve the start-up time; True starts the server exactly as installed.
    ``new_session`` starts it in its own session, as a server started from its own terminal
    runs (benches use it: the kernel's fair-share scheduling then treats it as its own program).
    ``python_config`` is written as ``jupyter_server_config.py`` into the server's config folder.
    """
    tmp_dir = Path(tmp_dir)
    root = tmp_dir / "workspace"
    root.mkdir(parents=True, exist_ok=True)
    ws = init_workspace(workspace(root))
    if config:
        update_config(config, ws)
    dirs = {name: tmp_dir / "jupyter" / name for name in ("config", "data", "runtime", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    toggles: dict[str, bool] = {} if others else {name: False for name in OTHER_EXTENSIONS}
    if extension is not None:
        toggles["comfyvn_server_ext"] = extension
    if toggles:
        (dirs["config"] / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": toggles}}))
    if python_config is not None:
        (dirs["config"] / "jupyter_server_config.py").write_text(python_config)
    child_env = dict(os.environ)
    for var in ("JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH", "JUPYTER_PATH"):
        child_env.pop(var, None)
    child_env.update(JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
                     JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), IPYTHONDIR=str(dirs["ipython"]),
                     COMFYVN_HOME=str(ws.root), PYTHONUNBUFFERED="1")
    child_env.update(env or {})
    jupyter = Path(sys.executable).parent / "jupyter"
    cmd = [str(jupyter), "server"] if jupyter.exists() else [sys.executable, "-m", "jupyter_server"]
    log_path = tmp_dir / "jupyter-server.log"
    last_error: str = ""
    for _ in range(3):  # a free port can be taken between probing and binding: retry on another
        port = free_port()
        args = [*cmd, "--allow-root", "--no-browser", "--ip=127.0.0.1", f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", *extra_args]
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(args, cwd=ws.root, env=child_env, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=new_session)
        server = LiveServer(proc, f"http://127.0.0.1:{port}/", token, ws, port, log_path, child_env)
        try:
            _wait_ready(server, timeout)
            if extension and "comfyvn_server_ext | extension was successfully loaded" not in server.log_text():
                raise RuntimeError("the comfyvn extension did not load:\n" + server.log_text()[-4000:])
            return server
        except Exception as exc:
            server.stop()
            last_error = str(exc)
            if "address already in use" not in server.log_text().lower():
                raise
    raise RuntimeError(f"could not start jupyter server: {last_error}")


def _wait_ready(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive:
            raise RuntimeError(f"jupyter server exited with {server.proc.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if httpx.get(server.url("api/status"), headers=server.headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"jupyter server not ready after {timeout} s:\n{server.log_text()[-4000:]}")


@contextmanager
def live_server_context(tmp_dir: Path, **kwargs: Any) -> Iterator[LiveServer]:
    server = start_live_server(tmp_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, request) -> Iterator[LiveServer]:
    """One real server per test module (ingest enabled, local webhook receivers allowed); with
    ``COMFYVN_TEST_STORE=postgresql`` its store is a fresh schema of the session's PostgreSQL server."""
    env = {}
    if os.environ.get("COMFYVN_TEST_STORE") == "postgresql":
        env["COMFYVN_STORE_URL"] = request.getfixturevalue("pg_store_schemas")()
    with live_server_context(tmp_path_factory.mktemp("live"), config=TEST_CONFIG, env=env) as server:
        yield server
