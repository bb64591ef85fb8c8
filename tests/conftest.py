"""Shared fixtures: every test gets its own workspace folder (COMFYVN_HOME)."""

from __future__ import annotations

import os
import resource
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgserver import Cluster, start_cluster

from comfyvn.config import Workspace, init_workspace, workspace
from comfyvn.store import Database, database_at, forget_database, get_database
from comfyvn.store.db import SQLITE_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[1]

# pytest-jupyter sets the soft limit of open files to 4,096 even where the machine allows more (20,000
# here); a test process keeps each store's connections of ended pool threads until they are collected,
# so give it back the machine's limit (the leak itself is closed at each workspace's teardown below)
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard != resource.RLIM_INFINITY and _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))


#: ``COMFYVN_TEST_STORE=postgresql``: every ``ws`` gets a fresh database on the session's PostgreSQL
TEST_STORE = os.environ.get("COMFYVN_TEST_STORE", "sqlite")
#: tests of SQLite itself (its tracer, query plans, PRAGMAs, files) and of a second workspace's own
#: store: they ran in the SQLite suite and have no PostgreSQL meaning, so a PostgreSQL run deselects
#: them (listed here, counted as deselected)
SQLITE_ONLY = {
    "tests/test_asset_registry.py::test_filtered_listing_uses_indexes": "SQLite's trace callback and query plans",
    "tests/test_ingest_jobs.py::test_a_status_is_its_plain_string_in_json_and_sql": "SQLite's typeof()",
    "tests/test_ingest_jobs.py::test_status_sets_in_statements_still_use_the_partial_indexes":
        "SQLite's EXPLAIN QUERY PLAN",
    "tests/test_library_aliases.py::test_the_alias_lookup_uses_the_index": "SQLite's EXPLAIN QUERY PLAN",
    # SQLite's planner choices at scale; PostgreSQL's page path is pinned by the late-row-lookup tests
    "tests/test_asset_registry.py::test_sqlite_plans_a_rare_tag_from_asset_tags_and_a_common_one_by_index_walk":
        "SQLite's EXPLAIN QUERY PLAN",
    "tests/test_asset_registry.py::test_sqlite_counts_a_tag_on_asset_tags_primary_key": "SQLite's EXPLAIN QUERY PLAN",
    "tests/test_asset_registry.py::test_sqlite_reads_every_gallery_sort_in_index_order": "SQLite's EXPLAIN QUERY PLAN",
    # COMFYVN_STORE_URL points every workspace of the process at the one store: "a fresh workspace"
    # in the same process is not a fresh store there
    "tests/test_ingest_state.py::test_round_trip_into_a_fresh_workspace": "a second workspace in one process",
    "tests/test_enforcer.py::test_rebuild_restores_a_project_copied_into_a_new_workspace":
        "a second workspace in one process",
    # the SQLite store's own machinery (its file, PRAGMAs, sqlite_master, script splitter); the
    # engine-neutral equivalents are in test_store_engines.py, which runs both engines
    "tests/test_store.py::test_one_database_per_workspace_in_wal_mode_with_a_busy_timeout": "SQLite's PRAGMAs",
    "tests/test_store.py::test_migrations_are_named_ordered_and_idempotent": "SQLite's sqlite_master and file",
    "tests/test_store.py::test_concurrent_first_opens_migrate_once": "SQLite files opened by three processes",
    "tests/test_store.py::test_a_failing_migration_is_rolled_back_and_reported": "an SQLite file's migration",
    "tests/test_store.py::test_migration_scripts_keep_semicolons_inside_triggers_and_strings":
        "SQLite's script splitter",
    "tests/test_store.py::test_close_leaves_the_connections_of_other_live_threads_alone": "an SQLite file's connections",
    # a hard link to the workspace's SQLite file must be refused as a source: on PostgreSQL there is no such file
    "tests/test_sources.py::test_the_database_and_its_journal_files_are_never_sources":
        "the workspace's SQLite file and its WAL",
    "tests/test_sources.py::test_a_hard_link_to_the_database_is_refused_by_identity": "hard-links the workspace's SQLite file",
    "tests/test_sources_batch.py::test_a_batch_refuses_every_kind_a_single_enqueue_refuses":
        "hard-links the workspace's SQLite file",
    "tests/test_sources_batch.py::test_a_policy_resolved_before_a_hard_link_was_made_still_refuses_it_by_what_was_opened":
        "hard-links the workspace's SQLite file",
    "tests/test_fulltext.py::test_sqlite_reads_free_text_from_the_index_and_short_text_by_scan":
        "SQLite's EXPLAIN QUERY PLAN",
    "tests/test_fulltext.py::test_the_sqlite_check_finds_a_row_changed_behind_the_index": "damages an SQLite file",
    # moves the workspace's own SQLite file to the session's PostgreSQL and back: both engines in the SQLite pass
    "tests/test_fulltext.py::test_store_migrate_both_ways_keeps_the_index": "the workspace's SQLite file, moved",
}


