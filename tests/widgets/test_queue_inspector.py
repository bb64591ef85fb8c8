"""QueueInspector: enqueue form validation, actions with results, filters, progress, flags, live updates."""

from __future__ import annotations

import pytest
from comfyvn_widgets.queue_inspector import QueueInspector
from comfyvn_widgets.queue_model import EnqueueForm, QueueModel, progress_of
from widget_helpers import make_png, run_in_subprocess, wait_until

from comfyvn.config import set_feature
from comfyvn.ingest.queue import AssetIngestQueue


@pytest.fixture
def queue(ws):
    q = AssetIngestQueue(ws)
    yield q
    q.stop_worker()


@pytest.fixture
def incoming(ws):
    folder = ws.root / "incoming"
    folder.mkdir()
    return folder


@pytest.fixture
def inspector(queue):
    qi = QueueInspector(queue, live=False)
    yield qi
    qi.close()


@pytest.mark.parametrize(("form", "field", "message"), [
    (EnqueueForm(mode="local"), "source_path", "Enter the path"),
    (EnqueueForm(mode="local", source_path="incoming/nope.png"), "source_path", "does not exist"),
    (EnqueueForm(mode="remote"), "remote_url", "Enter a Civitai"),
    (EnqueueForm(mode="remote", remote_url="ftp://example.com/x", terms_acknowledged=True), "remote_url", "https://"),
    (EnqueueForm(mode="remote", remote_url="https://civitai.com/models/1"), "terms_acknowledged", "Tick the box"),
    (EnqueueForm(mode="remote", remote_url="https://civitai.com/models/1", terms_acknowledged=True,
                 provider="local"), "provider", "Remote pulls use"),
    (EnqueueForm(mode="local", source_path="x", asset_type_hint="Back Grounds"), "asset_type_hint", "lower-case"),
    (EnqueueForm(mode="local", source_path="x", dest_relative="../escape.png"), "dest_relative", "'..'"),
])
def test_form_validation_names_the_field_and_the_fix(queue, form, field, message):
    errors = form.validate(queue)
    assert field in errors and message in errors[field]


def test_form_refuses_files_outside_the_allowed_roots(queue, tmp_path):
    outside = make_png(tmp_path / "outside.png", 1)
    errors = EnqueueForm(source_path=str(outside)).validate(queue)
    assert "outside the folders ingest may read from" in errors["source_path"]


def test_a_valid_form_has_no_errors_and_relative_paths_use_the_workspace(queue, incoming):
    make_png(incoming / "ok.png", 2)
    form = EnqueueForm(source_path="incoming/ok.png", asset_type_hint="backgrounds", dest_relative="bg/")
    assert form.validate(queue) == {}
    assert form.to_kwargs(queue)["source_path"] == str(incoming / "ok.png")


def test_enqueue_apply_from_the_widget_reports_each_job(inspector, incoming, queue):
    make_png(incoming / "a.png", 3)
    inspector.source_path.value = "incoming/a.png"
    inspector.type_hint.value = "backgrounds"
    inspector.enqueue_button.click()
    assert inspector.status.kind == "ok" and "staged" in inspector.status.text
    job_id = inspector.table.rows[0]["id"]
    assert inspector.table.rows[0]["cells"]["status"] == ["staged", "accent"]
    assert inspector.table.selected == [job_id]  # the new job is selected
    assert inspector.action_buttons["apply"].description == "Apply (1)"
    assert inspector.action_buttons["retry"].disabled
    inspector.action_buttons["apply"].click()
    job = queue.get(job_id)
    assert job["status"] == "applied" and job["asset_uid"]
    assert inspector.table.rows[0]["cells"]["status"] == ["applied", "ok"]
    assert f"applied as asset {job['asset_uid']}" in inspector.results.value
    assert ">1</span><span class=\"l\">applied" in inspector.counts.value


def test_invalid_form_shows_messages_under_fields_and_queues_nothing(inspector, queue):
    inspector.mode.value = "remote"
    inspector.remote_url.value = "https://civitai.com/models/1"
    inspector.enqueue_button.click()
    assert "Tick the box" in inspector.field_errors["terms_acknowledged"].value
    assert inspector.status.kind == "error" and "fix 1 field" in inspector.status.text
    assert queue.summary()["total"] == 0


def test_action_that_is_not_allowed_explains_why(queue, incoming):
    make_png(incoming / "b.png", 4)
    job = queue.enqueue(source_path=str(incoming / "b.png"))
    queue.apply([job["job_id"]])
    m = QueueModel(queue)
    m.load()
    m.click(job["job_id"])
    [outcome] = m.run_action("release")
    assert not outcome.ok and "is applied" in outcome.message
    m.selection.clear()
    with pytest.raises(ValueError, match="Select one or more jobs"):
        m.run_action("cancel")


def test_duplicate_and_filters(inspector, queue, incoming):
    make_png(incoming / "c.png", 5)
    first = queue.enqueue(source_path=str(incoming / "c.png"))
    dup = queue.enqueue(source_path=str(incoming / "c.png"))
    assert dup["status"] == "duplicate"
    inspector.refresh()
    assert inspector.table.rows[0]["cells"]["note"] == f"same as job {first['job_id']}"
    inspector.status_filter.value = "duplicate"
    assert [r["id"] for r in inspector.table.rows] == [dup["job_id"]]
    inspector.status_filter.value = ""
    inspector.provider_filter.value = "civitai"
    assert inspector.table.rows == []


def test_progress_column_from_bytes():
    base = {"bytes_done": 512, "bytes_total": 2048, "bytes": None}
    assert progress_of({**base, "status": "downloading"}) == (0.25, "512 B of 2.0 KB")
    assert progress_of({**base, "status": "downloading", "bytes_total": None}) == (None, "512 B")
    assert progress_of({**base, "status": "queued"}) == (0.0, "waiting")
    assert progress_of({**base, "status": "staged", "bytes": 2048}) == (1.0, "2.0 KB")


def test_feature_flags_are_shown(inspector, queue):
    assert "HTTP ingest routes: disabled" in inspector.flags.value
    set_feature("enable_asset_ingest", True, queue.ws)
    inspector.refresh()
    assert "HTTP ingest routes: enabled" in inspector.flags.value


def test_jobs_enqueued_by_another_process_appear_live(queue, incoming, subprocess_env):
    qi = QueueInspector(queue, live=True)
    try:
        make_png(incoming / "d.png", 6)
        out = run_in_subprocess(subprocess_env, f"""
            from comfyvn.ingest.queue import get_ingest_queue
            print(get_ingest_queue().enqueue(source_path={str(incoming / 'd.png')!r})["job_id"])
        """)
        job_id = out.strip().splitlines()[-1]
        wait_until(lambda: qi.table.rows and qi.table.rows[0]["id"] == job_id, what="the job from elsewhere")
        assert qi.table.rows[0]["cells"]["status"][0] == "staged"
        run_in_subprocess(subprocess_env, f"""
            from comfyvn.ingest.queue import get_ingest_queue
            get_ingest_queue().apply([{job_id!r}])
        """)
        wait_until(lambda: qi.table.rows[0]["cells"]["status"][0] == "applied", what="applied elsewhere")
    finally:
        qi.close()
