"""Fixtures for the runbook tests.

* ``kernel_env`` (module, autouse): private Jupyter config/data/runtime folders and IPYTHONDIR,
  with a ``python3`` kernelspec pointing at this interpreter, so papermill runs the runbooks
  on the venv's ipykernel and nothing of the user's Jupyter setup leaks in.
* ``runbooks``: a :class:`rbhelpers.Runbooks` writing executed notebooks to a temp folder.
"""

from __future__ import annotations

import json
import sys

import pytest
from rbhelpers import Runbooks


@pytest.fixture(scope="module", autouse=True)
def kernel_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("jupyter")
    dirs = {var: base / name for var, name in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                                               ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"))}
    spec_dir = dirs["JUPYTER_DATA_DIR"] / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (comfyvn venv)", "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        for var, path in dirs.items():
            path.mkdir(parents=True, exist_ok=True)
            mp.setenv(var, str(path))
        mp.delenv("JUPYTER_PATH", raising=False)
        mp.delenv("JUPYTER_TOKEN", raising=False)
        yield dirs


@pytest.fixture(scope="module")
def runbooks(tmp_path_factory) -> Runbooks:
    return Runbooks(tmp_path_factory.mktemp("executed"))


