"""Workspace paths, the config file and feature flags.

A workspace is one folder (``COMFYVN_HOME``, default: the current folder) holding
``config/comfyvn.json``, ``data/``, ``cache/`` and ``logs/``.  Every setting is read
through :func:`get_setting` / :func:`feature_enabled`, which re-read the file when its
modification time changes, so a flag flipped on disk is seen without a restart.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Misconfigured, NotFound
from .logs import setup_logging  # noqa: F401  (re-export)

DEFAULTS_FILE = Path(__file__).with_name("defaults.json")


class ConfigError(Misconfigured, ValueError):
    """The workspace config file is malformed; the message names the file and the problem."""


class NotAWorkspaceError(NotFound, FileNotFoundError):
    """A folder given as a workspace holds no workspace (and nobody asked to create one)."""


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace folder."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config" / "comfyvn.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "comfyvn.sqlite3"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "ingest" / "staging"

    @property
    def assets_root(self) -> Path:
        return self.data_dir / "assets"

    @property
    def trash_dir(self) -> Path:
        return self.data_dir / "trash"

    @property
    def thumbnails_dir(self) -> Path:
        return self.cache_dir / "thumbnails"

    @property
    def dedup_cache_file(self) -> Path:
        return self.cache_dir / "ingest" / "dedup_cache.json"

    @property
    def queue_state_file(self) -> Path:
        return self.data_dir / "ingest" / "queue_state.json"

    def ensure(self) -> Workspace:
        for d in (self.config_file.parent, self.data_dir, self.cache_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self


def workspace(root: str | os.PathLike[str] | None = None) -> Workspace:
    """The workspace selected by ``root``, else ``COMFYVN_HOME``, else the current folder.

    A relative path is resolved against this process's working folder (launchers pass
    ``COMFYVN_HOME`` on to servers and kernels as an absolute path).
    """
    chosen = root if root is not None else os.environ.get("COMFYVN_HOME") or os.getcwd()
    return Workspace(Path(chosen).expanduser().resolve())


def is_workspace(ws: Workspace) -> bool:
    """True when the folder holds a workspace (its config file or its database)."""
    return ws.config_file.is_file() or ws.db_path.is_file()


def existing_workspace(root: str | os.PathLike[str] | None = None, *,
                       hint: str = "pass --workspace DIR or set COMFYVN_HOME") -> Workspace:
    """The workspace at ``root`` (see :func:`workspace`); creates nothing.

    A folder that is not a workspace is refused with :class:`NotAWorkspaceError`: a tool
    pointed at a typo'd path would otherwise create an empty workspace there and report that
    all is well.  ``hint`` tells the person what to do instead.
    """
    ws = workspace(root)
    if not is_workspace(ws):
        given = os.environ.get("COMFYVN_HOME", "") if root is None else str(root)
        where = (f" (the relative path {given} is taken from the working folder {os.getcwd()})"
                 if given and not Path(given).expanduser().is_absolute() else "")
        raise NotAWorkspaceError(f"{ws.root} is not a comfyvn workspace (no config/comfyvn.json){where}; {hint}")
    return ws


def open_existing_workspace(root: str | os.PathLike[str] | None = None, *, create: bool = False,
                            hint: str = "pass --workspace DIR or set COMFYVN_HOME") -> Workspace:
    """:func:`existing_workspace` with its folders completed; ``create`` makes a new one instead of refusing."""
    return init_workspace(workspace(root) if create else existing_workspace(root, hint=hint))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _check_types(path: Path, data: dict[str, Any], defaults: dict[str, Any], prefix: str) -> None:
    """Settings that the shipped defaults know must keep their type (unknown keys are allowed)."""
    for key, value in data.items():
        if key not in defaults:
            continue
        default, where = defaults[key], f"{prefix}{key}"
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: '{where}' must be an object, got {json.dumps(value)}")
            _check_types(path, value, default, where + ".")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: {where} must be true or false, got {json.dumps(value)}")
        elif value is None or default is None:
            continue
        elif isinstance(default, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{path}: {where} must be a number, got {json.dumps(value)}")
        elif not isinstance(value, type(default)):
            raise ConfigError(f"{path}: {where} must be {_type_name(default)}, got {json.dumps(value)}")


MAX_DEPTH = 32  # deeper nesting is no config anyone meant to write (and would overflow the stack)


def _check_depth(path: Path, data: Any) -> None:
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _validate(path: Path, data: Any) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object, got {type(data).__name__}")
    _check_depth(path, data)
    for section in ("features", "ingest", "registry", "hooks"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{path}: '{section}' must be an object, got {type(data[section]).__name__}")
    for name, value in (data.get("features") or {}).items():
        if not isinstance(value, bool):
            raise ConfigError(
                f"{path}: features.{name} must be true or false, got {json.dumps(value)}"
            )
    _check_types(path, data, _DEFAULTS, "")


def _read_file(path: Path) -> dict[str, Any]:
    """Parse and validate the workspace config file (ConfigError names the file and the problem)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels") from None
    _validate(path, raw)
    return raw


