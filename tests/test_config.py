"""Workspace selection, shipped defaults, live flags, malformed config files and logging."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfyvn.config import (
    ConfigError,
    feature_enabled,
    get_setting,
    init_workspace,
    load_config,
    set_feature,
    setup_logging,
    update_config,
    workspace,
)
from comfyvn.config.logs import log_file

REPO = Path(__file__).resolve().parents[1]


def test_comfyvn_home_selects_the_workspace(tmp_path, monkeypatch):
    home = tmp_path / "studio"
    monkeypatch.setenv("COMFYVN_HOME", str(home))
    ws = init_workspace()
    assert ws.root == home.resolve()
    for sub in ("config/comfyvn.json", "data", "cache", "logs"):
        assert (home / sub).exists(), sub
    assert ws.db_path.parent == home.resolve() / "data"
    assert ws.thumbnails_dir == home.resolve() / "cache" / "thumbnails"


def test_without_comfyvn_home_the_current_folder_is_the_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("COMFYVN_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert workspace().root == tmp_path.resolve()
    assert workspace(tmp_path / "other").root == (tmp_path / "other").resolve()


def test_shipped_defaults(ws):
    assert feature_enabled("enable_asset_ingest", ws) is False
    assert feature_enabled("require_remote_terms_ack", ws) is True
    written = json.loads(ws.config_file.read_text())
    assert written["features"] == {"enable_asset_ingest": False, "require_remote_terms_ack": True}
    shipped = json.loads((REPO / "comfyvn" / "config" / "defaults.json").read_text())  # the one defaults file
    assert shipped["features"]["enable_asset_ingest"] is False
    assert shipped["features"]["require_remote_terms_ack"] is True
    assert get_setting("ingest.rate_limit_rps", None, ws) == pytest.approx(0.33)
    assert get_setting("no.such.setting", "fallback", ws) == "fallback"


def test_a_missing_config_file_means_defaults(tmp_path):
    ws = workspace(tmp_path / "empty")
    assert feature_enabled("enable_asset_ingest", ws) is False
    assert load_config(ws)["registry"]["thumbnail_sizes"] == [256, 512]


def test_flags_are_seen_without_a_restart(ws):
    assert feature_enabled("enable_asset_ingest", ws) is False
    set_feature("enable_asset_ingest", True, ws)
    assert feature_enabled("enable_asset_ingest", ws) is True
    # a hand edit in place (same inode), as an editor would do it
    data = json.loads(ws.config_file.read_text())
    data["features"]["enable_asset_ingest"] = False
    ws.config_file.write_text(json.dumps(data))
    assert feature_enabled("enable_asset_ingest", ws) is False


def test_quick_same_size_edits_are_not_missed(ws):
    for value in (0.5, 0.7, 0.9, 0.1):  # same length each time, written back to back
        update_config({"ingest": {"rate_limit_rps": value}}, ws)
        assert get_setting("ingest.rate_limit_rps", None, ws) == value


def test_a_flag_flipped_by_another_process_is_seen(ws, subprocess_env):
    assert feature_enabled("enable_asset_ingest", ws) is False
    subprocess.run([sys.executable, "-c", "from comfyvn.config import set_feature;"
                    "set_feature('enable_asset_ingest', True)"], env=subprocess_env, check=True)
    assert feature_enabled("enable_asset_ingest", ws) is True


def test_unknown_flag_is_an_error(ws):
    with pytest.raises(KeyError, match="unknown feature flag 'enable_teleport'"):
        feature_enabled("enable_teleport", ws)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"features": {"enable_asset_ingest": tru}}', "not valid JSON (line 1"),
        ('{"features": ', "not valid JSON"),
        ("[1, 2]", "top level must be a JSON object"),
        ('{"features": {"enable_asset_ingest": "yes"}}', 'features.enable_asset_ingest must be true or false, got "yes"'),
        ('{"features": []}', "'features' must be an object"),
        ('{"ingest": {"rate_limit_rps": "fast"}}', 'ingest.rate_limit_rps must be a number, got "fast"'),
        ('{"ingest": {"allowed_source_roots": "/data"}}', "ingest.allowed_source_roots must be a list"),
        ('{"ingest": {"providers": {"civitai": "https://x"}}}', "'ingest.providers.civitai' must be an object"),
        ('{"plugin": ' + '{"a": ' * 40 + "1" + "}" * 41, "nested deeper than 32 levels"),
    ],
)
def test_malformed_config_names_the_file_and_the_problem(ws, text, problem):
    ws.config_file.write_text(text)
    for read in (lambda: feature_enabled("enable_asset_ingest", ws), lambda: get_setting("ingest", None, ws),
                 lambda: set_feature("enable_asset_ingest", True, ws)):
        with pytest.raises(ConfigError) as err:
            read()
        assert str(ws.config_file) in str(err.value)
        assert problem in str(err.value)
    assert ws.config_file.read_text() == text  # a failed write leaves the file as it was


def test_non_utf8_config_is_reported(ws):
    ws.config_file.write_bytes(b'{"features": {"enable_asset_ingest": "\xff"}}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(ws)


def test_fixing_the_file_recovers_without_restart(ws):
    ws.config_file.write_text("{oops")
    with pytest.raises(ConfigError):
        feature_enabled("enable_asset_ingest", ws)
    ws.config_file.write_text('{"features": {"enable_asset_ingest": true}}')
    assert feature_enabled("enable_asset_ingest", ws) is True
    assert feature_enabled("require_remote_terms_ack", ws) is True  # defaults still merged in


def test_update_config_merges_and_rejects_bad_patches(ws):
    update_config({"ingest": {"providers": {"civitai": {"base_url": "http://127.0.0.1:9"}}}}, ws)
    assert get_setting("ingest.providers.civitai.base_url", None, ws) == "http://127.0.0.1:9"
    assert get_setting("ingest.providers.huggingface.base_url", None, ws) == "https://huggingface.co"
    before = ws.config_file.read_text()
    with pytest.raises(ConfigError, match="features.enable_asset_ingest must be true or false"):
        update_config({"features": {"enable_asset_ingest": 1}}, ws)
    assert ws.config_file.read_text() == before


@pytest.fixture
def restore_logging():
    logger = logging.getLogger("comfyvn")
    level = logger.level
    yield
    logger.setLevel(level)


def test_logging_writes_logs_server_log_at_the_env_level(ws, monkeypatch, restore_logging):
    monkeypatch.setenv("COMFYVN_LOG_LEVEL", "DEBUG")
    setup_logging(ws.logs_dir)
    assert log_file() == ws.logs_dir / "server.log"
    handler = next(h for h in logging.getLogger("comfyvn").handlers
                   if isinstance(h, logging.handlers.RotatingFileHandler))
    assert handler.maxBytes > 0 and handler.backupCount > 0
    logging.getLogger("comfyvn.studio.core.asset_registry").debug("debug line %d", 1)
    monkeypatch.setenv("COMFYVN_LOG_LEVEL", "warning")
    setup_logging(ws.logs_dir)
    logging.getLogger("comfyvn.studio.core.asset_registry").info("info line hidden")
    logging.getLogger("comfyvn.studio.core.asset_registry").warning("warning line shown")
    text = (ws.logs_dir / "server.log").read_text()
    assert "DEBUG comfyvn.studio.core.asset_registry" in text and "debug line 1" in text
    assert "info line hidden" not in text
    assert "warning line shown" in text


def test_logging_follows_the_workspace_without_duplicating_lines(tmp_path, restore_logging):
    a, b = init_workspace(workspace(tmp_path / "a")), init_workspace(workspace(tmp_path / "b"))
    setup_logging(a.logs_dir, "INFO")
    setup_logging(a.logs_dir, "INFO")
    logging.getLogger("comfyvn.test").info("to a")
    setup_logging(b.logs_dir, "INFO")
    logging.getLogger("comfyvn.test").info("to b")
    text_a, text_b = (a.logs_dir / "server.log").read_text(), (b.logs_dir / "server.log").read_text()
    assert text_a.count("to a") == 1 and "to b" not in text_a
    assert text_b.count("to b") == 1 and "to a" not in text_b


def test_registry_debug_logging_from_the_environment(ws, subprocess_env, tmp_path):
    src = tmp_path / "note.txt"
    src.write_text("hello")
    code = ("import sys; from comfyvn.studio.core.asset_registry import AssetRegistry;"
            "AssetRegistry('logs').register_file(sys.argv[1], 'docs')")
    env = dict(subprocess_env, COMFYVN_LOG_LEVEL="DEBUG")
    subprocess.run([sys.executable, "-c", code, str(src)], env=env, check=True)
    log_text = (ws.logs_dir / "server.log").read_text()
    assert "DEBUG comfyvn.studio.core.asset_registry" in log_text
    assert "hook on_asset_registered" in log_text and "note.txt" in log_text
    # the default level (INFO) keeps those payload lines out
    (ws.logs_dir / "server.log").unlink()
    env = {k: v for k, v in subprocess_env.items() if k != "COMFYVN_LOG_LEVEL"}
    src2 = tmp_path / "other.txt"
    src2.write_text("second file")
    subprocess.run([sys.executable, "-c", code, str(src2)], env=env, check=True)
    assert not (ws.logs_dir / "server.log").exists() or "DEBUG" not in (ws.logs_dir / "server.log").read_text()


def test_workspace_env_is_respected_by_child_processes(ws, subprocess_env):
    out = subprocess.run([sys.executable, "-c", "from comfyvn.config import workspace; print(workspace().root)"],
                         env=subprocess_env, check=True, capture_output=True, text=True, cwd=os.sep)
    assert Path(out.stdout.strip()) == ws.root


# ---------------------------------------------------------------------------------------- not a workspace
def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("COMFYVN_HOME", "PYTHONPATH")}


def test_existing_workspace_refuses_a_folder_that_is_not_one_and_creates_nothing(tmp_path, monkeypatch):
    from comfyvn.config import NotAWorkspaceError, existing_workspace, open_existing_workspace

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMFYVN_HOME", "demo-workspace")
    with pytest.raises(NotAWorkspaceError, match=r"relative path demo-workspace is taken from the working"):
        existing_workspace(hint="do this instead")
    with pytest.raises(NotAWorkspaceError, match="do this instead"):
        open_existing_workspace(tmp_path / "typo", hint="do this instead")
    assert list(tmp_path.iterdir()) == []
    made = open_existing_workspace(tmp_path / "new", create=True)
    assert made.config_file.is_file() and existing_workspace(tmp_path / "new") == made


@pytest.mark.parametrize("args", [["--dry-run", "--json"], ["--dry-run"], []])
def test_enforcer_cli_outside_a_workspace_refuses_and_creates_nothing(tmp_path, args):
    out = subprocess.run([sys.executable, str(REPO / "tools" / "assets_enforcer.py"), *args], cwd=tmp_path,
                         env=_cli_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout
    assert f"{tmp_path} is not a comfyvn workspace" in out.stderr and out.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_launcher_refuses_a_folder_that_is_not_a_workspace_unless_init(tmp_path):
    from comfyvn import launcher

    launcher_cmd = [sys.executable, "-m", "comfyvn.launcher"]
    refused = subprocess.run([*launcher_cmd, "voila", "--workspace", "typo"], cwd=tmp_path, env=_cli_env(),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and f"{tmp_path / 'typo'} is not a comfyvn workspace" in refused.stderr
    relative = subprocess.run([*launcher_cmd, "lab", "--init", "--dry-run"], cwd=tmp_path,
                              env={**_cli_env(), "COMFYVN_HOME": "ws"}, capture_output=True, text=True, timeout=120)
    assert relative.returncode == 0, relative.stderr
    assert f"COMFYVN_HOME={tmp_path / 'ws'} " in relative.stdout  # relative to where it was typed, passed on absolute
    assert list(tmp_path.iterdir()) == []
    plan = launcher.plan("voila", workspace(tmp_path), port=0)
    assert plan.env["COMFYVN_HOME"] == str(tmp_path) and plan.command[3].endswith("workbench.ipynb")
