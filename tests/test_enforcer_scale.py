"""The enforcer at a million assets (issue 19): the audit streams rows in chunks, reports progress,
and keeps only what has no row from its walk of the disk."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqltrace import traced

import comfyvn.registry.audit as auditmod
import comfyvn.registry.scan as scanmod
from comfyvn.registry import audit_sidecars, rebuild_from_disk
from comfyvn.registry.rebuild import ProgressBar
from comfyvn.registry.scan import rows_without_file, scan_assets_root, scan_unregistered
from comfyvn.studio.core.asset_registry import AssetRegistry

ROW_READ = re.compile(r"^SELECT \* FROM assets WHERE project_id = .* ORDER BY path LIMIT (\d+|\?)$")


@pytest.fixture
def reg(ws, tmp_path) -> AssetRegistry:
    reg = AssetRegistry("scale", ws=ws, make_thumbnails=False)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        path = src / f"item{i}.txt"
        path.write_text(f"asset {i}")
        reg.register_file(path, "docs", dest_relative=f"docs/item{i}.txt", tags="note", license_tag="cc0")
    return reg


def test_the_audit_reads_rows_in_chunks_as_it_checks_them_and_reports_progress(reg, monkeypatch):
    monkeypatch.setattr(scanmod, "CHUNK", 2)
    monkeypatch.setattr(auditmod, "PROGRESS_EVERY", 1)
    statements: list[str] = []  # the traced SQL, once the audit runs
    seen: list[tuple[int, int, int]] = []  # (done, total, chunks read so far) at each progress report

    def progress(done: int, total: int) -> None:
        seen.append((done, total, sum(1 for s in statements if ROW_READ.match(s))))

    with traced(reg.db) as traced_statements:
        statements = traced_statements
        report = audit_sidecars(reg, progress=progress)
    assert report["ok"] and report["summary"]["assets"] == 5
    assert [d for d, _, _ in seen] == [1, 2, 3, 4, 5] and {t for _, t, _ in seen} == {5}
    # row i is checked after chunk ceil(i/2) was read and before the next one: never all at once
    assert [c for _, _, c in seen] == [1, 1, 2, 2, 3]
    reads = [m.group(1) for s in statements if (m := ROW_READ.match(s))]
    assert len(reads) == 4 and set(reads) <= {"2", "?"}  # the fourth read finds the end


def test_the_audit_still_finds_every_kind_of_problem_while_streaming(reg, monkeypatch):
    monkeypatch.setattr(scanmod, "CHUNK", 2)
    root = reg.assets_root
    (root / "docs/item1.txt").write_text("changed bytes")  # file_changed
    (root / "docs/item2.txt").unlink()  # missing_file
    reg.sidecar_path_for("docs/item3.txt").unlink()  # missing_sidecar
    (root / "docs/stray.txt").write_text("nobody registered me")  # unregistered_file
    reg.sidecar_path_for("docs/ghost.txt").write_text("{}")  # orphan_sidecar (no row, no file)
    report = audit_sidecars(reg)
    found = {(f["kind"], f["path"]) for f in report["findings"]}
    assert found == {("file_changed", "docs/item1.txt"), ("missing_file", "docs/item2.txt"),
                     ("missing_sidecar", "docs/item3.txt"), ("unregistered_file", "docs/stray.txt"),
                     ("orphan_sidecar", "docs/ghost.txt.asset.json")}
    # a file moved by hand is followed, not reported missing
    (root / "docs/moved").mkdir()
    (root / "docs/item4.txt").rename(root / "docs/moved/item4.txt")
    fixed = audit_sidecars(reg, fix=True)
    assert ("missing_file", "docs/item4.txt") in {(f["kind"], f["path"]) for f in fixed["findings"] if f["fixed"]}
    assert reg.list_assets(text="moved/item4")[0]["path"] == "docs/moved/item4.txt"


def test_scan_unregistered_keeps_only_what_has_no_row(reg, monkeypatch):
    monkeypatch.setattr(scanmod, "CHUNK", 2)  # several lookups per folder
    root = reg.assets_root
    (root / "docs/stray.txt").write_text("no row")
    reg.sidecar_path_for("docs/ghost.txt").write_text("{}")
    (root / "docs/item0.txt").unlink()  # a row without its file: its sidecar has a row
    full = scan_assets_root(reg)
    lean = scan_unregistered(reg)
    assert set(full.files) == {f"docs/item{i}.txt" for i in (1, 2, 3, 4)} | {"docs/stray.txt"}
    assert set(lean.files) == {"docs/stray.txt"} and set(lean.sidecars) == {"docs/ghost.txt"}
    assert lean.files["docs/stray.txt"] == root / "docs/stray.txt"
    assert set(rows_without_file(reg)) == {"docs/item0.txt"}


def test_rebuild_registers_only_unregistered_files_when_streaming(reg, monkeypatch):
    monkeypatch.setattr(scanmod, "CHUNK", 2)
    (reg.assets_root / "docs/stray.txt").write_text("no row")
    summary = rebuild_from_disk(reg)
    assert [r["path"] for r in summary["registered"]] == ["docs/stray.txt"] and reg.count() == 6
    (reg.assets_root / "docs/item0.txt").unlink()
    assert [r["path"] for r in rebuild_from_disk(reg, remove_stale=True)["removed_stale"]] == ["docs/item0.txt"]
    assert reg.count() == 5


def test_the_cli_progress_bar_draws_on_stderr(capsys):
    with ProgressBar(True) as bar:
        bar.update(500, 2000)
        bar.update(2000, 2000)
    err = capsys.readouterr().err
    assert "audit" in err and "2.00k/2.00k" in err
    with ProgressBar(False) as quiet:
        quiet.update(1, 1)
    assert capsys.readouterr().err == ""


def test_memory_of_the_audit_is_bounded_by_a_chunk_not_the_registry(reg, monkeypatch):
    """Records alive while the audit runs: at most one chunk's (the old audit held every row)."""
    monkeypatch.setattr(scanmod, "CHUNK", 2)
    alive: list[int] = []
    made = 0
    real_public = auditmod.Records.public

    def counting_public(self, rec):
        nonlocal made
        made += 1
        return real_public(self, rec)

    def progress(done: int, total: int) -> None:
        alive.append(made - done)  # records decoded but not yet checked

    monkeypatch.setattr(auditmod.Records, "public", counting_public)
    monkeypatch.setattr(auditmod, "PROGRESS_EVERY", 1)
    audit_sidecars(reg, progress=progress)
    assert made == 5 and max(alive) <= 1, alive
    assert Path(reg.assets_root).is_dir()
