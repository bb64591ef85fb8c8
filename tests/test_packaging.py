"""The distribution installs the three import packages and the auto-enable file for Jupyter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_regular_install_enables_the_extension_without_flags(wheel, tmp_path):
    """A non-editable install puts the enable file under etc/jupyter, and a plain server loads us."""
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-warn-script-location",
                    "--prefix", str(prefix), str(wheel)], check=True, capture_output=True, timeout=300)
    site = next(prefix.glob("lib/python*/site-packages"))
    assert (prefix / "etc/jupyter/jupyter_server_config.d/comfyvn_server_ext.json").is_file()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    env = dict(os.environ)
    env.update(PYTHONPATH=str(site), JUPYTER_CONFIG_PATH=str(prefix / "etc/jupyter"), COMFYVN_HOME=str(workspace),
               JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), IPYTHONDIR=str(tmp_path / "ipy"))
    env.pop("JUPYTER_TOKEN", None)
    # a separate, empty cwd so the repo checkout cannot shadow the installed packages
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", "--port=0",
                             "--allow-root", "--IdentityProvider.token=packaging-test"],
                            cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "is running at" in line or "http://127.0.0.1:" in line:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    log = "".join(lines)
    assert "comfyvn_server_ext | extension was successfully loaded" in log, log
    assert str(site) in _imported_from(env, workspace), "the installed copy must be the one loaded"


def _imported_from(env: dict, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-c", "import comfyvn_server_ext; print(comfyvn_server_ext.__file__)"],
                         env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    return out.stdout
