"""Use profiles: what a build needs, as rights (``licences.profiles`` in the config).

Shipped defaults live in ``comfyvn/config/defaults.json``; ``config/comfyvn.json`` may change
them or add profiles.  Each profile states

* ``commercial_use``: the level every shipped asset (and everything it derives from) must allow
  (``none < image < rent-civit < rent < sell``; null: no commercial use needed);
* ``output_commercial_use``: the level a model must allow for what it generated (Civitai's
  ``image``: sell generated images; null: none needed);
* ``distributes``: the build leaves the studio, so credit, share-alike and notice duties apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .. import rights
from ..config import Workspace, get_setting


@dataclass(frozen=True)
class UseProfile:
    name: str
    description: str
    commercial_use: str | None
    output_commercial_use: str | None
    distributes: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _level(name: str, key: str, value: Any) -> str | None:
    if value is None or value in rights.COMMERCIAL_LEVELS:
        return value
    raise ValueError(f"licences.profiles.{name}.{key} must be one of {', '.join(rights.COMMERCIAL_LEVELS)} "
                     f"or null, got {value!r} (config/comfyvn.json)")


def use_profiles(ws: Workspace | None = None) -> dict[str, UseProfile]:
    """Every use profile of the workspace's config, by name."""
    raw = get_setting("licences.profiles", {}, ws) or {}
    if not isinstance(raw, dict):
        raise ValueError("licences.profiles must be an object of profiles (config/comfyvn.json)")
    out: dict[str, UseProfile] = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ValueError(f"licences.profiles.{name} must be an object, got {spec!r} (config/comfyvn.json)")
        distributes = spec.get("distributes", True)
        if not isinstance(distributes, bool):
            raise ValueError(f"licences.profiles.{name}.distributes must be true or false (config/comfyvn.json)")
        out[name] = UseProfile(name=name, description=str(spec.get("description") or ""),
                               commercial_use=_level(name, "commercial_use", spec.get("commercial_use")),
                               output_commercial_use=_level(name, "output_commercial_use",
                                                            spec.get("output_commercial_use")),
                               distributes=distributes)
    return out


def default_use(ws: Workspace | None = None) -> str:
    return str(get_setting("licences.default_use", "commercial", ws))


def use_profile(name: str | None = None, ws: Workspace | None = None) -> UseProfile:
    """The profile ``name`` (default ``licences.default_use``); ValueError naming the known ones."""
    profiles = use_profiles(ws)
    name = name or default_use(ws)
    if name not in profiles:
        raise ValueError(f"unknown use profile {name!r}; choose one of {', '.join(sorted(profiles))} "
                         "(or add it under licences.profiles in config/comfyvn.json)")
    return profiles[name]
