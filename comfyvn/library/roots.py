"""Library roots: folders registered in place (setting ``library.roots``).

Each root is ``{"name", "path", "layout": "comfyui" | "plain", "sidecars": "beside" | "mirror"}``.
An asset of a root is a normal registry row whose ``path`` is ``@library/<root>/<rel>``: the
registry resolves it through :func:`in_place_path` (the file where it lies) and
:class:`comfyvn.registry.paths.AssetsRoot` (its sidecar: beside the file, or in a mirror inside
the workspace), and never moves or deletes the file.  Code that does not know the prefix sees a path inside the assets root that
does not exist, so it fails safe instead of touching a user's file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..config import ConfigError, Workspace, get_setting, workspace
from ..kinds import guess_type

IN_PLACE_PREFIX = "@library/"
MIRROR_DIR = ("data", "library", "sidecars")
LAYOUTS = ("comfyui", "plain")
SIDECAR_MODES = ("beside", "mirror")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# ComfyUI's models/ folders -> asset types (also A1111's names where they differ)
COMFYUI_FOLDERS: dict[str, str] = {
    "checkpoints": "checkpoints", "stable-diffusion": "checkpoints", "stable_diffusion": "checkpoints",
    "loras": "loras", "lora": "loras", "lycoris": "loras",
    "embeddings": "embeddings", "textual_inversion": "embeddings",
    "vae": "vae",
    "controlnet": "controlnet",
    "upscale_models": "upscale_models", "esrgan": "upscale_models",
}


@dataclass(frozen=True)
class LibraryRoot:
    name: str
    path: Path
    layout: str = "plain"
    sidecars: str = "mirror"

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "layout": self.layout, "sidecars": self.sidecars}


def parse_root(entry: object, index: int = 0) -> LibraryRoot:
    """One ``library.roots`` entry, checked (``ConfigError`` saying what is wrong)."""
    where = f"library.roots[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object with name, path, layout and sidecars")
    name, path = entry.get("name"), entry.get("path")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{where}.name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}.path must be a folder path")
    layout = entry.get("layout", "plain")
    sidecars = entry.get("sidecars", "mirror")
    if layout not in LAYOUTS:
        raise ConfigError(f"{where}.layout {layout!r} must be one of {', '.join(LAYOUTS)}")
    if sidecars not in SIDECAR_MODES:
        raise ConfigError(f"{where}.sidecars {sidecars!r} must be one of {', '.join(SIDECAR_MODES)}")
    resolved = Path(os.path.expandvars(path)).expanduser()
    if not resolved.is_absolute():
        raise ConfigError(f"{where}.path {path!r} must be absolute")
    return LibraryRoot(name, Path(os.path.realpath(resolved)), layout, sidecars)


def library_roots(ws: Workspace | None = None) -> list[LibraryRoot]:
    """The configured roots (duplicate names refused)."""
    ws = ws or workspace()
    try:  # the registry resolves every in-place path through here: one stat, not a config parse
        st = ws.config_file.stat()
        stamp: tuple = (str(ws.config_file), st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    except OSError:
        stamp = (str(ws.config_file), None)
    cached = _BY_FILE.get(stamp)
    if cached is not None:
        return list(cached)
    raw = get_setting("library.roots", [], ws) or []
    if not isinstance(raw, list):
        raise ConfigError("library.roots must be a list of {name, path, layout, sidecars}")
    key = json.dumps(raw, sort_keys=True)
    cached = _PARSED.get(key)
    if cached is not None:
        if len(_BY_FILE) > 256:
            _BY_FILE.clear()
        _BY_FILE[stamp] = cached
        return list(cached)
    roots = [parse_root(entry, i) for i, entry in enumerate(raw)]
    names = [r.name for r in roots]
    if len(set(names)) != len(names):
        raise ConfigError(f"library.roots names must be unique, got {names}")
    if len(_PARSED) > 64:
        _PARSED.clear()
        _BY_FILE.clear()
    _PARSED[key] = _BY_FILE[stamp] = tuple(roots)
    return roots


_PARSED: dict[str, tuple[LibraryRoot, ...]] = {}  # settings text -> parsed roots
_BY_FILE: dict[tuple, tuple[LibraryRoot, ...]] = {}  # config file (path, mtime, ctime, size, inode) -> roots


def root_named(name: str, ws: Workspace | None = None) -> LibraryRoot | None:
    return next((r for r in library_roots(ws) if r.name == name), None)


def is_in_place(rel: str) -> bool:
    return rel.startswith(IN_PLACE_PREFIX)


def in_place_rel(root: str, rel: str) -> str:
    """The registry path of ``rel`` (POSIX, inside root ``root``)."""
    return f"{IN_PLACE_PREFIX}{root}/{rel}"


def split_in_place(rel: str) -> tuple[str, str]:
    """``(root name, path inside the root)`` of an ``@library/...`` registry path."""
    name, _, inner = rel[len(IN_PLACE_PREFIX):].partition("/")
    return name, inner


def in_place_path(ws: Workspace, rel: str) -> str:
    """Where the file of an in-place asset lies (its root's folder + the path inside it).  A root
    no longer configured resolves inside the workspace's library folder, where nothing exists."""
    name, inner = split_in_place(rel)
    root = root_named(name, ws)
    base = str(root.path) if root is not None else str(ws.root.joinpath(*MIRROR_DIR[:2], "unconfigured", name))
    return base + os.sep + inner.replace("/", os.sep)


def mirror_folder(ws: Workspace, project_id: str, root_name: str) -> Path:
    return ws.root.joinpath(*MIRROR_DIR, project_id, root_name)


def guess_kind(rel: str) -> str:
    """The asset type of a file outside ComfyUI's folders: by its kind (:func:`comfyvn.kinds.guess_type`)."""
    return guess_type(rel)


def type_for(root: LibraryRoot, rel: str) -> str:
    """The asset type of ``rel`` inside ``root``: ComfyUI folders first (any depth, so a
    ``ComfyUI/models`` or an A1111 ``models`` root both work), else by the file's kind."""
    parts = PurePosixPath(rel).parts
    if root.layout == "comfyui":
        for part in parts[:-1]:
            kind = COMFYUI_FOLDERS.get(part.lower())
            if kind is not None:
                return kind
    return guess_kind(rel)


__all__ = ["COMFYUI_FOLDERS", "IN_PLACE_PREFIX", "LibraryRoot", "guess_kind", "in_place_path", "in_place_rel",
           "is_in_place", "library_roots", "mirror_folder", "parse_root", "root_named",
           "split_in_place", "type_for"]
