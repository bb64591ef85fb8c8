"""A throw-away PostgreSQL cluster for tests and benchmarks (never a mock).

``start_cluster()`` runs Debian's ``initdb``/``pg_ctl`` on a data folder in a fresh temporary
folder, listening on 127.0.0.1 at a free port with its socket inside that folder and ``trust``
authentication.  PostgreSQL refuses to run as root, so under root the cluster runs as the
``postgres`` system user.  A watchdog process stops the cluster when the process that started
it ends, however it ends (a killed pytest leaves no server behind).

    cluster = start_cluster()
    url = cluster.create_database()        # postgresql://comfyvn@127.0.0.1:PORT/t_...
    ...
    cluster.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "comfyvn"
_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class PostgresMissing(RuntimeError):
    """Raised when no PostgreSQL server binaries are installed."""


def find_bindir() -> Path:
    """Folder holding ``initdb`` and ``pg_ctl`` (``COMFYVN_PG_BINDIR`` wins)."""
    override = os.environ.get("COMFYVN_PG_BINDIR")
    candidates = [Path(override)] if override else list(_BIN_CANDIDATES)
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(Path(which).parent)
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    raise PostgresMissing("PostgreSQL server binaries not found: install them with "
                          "'apt-get install -y postgresql' (or set COMFYVN_PG_BINDIR)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(argv: list[str]) -> list[str]:
    """Run ``argv`` as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Cluster:
    root: Path
    port: int
    bindir: Path
    watchdog: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(dbname),
                              "-c", sql], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(_as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args]),
                              check=check, capture_output=True, text=True)

    def start(self, timeout: float = 60.0) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
                   "-c max_connections=400 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off")
        self.pg_ctl("-w", "-t", str(int(timeout)), "-l", str(self.root / "server.log"), "-o", options, "start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: see {self.root / 'server.log'}") from None
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate); the data folder stays."""
        self.pg_ctl("-w", "-m", mode, "stop", check=False)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server, wait ``down_for`` seconds, start it again on the same port."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.terminate()
        shutil.rmtree(self.root, ignore_errors=True)


_WATCHDOG = """
import os, shutil, subprocess, sys, time
parent, argv, root = int(sys.argv[1]), sys.argv[2:-1], sys.argv[-1]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(1.0)
subprocess.run(argv, capture_output=True)
shutil.rmtree(root, ignore_errors=True)
"""


def start_cluster(*, watchdog: bool = True) -> Cluster:
    """Create and start a new cluster in a temporary folder (see the module docstring)."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="comfyvn-pg-"))
    os.chmod(root, 0o755)
    (root / "sock").mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "sock", "postgres", "postgres")
    cluster = Cluster(root=root, port=_free_port(), bindir=bindir)
    subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(cluster.datadir), "-U", SUPERUSER,
                              "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
                   check=True, capture_output=True, text=True)
    cluster.start()
    if watchdog:
        stop_argv = _as_owner([str(bindir / "pg_ctl"), "-D", str(cluster.datadir), "-m", "immediate", "stop"])
        cluster.watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), *stop_argv,
                                             str(root)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True)
    return cluster
