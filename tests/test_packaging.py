"""The wheel carries the three import packages, the notebooks and the auto-enable file for Jupyter.

The wheel installed into a fresh venv runs its runbooks and its launcher from any folder; an
editable install enables the server extension too.  That a plain `jupyter server` then loads the
extension is proven end to end by tests/server/test_http_e2e.py (fresh venv, installed wheel).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv = VENV_BIN / "uv"
    cmd = [str(uv), "build", "--wheel", "--out-dir", str(out), str(REPO_ROOT)] if uv.exists() else [
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(REPO_ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (found,) = out.glob("comfyvn_workbench-*.whl")
    return found


def test_wheel_carries_packages_and_no_generic_top_level_names(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"comfyvn", "comfyvn_widgets", "comfyvn_server_ext"}
    assert "comfyvn/config/defaults.json" in names
    enable = [n for n in names if n.endswith("etc/jupyter/jupyter_server_config.d/comfyvn_server_ext.json")]
    assert enable, "the auto-enable file is missing from the wheel"
    data = json.loads(zipfile.ZipFile(wheel).read(enable[0]))
    assert data["ServerApp"]["jpserver_extensions"]["comfyvn_server_ext"] is True


def test_wheel_ships_the_notebooks_as_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n for n in names if n.startswith("comfyvn/notebooks/")}
    in_repo = {"comfyvn/notebooks/" + p.relative_to(REPO_ROOT / "notebooks").as_posix()
               for p in (REPO_ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts}
    assert shipped == in_repo
    assert "comfyvn/notebooks/workbench.ipynb" in shipped
    assert "comfyvn/notebooks/runbooks/inspect_queue.ipynb" in shipped


def _fresh_venv(root: Path) -> Path:
    """A new venv whose site-packages also sees the project's venv (the pinned stack, no download).

    The project's site-packages is a plain path entry, so the .pth files there (its own editable
    install) are not loaded: only what gets installed into the new venv provides comfyvn.
    """
    run = {"check": True, "capture_output": True, "timeout": 300}
    subprocess.run([str(VENV_BIN / "uv"), "venv", "--quiet", "--python", sys.executable, str(root)], **run)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               text=True, **run).stdout.strip())
    (site / "_project_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return python


def _install(python: Path, *spec: str) -> None:
    subprocess.run([str(VENV_BIN / "uv"), "pip", "install", "--quiet", "--no-deps", "--python", str(python), *spec],
                   check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with the wheel installed (a regular, non-editable install)."""
    python = _fresh_venv(tmp_path_factory.mktemp("wheel-install") / "venv")
    _install(python, str(wheel))
    return python.parent


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYVN_HOME", "COMFYVN_RUNBOOKS_DIR", "PYTHONPATH")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_installed_package_lists_and_runs_its_runbooks_from_any_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listing = _run([str(installed / "comfyvn-runbook"), "--list"], elsewhere)
    assert listing.returncode == 0, listing.stderr
    names = [ln.split()[0] for ln in listing.stdout.splitlines() if ln and not ln.startswith(" ")]
    assert names == ["enforce_sidecars", "inspect_queue", "licence_check", "release_job", "replay_archived_state",
                     "requeue_missing_staging", "snapshot_dedup_cache", "validate_system"]

    refused = _run([str(installed / "comfyvn-runbook"), "inspect_queue", "--workspace", "ws"], elsewhere)
    assert refused.returncode == 2 and "is not a comfyvn workspace" in refused.stderr
    assert list(elsewhere.iterdir()) == []

    ran = _run([str(installed / "comfyvn-runbook"), "inspect_queue", "--workspace", "ws", "--init"], elsewhere)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "VERDICT: OK — 0 jobs, none stuck" in ran.stdout
    (kept,) = (elsewhere / "ws" / "logs" / "runbooks").glob("*_inspect_queue.ipynb")
    assert "site-packages" in _run([str(installed / "python"), "-c", "import comfyvn; print(comfyvn.__file__)"],
                                   elsewhere).stdout


def test_installed_launcher_dry_start_from_a_temporary_folder(installed, tmp_path):
    launcher = str(installed / "comfyvn-workbench")
    refused = _run([launcher, "lab", "--dry-run"], tmp_path)
    assert refused.returncode == 2 and "is not a comfyvn workspace" in refused.stderr
    assert "--init" in refused.stderr and "comfyvn-workbench demo" in refused.stderr

    for mode in ("lab", "voila"):
        dry = _run([launcher, mode, "--workspace", "ws", "--init", "--dry-run", "--port", "8899"], tmp_path)
        assert dry.returncode == 0, dry.stderr
        lines = dict(ln.split(": ", 1) for ln in dry.stdout.splitlines() if ln.startswith(("workspace", "notebooks")))
        assert lines["workspace"].startswith(f"{tmp_path / 'ws'} (would create")
        if mode == "lab":  # JupyterLab works on copies in the workspace: a saved notebook never lands in site-packages
            served, copied_from = lines["notebooks"].removesuffix(")").split(" (copies of ")
            assert Path(served) == tmp_path / "ws" / "notebooks"
            notebooks = Path(copied_from)
        else:
            notebooks = Path(lines["notebooks"])
        assert notebooks.parts[-2:] == ("comfyvn", "notebooks") and "site-packages" in notebooks.parts
        assert (notebooks / "workbench.ipynb").is_file()
        assert f"COMFYVN_HOME={tmp_path / 'ws'} " in dry.stdout  # absolute, whatever was typed
        assert ("-m jupyterlab" if mode == "lab" else "-m voila") in dry.stdout
    demo = _run([launcher, "demo", "--voila", "--dry-run"], tmp_path)
    assert demo.returncode == 0 and f"workspace: {tmp_path / 'demo-workspace'} (would seed" in demo.stdout
    assert list(tmp_path.iterdir()) == []  # a dry run creates nothing


