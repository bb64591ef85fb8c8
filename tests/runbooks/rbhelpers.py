"""Helpers of the runbook tests (fixtures are in conftest.py).

* :class:`Runbooks`: executes a runbook with ``papermill.execute_notebook`` and returns what a
  person would read (the verdict, the printed text, the charts).
* :func:`make_broken_workspace`: a real workspace with a hung download (a child process
  stuck reading from a local server that stops sending), a staged job whose staging file is
  gone (source still there), another whose source is gone too, and an asset without sidecar.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError

from comfyvn.config import Workspace, init_workspace, update_config, workspace
from comfyvn.demo import make_image
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.runbooks import VERDICT_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO_ROOT / "notebooks" / "runbooks"


@dataclass
class Executed:
    name: str
    path: Path
    nb: Any
    error: PapermillExecutionError | None = None
    text: str = field(init=False)

    def __post_init__(self) -> None:
        chunks = []
        for cell in self.nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stdout":
                    chunks.append(out["text"])
        self.text = "".join(chunks)

    @property
    def verdict(self) -> str:
        lines = [ln for ln in self.text.splitlines() if ln.startswith(VERDICT_PREFIX)]
        assert len(lines) == 1, f"{self.name} printed {len(lines)} verdict lines:\n{self.text}"
        return lines[0]

    @property
    def images(self) -> int:
        return sum(1 for cell in self.nb.cells for out in cell.get("outputs", [])
                   if "image/png" in out.get("data", {}))

    def html_tables(self) -> int:
        return sum(1 for cell in self.nb.cells for out in cell.get("outputs", [])
                   if "<table" in out.get("data", {}).get("text/html", ""))


class Runbooks:
    """Runs runbooks with papermill on the venv's ``python3`` kernel."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.count = 0

    def _execute(self, name: str, params: dict[str, Any]) -> Executed:
        self.count += 1
        out = self.out_dir / f"{self.count:02d}_{name}.ipynb"
        error = None
        try:
            papermill.execute_notebook(str(RUNBOOKS / f"{name}.ipynb"), str(out), parameters=params,
                                       kernel_name="python3", progress_bar=False, cwd=str(self.out_dir))
        except PapermillExecutionError as exc:
            error = exc
        return Executed(name, out, nbformat.read(out, as_version=4), error)

    def ok(self, name: str, **params: Any) -> Executed:
        run = self._execute(name, params)
        assert run.error is None, f"{name} failed: {run.error}\n{run.text}"
        assert run.verdict.startswith("VERDICT: OK — "), run.text
        return run

    def fail(self, name: str, **params: Any) -> Executed:
        """The run must fail the way a FAIL verdict does: papermill raises, on RunbookFailed."""
        run = self._execute(name, params)
        assert run.error is not None, f"{name} passed but should have failed:\n{run.text}"
        assert run.error.ename == "RunbookFailed", f"{name} broke instead of failing: {run.error}"
        assert run.verdict.startswith("VERDICT: FAIL — "), run.text
        assert run.error.evalue == run.verdict  # the exception carries the verdict
        return run


