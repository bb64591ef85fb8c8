"""The source policy resolved once per batch (comfyvn.sources.source_policy): enqueue_many() refuses
every kind a single enqueue() refuses, while the workspace's folders, identities and allowed roots
are read once per chunk; is_handoff_file() caches the real paths of its folders by the settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import comfyvn.sources as sources
from comfyvn.config import init_workspace, update_config, workspace
from comfyvn.ingest import AssetIngestQueue


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def q(ws):
    queue = AssetIngestQueue(ws)
    yield queue
    queue.stop_worker()


def test_a_batch_refuses_every_kind_a_single_enqueue_refuses(ws, q, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    other = init_workspace(workspace(home / "otherws"))
    update_config({"ingest": {"allowed_source_roots": ["$COMFYVN_HOME", "~"]}}, ws)
    key = write(ws.config_file.parent / "secrets.key", os.urandom(32))
    key_link = ws.root / "in" / "key.png"
    write(ws.root / "in" / "ok0.png", b"fine 0")
    os.link(key, key_link)
    db_link = ws.root / "in" / "db.png"
    os.link(ws.db_path, db_link)
    refused = {
        "internal": (write(ws.logs_dir / "server.log", b"log"), "source_refused"),
        "other project": (write(ws.assets_root / "other" / "a.png", b"theirs"), "source_refused"),
        "db identity": (db_link, "source_refused"),
        "config identity": (key_link, "source_refused"),
        "other workspace": (write(other.logs_dir / "x.log", b"l"), "source_refused"),
        "hidden": (write(ws.root / "in" / ".env", b"TOKEN=1"), "source_refused"),
        "key name": (write(home / "keys" / "id_rsa", b"k"), "source_refused"),
        "outside roots": (write(tmp_path / "outside" / "x.png", b"x"), "source_not_allowed"),
    }
    for path, code in refused.values():  # what one enqueue() says
        with pytest.raises(sources.SourceRefusedError if code == "source_refused" else sources.SourceNotAllowedError):
            q.enqueue(source_path=path)
    fine = [ws.root / "in" / "ok0.png", write(home / "pics" / "ok1.png", b"fine 1")]
    items = [fine[0], *(path for path, _ in refused.values()), fine[1]]
    result = q.enqueue_many(items, chunk_size=4)  # the refusals straddle chunks (a policy each)
    assert [j["source_path"] for j in result["jobs"]] == [str(p.resolve()) for p in fine]
    got = {e["index"]: e["error"] for e in result["errors"]}
    assert got == {i: code for i, (_, code) in enumerate(refused.values(), start=1)}
    assert {p.name for p in q.staging_dir.iterdir()} == {Path(j["staging_path"]).name for j in result["jobs"]}


def test_the_policy_is_resolved_once_per_chunk(ws, q, monkeypatch):
    calls = []
    real = sources._workspace_identities
    monkeypatch.setattr(sources, "_workspace_identities", lambda w: calls.append(1) or real(w))
    paths = [write(ws.root / "in" / f"f{i}.png", bytes([i]) * 10) for i in range(10)]
    result = q.enqueue_many(paths, chunk_size=5)
    assert len(result["jobs"]) == 10 and result["errors"] == []
    assert len(calls) == 2  # one per chunk, not one per file


def test_a_policy_resolved_before_a_hard_link_was_made_still_refuses_it_by_what_was_opened(ws, q):
    policy = sources.source_policy(ws, assets_root=ws.assets_root / "default")
    link = ws.root / "in" / "db.png"
    link.parent.mkdir()
    os.link(ws.db_path, link)  # the database existed when the policy was resolved: its identity is known
    with pytest.raises(sources.SourceRefusedError), sources.open_source(link, ws, policy=policy):
        pass


def test_handoff_folders_follow_a_changed_staging_setting(ws, tmp_path):
    old_staged = sources.os.path.realpath(ws.staging_dir / "job-a.png")
    assert sources.is_handoff_file(old_staged, ws)
    moved = tmp_path / "elsewhere-staging"
    moved.mkdir()
    link = tmp_path / "staging-link"
    link.symlink_to(moved)  # the setting names a symlink: the cached real path is the target
    update_config({"paths": {"staging": str(link)}}, ws)
    assert ws.staging_dir == link
    assert sources.is_handoff_file(str(moved / "job-a.png"), ws)
    assert not sources.is_handoff_file(old_staged, ws)  # the old folder is no hand-off place any more
    assert not sources.is_handoff_file(str(moved / ".job-a.part"), ws)


def test_a_handoff_check_of_a_group_judges_every_path_as_resolving_it_whole_does(ws, tmp_path):
    staging = Path(os.path.realpath(ws.staging_dir))
    uploads = Path(os.path.realpath(sources.uploads_dir(ws)))
    staged = write(staging / "job1-a.png", b"a")
    body = write(uploads / ".upload-x" / "b.png", b"b")
    via_link = tmp_path / "staging-via-link"
    via_link.symlink_to(staging)  # a folder on the way is a link: the file's real path is in staging
    outside = write(tmp_path / "outside" / "job2-c.png", b"c")
    (staging / "job3-link.png").symlink_to(staged)  # a link in staging is never a hand-off
    (staging / "job4-out.png").symlink_to(outside)
    paths = [staged, body, via_link / "job1-a.png", write(staging / "sub" / "job5-d.png", b"d"),
             write(staging / ".job6-e.png", b"e"), staging / "job3-link.png", staging / "job4-out.png",
             outside, staging / "missing.png", staging / "sub", write(uploads / "f.png", b"f"),
             write(uploads / ".upload-x" / "deeper" / "g.png", b"g"), f"{staged}/", "relative-name.png"]
    check = sources.HandoffCheck(ws)
    for path in paths:
        text = os.fspath(path)
        regular = os.path.isfile(text) and not os.path.islink(text)
        whole = os.path.realpath(text) if regular and sources.is_handoff_file(os.path.realpath(text), ws) else None
        assert check.real_path(path) == whole, path
    assert check.real_path(via_link / "job1-a.png") == str(staged)
    assert check.real_path(body) == str(body)


def test_apply_resolves_the_handoff_folders_once_per_group(ws, q, monkeypatch):
    calls = []
    real = sources._handoff_realpaths
    monkeypatch.setattr(sources, "_handoff_realpaths", lambda w: calls.append(1) or real(w))
    paths = [write(ws.root / "in" / f"f{i}.png", bytes([i]) * 10) for i in range(8)]
    staged = q.enqueue_many(paths)
    calls.clear()
    result = q.apply([job["job_id"] for job in staged["jobs"]])
    assert len(result["applied"]) == 8
    assert len(calls) == 1  # one group commit: the settings and the folders read once, not once per file


SECRET = b"not for the registry"


def test_a_run_resolves_each_folder_once_and_judges_every_file_by_what_it_opened(ws, q, tmp_path, monkeypatch):
    """enqueue_many resolves the folder of its files once per chunk; a folder swapped for a link to a
    place outside the allowed roots after that (mid-chunk), or a file swapped for such a link after
    it was resolved, is refused by the check of the opened descriptor: nothing of the secret is read."""
    outside = write(tmp_path / "outside" / "f1.png", SECRET)
    write(tmp_path / "outside" / "f2.png", SECRET)  # the next file of the run, through the cached folder
    folder = ws.root / "in" / "batch"
    paths = [write(folder / f"f{i}.png", bytes([i]) * 10) for i in range(3)]
    resolved_folders = []
    real_realpath = sources.os.path.realpath
    monkeypatch.setattr(sources.os.path, "realpath",
                        lambda p, *a, **k: resolved_folders.append(str(p)) or real_realpath(p, *a, **k))
    real_in_run = sources._resolve_in_run
    step = iter(range(100))

    def resolve_then_swap(raw, real_dirs):
        resolved = real_in_run(raw, real_dirs)
        if next(step) == 1:  # after the first file: the folder becomes a link to the outside
            for path in paths:
                path.unlink()
            folder.rmdir()
            folder.symlink_to(outside.parent, target_is_directory=True)
        return resolved

    monkeypatch.setattr(sources, "_resolve_in_run", resolve_then_swap)
    result = q.enqueue_many(paths)
    assert [j["source_path"] for j in result["jobs"]] == [str(paths[0])]
    assert [(e["index"], e["error"]) for e in result["errors"]] == [(1, "source_changed"), (2, "source_changed")]
    assert "refused" in result["errors"][0]["message"] or "outside" in result["errors"][0]["message"]
    assert resolved_folders.count(str(folder)) == 1  # the folder once for the chunk, not once per file
    staged = [p.read_bytes() for p in q.staging_dir.iterdir()]
    assert staged == [bytes([0]) * 10] and outside.read_bytes() == SECRET


def test_a_file_of_a_run_swapped_for_a_link_after_resolving_is_not_read(ws, q, tmp_path, monkeypatch):
    outside = write(tmp_path / "outside" / "secret.png", SECRET)
    paths = [write(ws.root / "in" / f"f{i}.png", bytes([i]) * 10) for i in range(2)]
    real_in_run = sources._resolve_in_run
    armed = [True]

    def resolve_then_swap(raw, real_dirs):
        resolved = real_in_run(raw, real_dirs)
        if armed and raw.name == "f1.png":
            armed.pop()
            Path(resolved).unlink()
            Path(resolved).symlink_to(outside)
        return resolved

    monkeypatch.setattr(sources, "_resolve_in_run", resolve_then_swap)
    result = q.enqueue_many(paths)
    assert [j["source_path"] for j in result["jobs"]] == [str(paths[0])]
    assert [(e["index"], e["error"]) for e in result["errors"]] == [(1, "source_changed")]
    assert sorted(p.read_bytes() for p in q.staging_dir.iterdir()) == [bytes([0]) * 10]


def test_a_link_named_in_a_run_is_resolved_whole(ws, q, tmp_path):
    """A source that is itself a symlink is resolved in full, as a single enqueue() resolves it."""
    target = write(ws.root / "in" / "real" / "a.png", b"a")
    link = ws.root / "in" / "links" / "a.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    outside = write(tmp_path / "outside" / "secret.png", SECRET)
    bad = ws.root / "in" / "links" / "b.png"
    bad.symlink_to(outside)
    result = q.enqueue_many([link, bad])
    assert [j["source_path"] for j in result["jobs"]] == [str(target)]
    assert [(e["index"], e["error"]) for e in result["errors"]] == [(1, "source_not_allowed")]