def test_editable_install_enables_the_server_extension(tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    _install(python, "-e", str(REPO_ROOT))
    prefix = python.parent.parent
    enable = prefix / "etc/jupyter/jupyter_server_config.d/comfyvn_server_ext.json"
    assert json.loads(enable.read_text())["ServerApp"]["jpserver_extensions"]["comfyvn_server_ext"] is True
    listed = _run([str(python), "-m", "jupyter_server.extension.serverextension", "list"], tmp_path)
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    section = text.split(f"Config dir: {prefix / 'etc' / 'jupyter'}")[1].split("Config dir:")[0]
    assert re.search(r"comfyvn_server_ext enabled", section) and re.search(r"comfyvn_server_ext\s+OK", section)
    # the renamed packages come from the checkout; the folder names are not importable
    probe = _run([str(python), "-c", textwrap.dedent("""
        import importlib.util, comfyvn_widgets, comfyvn_server_ext
        from comfyvn.launcher import notebooks_dir
        print(comfyvn_widgets.__file__, comfyvn_server_ext.__file__, notebooks_dir())
        print(importlib.util.find_spec("widgets"), importlib.util.find_spec("server_ext"))
    """)], tmp_path)
    assert probe.returncode == 0, probe.stderr
    paths, missing = probe.stdout.splitlines()
    assert paths.split() == [str(REPO_ROOT / "widgets" / "__init__.py"), str(REPO_ROOT / "server_ext" / "__init__.py"),
                             str(REPO_ROOT / "notebooks")]
    assert missing == "None None"


def test_launcher_prints_the_url_once_the_server_answers_and_stops_it(tmp_path):
    """The README's run path: the URL (with the venv's activate line and the exports) appears only
    when the server answers; no deprecation noise; SIGTERM stops the launcher and its server."""
    import httpx

    env = {k: v for k, v in os.environ.items() if k not in ("COMFYVN_HOME", "PYTHONWARNINGS")}
    env.update(JUPYTER_TOKEN="launcher-test-token", JUPYTER_CONFIG_DIR=str(tmp_path / "jc"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jr"), JUPYTER_DATA_DIR=str(tmp_path / "jd"))
    log = tmp_path / "launcher.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(VENV_BIN / "comfyvn-workbench"), "lab", "--workspace", "ws", "--init",
                                 "--port", "0"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not (found := re.search(r"export JUPYTER_TOKEN=(\S+) BASE=(\S+)", log.read_text(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        token, base = found.groups()
        assert token == "launcher-test-token" and not base.endswith("/")  # "$BASE/assets" as the docs write it
        auth = {"Authorization": f"token {token}"}
        assert httpx.get(f"{base}/assets", headers=auth, timeout=10).status_code == 200
        text = log.read_text(errors="replace")
        assert f'AUTH="Authorization: token {token}"' in text
        assert f"open: {base}/lab/tree/workbench.ipynb?token={token}" in text
        assert "Run All Cells" in text
        rendered = f"{base}/voila/render/workbench.ipynb?token={token}"
        assert rendered in text  # the dashboards without code, served by the same server
        assert httpx.get(rendered, timeout=120).status_code == 200
        assert f"source {Path(sys.prefix) / 'bin' / 'activate'}" in text
        assert f"comfyvn: serving workspace {tmp_path / 'ws'}" in text
        assert "ServerApp.token config is deprecated" not in text
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0 or proc.returncode is not None
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/api/status", timeout=3)


def test_lab_copies_only_the_notebooks_the_workspace_lacks(tmp_path):
    from comfyvn.launcher import copy_missing_notebooks

    shipped, mine = tmp_path / "shipped", tmp_path / "ws" / "notebooks"
    (shipped / "runbooks").mkdir(parents=True)
    (shipped / "workbench.ipynb").write_text("shipped workbench")
    (shipped / "runbooks" / "r.ipynb").write_text("shipped runbook")
    mine.mkdir(parents=True)
    (mine / "workbench.ipynb").write_text("my edited workbench")
    copy_missing_notebooks(shipped, mine)
    assert (mine / "workbench.ipynb").read_text() == "my edited workbench"  # a user's edits are kept
    assert (mine / "runbooks" / "r.ipynb").read_text() == "shipped runbook"
