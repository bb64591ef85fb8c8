"""The wheel carries the three import packages and the auto-enable file for Jupyter.

That a plain `jupyter server` then loads the extension is proven end to end by
tests/server/test_http_e2e.py (fresh venv, installed wheel, no flags).
"""

from __future__ import annotations

import json
import subprocess
import sys
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
