"""``comfyvn-runbook``: listing, parameter checking, exit codes and where executed notebooks go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from rbhelpers import RUNBOOKS, make_images, new_workspace

from comfyvn import runbooks as rb
from comfyvn.config import feature_enabled, set_feature
from comfyvn.ingest.queue import AssetIngestQueue

ALL = ["enforce_sidecars", "inspect_queue", "licence_check", "release_job", "replay_archived_state",
       "requeue_missing_staging", "snapshot_dedup_cache", "validate_system"]
CLI = [str(Path(sys.executable).with_name("comfyvn-runbook"))]  # the installed console script


def test_every_runbook_has_parameters_a_verdict_and_a_failing_last_cell():
    books = rb.list_runbooks(RUNBOOKS)
    assert [b.name for b in books] == ALL
    for book in books:
        nb = nbformat.read(book.path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, book.name
        assigned = [ln.split("=")[0].strip() for ln in tagged[0].source.splitlines() if "=" in ln]
        assert list(book.parameters) == assigned, f"papermill cannot read every parameter of {book.name}"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[-1].source.strip().endswith("report.verdict.raise_if_failed()"), book.name
        assert all(not c.get("outputs") for c in code), f"{book.name} is committed with outputs"
        if book.name != "validate_system":
            assert book.parameters["workspace"]["default"] == "None"


def test_list_and_usage_errors(capsys, tmp_path):
    assert rb.main(["--list"]) == 0
    listing = capsys.readouterr().out
    for name in ALL:
        assert name in listing
    assert "-p job_id" in listing and "-p cancel_active False" in listing

    assert rb.main(["no_such_runbook"]) == 2
    assert "no runbook 'no_such_runbook'" in capsys.readouterr().err
    assert rb.main(["release_job", "-p", "jobid", "x", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no parameter 'jobid'" in err and "job_id" in err
    assert rb.main([]) == 2


def test_parse_value_reads_like_papermill():
    assert [rb.parse_value(v) for v in ("True", "False", "None", "3", "0.5", "abc")] == [True, False, None, 3,
                                                                                       0.5, "abc"]


def test_feature_temporarily_restores_the_flag_even_on_error(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    assert feature_enabled("require_remote_terms_ack", ws)
    with pytest.raises(RuntimeError), rb.feature_temporarily("require_remote_terms_ack", False, ws) as before:
        assert before is True and not feature_enabled("require_remote_terms_ack", ws)
        raise RuntimeError("import failed")
    assert feature_enabled("require_remote_terms_ack", ws)
    set_feature("require_remote_terms_ack", False, ws)
    with rb.feature_temporarily("require_remote_terms_ack", False, ws):
        pass
    assert not feature_enabled("require_remote_terms_ack", ws)


def test_open_workspace_refuses_a_folder_that_is_not_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a comfyvn workspace"):
        rb.open_workspace(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_cli_runs_a_runbook_keeps_the_notebook_and_exits_by_verdict(tmp_path, kernel_env, capsys):
    ws = new_workspace(tmp_path / "ws")
    q = AssetIngestQueue(ws)
    (src,) = make_images(ws.root / "incoming", ["lamp"])
    applied = q.enqueue(source_path=src)
    q.apply([applied["job_id"]])
    env = {**os.environ, "COMFYVN_HOME": str(ws.root)}

    ok = subprocess.run([*CLI, "inspect_queue"], env=env, cwd=tmp_path, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VERDICT: OK — 1 job, none stuck" in ok.stdout
    kept = list((ws.logs_dir / "runbooks").glob("*_inspect_queue.ipynb"))
    assert len(kept) == 1 and f"executed notebook: {kept[0]}" in ok.stdout
    assert nbformat.read(kept[0], as_version=4).metadata["papermill"]["parameters"]["workspace"] == str(ws.root)

    # the same entry point in-process (saves an interpreter start per case)
    out = tmp_path / "release.ipynb"
    assert rb.main(["release_job", "-p", "job_id", applied["job_id"], "--workspace", str(ws.root),
                    "--output", str(out)]) == 1
    printed = capsys.readouterr()
    assert f"VERDICT: FAIL — refused to release job {applied['job_id']} (applied)" in printed.out
    assert out.is_file() and f"executed notebook: {out}" in printed.out

    assert rb.main(["inspect_queue", "--workspace", str(tmp_path / "nowhere")]) == 2
    assert "is not a comfyvn workspace" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()

    assert rb.main(["inspect_queue", "-p", "stuck_minutes", "-1", "--workspace", str(ws.root)]) == 3
    err = capsys.readouterr().err
    assert "broke before its verdict: ValueError: stuck_minutes must be a positive number" in err


def test_a_runbook_without_workspace_parameter_refuses_a_folder_that_is_not_a_workspace(tmp_path):
    """validate_system keeps its executed notebook in <workspace>/logs: it must not make a workspace of the cwd."""
    env = {k: v for k, v in os.environ.items() if k != "COMFYVN_HOME"}
    out = subprocess.run([*CLI, "validate_system", "-p", "base_url", "http://127.0.0.1:9/"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert f"{tmp_path} is not a comfyvn workspace" in out.stderr and "--init" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_runbook_run_is_quiet_its_kernel_uses_local_sockets(tmp_path):
    """No "Kernel is running over TCP without encryption" warning on every run (IPC transport)."""
    ws = new_workspace(tmp_path / "ws")
    env = {k: v for k, v in os.environ.items() if k != "COMFYVN_HOME"}
    out = subprocess.run([*CLI, "inspect_queue", "--workspace", str(ws.root)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "VERDICT: OK" in out.stdout
    assert "without encryption" not in out.stderr and "WARNING" not in out.stderr, out.stderr
