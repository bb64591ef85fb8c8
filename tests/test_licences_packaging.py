"""The wheel ships the licence texts and the ``comfyvn-licences`` console script (issue 17)."""

from __future__ import annotations

import zipfile

from tests.test_packaging import _run, installed, wheel  # noqa: F401  (module-scoped fixtures)

TEXTS = ["apache-2.0.txt", "cc-by-4.0.txt", "cc-by-sa-4.0.txt", "cc0-1.0.txt", "creativeml-openrail-m.txt", "mit.txt",
         "openrail++.txt", "SOURCES.md"]


def test_wheel_ships_the_licence_texts(wheel):  # noqa: F811
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"comfyvn/licences/texts/{t}" for t in TEXTS} <= names


def test_installed_cli_gates_and_writes_a_manifest_with_the_shipped_texts(installed, tmp_path):  # noqa: F811
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = str(installed / "comfyvn-licences")
    refused = _run([cli, "check", "--workspace", "ws"], elsewhere)
    assert refused.returncode == 2 and "is not a comfyvn workspace" in refused.stderr
    assert list(elsewhere.iterdir()) == []  # nothing created
    seed = _run([str(installed / "python"), "-c", (
        "from comfyvn.config import init_workspace, workspace\n"
        "from comfyvn.studio.core.asset_registry import AssetRegistry\n"
        "ws = init_workspace(workspace('ws'))\n"
        "(ws.root / 'a.png').write_bytes(b'a')\n"
        "AssetRegistry('p', ws=ws, make_thumbnails=False).register_file(str(ws.root / 'a.png'), 'cgs',"
        " license_tag='cc-by-sa-4.0')\n")],
        elsewhere)
    assert seed.returncode == 0, seed.stderr
    check = _run([cli, "check", "--workspace", "ws", "--project", "p", "--use", "commercial"], elsewhere)
    assert check.returncode == 0 and "OK: nothing blocked or unknown" in check.stdout, check.stderr
    manifest = _run([cli, "manifest", "--workspace", "ws", "--project", "p", "--format", "md"], elsewhere)
    assert manifest.returncode == 0, manifest.stderr
    assert "BY-SA Compatible License means a license listed at" in manifest.stdout  # the shipped full text