# ---------------------------------------------------------------------------------------- workspaces
def new_workspace(root: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    return init_workspace(workspace(root))


def make_images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / f"{name}.png"
        make_image(path, "props", ("#203040", f"#{(i * 37) % 256:02x}80c0"), 100 + i)
        paths.append(path)
    return paths


def populate_healthy(ws: Workspace) -> dict[str, Any]:
    """Two applied assets, a pinned staged job and a released one: nothing wrong anywhere."""
    q = AssetIngestQueue(ws)
    src = make_images(ws.root / "incoming", ["lantern", "letter", "umbrella", "scarf"])
    applied = [q.enqueue(source_path=p, asset_type_hint="props", metadata={"tags": "item", "license": "cc0"})
               for p in src[:2]]
    q.apply([j["job_id"] for j in applied])
    staged = q.enqueue(source_path=src[2], pin=True, metadata={"tags": "item", "license": "cc0"})
    released = q.enqueue(source_path=src[3])
    q.release(released["job_id"])
    q.registry().wait_for_thumbnails(60)
    return {"applied": [q.get(j["job_id"]) for j in applied], "staged": staged, "released": q.get(released["job_id"])}


class StallingServer:
    """Answers every GET with a 1 MiB Content-Length, sends 64 KiB, then stops sending."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent = threading.Event()  # the first bytes went out: from now on the download is silent
        stall, sent = self.release, self.sent

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(1 << 20))
                self.end_headers()
                self.wfile.write(b"\x00" * (64 << 10))
                self.wfile.flush()
                sent.set()
                stall.wait(300)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


_HUNG_PULL = """
import sys
from comfyvn.config import workspace
from comfyvn.ingest.queue import AssetIngestQueue
AssetIngestQueue(workspace(sys.argv[1])).enqueue("generic", remote_url=sys.argv[2], terms_acknowledged=True,
                                                 wait=True)
"""


@dataclass
class BrokenWorkspace:
    ws: Workspace
    hung_job: str
    missing_staging: str  # staged, staging file deleted, source still there
    source_gone: str  # staged, staging file and source deleted
    no_sidecar_uid: str
    sidecar: Path
    child: subprocess.Popen
    server: StallingServer

    def close(self) -> None:
        self.server.release.set()
        if self.child.poll() is None:
            self.child.kill()
        self.child.wait(30)
        self.server.close()


def make_broken_workspace(root: Path) -> BrokenWorkspace:
    ws = new_workspace(root)
    server = StallingServer()
    update_config({"ingest": {"allow_insecure_http": True, "allow_private_addresses": True,
                              "extra_allowed_hosts": [f"127.0.0.1:{server.port}"], "remote_timeout_s": 600}}, ws)
    q = AssetIngestQueue(ws)
    src = make_images(ws.root / "incoming", ["shrine", "station", "rooftop"])
    asset_job = q.enqueue(source_path=src[0], asset_type_hint="backgrounds",
                          metadata={"tags": "shrine", "license": "cc0"})
    q.apply([asset_job["job_id"]])
    registry = q.registry()
    registry.wait_for_thumbnails(60)
    uid = q.get(asset_job["job_id"])["asset_uid"]
    sidecar = Path(registry.get_asset(uid)["sidecar"])
    sidecar.unlink()  # "a missing sidecar"
    missing = q.enqueue(source_path=src[1])
    Path(missing["staging_path"]).unlink()  # external tooling cleaned data/ingest/staging/
    gone = q.enqueue(source_path=src[2])
    Path(gone["staging_path"]).unlink()
    src[2].unlink()
    child = subprocess.Popen([sys.executable, "-c", _HUNG_PULL, str(ws.root),
                              f"http://127.0.0.1:{server.port}/files/big_model.safetensors"],
                             env={**os.environ, "COMFYVN_HOME": str(ws.root)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    broken = BrokenWorkspace(ws, "", missing["job_id"], gone["job_id"], uid, sidecar, child, server)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the child is downloading and the server went silent
        jobs = q.list_jobs(status="downloading")
        if jobs and server.sent.is_set():
            broken.hung_job = jobs[0]["job_id"]
            return broken
        if child.poll() is not None:
            break
        time.sleep(0.1)
    broken.close()
    out = child.stdout.read().decode(errors="replace") if child.stdout else ""
    raise RuntimeError(f"the hung download never started: {q.list_jobs(limit=5)}\n{out}")


def wait_idle(queue: AssetIngestQueue, job_id: str, seconds: float) -> None:
    """Sleep until ``job_id`` has not been updated for ``seconds`` (a fixed threshold, no timing assert)."""
    while True:
        idle = time.time() - queue.get(job_id)["updated_at"]
        if idle >= seconds:
            return
        time.sleep(seconds - idle + 0.05)
