"""The throw-away PostgreSQL harness itself: a real server, data kept across a restart, no leftovers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
from pgserver import start_cluster

TESTS = Path(__file__).resolve().parent


def test_database_survives_restart(pg_cluster):
    url = pg_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (42)")
    pg_cluster.restart()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM t").fetchone() == (42,)


def test_cluster_stops_when_its_owner_dies():
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                              "from pgserver import start_cluster; c = start_cluster(); print(c.root, c.port, flush=True);"
                              "time.sleep(600)", str(TESTS)], stdout=subprocess.PIPE, text=True)
    root, port = child.stdout.readline().split()
    assert psycopg.connect(f"postgresql://comfyvn@127.0.0.1:{port}/postgres").close() is None
    child.kill()
    child.wait()
    deadline = time.monotonic() + 30
    while Path(root).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(root).exists()
    try:
        psycopg.connect(f"postgresql://comfyvn@127.0.0.1:{port}/postgres", connect_timeout=2).close()
    except psycopg.OperationalError:
        pass
    else:
        raise AssertionError("the server outlived the process that started it")


def test_start_cluster_is_independent():
    cluster = start_cluster(watchdog=False)
    try:
        assert cluster.psql("SHOW listen_addresses") == "127.0.0.1"
    finally:
        cluster.destroy()
    assert not cluster.root.exists()
