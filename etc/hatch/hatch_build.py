"""Hatchling build hook: an editable install gets a ``.pth`` file that loads the checkout finder.

``pyproject.toml`` maps ``widgets/`` to ``comfyvn_widgets`` and ``server_ext/`` to
``comfyvn_server_ext`` with ``sources``; hatchling's editable mode cannot rename folders, so
editable builds use ``dev-mode-dirs`` (``etc/editable`` on ``sys.path``) and this hook adds
the ``.pth`` line that imports ``etc/editable/_comfyvn_workbench_editable.py``.  Regular wheels
are not touched.  Editable wheels still carry the shared data (the server extension's
auto-enable file), which is why the project builds with hatchling.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

FINDER_MODULE = "_comfyvn_workbench_editable"


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version != "editable":
            return
        self._tmp = Path(tempfile.mkdtemp(prefix="comfyvn-editable-"))
        finder_dir = Path(self.root, "etc", "editable").resolve()
        pth = self._tmp / f"{FINDER_MODULE}.pth"
        # the directory first (site.py adds it to sys.path), then the line that imports the finder
        pth.write_text(f"{finder_dir}\nimport {FINDER_MODULE}\n", encoding="utf-8")
        build_data["force_include_editable"][str(pth)] = f"{FINDER_MODULE}.pth"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
