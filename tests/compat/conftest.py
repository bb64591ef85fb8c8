"""The HTTP tests here reuse the server-extension fixtures of tests/server (one home for them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SERVER_TESTS = Path(__file__).resolve().parents[1] / "server"
sys.path.insert(0, str(_SERVER_TESTS))  # server_helpers, as tests/server/conftest.py imports it
_spec = importlib.util.spec_from_file_location("comfyvn_server_test_fixtures", _SERVER_TESTS / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

pytest_configure = _fixtures.pytest_configure
jp_server_config = _fixtures.jp_server_config
api = _fixtures.api
make_png = _fixtures.make_png
ingest_on = _fixtures.ingest_on