_DEFAULTS: dict[str, Any] = json.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))
_cache: dict[Path, tuple[tuple[int, int, int, int], dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def _merged(ws: Workspace | None) -> dict[str, Any]:
    """The cached merged config itself (never handed out: callers get copies of what they read)."""
    ws = ws or workspace()
    path = ws.config_file
    try:
        st = path.stat()
    except FileNotFoundError:
        return _DEFAULTS
    # an atomic replace changes the inode, an in-place edit the mtime/ctime or size
    key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    with _cache_lock:
        hit = _cache.get(path)
        if hit and hit[0] == key:
            return hit[1]
    raw = _read_file(path)
    merged = _deep_merge(_DEFAULTS, raw)
    with _cache_lock:
        _cache[path] = (key, merged)
    return merged


def load_config(ws: Workspace | None = None) -> dict[str, Any]:
    """The merged config (shipped defaults overlaid by the workspace file), a copy the caller owns.

    Re-read whenever the file's mtime or size changes.  A missing file means defaults;
    a malformed one raises :class:`ConfigError` naming the file and the problem.
    """
    return copy.deepcopy(_merged(ws))


def get_setting(dotted: str, default: Any = None, ws: Workspace | None = None) -> Any:
    """Read one setting by dotted path, e.g. ``get_setting("ingest.rate_limit_rps")``.

    Only the value read is copied (a dict or list the caller may change), not the whole config:
    this runs on every request and every pulled chunk group."""
    node: Any = _merged(ws)
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return copy.deepcopy(node) if isinstance(node, dict | list) else node


def shipped_default(dotted: str) -> Any:
    """A setting's value in the shipped ``defaults.json`` (the only place defaults are written);
    KeyError when it has none."""
    node: Any = _DEFAULTS
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{dotted} has no shipped default (comfyvn/config/defaults.json)")
        node = node[part]
    return copy.deepcopy(node)


def default_project(ws: Workspace | None = None) -> str:
    """``registry.default_project``: the project used when a caller names none."""
    value = get_setting("registry.default_project", None, ws)
    return value if isinstance(value, str) and value else str(shipped_default("registry.default_project"))


def max_remote_bytes(ws: Workspace | None = None) -> int:
    """``ingest.max_remote_bytes``: the largest remote pull (and, by default, upload) in bytes."""
    value = get_setting("ingest.max_remote_bytes", None, ws)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    return int(shipped_default("ingest.max_remote_bytes"))


STORE_URL_ENV = "COMFYVN_STORE_URL"


def store_url(ws: Workspace | None = None) -> str:
    """``store.url`` (env ``COMFYVN_STORE_URL`` wins): ``sqlite:///ABSOLUTE/PATH`` or
    ``postgresql://user@host:port/db``; empty (the default) is the workspace's own SQLite file.
    Anything else raises :class:`ConfigError` naming the setting."""
    ws = ws or workspace()
    env = os.environ.get(STORE_URL_ENV, "").strip()
    value = env or get_setting("store.url", "", ws)
    where = f"the environment variable {STORE_URL_ENV}" if env else f"{ws.config_file}: store.url"
    if value is None or value == "":
        return "sqlite://" + ws.db_path.as_posix()
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {json.dumps(value)}")
    value = value.strip()
    if value.startswith("sqlite://"):
        path = value[len("sqlite://"):]
        if not path.startswith("/"):
            raise ConfigError(f"{where} must name an absolute path (sqlite:///abs/path), got {value!r}")
        return value
    scheme, sep, rest = value.partition("://")
    if scheme in ("postgresql", "postgres") and sep and rest.strip("/"):
        return "postgresql://" + rest
    shown = value if "@" not in value else f"{scheme}{sep}...@{value.rpartition('@')[2]}"  # no password echoed
    raise ConfigError(f"{where} must be sqlite:///ABSOLUTE/PATH or postgresql://user@host:port/db, got {shown!r}")


def feature_enabled(name: str, ws: Workspace | None = None) -> bool:
    """The one way to read a feature flag (``features.<name>``)."""
    flags = _merged(ws).get("features", {})
    if name not in flags and name not in _DEFAULTS["features"]:
        raise KeyError(f"unknown feature flag {name!r}; known: {sorted(_DEFAULTS['features'])}")
    return bool(flags.get(name, False))


def set_feature(name: str, value: bool, ws: Workspace | None = None) -> None:
    """Flip a feature flag in the workspace config file (atomically)."""
    from ..fsutil import atomic_write_json

    ws = ws or workspace()
    path = ws.config_file
    current: dict[str, Any] = _read_file(path) if path.exists() else {}
    current.setdefault("features", {})[name] = bool(value)
    atomic_write_json(path, current)


def update_config(patch: dict[str, Any], ws: Workspace | None = None) -> None:
    """Deep-merge ``patch`` into the workspace config file (atomically)."""
    from ..fsutil import atomic_write_json

    ws = ws or workspace()
    path = ws.config_file
    current = _read_file(path) if path.exists() else {}
    merged = _deep_merge(current, patch)
    _validate(path, merged)
    atomic_write_json(path, merged)


def init_workspace(ws: Workspace | None = None) -> Workspace:
    """Create the workspace folders and, if absent, a config file with the shipped defaults."""
    from ..fsutil import atomic_write_json

    ws = (ws or workspace()).ensure()
    if not ws.config_file.exists():
        atomic_write_json(ws.config_file, _DEFAULTS)
    return ws
