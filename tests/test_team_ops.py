"""A team on one library, on a real PostgreSQL (issue 18, operations): real ``jupyter server``
processes sharing one store and one folder, concurrent writers on two servers, and a PostgreSQL
restart in the middle of the work."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_server import TEST_CONFIG, LiveServer, start_live_server
from pgserver import start_cluster

from comfyvn.config import _deep_merge

REPO = Path(__file__).resolve().parents[1]


def shared_folder(base: Path) -> dict[str, str]:
    paths = {"assets_root": base / "assets", "staging": base / "staging", "thumbnails": base / "thumbnails"}
    for folder in paths.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in paths.items()}


def team_server(tmp: Path, url: str, shared: dict[str, str], name: str, extra: dict | None = None) -> LiveServer:
    """A server with its own workspace folder, the team's store and the shared folder."""
    config = _deep_merge(TEST_CONFIG, {"paths": shared, **(extra or {})})
    return start_live_server(tmp / name, config=config, env={"COMFYVN_STORE_URL": url, "COMFYVN_SERVER_NAME": name})


def get_json(server: LiveServer, path: str, **params) -> tuple[int, dict]:
    resp = httpx.get(server.url(path), headers=server.headers, params=params, timeout=30)
    return resp.status_code, resp.json()


def wait_for(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def team(tmp_path_factory, pg_cluster) -> Iterator[dict]:
    """Three servers (A, B, C) on one PostgreSQL database and one shared folder."""
    tmp = tmp_path_factory.mktemp("team")
    url = pg_cluster.create_database()
    shared = shared_folder(tmp / "share")
    servers: list[LiveServer] = []
    try:
        for name in ("a", "b", "c"):
            servers.append(team_server(tmp, url, shared, name))
        yield {"url": url, "shared": shared, "servers": servers}
    finally:
        for server in servers:
            server.stop()


# ---------------------------------------------------------------------------- (a) three servers, one truth
def test_a_registration_on_one_server_is_seen_by_the_others(team):
    a, b, c = team["servers"]
    with c.client() as client_c, client_c.subscribe(topics=["on_asset_registered"]) as sub:
        source = a.ws.root / "incoming" / "hero.txt"
        source.parent.mkdir(exist_ok=True)
        source.write_text("the hero, drawn on server A")
        with a.client() as client_a:
            rec = client_a.register_asset(source, "text", tags=["hero"])
        assert rec["abs_path"].startswith(team["shared"]["assets_root"])
        for server in (b, c):
            status, body = get_json(server, "assets", tags="hero")
            assert status == 200 and [i["uid"] for i in body["items"]] == [rec["uid"]], server.port
        with b.client() as client_b:
            dest = client_b.download(rec["uid"], b.ws.root / "downloaded")
        assert dest.read_text() == "the hero, drawn on server A"
        deadline = time.monotonic() + 30
        while True:  # the WebSocket client of server C hears of it
            env = sub.recv(timeout=max(0.1, deadline - time.monotonic()))
            if env["data"].get("uid") == rec["uid"]:
                break
    # what a gallery in a kernel on server B reads: the workbench of B's workspace, with B's environment
    code = ("from comfyvn.workbench import get_workbench;"
            "print(json.dumps([a['uid'] for a in get_workbench().registry().list_assets()]))")
    out = subprocess.run([sys.executable, "-c", "import json;" + code], env=b.env, cwd=b.ws.root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert rec["uid"] in json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- (b) concurrent writers
WRITER = textwrap.dedent("""
    import json, sys
    from comfyvn.client import ComfyvnClient
    base, token, me, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    uids, sources = json.loads(sys.argv[5]), json.loads(sys.argv[6])
    out = {"tags": [], "jobs": [], "errors": []}
    with ComfyvnClient(base, token=token, timeout=120) as client:
        for r in range(rounds):
            tag = f"{me}-r{r}"
            for uid in uids:
                try:
                    client.update_meta(uid, add_tags=[tag])
                    out["tags"].append([uid, tag])
                except Exception as exc:
                    out["errors"].append(f"tag {uid}: {exc}")
            for src in sources:
                try:
                    job = client.enqueue(src, asset_type_hint="text")
                    out["jobs"].append([job["job_id"], job["status"], job.get("digest")])
                except Exception as exc:
                    out["errors"].append(f"enqueue {src}: {exc}")
    print(json.dumps(out))
""")


def test_four_writers_on_two_servers_lose_no_update_and_stage_each_digest_once(team):
    a, b, _c = team["servers"]
    uids = []
    seed = a.ws.root / "seed"
    seed.mkdir(exist_ok=True)
    with a.client() as client:
        for i in range(3):
            (seed / f"shared-{i}.txt").write_text(f"an asset everybody tags {i}")
            uids.append(client.register_asset(seed / f"shared-{i}.txt", "text")["uid"])
        versions = {uid: client.asset(uid)["version"] for uid in uids}
    contents = [f"overlapping content {i}".encode() for i in range(5)]
    sources = {}
    for server in (a, b):  # the same bytes in each server's own folder
        folder = server.ws.root / "drop"
        folder.mkdir(exist_ok=True)
        sources[server.port] = []
        for i, data in enumerate(contents):
            (folder / f"drop-{i}.txt").write_bytes(data)
            sources[server.port].append(str(folder / f"drop-{i}.txt"))
    rounds = 4
    procs = []
    for me, server in (("p1", a), ("p2", a), ("p3", b), ("p4", b)):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WRITER, server.base_url, server.token, me, str(rounds), json.dumps(uids),
             json.dumps(sources[server.port])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [r["errors"] for r in results] == [[], [], [], []]
    with b.client() as client:
        for uid in uids:
            asset = client.asset(uid)
            expected = {f"p{p}-r{r}" for p in range(1, 5) for r in range(rounds)}
            assert expected <= set(asset["tags"]), uid  # every process's every tag: none lost
            assert asset["version"] == versions[uid] + 4 * rounds  # each edit applied once, on the one before
        jobs = [client.job(job_id) for r in results for job_id, _s, _d in r["jobs"]]
    assert len(jobs) == 4 * rounds * len(contents)
    staged: dict[str, list[str]] = {}
    for job in jobs:
        assert job["status"] in ("staged", "duplicate"), job
        if job["status"] == "staged":
            staged.setdefault(job["digest"], []).append(job["job_id"])
    assert sorted(len(v) for v in staged.values()) == [1] * len(contents)  # each digest staged once
    files = [p for p in Path(team["shared"]["staging"]).iterdir() if not p.name.startswith(".")]
    assert len(files) == len(contents)


# ---------------------------------------------------------------------------- (c) PostgreSQL restarts
class Files(http.server.BaseHTTPRequestHandler):
    """``/slow.bin`` holds its body back until ``release`` is set; ``/fast.bin`` answers at once."""

    release = threading.Event()
    bodies = {"/slow.bin": os.urandom(64 * 1024), "/fast.bin": os.urandom(32 * 1024)}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(body[:1024])
        self.wfile.flush()
        if self.path == "/slow.bin":
            self.release.wait(120)
        self.wfile.write(body[1024:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def restartable(tmp_path) -> Iterator[dict]:
    """A server on its own PostgreSQL cluster (restarted by the test), and a slow file server."""
    cluster = start_cluster()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = None
    try:
        url = cluster.create_database()
        extra = {"ingest": {"allow_private_addresses": True, "allow_insecure_http": True,
                            "extra_allowed_hosts": ["127.0.0.1"], "rate_limit_rps": 100, "rate_limit_burst": 100}}
        server = team_server(tmp_path, url, shared_folder(tmp_path / "share"), "solo", extra)
        yield {"cluster": cluster, "server": server, "files": f"http://127.0.0.1:{httpd.server_port}/"}
    finally:
        Files.release.set()
        if server is not None:
            server.stop()
        httpd.shutdown()
        cluster.destroy()


def test_a_postgresql_restart_answers_503_then_work_resumes_and_no_event_is_lost(restartable):
    cluster, server, files = restartable["cluster"], restartable["server"], restartable["files"]
    Files.release.clear()
    source = server.ws.root / "before.txt"
    source.write_text("registered before the restart")
    with server.client() as client:
        before = client.register_asset(source, "text")
        busy = client.enqueue(remote_url=files + "slow.bin", provider="generic", terms_acknowledged=True)
        wait_for(lambda: client.job(busy["job_id"])["status"] == "downloading", what="the worker to be busy")
        queued = client.enqueue(remote_url=files + "fast.bin", provider="generic", terms_acknowledged=True)
        assert client.job(queued["job_id"])["status"] == "queued"  # waits behind the busy download
    cluster.stop()
    try:
        for path in ("assets", f"assets/{before['uid']}", "api/ingest/jobs", f"api/ingest/jobs/{queued['job_id']}"):
            resp = httpx.get(server.url(path), headers=server.headers, timeout=60)
            assert resp.status_code == 503, (path, resp.status_code, resp.text[:300])
            body = resp.json()
            assert body["error"] == "store_unavailable" and "PostgreSQL" in body["message"], body
        resp = httpx.post(server.url("assets/register"), headers=server.headers, timeout=60,
                          json={"path": str(source), "asset_type": "text"})
        assert resp.status_code == 503 and resp.json()["error"] == "store_unavailable"
        Files.release.set()  # the busy download ends while the database is away
        time.sleep(1.0)
    finally:
        cluster.start()
    after_source = server.ws.root / "after.txt"
    after_source.write_text("registered after the restart")
    with server.client() as client:
        wait_for(lambda: get_json(server, "assets")[0] == 200, what="the API to answer again")
        after = client.register_asset(after_source, "text")
        done = wait_for(lambda: (j := client.job(queued["job_id"]))["status"] in ("staged", "failed") and j,
                        timeout=120, what="the queued pull to run")
        assert done["status"] == "staged", done  # the queued job resumed once the store was back
        assert done["digest"] == hashlib.sha256(Files.bodies["/fast.bin"]).hexdigest()
        uids = {a["uid"] for a in client.assets(limit=100)["items"]}
        assert uids == {before["uid"], after["uid"]}
        history = client.history(1000)["items"]
    registered = [e["data"]["uid"] for e in history if e["event"] == "on_asset_registered"]
    assert registered == [before["uid"], after["uid"]]  # each once, in order: nothing lost, nothing doubled
    ids = [e["id"] for e in history]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    job_events = [e for e in history if e["data"].get("job_id") == queued["job_id"]]
    assert job_events[0]["event"] == "on_asset_ingest_enqueued"
    assert job_events[-1]["data"]["status"] == "staged"  # the job's last change reached the log too
