"""Provider metadata -> one normalised shape, and the hosts remote pulls may talk to.

``normalise_metadata(provider, raw)`` accepts what a provider's API returns (Civitai model,
model-version or ``files[]`` entry; Hugging Face model info with ``cardData``; a FurAffinity
submission) or a plain dict a person typed, and returns::

    {"provider", "title", "description", "author", "tags", "license", "license_terms",
     "nsfw", "base_model", "trained_words", "model_type", "source_url", "gated", "file", ...}

Adding a provider = one ``_map_<name>`` block registered in ``_MAPPERS``, its hosts in
``_REMOTE_ALLOWLIST``, and a line in ``docs/ASSET_INGEST.md``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from ..config import Workspace, get_setting
from ..studio.core.asset_registry import normalise_tags

# provider -> host patterns; "*" matches within one DNS label ("cdn-lfs*.hf.co" matches
# "cdn-lfs-us-1.hf.co", never "evil.com.hf.co"'s extra labels).  The host of the configured
# ``ingest.providers.<name>.base_url`` and ``ingest.providers.<name>.allowed_hosts`` /
# ``ingest.extra_allowed_hosts`` entries are allowed as well (tests add 127.0.0.1).
_REMOTE_ALLOWLIST: dict[str, tuple[str, ...]] = {
    "civitai": (
        "civitai.com",
        "image.civitai.com",
        "civitai-delivery-worker-prod.*.r2.cloudflarestorage.com",
    ),
    "huggingface": (
        "huggingface.co",
        "cas-bridge.xethub.hf.co",
        "cdn-lfs*.huggingface.co",
        "cdn-lfs*.hf.co",
        "us.aws.cdn.hf.co",
    ),
    "furaffinity": (
        "furaffinity.net",
        "www.furaffinity.net",
        "d.furaffinity.net",
        "t.furaffinity.net",
    ),
    "generic": (),
}

PROVIDERS = ("local", "civitai", "huggingface", "furaffinity", "generic")
REMOTE_PROVIDERS = ("civitai", "huggingface", "furaffinity", "generic")

_FALSE = {"false", "0", "no", "off", "none", "null", ""}
_TRUE = {"true", "1", "yes", "on"}


# ---------------------------------------------------------------------------- allowlist
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    host = pattern.strip().lower().rstrip(".")
    if host.startswith("[") and "]" in host:  # [::1]:port
        host = host[1:host.index("]")]
    elif host.count(":") == 1:  # host:port -> host
        host = host.split(":", 1)[0]
    return re.compile("^" + ".".join(re.escape(label).replace(r"\*", "[a-z0-9-]*")
                                       for label in host.split(".")) + "$")


def _clean_host(host: str) -> str:
    return (host or "").strip().lower().rstrip(".").strip("[]")


def host_matches(host: str, pattern: str) -> bool:
    """True when ``host`` matches one allowlist ``pattern`` (``*`` stays inside one label)."""
    return bool(_pattern_regex(pattern).match(_clean_host(host)))


def allowed_host_patterns(provider: str, ws: Workspace | None = None) -> list[str]:
    """Built-in patterns of ``provider`` plus the hosts the workspace config adds."""
    patterns = list(_REMOTE_ALLOWLIST.get(provider, ()))
    base = get_setting(f"ingest.providers.{provider}.base_url", None, ws)
    if isinstance(base, str) and base:
        host = urlsplit(base).hostname
        if host:
            patterns.append(host)
    for key in (f"ingest.providers.{provider}.allowed_hosts", "ingest.extra_allowed_hosts"):
        extra = get_setting(key, None, ws) or []
        if isinstance(extra, str):
            extra = [extra]
        patterns.extend(str(h) for h in extra if h)
    return list(dict.fromkeys(patterns))


def is_host_allowed(host: str, provider: str, ws: Workspace | None = None) -> bool:
    """May a remote pull of ``provider`` connect to ``host`` (checked on every redirect hop)?"""
    if not host:
        return False
    return any(host_matches(host, p) for p in allowed_host_patterns(provider, ws))


def provider_for_url(url: str) -> str | None:
    """The provider whose built-in allowlist covers the URL's host (None if none does)."""
    host = urlsplit(url).hostname or ""
    for provider, patterns in _REMOTE_ALLOWLIST.items():
        if any(host_matches(host, p) for p in patterns):
            return provider
    return None


