"""The dashboard notebooks run in a real kernel (as in JupyterLab or Voila) and fail readably."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def execute(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for var, sub in (("JUPYTER_RUNTIME_DIR", "rt"), ("IPYTHONDIR", "ipy")):
        (tmp_path / sub).mkdir(exist_ok=True)
        os.environ[var] = str(tmp_path / sub)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def widget_texts(nb: nbformat.NotebookNode) -> str:
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return json.dumps([m.get("state", {}) for m in state.values()], ensure_ascii=False)


def test_workbench_notebook_renders_the_four_dashboards(registry, seeded, tmp_path, monkeypatch):
    nb = execute("workbench", tmp_path)
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error" or o.get("name") == "stderr"]
    assert any(WIDGET_VIEW in o.get("data", {}) for o in outputs)
    texts = widget_texts(nb)
    for title in ("Asset gallery", "Ingest queue", "Sidecar enforcer", "Hook monitor"):
        assert title in texts
    assert "could not start" not in texts
    assert "Lettre d'amour" in texts  # a tile of the seeded workspace


def test_a_broken_config_becomes_readable_messages_and_the_rest_still_works(ws, tmp_path):
    ws.config_file.write_text('{"features": {"enable_asset_ingest": "yes"}}', encoding="utf-8")
    nb = execute("workbench", tmp_path)
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    texts = widget_texts(nb)
    # the store's location is a setting too (store.url), so the hook monitor, which reads the event
    # log, names the broken file like the others instead of guessing which database to watch
    for title in ("asset gallery", "ingest queue", "sidecar enforcer", "licences", "library", "hook monitor"):
        assert f"The {title} could not start." in texts
    assert texts.count("features.enable_asset_ingest must be true or false") == 6
    assert "Traceback" not in texts


def test_a_folder_that_is_not_a_workspace_is_named_not_created(tmp_path, monkeypatch):
    """A relative COMFYVN_HOME (the kernel runs in notebooks/) or a typo: a clear message, no new workspace."""
    monkeypatch.setenv("COMFYVN_HOME", str(tmp_path / "typo"))
    nb = execute("workbench", tmp_path)
    texts = widget_texts(nb)
    assert "no comfyvn workspace here" in texts and f"{tmp_path / 'typo'} is not a comfyvn workspace" in texts
    assert "comfyvn-workbench" in texts
    assert not (tmp_path / "typo").exists()
    monkeypatch.setenv("COMFYVN_HOME", "not-a-workspace")
    texts = widget_texts(execute("gallery", tmp_path))
    assert f"{NOTEBOOKS / 'not-a-workspace'} is not a comfyvn workspace" in texts
    assert "relative path not-a-workspace is taken from the working folder" in texts
    assert not (NOTEBOOKS / "not-a-workspace").exists()
