"""Package discovery with the import-name mapping of pyproject.toml's ``package-dir``.

``widgets/`` installs as ``comfyvn_widgets`` and ``server_ext/`` as ``comfyvn_server_ext``
(with every subpackage); all other metadata lives in pyproject.toml.
"""

from setuptools import find_packages, setup

MAPPING = {"comfyvn": "comfyvn", "widgets": "comfyvn_widgets", "server_ext": "comfyvn_server_ext"}

packages = []
for folder, name in MAPPING.items():
    for pkg in find_packages(include=[folder, f"{folder}.*"]):
        packages.append(name + pkg[len(folder):])

setup(packages=packages)
