"""Hook specs: every topic the bus carries, with a payload descriptor per field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import InvalidInput

#: the categories of hooks, in the order the API lists them
CATEGORIES: Final = ("asset", "ingest", "licence", "library", "system")


class UnknownHookError(InvalidInput, KeyError):
    """A hook/topic name that no spec declares."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown hook"


@dataclass(frozen=True)
class HookSpec:
    name: str
    category: str  # one of CATEGORIES
    description: str
    payload: dict[str, str]
    hook_event: str | None = None  # the in-process registry event it mirrors
    alias_of: str | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "payload": dict(self.payload),
            "hook_event": self.hook_event,
            "alias_of": self.alias_of,
            "ws_topic": f"modder.{self.name}",
        }


_COMMON = {
    "hook_event": "string: the originating event name (e.g. asset_registered)",
    "timestamp": "float: epoch seconds the change committed (the original comfyvn's timestamp)",
    "timestamp_utc": "string: the same instant as UTC ISO-8601",
}
_ASSET_BASE = {
    "uid": "string: 16 hex digits, first 16 of the file's SHA-256",
    "type": "string: asset type (folder under the assets root)",
    "project_id": "string: registry project",
}
_INGEST_BASE = {
    "job_id": "string: ingest job id",
    "provider": "string: civitai | huggingface | furaffinity | generic | local",
    "status": "string: job status after the step",
    "digest": "string|null: SHA-256 hex of the content when known",
    "asset_type_hint": "string|null: requested asset type",
    "notes": "list[string]: notes such as duplicate.staged / duplicate.registry",
}

_SPECS = [
    HookSpec("on_asset_registered", "asset", "After register_file completes (row, file and sidecar in place).",
             {**_ASSET_BASE, "path": "string: absolute file path", "meta": "object: asset metadata",
              "sidecar": "string: absolute sidecar path", **_COMMON}, hook_event="asset_registered"),
    HookSpec("on_asset_saved", "asset", "Legacy alias of on_asset_registered, emitted alongside it.",
             {**_ASSET_BASE, "path": "string: absolute file path", "meta": "object: asset metadata",
              "sidecar": "string: absolute sidecar path", **_COMMON}, hook_event="asset_registered",
             alias_of="on_asset_registered"),
    HookSpec("on_asset_meta_updated", "asset", "Metadata, tags, licence or sidecar contents changed "
             "(including bulk tag edits and rebuild/enforcer fixes).",
             {**_ASSET_BASE, "meta": "object: merged metadata", "path": "string: absolute file path",
              "sidecar": "string: absolute sidecar path", "tags": "list[string]: tags after the change",
              "license": "string|null: licence after the change", **_COMMON}, hook_event="asset_meta_updated"),
    HookSpec("on_asset_removed", "asset", "A registry row (and optionally its files) was removed.",
             {**_ASSET_BASE, "path": "string: original absolute file path",
              "sidecar": "string: the sidecar file that was deleted", **_COMMON}, hook_event="asset_removed"),
    HookSpec("on_asset_sidecar_written", "asset", "A sidecar file was written.",
             {**_ASSET_BASE, "sidecar": "string: absolute sidecar path",
              "rel_path": "string: asset path relative to the assets root", **_COMMON},
             hook_event="asset_sidecar_written"),
    HookSpec("on_asset_licence_override", "licence", "A person recorded or cleared a licence decision for an "
             "asset (the paper trail of comfyvn.licences overrides).",
             {"uid": _ASSET_BASE["uid"], "project_id": _ASSET_BASE["project_id"],
              "action": "string: set | cleared", "override_id": "int: the paper-trail row",
              "license": "string|null: the licence the person recorded",
              "terms": "object: commercial_use, credit_required, derivatives_allowed they recorded",
              "covers_sources": "bool: the decision also covers what the asset derives from",
              "note": "string: why (e.g. 'bought a commercial licence, invoice 123')",
              "decided_by": "string: who", "decided_at": "float: when (epoch seconds)", **_COMMON},
             hook_event="licence_override"),
    HookSpec("on_asset_ingest_enqueued", "ingest", "Every enqueue attempt, duplicates included.",
             {**_INGEST_BASE, **_COMMON}, hook_event="ingest_enqueued"),
    HookSpec("on_asset_ingest_progress", "ingest", "Download progress of a remote pull (throttled).",
             {"job_id": "string", "provider": "string", "status": "string",
              "bytes_done": "int: bytes downloaded so far", "bytes_total": "int|null: expected size",
              **_COMMON}, hook_event="ingest_progress"),
    HookSpec("on_asset_ingest_applied", "ingest", "After apply() moved the file into the registry and "
             "wrote sidecars.",
             {**_INGEST_BASE, "asset_uid": "string: registry uid", "path": "string: absolute file path",
              **_COMMON}, hook_event="ingest_applied"),
    HookSpec("on_asset_ingest_failed", "ingest", "Remote download errors and apply failures.",
             {**_INGEST_BASE, "error": "string: what went wrong", **_COMMON}, hook_event="ingest_failed"),
    HookSpec("on_asset_ingest_updated", "ingest", "Any other job status change (staged, released, "
             "cancelled, retried, duplicate).",
             {**_INGEST_BASE, **_COMMON}, hook_event="ingest_updated"),
    HookSpec("on_library_scan_started", "library", "A library scan (comfyvn-library scan, POST /api/library/scan) "
             "started.", {"scan_id": "string: this scan", "project_id": "string: registry project",
                          "roots": "list[string]: root names being scanned", **_COMMON}, hook_event="library_scan"),
    HookSpec("on_library_scan_progress", "library", "Progress of a running library scan (at most twice a second).",
             {"scan_id": "string: this scan", "project_id": "string: registry project",
              "phase": "string: walk | hash | register | autov3 | done",
              "files_done": "int: files hashed so far (autov3 phase: files given their AutoV3)",
              "files_seen": "int: files walked so far", "phase_started_at": "float: epoch seconds the phase began",
              "autov3_files": "int: files whose AutoV3 the background phase computed",
              "autov3_bytes": "int: their bytes", "autov3_seconds": "float: the phase's duration",
              "files_total": "int: files to hash (new or changed)", "bytes_done": "int: bytes hashed so far",
              "bytes_total": "int: bytes to hash", "started_at": "float: epoch seconds the scan started",
              **_COMMON}, hook_event="library_scan"),
    HookSpec("on_library_scan_finished", "library", "A library scan finished: its summary.",
             {"scan_id": "string: this scan", "project_id": "string: registry project",
              "roots": "list[string]: roots scanned", "files": "int: files seen", "bytes": "int: their bytes",
              "unchanged": "int: files unchanged since the last scan (not read)",
              "registered": "int: new assets", "moved": "int: assets whose file moved",
              "missing": "int: assets with no file left", "errors": "int: folders or files that could not be read",
              "hashed_files": "int: files read", "hashed_bytes": "int: bytes read", "seconds": "float: duration",
              "autov3_pending": "int: large .safetensors whose AutoV3 the background phase computes next",
              **_COMMON}, hook_event="library_scan"),
    HookSpec("on_library_identified", "library", "Library files were looked up on a provider in bulk.",
             {"project_id": "string: registry project", "provider": "string: civitai | huggingface",
              "asked": "int: hashes sent", "calls": "int: requests made", "matched": "int: assets identified",
              "not_found": "int: hashes the provider does not know (negative cache)", **_COMMON},
             hook_event="library_identify"),
    HookSpec("on_modder_test", "system", "A sample event emitted by POST /api/modder/hooks/test.",
             {"message": "string", **_COMMON}, hook_event="modder_test"),
]

