"""Editable installs: the wheel's import names served from this checkout's folders.

An editable install (``pip install -e .``) puts this folder on ``sys.path`` and imports this
module from a ``.pth`` file (see ``etc/hatch/hatch_build.py``).  The finder maps the three
import names onto the checkout, with the same renaming as the regular wheel:
``widgets/`` is ``comfyvn_widgets`` and ``server_ext/`` is ``comfyvn_server_ext``.  Hatchling's
own editable mode cannot rename a folder (it only strips a prefix), hence this finder.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
PACKAGES = {"comfyvn": CHECKOUT / "comfyvn", "comfyvn_widgets": CHECKOUT / "widgets",
            "comfyvn_server_ext": CHECKOUT / "server_ext"}


class CheckoutFinder:
    """A meta-path finder for the top-level packages of the checkout (submodules load normally)."""

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        folder = PACKAGES.get(name)
        if folder is None or not (folder / "__init__.py").is_file():
            return None
        return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


def install() -> None:
    if CheckoutFinder not in sys.meta_path:
        sys.meta_path.append(CheckoutFinder)


install()
