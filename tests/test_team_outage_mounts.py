"""Per-server mount points of the shared staging folder (issue 18, docs/TEAMS.md section 2): a job
staged on server A is applied by server B, which mounts the same folder at another path.  Two
workspaces on one store (both engines: ``COMFYVN_TEST_STORE=postgresql``); "mounts" are symlinks,
and A's is gone by the time B applies (as on another machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyvn.config import init_workspace, update_config, workspace
from comfyvn.ingest.jobs import JobStatus
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.store import open_store


@pytest.fixture
def two_servers(ws, tmp_path, monkeypatch):
    """Workspaces A and B on one store, each mounting the shared folder at a path of its own."""
    share = tmp_path / "share"
    for folder in ("staging", "assets"):
        (share / folder).mkdir(parents=True)
    mounts = {}
    for name in ("a", "b"):
        mounts[name] = tmp_path / f"mnt-{name}"
        mounts[name].symlink_to(share, target_is_directory=True)
    monkeypatch.setenv("COMFYVN_STORE_URL", open_store(ws).url)  # B shares A's store (SQLite too)
    ws_b = init_workspace(workspace(tmp_path / "b"))
    queues = {}
    for name, wsx in (("a", ws), ("b", ws_b)):
        update_config({"paths": {"staging": str(mounts[name] / "staging"),
                                 "assets_root": str(mounts[name] / "assets")}}, wsx)
        queues[name] = AssetIngestQueue(wsx)
    yield {"a": queues["a"], "b": queues["b"], "mounts": mounts, "share": share}
    for queue in queues.values():
        queue.stop_worker()


def stage_on_a(two_servers, text: str) -> dict:
    a = two_servers["a"]
    source = a.ws.root / "incoming" / f"{text}.txt"
    source.parent.mkdir(exist_ok=True)
    source.write_text(f"the bytes of {text}")
    job = a.enqueue(source_path=source, asset_type_hint="text")
    assert job["status"] == JobStatus.STAGED and job["staging_path"].startswith(str(two_servers["mounts"]["a"]))
    return job


def test_a_job_staged_on_server_a_is_applied_by_server_b_through_its_own_mount(two_servers):
    a, b = two_servers["a"], two_servers["b"]
    job = stage_on_a(two_servers, "hero")
    stored = a.db.query_one("SELECT staging_path FROM ingest_jobs WHERE job_id = ?", (job["job_id"],))[0]
    assert stored == Path(job["staging_path"]).name  # relative to the staging folder, not A's mount
    assert b.get(job["job_id"])["staging_path"] == str(two_servers["mounts"]["b"] / "staging" / stored)
    two_servers["mounts"]["a"].unlink()  # A's mount point does not exist on B's machine
    [applied] = b.apply([job["job_id"]])["applied"]
    asset = b.registry().get_asset(applied["asset_uid"])
    assert Path(asset["abs_path"]).read_text() == "the bytes of hero"
    assert not list((two_servers["share"] / "staging").iterdir())  # the staged file moved in, none left


def test_a_row_of_an_older_version_with_a_path_of_another_mount_still_applies(two_servers):
    a, b = two_servers["a"], two_servers["b"]
    job = stage_on_a(two_servers, "villain")
    with a.db.transaction() as conn:  # as an older version stored it: A's absolute path
        conn.execute("UPDATE ingest_jobs SET staging_path = ? WHERE job_id = ?", (job["staging_path"], job["job_id"]))
    assert a.get(job["job_id"])["staging_path"] == job["staging_path"]  # still valid where it was written
    two_servers["mounts"]["a"].unlink()
    assert b.get(job["job_id"])["staging_path"] == str(two_servers["mounts"]["b"] / "staging" /
                                                       Path(job["staging_path"]).name)
    [applied] = b.apply([job["job_id"]])["applied"]
    assert Path(b.registry().get_asset(applied["asset_uid"])["abs_path"]).read_text() == "the bytes of villain"
