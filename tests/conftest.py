"""Shared fixtures: every test gets its own workspace folder (COMFYVN_HOME)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import Cluster, start_cluster

from comfyvn.config import Workspace, init_workspace, workspace

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    """A fresh workspace selected through COMFYVN_HOME (shipped default config)."""
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("COMFYVN_HOME", str(root))
    monkeypatch.chdir(root)
    return init_workspace(workspace(root))


@pytest.fixture
def subprocess_env(ws) -> dict[str, str]:
    """Environment for child processes working on the same workspace."""
    env = dict(os.environ)
    env["COMFYVN_HOME"] = str(ws.root)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throw-away PostgreSQL server for the session (tests/pgserver.py); never a mock."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """URL of a new, empty PostgreSQL database on the session's server."""
    return pg_cluster.create_database()
