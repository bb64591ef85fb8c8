"""Every runbook executed with papermill against real workspaces and a real Jupyter server.

The healthy workspace is the one a live ``jupyter server`` (started here) serves; the broken
one has a hung download, staged jobs whose staging file is gone and an asset without sidecar.
Each test checks the verdict a person would read and that a FAIL verdict fails the papermill
run (``PapermillExecutionError`` on ``RunbookFailed``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from live_server import TEST_CONFIG, live_server_context
from rbhelpers import make_broken_workspace, make_images, populate_healthy, wait_idle

from comfyvn import runbooks as rb
from comfyvn.config import feature_enabled, init_workspace, workspace
from comfyvn.ingest.queue import STAGING_MISSING, AssetIngestQueue

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real jupyter server with the comfyvn extension on a healthy, populated workspace."""
    with live_server_context(tmp_path_factory.mktemp("live"), config=TEST_CONFIG) as srv:
        srv.populated = populate_healthy(srv.ws)
        yield srv


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    b = make_broken_workspace(tmp_path_factory.mktemp("broken") / "workspace")
    yield b
    b.close()


def test_healthy_workspace_every_check_passes(server, runbooks):
    ws = str(server.ws.root)
    staged = server.populated["staged"]

    run = runbooks.ok("inspect_queue", workspace=ws)
    assert "none stuck" in run.verdict
    assert run.images == 1 and run.html_tables() >= 3  # status chart; counts, recent and stuck tables

    run = runbooks.ok("snapshot_dedup_cache", workspace=ws, base_url=server.base_url, token=server.token)
    assert "every staging file present and matches the server" in run.verdict
    snapshot = json.loads(server.ws.dedup_cache_file.read_text())
    assert snapshot["version"] == 2 and staged["digest"] in snapshot["cache"]
    assert json.loads(server.ws.queue_state_file.read_text())["version"] == 2
    assert run.images == 1

    run = runbooks.ok("enforce_sidecars", workspace=ws)
    assert "sidecars, files, thumbnails and metadata in order" in run.verdict

    run = runbooks.ok("requeue_missing_staging", workspace=ws)
    assert run.verdict == "VERDICT: OK — no job lacks its staging file"

    run = runbooks.ok("validate_system", base_url=server.base_url, token=server.token)  # docs checked too
    assert "checks passed in 3 profiles" in run.verdict and "not checked" not in run.text
    assert run.images == 1
    checks = [o for c in run.nb.cells for o in c.get("outputs", []) if "docs name every route" in
              o.get("data", {}).get("text/html", "")]
    assert checks, "the table of every check lists the docs coverage checks"


def test_validate_system_fails_on_a_wrong_token_and_on_a_server_without_routes(server, runbooks, tmp_path):
    run = runbooks.fail("validate_system", base_url=server.base_url, token="not-the-token", check_docs=False)
    assert "refused the token" in run.text

    report = rb.validate_system(server.base_url, server.token, docs_dir=tmp_path, profiles="hook_bus")
    assert not report.verdict.ok and f"no Markdown files in {tmp_path}" in str(report.verdict)
    report = rb.validate_system(server.base_url, server.token, profiles="p7_asset_ingest_cache,nope")
    assert report.verdict.line == ("VERDICT: FAIL — unknown profile(s) nope; known: p7_asset_ingest_cache, "
                                   "asset_gallery, hook_bus, licences, library, all")

    with live_server_context(tmp_path / "bare", extension=False) as bare:
        run = runbooks.fail("validate_system", base_url=bare.base_url, token=bare.token, check_docs=False,
                            profiles="p7_asset_ingest_cache")
    assert "GET /api/ingest/status" in run.text and "no route (Jupyter's own 404)" in run.text


def test_release_job_refuses_what_may_not_be_released(server, runbooks):
    ws = str(server.ws.root)
    q = AssetIngestQueue(server.ws)
    applied = server.populated["applied"][0]

    run = runbooks.fail("release_job", workspace=ws, job_id=applied["job_id"])
    assert f"refused to release job {applied['job_id']} (applied)" in run.verdict
    assert f"remove_asset('{applied['asset_uid']}')" in run.text  # says why and what to do instead
    assert q.get(applied["job_id"])["status"] == "applied"

    # the same function the notebook calls, without a kernel: the verdicts for bad input
    assert not rb.release_job(server.ws, "nosuchjob000").verdict.ok
    assert "no job 'nosuchjob000'" in rb.release_job(server.ws, "nosuchjob000").verdict.line
    assert "no job given" in rb.release_job(server.ws, "").verdict.line

    staged = server.populated["staged"]
    assert Path(staged["staging_path"]).is_file()
    run = runbooks.ok("release_job", workspace=ws, job_id=staged["job_id"])
    assert f"released job {staged['job_id']} (was staged)" in run.verdict
    assert q.get(staged["job_id"])["status"] == "released"
    assert not Path(staged["staging_path"]).exists()
    assert staged["digest"] not in q.dedup_snapshot()