def pytest_collection_modifyitems(config, items) -> None:
    if TEST_STORE != "postgresql":
        return
    keep, dropped = [], []
    for item in items:
        (dropped if item.nodeid.split("[")[0] in SQLITE_ONLY else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture
def ws(tmp_path, monkeypatch, request) -> Iterator[Workspace]:
    """A fresh workspace selected through COMFYVN_HOME (shipped default config); its store is
    the workspace's SQLite file, or with ``COMFYVN_TEST_STORE=postgresql`` a fresh PostgreSQL
    database (``COMFYVN_STORE_URL``)."""
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("COMFYVN_HOME", str(root))
    monkeypatch.chdir(root)
    url = None
    if TEST_STORE == "postgresql":
        url = request.getfixturevalue("pg_store_schemas")()
        monkeypatch.setenv("COMFYVN_STORE_URL", url)
    made = init_workspace(workspace(root))
    yield made
    # close the store's connections: a process keeps every store it opened (3 descriptors per SQLite
    # connection), and 2,000 tests' workspaces left open exhausted the 4,096 a Jupyter process allows
    forget_database(url if url is not None else SQLITE_PREFIX + made.db_path.resolve().as_posix())


@pytest.fixture(scope="session")
def pg_store_schemas(pg_cluster) -> Iterator[Callable[[], str]]:
    """Makes the store URL of a fresh, empty schema in one database of the session's server.

    Each workspace of a ``COMFYVN_TEST_STORE=postgresql`` run gets its own schema (its
    ``search_path``): as isolated as a database of its own for the store, and ~1000x cheaper to
    make than a database (which copies template1's files on this disk)."""
    import psycopg

    base = pg_cluster.create_database()
    admin = psycopg.connect(base, autocommit=True)

    def fresh() -> str:
        nonlocal admin
        name = f"s_{uuid.uuid4().hex[:12]}"
        try:
            admin.execute(f'CREATE SCHEMA "{name}"')
        except psycopg.OperationalError:
            # a test restarted the session's server (test_events_pg): the held connection died
            # with it, so reconnect once instead of failing every later workspace's setup
            admin.close()
            admin = psycopg.connect(base, autocommit=True)
            admin.execute(f'CREATE SCHEMA "{name}"')
        return f"{base}?options=-csearch_path%3D{name}"

    try:
        yield fresh
    finally:
        admin.close()


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
        if "comfyvn.store.pg" in sys.modules:  # no pool left retrying a server that is going away
            sys.modules["comfyvn.store.pg"].close_all_databases()
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """URL of a new, empty PostgreSQL database on the session's server."""
    return pg_cluster.create_database()


@pytest.fixture
def pg_db(pg_url) -> Iterator[Database]:
    """The store on a new, empty PostgreSQL database of the session's server (forgotten after)."""
    db = database_at(pg_url)
    yield db
    forget_database(pg_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, ws) -> Iterator[Database]:
    """Each engine in turn: the workspace's SQLite file, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield get_database(ws.db_path)
        return
    url = request.getfixturevalue("pg_url")
    yield database_at(url)
    forget_database(url)
