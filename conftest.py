"""Top-level pytest configuration (pytest-jupyter's server fixtures are loaded here)."""

pytest_plugins = ["pytest_jupyter.jupyter_server"]