def test_broken_workspace_runbooks_fail_then_repair(broken, runbooks):
    ws = str(broken.ws.root)
    q = AssetIngestQueue(broken.ws)
    stuck_minutes = 0.02  # 1.2 s: the hung download has sent nothing for longer (wait_idle)
    wait_idle(q, broken.hung_job, stuck_minutes * 60)

    run = runbooks.fail("inspect_queue", workspace=ws, stuck_minutes=stuck_minutes)
    assert run.verdict.startswith("VERDICT: FAIL — 3 of 4 jobs stuck")
    assert f"{broken.hung_job}: downloading, no update for" in run.text
    assert f"{broken.missing_staging}: staged, but its staging file is missing" in run.text
    assert f"{broken.source_gone}: staged, but its staging file is missing" in run.text
    assert run.images == 1

    run = runbooks.fail("snapshot_dedup_cache", workspace=ws)
    assert "2 problems in a cache of 2 entries" in run.verdict
    assert broken.missing_staging in run.text and broken.source_gone in run.text

    run = runbooks.fail("enforce_sidecars", workspace=ws)
    assert "dry run: nothing changed" in run.verdict and "-p fix True" in run.verdict
    assert "missing_sidecar" in run.text
    assert not broken.sidecar.exists()  # a dry run writes nothing
    run = runbooks.ok("enforce_sidecars", workspace=ws, fix=True)
    assert "the audit is now clean" in run.verdict
    assert json.loads(broken.sidecar.read_text())["uid"] == broken.no_sidecar_uid

    run = runbooks.fail("requeue_missing_staging", workspace=ws)
    assert "1 of 2 jobs re-queued; 1 could not be" in run.verdict
    assert f"{broken.source_gone}: the source" in run.text and "is gone too" in run.text
    requeued = q.get(broken.missing_staging)
    assert requeued["status"] == "staged" and Path(requeued["staging_path"]).is_file()
    assert requeued["attempts"] == 2 and requeued["errors"][0]["error"] == STAGING_MISSING
    assert q.get(broken.source_gone)["status"] == "failed"
    assert q.get(broken.source_gone)["error"] == STAGING_MISSING

    run = runbooks.fail("release_job", workspace=ws, job_id=broken.hung_job)
    assert "(downloading)" in run.verdict and "cancel it instead" in run.verdict
    run = runbooks.ok("release_job", workspace=ws, job_id=broken.hung_job, cancel_active=True)
    assert f"cancelled job {broken.hung_job} (was downloading)" in run.verdict
    run = runbooks.ok("release_job", workspace=ws, job_id=broken.source_gone)
    assert q.get(broken.source_gone)["status"] == "released"

    run = runbooks.ok("inspect_queue", workspace=ws, stuck_minutes=stuck_minutes)
    assert "none stuck" in run.verdict


def _archive(path: Path, ws_root: Path, source: Path) -> Path:
    """A version-1 queue state (the pre-database queue): one local job, one remote request
    that predates the terms field."""
    path.write_text(json.dumps({"version": 1, "saved_at": 1734850000.0, "queue": [
        {"id": "arch0local01", "provider": "local", "state": "staged", "source": str(source),
         "type_hint": "props", "created": 1734840000.0},
        {"id": "arch0remote1", "provider": "generic", "state": "pending",
         "url": "https://downloads.example.org/pack/model.safetensors", "created": 1734840100.0},
    ]}))
    return path


def test_replay_archived_state_with_the_terms_flag(runbooks, tmp_path):
    ws = init_workspace(workspace(tmp_path / "workspace"))
    (source,) = make_images(ws.root / "incoming", ["archived"])
    archive = _archive(tmp_path / "queue_state.json", ws.root, source)
    q = AssetIngestQueue(ws)

    run = runbooks.fail("replay_archived_state", workspace=str(ws.root), state_path=str(archive))
    assert "1 of 2 archived jobs refused, 1 imported (version 1 archive (migrated))" in run.verdict
    assert "arch0remote1: terms.not_acknowledged" in run.text and "-p disable_terms_ack True" in run.text
    assert q.get("arch0remote1") is None and q.get("arch0local01")["status"] == "queued"
    assert feature_enabled("require_remote_terms_ack", ws)

    run = runbooks.ok("replay_archived_state", workspace=str(ws.root), state_path=str(archive),
                      disable_terms_ack=True)
    assert "imported 1 job, skipped 1 already present" in run.verdict
    assert "replayed with require_remote_terms_ack off, flag restored to True" in run.verdict
    assert q.get("arch0remote1")["status"] == "queued"
    assert json.loads(ws.config_file.read_text())["features"]["require_remote_terms_ack"] is True
    assert run.images == 1

    (tmp_path / "torn.json").write_text('{"version": 2, "jobs": [')
    assert "is not valid JSON" in rb.replay_archived_state(ws, str(tmp_path / "torn.json")).verdict.line
    (tmp_path / "future.json").write_text('{"version": 99, "jobs": []}')
    assert "newer than this comfyvn understands" in rb.replay_archived_state(ws, str(tmp_path / "future.json")
                                                                             ).verdict.line
    assert "no archive given" in rb.replay_archived_state(ws, "").verdict.line