# ---------------------------------------------------------------------------- value helpers
def to_bool(value: Any) -> bool | None:
    """``"false"``/``"False"``/``"0"``/``"no"`` mean False; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _FALSE:
            return False
        if text in _TRUE:
            return True
    return bool(value)


def to_tags(value: Any) -> list[str]:
    """Tags from a list or a comma-separated string (trimmed, lower-case, unique)."""
    if value is None:
        return []
    if isinstance(value, str):
        return normalise_tags(value)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        flat: list[str] = []
        for item in value:
            if isinstance(item, str):
                flat.extend(item.split(","))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):  # [{"name": "anime"}]
                flat.append(item["name"])
        return normalise_tags(flat)
    return []


def commercial_use(value: Any) -> list[str] | None:
    """Civitai ``allowCommercialUse`` in any of its forms -> a list (``[]`` for "None").

    Forms: ``"Sell"`` (pre-2024 enum string), ``["Image", "RentCivit"]``, the Postgres array
    literal ``"{Image,RentCivit}"`` and ``["{Image,RentCivit,Rent}"]``.
    """
    if value is None:
        return None
    items: list[str] = []
    for raw in value if isinstance(value, (list, tuple)) else [value]:
        if not isinstance(raw, str):
            continue
        text = raw.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        for part in text.split(","):
            name = part.strip().strip('"').strip()
            if name and name.lower() != "none" and name not in items:
                items.append(name)
    return items


_TAG_RE = re.compile(r"<[^>]+>")


def plain_text(value: Any) -> str | None:
    """HTML descriptions (Civitai) as readable plain text."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"</p>\s*<p>|<br\s*/?>", "\n", value, flags=re.I)
    text = html.unescape(_TAG_RE.sub("", text)).strip()
    return text or None