HOOK_SPECS: dict[str, HookSpec] = {spec.name: spec for spec in _SPECS}


def hook_spec(name: str) -> HookSpec:
    topic = name[len("modder."):] if name.startswith("modder.") else name
    try:
        return HOOK_SPECS[topic]
    except KeyError:
        raise UnknownHookError(f"unknown hook {name!r}; known hooks: {', '.join(sorted(HOOK_SPECS))}") from None


def topics(category: str | None = None, *, aliases: bool = True) -> list[str]:
    """The hook topics of ``category`` (None: every category), in declaration order; legacy
    aliases such as ``on_asset_saved`` only with ``aliases``.  The one list of topics by category."""
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown hook category {category!r}; use one of {', '.join(CATEGORIES)}")
    return [name for name, spec in HOOK_SPECS.items()
            if (category is None or spec.category == category) and (aliases or spec.alias_of is None)]


def resolve_topics(topics: list[str] | tuple[str, ...] | None) -> list[str] | None:
    """Normalise a topic list (accepts ``modder.`` prefixes and ``on_asset_*`` style globs).

    ``None`` or an empty list means every topic.  Unknown names raise :class:`UnknownHookError`.
    """
    if not topics:
        return None
    out: list[str] = []
    for raw in topics:
        if not isinstance(raw, str) or not raw:
            raise UnknownHookError(f"topic names must be non-empty strings, got {raw!r}")
        name = raw[len("modder."):] if raw.startswith("modder.") else raw
        if name.endswith("*"):
            matched = [t for t in HOOK_SPECS if t.startswith(name[:-1])]
            if not matched:
                raise UnknownHookError(f"topic pattern {raw!r} matches no hook")
            out.extend(t for t in matched if t not in out)
        else:
            hook_spec(name)
            if name not in out:
                out.append(name)
    return out