# API JSON changes shape over time and fields come with surprising types: every accessor
# below returns the expected type or nothing, so no input makes a mapper crash.
def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    """A string field: text stays (trimmed), numbers become text, anything else is nothing."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _id(value: Any) -> int | str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _text(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**63:
        return int(value)
    return None


def _first(raw: dict, *keys: str) -> Any:
    for key in keys:
        value = _text(raw.get(key))
        if value is not None:
            return value
    return None


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    out: list[str] = []
    for item in value if isinstance(value, (list, tuple)) else []:
        if isinstance(item, str) and item.strip() and item.strip() not in out:
            out.append(item.strip())
    return out


def _blank(provider: str) -> dict[str, Any]:
    return {"provider": provider, "title": None, "description": None, "author": None, "tags": [],
            "license": None, "license_terms": {}, "nsfw": None, "base_model": None, "trained_words": [],
            "model_type": None, "source_url": None, "gated": None, "file": None}


# keys a person may type, mapped onto the normalised shape (others are kept as they are)
_GENERIC_KEYS = {
    "title": ("title", "name"),
    "description": ("description", "desc"),
    "author": ("author", "creator", "artist", "username", "uploader"),
    "tags": ("tags", "keywords"),
    "license": ("license", "licence", "license_tag"),
    "nsfw": ("nsfw",),
    "base_model": ("base_model", "baseModel"),
    "trained_words": ("trained_words", "trainedWords", "trigger_words"),
    "model_type": ("model_type", "type"),
    "source_url": ("source_url", "url", "source", "link"),
}


def _map_generic(raw: dict, out: dict[str, Any], **_: Any) -> None:
    used: set[str] = set()
    for target, keys in _GENERIC_KEYS.items():
        for key in keys:
            if key not in raw:
                continue
            used.add(key)
            if out.get(target) not in (None, [], ""):
                continue
            value = raw[key]
            if target == "tags":
                value = to_tags(value)
            elif target == "nsfw":
                value = to_bool(value)
            elif target == "trained_words":
                value = _str_list(value.split(",") if isinstance(value, str) else value)
            elif target == "description":
                value = plain_text(value) if isinstance(value, str) and "<" in value else _text(value)
            else:
                value = _text(value)
            if value not in (None, "", []):
                out[target] = value
    if "gated" in raw:
        used.add("gated")
        out["gated"] = _gated(raw["gated"])
    if isinstance(raw.get("license_terms"), dict):
        used.add("license_terms")
        out["license_terms"] = {**out["license_terms"], **raw["license_terms"]}
    for key, value in raw.items():  # a person's own fields survive (character, pose, ...)
        if key not in used and key not in out and not key.startswith("_"):
            out[key] = value


# ---------------------------------------------------------------------------- civitai
def _sha(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _civitai_file(f: dict) -> dict[str, Any]:
    hashes = {k: v for k, v in _dict(f.get("hashes")).items() if isinstance(v, str)}
    size_kb = f.get("sizeKB")
    size = None
    if isinstance(size_kb, (int, float)) and not isinstance(size_kb, bool) and 0 <= size_kb < 2**53:
        size = int(round(float(size_kb) * 1024))
    meta = _dict(f.get("metadata"))
    return {
        "id": _id(f.get("id")), "name": _text(f.get("name")), "type": _text(f.get("type")), "size": size,
        "sha256": _sha(hashes.get("SHA256") or hashes.get("sha256")), "hashes": hashes,
        "format": _text(meta.get("format")), "fp": _text(meta.get("fp")), "primary": f.get("primary") is True,
        "download_url": _text(f.get("downloadUrl")),
        "scan": {k: f[k] for k in ("pickleScanResult", "virusScanResult") if isinstance(f.get(k), str)},
    }


def _file_sha(f: dict) -> str | None:
    return _sha(_dict(f.get("hashes")).get("SHA256"))


def _pick_file(files: Any, *, file_id: Any = None, sha256: Any = None, filename: Any = None,
               file_type: Any = None, **_: Any) -> dict | None:
    files = [f for f in _list(files) if isinstance(f, dict)]
    if not files:
        return None
    if file_id is not None:
        for f in files:
            if str(f.get("id")) == str(file_id):
                return f
    sha = _sha(sha256)
    if sha:
        for f in files:
            if _file_sha(f) == sha:
                return f
    if isinstance(filename, str) and filename:
        for f in files:
            if f.get("name") == filename:
                return f
    if isinstance(file_type, str) and file_type:
        for f in files:
            if str(f.get("type", "")).lower() == file_type.lower():
                return f
    return next((f for f in files if f.get("primary") is True), files[0])


def _civitai_version(v: dict, out: dict[str, Any], hints: dict) -> None:
    model = _dict(v.get("model"))
    out["title"] = out["title"] or _text(model.get("name")) or _text(v.get("name"))
    out["model_type"] = out["model_type"] or _text(model.get("type"))
    if out["nsfw"] is None and "nsfw" in model:
        out["nsfw"] = to_bool(model["nsfw"])
    out["base_model"] = _text(v.get("baseModel")) or out["base_model"]  # a base model, never a licence
    out["trained_words"] = _str_list(v.get("trainedWords")) or out["trained_words"]
    if out["description"] is None:
        out["description"] = plain_text(v.get("description"))
    version_id = _id(v.get("id"))
    out["version_id"] = version_id
    out["version_name"] = _text(v.get("name"))
    model_id = _id(v.get("modelId")) or out.get("model_id")
    if model_id is not None:
        out["model_id"] = model_id
    if _text(v.get("air")):
        out["air"] = _text(v.get("air"))
    if _int(v.get("nsfwLevel")) is not None:
        out.setdefault("nsfw_level", _int(v.get("nsfwLevel")))
    if _text(v.get("publishedAt")):
        out["published_at"] = _text(v.get("publishedAt"))
    if model_id is not None and version_id is not None:
        out["source_url"] = f"https://civitai.com/models/{model_id}?modelVersionId={version_id}"
    picked = _pick_file(v.get("files"), **hints)
    if picked is not None:
        out["file"] = _civitai_file(picked)


def _map_civitai(raw: dict, out: dict[str, Any], **hints: Any) -> None:
    selection = {"file_id": raw.get("file_id") or hints.get("file_id"), "sha256": hints.get("sha256"),
                 "filename": hints.get("filename"), "file_type": raw.get("file_type") or hints.get("file_type")}
    version_hint = raw.get("version_id") or raw.get("modelVersionId") or hints.get("version_id")
    if isinstance(raw.get("modelVersions"), list):  # GET /api/v1/models/{id}
        out["title"] = _text(raw.get("name"))
        out["description"] = plain_text(raw.get("description"))
        out["author"] = _text(_dict(raw.get("creator")).get("username"))
        out["tags"] = to_tags(raw.get("tags"))
        if "nsfw" in raw:
            out["nsfw"] = to_bool(raw.get("nsfw"))
        out["model_type"] = _text(raw.get("type"))
        model_id = _id(raw.get("id"))
        out["model_id"] = model_id
        if _int(raw.get("nsfwLevel")) is not None:
            out["nsfw_level"] = _int(raw.get("nsfwLevel"))
        if model_id is not None:
            out["source_url"] = f"https://civitai.com/models/{model_id}"
        versions = [v for v in raw["modelVersions"] if isinstance(v, dict)]
        chosen = None
        if version_hint is not None:
            chosen = next((v for v in versions if str(v.get("id")) == str(version_hint)), None)
        sha = _sha(selection["sha256"])
        if chosen is None and sha:
            chosen = next((v for v in versions if any(
                _file_sha(f) == sha for f in _list(v.get("files")) if isinstance(f, dict))), None)
        chosen = chosen or (versions[0] if versions else None)
        if chosen is not None:
            _civitai_version({**chosen, "modelId": model_id}, out, selection)
    elif isinstance(raw.get("files"), list) or "modelId" in raw:
        _civitai_version(raw, out, selection)  # model-version or by-hash
    elif "hashes" in raw or "sizeKB" in raw:  # a files[] entry on its own
        out["file"] = _civitai_file(raw)
        out["title"] = _text(raw.get("name"))
    terms: dict[str, Any] = {}
    if "allowCommercialUse" in raw:
        terms["allow_commercial_use"] = commercial_use(raw["allowCommercialUse"])
    for src, dest in (("allowDerivatives", "allow_derivatives"), ("allowNoCredit", "allow_no_credit"),
                      ("allowDifferentLicense", "allow_different_license")):
        if src in raw:
            terms[dest] = to_bool(raw[src])
    out["license_terms"] = {**out["license_terms"], **terms}
    if not {"modelVersions", "files", "hashes", "sizeKB", "modelId"} & set(raw):
        licence_keys = ("allowCommercialUse", "allowDerivatives", "allowNoCredit", "allowDifferentLicense")
        _map_generic({k: v for k, v in raw.items() if k not in licence_keys}, out)  # a hand-written dict
    else:  # API JSON: only a person's explicit overrides on top
        _map_generic({k: raw[k] for k in ("license", "licence", "license_tag", "source_url") if k in raw}, out)


# ---------------------------------------------------------------------------- huggingface
def _gated(value: Any) -> bool | str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("auto", "manual"):
        return value.strip().lower()
    return to_bool(value)


def _map_huggingface(raw: dict, out: dict[str, Any], **hints: Any) -> None:
    api = any(k in raw for k in ("siblings", "cardData", "modelId", "pipeline_tag", "library_name"))
    if not api:
        _map_generic(raw, out)
        return
    card = _dict(raw.get("cardData"))
    hub = [t for t in _list(raw.get("tags")) if isinstance(t, str)]
    repo = _text(raw.get("id")) or _text(raw.get("modelId"))
    out["title"] = repo
    out["author"] = _text(raw.get("author")) or (repo.split("/")[0] if repo and "/" in repo else None)
    tags = to_tags(card.get("tags"))
    out["tags"] = tags + [t for t in to_tags([t for t in hub if ":" not in t]) if t not in tags]
    licence_raw = card.get("license")
    if isinstance(licence_raw, list):
        licence_raw = next((x for x in licence_raw if isinstance(x, str) and x.strip()), None)
    licence = _text(licence_raw)
    if not licence:
        licence = next((_text(t.split(":", 1)[1]) for t in hub if t.startswith("license:") and _text(t[8:])), None)
    terms: dict[str, Any] = {}
    if _text(card.get("license_name")):
        terms["license_name"] = _text(card.get("license_name"))
        if licence == "other":
            licence = terms["license_name"]
    if _text(card.get("license_link")):
        terms["license_link"] = _text(card.get("license_link"))
    out["license"] = licence
    out["license_terms"] = {**out["license_terms"], **terms}
    base = card.get("base_model")
    out["base_model"] = _text(base) if not isinstance(base, list) else (", ".join(_str_list(base)) or None)
    out["trained_words"] = _str_list(card.get("instance_prompt")) if isinstance(card.get("instance_prompt"), str) else []
    out["gated"] = _gated(raw.get("gated", False))
    out["nsfw"] = "not-for-all-audiences" in hub
    out["model_type"] = _text(raw.get("pipeline_tag"))
    out["library"] = _text(raw.get("library_name"))
    out["revision"] = _text(raw.get("sha"))
    out["repo_id"] = repo
    if repo:
        out["source_url"] = f"https://huggingface.co/{repo}"
    wanted = hints.get("filename") if isinstance(hints.get("filename"), str) else _text(raw.get("filename"))
    sha = _sha(hints.get("sha256"))
    for sib in _list(raw.get("siblings")):
        if not isinstance(sib, dict):
            continue
        lfs = _dict(sib.get("lfs"))
        sib_sha = _sha(lfs.get("sha256")) or _sha(lfs.get("oid"))
        if (wanted and sib.get("rfilename") == wanted) or (sha and sib_sha == sha):
            out["file"] = {"name": _text(sib.get("rfilename")), "size": _int(sib.get("size")) or _int(lfs.get("size")),
                           "sha256": sib_sha, "blob_id": _text(sib.get("blobId")), "lfs": bool(lfs)}
            break
    _map_generic({k: raw[k] for k in ("license", "licence", "license_tag", "source_url") if k in raw}, out)


# ---------------------------------------------------------------------------- furaffinity
def _map_furaffinity(raw: dict, out: dict[str, Any], **_: Any) -> None:
    """FAExport-style submission JSON (title, profile_name, keywords, rating, download)."""
    if not any(k in raw for k in ("keywords", "profile_name", "rating", "download", "full")):
        _map_generic(raw, out)
        return
    out["title"] = _text(raw.get("title"))
    out["description"] = plain_text(raw.get("description"))
    out["author"] = _first(raw, "profile_name", "name")
    out["tags"] = to_tags(raw.get("keywords"))
    rating = _text(raw.get("rating"))
    if rating:
        out["rating"] = rating
        out["nsfw"] = rating.lower() in ("mature", "adult")
    for key in ("category", "theme", "species", "gender", "resolution", "posted_at"):
        if _text(raw.get(key)):
            out[key] = _text(raw.get(key))
    out["source_url"] = _text(raw.get("link"))
    download = _text(raw.get("download"))
    if download:
        out["file"] = {"name": download.rsplit("/", 1)[-1], "download_url": download}
    _map_generic({k: raw[k] for k in ("license", "licence", "license_tag") if k in raw}, out)


_MAPPERS: dict[str, Callable[..., None]] = {
    "civitai": _map_civitai,
    "huggingface": _map_huggingface,
    "furaffinity": _map_furaffinity,
    "generic": _map_generic,
    "local": _map_generic,
}


def normalise_metadata(provider: str, raw: dict | None, **hints: Any) -> dict[str, Any]:
    """Map ``raw`` (provider API JSON or a hand-written dict) to the normalised shape.

    ``hints`` (``filename``, ``sha256``, ``file_id``, ``version_id``) choose which file of a
    model/version the job is about.  Unknown providers raise ``ValueError``.
    """
    if provider not in _MAPPERS:
        raise ValueError(f"unknown provider {provider!r}; known providers: {', '.join(_MAPPERS)}")
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"metadata must be a JSON object (dict), got {type(raw).__name__}")
    out = _blank(provider)
    _MAPPERS[provider](dict(raw or {}), out, **hints)
    out["provider"] = provider
    if out["nsfw"] is not None:
        out["nsfw"] = bool(out["nsfw"])
    return out


def merge_metadata(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` (what a person typed) wins where it says something; tags are united."""
    out = dict(base)
    for key, value in override.items():
        if key == "tags":
            out["tags"] = list(dict.fromkeys([*(base.get("tags") or []), *(value or [])]))
        elif key == "license_terms":
            out[key] = {**(base.get(key) or {}), **(value or {})}
        elif value not in (None, [], {}, "") or key not in out:
            out[key] = value
    return out


__all__ = [
    "PROVIDERS",
    "REMOTE_PROVIDERS",
    "_REMOTE_ALLOWLIST",
    "allowed_host_patterns",
    "commercial_use",
    "host_matches",
    "is_host_allowed",
    "merge_metadata",
    "normalise_metadata",
    "provider_for_url",
    "to_bool",
    "to_tags",
]
