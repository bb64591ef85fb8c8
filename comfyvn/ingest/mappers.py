"""Provider metadata -> one normalised shape, and the hosts remote pulls may talk to.

``normalise_metadata(provider, raw)`` accepts what a provider's API returns (Civitai model,
model-version or ``files[]`` entry; Hugging Face model info with ``cardData``; a FurAffinity
submission) or a plain dict a person typed, and returns::

    {"provider", "title", "description", "author", "tags", "license", "license_terms",
     "nsfw", "base_model", "trained_words", "model_type", "source_url", "gated", "file", ...}

Adding a provider = one ``_map_<name>`` block registered in ``_MAPPERS``, its name in
:mod:`comfyvn.provider_names`, its hosts in ``netpolicy.REMOTE_ALLOWLIST``, and a line in
``docs/ASSET_INGEST.md``.  The allow-list helpers here are :mod:`comfyvn.netpolicy`'s, re-exported
for older callers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from .. import rights
from ..config import Workspace
from ..kinds import normalise_tags
from ..netpolicy import REMOTE_ALLOWLIST as _REMOTE_ALLOWLIST
from ..netpolicy import allowed_host_rules, host_matches, is_host_allowed, provider_for_host
from ..provider_names import PROVIDERS, REMOTE_PROVIDERS, provider_name

_FALSE = {"false", "0", "no", "off", "none", "null", ""}
_TRUE = {"true", "1", "yes", "on"}


# ---------------------------------------------------------------------------- allowlist
def allowed_host_patterns(provider: str, ws: Workspace | None = None) -> list[str]:
    """The allow-list rules of ``provider`` (:func:`comfyvn.netpolicy.allowed_host_rules`)."""
    return allowed_host_rules(provider_name(provider), ws)


def provider_for_url(url: str) -> str | None:
    """The provider whose built-in allowlist covers the URL's host (None if none does)."""
    return provider_for_host(urlsplit(url).hostname or "")


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


commercial_use = rights.civitai_commercial_use  # one home: comfyvn/rights.py

_BLOCK_TAGS = {"p", "div", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "table", "tr",
               "blockquote", "pre", "section", "article", "header", "footer", "dl", "dt", "dd", "figure"}
_DROPPED_TAGS = {"script", "style", "noscript", "template", "iframe", "object", "svg"}


class _TextExtractor(HTMLParser):
    """HTML -> text: blocks and list items on their own lines, cells spaced, scripts/images dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip = 0

    def _break(self) -> None:
        line = re.sub(r"\s+", " ", "".join(self.current)).strip()
        if line == "-":  # a list item whose text is still to come (<li><p>...)
            return
        if line:
            self.lines.append(line)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _DROPPED_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self._break()
            if tag == "li":
                self.current.append("- ")
        elif tag in ("td", "th"):
            self.current.append(" ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BLOCK_TAGS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self._break()
        elif tag in ("td", "th"):
            self.current.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.current.append(data)

    def text(self) -> str:
        self._break()
        self.current = []
        return "\n".join(self.lines)


def plain_text(value: Any) -> str | None:
    """HTML descriptions (Civitai) as readable plain text, one paragraph / list item per line."""
    if not isinstance(value, str):
        return None
    parser = _TextExtractor()
    try:
        parser.feed(value)
        parser.close()
    except (AssertionError, ValueError):  # html.parser gives up on some broken markup
        pass
    return parser.text() or None


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
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

# Civitai model type (``model.type``) -> (asset type, ComfyUI models/ folder); a file's own type
# (``files[].type``) overrides it where it says what the file is.  Documented in docs/REMOTE_PULLS.md.
CIVITAI_MODEL_TYPES: dict[str, tuple[str, str]] = {
    "checkpoint": ("checkpoint", "checkpoints"),
    "lora": ("lora", "loras"),
    "locon": ("lora", "loras"),
    "dora": ("lora", "loras"),
    "lycoris": ("lora", "loras"),
    "textualinversion": ("embedding", "embeddings"),
    "hypernetwork": ("hypernetwork", "hypernetworks"),
    "vae": ("vae", "vae"),
    "controlnet": ("controlnet", "controlnet"),
    "upscaler": ("upscaler", "upscale_models"),
    "motionmodule": ("motion_module", "animatediff_models"),
    "detection": ("detection", "ultralytics"),
}
CIVITAI_FILE_TYPES: dict[str, tuple[str, str]] = {
    "training data": ("training_data", "training_data"),
    "vae": ("vae", "vae"),
    "text encoder": ("text_encoder", "text_encoders"),
    "negative": ("embedding", "embeddings"),
}
OTHER_MODEL = ("model", "models")
NSFW_LEVEL_BITS = 4 | 8 | 16 | 32  # R, X, XXX, Blocked (PG = 1 and PG13 = 2 are safe for work)


def civitai_kind(model_type: Any, file_type: Any = None) -> tuple[str, str]:
    """``(asset_type, folder)`` for a Civitai model type and file type."""
    by_file = CIVITAI_FILE_TYPES.get(str(file_type or "").strip().lower())
    if by_file:
        return by_file
    return CIVITAI_MODEL_TYPES.get(str(model_type or "").strip().lower().replace(" ", ""), OTHER_MODEL)


def nsfw_from_level(level: Any) -> bool | None:
    """Civitai ``nsfwLevel`` bit field -> NSFW (R, X, XXX or Blocked bit set)."""
    value = _int(level)
    return None if value is None or value < 0 else bool(value & NSFW_LEVEL_BITS)


def _sha(value: Any) -> str | None:
    """A full SHA-256 (64 hex) in lower case; a shortened one (``A5F58EB1C3...``) is no digest."""
    return value.strip().lower() if isinstance(value, str) and _HEX64.match(value.strip()) else None


def civitai_size(size_kb: Any) -> int | None:
    """Bytes from ``sizeKB`` (a float, rounded in JSON): round; compare with a 1 KiB tolerance."""
    if isinstance(size_kb, (int, float)) and not isinstance(size_kb, bool) and 0 < size_kb < 2**43:
        return int(round(float(size_kb) * 1024))
    return None


def _civitai_file(f: dict) -> dict[str, Any]:
    hashes = {k: v for k, v in _dict(f.get("hashes")).items() if isinstance(v, str)}
    meta = _dict(f.get("metadata"))
    return {
        "id": _id(f.get("id")), "name": _text(f.get("name")), "type": _text(f.get("type")),
        "size": civitai_size(f.get("sizeKB")),
        "sha256": _sha(hashes.get("SHA256") or hashes.get("sha256")), "hashes": hashes,
        "format": _text(meta.get("format")), "fp": _text(meta.get("fp")), "size_variant": _text(meta.get("size")),
        "primary": f.get("primary") is True, "download_url": _text(f.get("downloadUrl")),
        "scan": {k: f[k] for k in ("pickleScanResult", "virusScanResult") if isinstance(f.get(k), str)},
    }


def _file_sha(f: dict) -> str | None:
    return _sha(_dict(f.get("hashes")).get("SHA256"))


def pick_civitai_file(files: Any, *, file_id: Any = None, sha256: Any = None, filename: Any = None,
                      file_type: Any = None, **_: Any) -> dict | None:
    """The file a job is about: by id, by SHA-256, by name (the primary one among same-named
    twins such as fp16/fp32), by type, else the primary file."""
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
    for key, wanted in (("name", filename), ("type", file_type)):
        if isinstance(wanted, str) and wanted:
            same = [f for f in files if str(f.get(key, "")).lower() == wanted.lower()]
            if same:
                return next((f for f in same if f.get("primary") is True), same[0])
    return next((f for f in files if f.get("primary") is True), files[0])


def _is_error_body(raw: dict) -> bool:
    """``{"error": ...}`` (and ``{"error", "message", ...}``) bodies Civitai sends instead of data."""
    return "error" in raw and not {"id", "modelId", "files", "modelVersions", "name", "hashes"} & set(raw)


def _civitai_model_fields(model: dict, out: dict[str, Any]) -> None:
    """Fields that live on the model (``/models/{id}``, or merged into a version's ``model``)."""
    out["title"] = _text(model.get("name")) or out["title"]
    if _text(model.get("type")):
        out["model_type"] = _text(model.get("type"))
    creator = _text(_dict(model.get("creator")).get("username"))
    out["author"] = creator or out["author"]
    tags = to_tags(model.get("tags"))
    out["tags"] = tags or out["tags"]
    if "nsfw" in model:
        out["nsfw"] = to_bool(model.get("nsfw"))
    level = _int(model.get("nsfwLevel"))
    if level is not None:
        out["nsfw_level"] = level


def _civitai_version(v: dict, out: dict[str, Any], hints: dict) -> None:
    model = _dict(v.get("model"))
    _civitai_model_fields(model, out)
    if out["author"] is None:  # some version bodies name the creator themselves
        out["author"] = _text(_dict(v.get("creator")).get("username"))
    out["base_model"] = _text(v.get("baseModel")) or out["base_model"]  # a base model, never a licence
    out["trained_words"] = _str_list(v.get("trainedWords")) or out["trained_words"]
    if out["description"] is None:
        out["description"] = plain_text(model.get("description")) or plain_text(v.get("description"))
    version_id = _id(v.get("id"))
    out["version_id"] = version_id
    out["version_name"] = _text(v.get("name"))
    model_id = _id(v.get("modelId")) or _id(model.get("id")) or out.get("model_id")
    if model_id is not None:
        out["model_id"] = model_id
    if _text(v.get("air")):
        out["air"] = _text(v.get("air"))
    if _int(v.get("nsfwLevel")) is not None:
        out["version_nsfw_level"] = _int(v.get("nsfwLevel"))
    if _text(v.get("publishedAt")):
        out["published_at"] = _text(v.get("publishedAt"))
    if model_id is not None and version_id is not None:
        out["source_url"] = f"https://civitai.com/models/{model_id}?modelVersionId={version_id}"
    picked = pick_civitai_file(v.get("files"), **hints)
    if picked is not None:
        out["file"] = _civitai_file(picked)


def _civitai_rights(model: dict, out: dict[str, Any]) -> None:
    terms = rights.civitai_terms(model, out["base_model"])
    legacy: dict[str, Any] = {}  # the provider's own words, next to the structured terms
    if "allowCommercialUse" in model:
        legacy["allow_commercial_use"] = commercial_use(model["allowCommercialUse"])
    for src, dest in (("allowDerivatives", "allow_derivatives"), ("allowNoCredit", "allow_no_credit"),
                      ("allowDifferentLicense", "allow_different_license")):
        if src in model:
            legacy[dest] = to_bool(model[src])
    # Civitai names no licence of its own: ``license`` stays unset (a base model is no licence);
    # the permissions above and the base model's licence are the structured terms
    out["license_terms"] = {**out["license_terms"], **legacy, **terms}


def _map_civitai(raw: dict, out: dict[str, Any], **hints: Any) -> None:
    if _is_error_body(raw):
        raise ValueError(f"Civitai answered with an error, not metadata: {str(raw.get('error'))[:200]!r}")
    selection = {"file_id": raw.get("file_id") or hints.get("file_id"), "sha256": hints.get("sha256"),
                 "filename": hints.get("filename"), "file_type": raw.get("file_type") or hints.get("file_type")}
    version_hint = raw.get("version_id") or raw.get("modelVersionId") or hints.get("version_id")
    model: dict = {}
    api = True
    if isinstance(raw.get("modelVersions"), list):  # GET /api/v1/models/{id}
        model = raw
        out["description"] = plain_text(raw.get("description"))
        _civitai_model_fields(raw, out)
        model_id = _id(raw.get("id"))
        out["model_id"] = model_id
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
    elif isinstance(raw.get("files"), list) or "modelId" in raw:  # model-version or by-hash
        model = _dict(raw.get("model"))  # the planner merges /models/{modelId} into it
        _civitai_version(raw, out, selection)
    elif "hashes" in raw or "sizeKB" in raw:  # a files[] entry on its own
        out["file"] = _civitai_file(raw)
        out["title"] = _text(raw.get("name"))
    else:
        api = False
    level = out.get("nsfw_level", out.get("version_nsfw_level"))
    by_level = nsfw_from_level(level)
    if by_level is not None:
        out["nsfw"] = bool(out["nsfw"]) or by_level
    if api:
        file = _dict(out["file"])
        if out["model_type"] or file:
            out["asset_type"], out["folder"] = civitai_kind(out["model_type"], file.get("type"))
        licence_source = model or raw
        _civitai_rights(licence_source, out)
        if any(k in raw for k in ("license", "licence", "license_tag")):  # a person's licence wins
            out["license"] = None
            out["license_terms"]["source"] = "user"
        _map_generic({k: raw[k] for k in ("license", "licence", "license_tag", "source_url") if k in raw}, out)
        return
    licence_keys = ("allowCommercialUse", "allowDerivatives", "allowNoCredit", "allowDifferentLicense")
    if any(k in raw for k in licence_keys):
        _civitai_rights(raw, out)
    _map_generic({k: v for k, v in raw.items() if k not in licence_keys}, out)  # a hand-written dict


# ---------------------------------------------------------------------------- huggingface
def _gated(value: Any) -> bool | str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("auto", "manual"):
        return value.strip().lower()
    return to_bool(value)


def _map_huggingface(raw: dict, out: dict[str, Any], **hints: Any) -> None:
    if _is_error_body(raw):
        raise ValueError(f"Hugging Face answered with an error, not metadata: {str(raw.get('error'))[:200]!r}")
    # full model info, or an ``?expand=`` partial body (``_id`` + ``id`` + the expanded keys)
    api = any(k in raw for k in ("siblings", "cardData", "modelId", "pipeline_tag", "library_name", "_id"))
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
    licence = rights.licence_id(_text(licence_raw))
    if not licence:
        licence = next((rights.licence_id(t.split(":", 1)[1]) for t in hub
                        if t.startswith("license:") and _text(t[8:])), None)
    extra: dict[str, Any] = {}
    if _text(card.get("license_name")):
        extra["license_name"] = _text(card.get("license_name"))
        if licence == "other":
            licence = rights.licence_id(extra["license_name"])
    if _text(card.get("license_link")):
        extra["license_link"] = _text(card.get("license_link"))
    base = card.get("base_model")
    out["base_model"] = _text(base) if not isinstance(base, list) else (", ".join(_str_list(base)) or None)
    out["license"] = licence
    out["license_terms"] = {**out["license_terms"], **extra,
                            **rights.licence_terms(licence, source="provider", base_model=out["base_model"])}
    out["trained_words"] = _str_list(card.get("instance_prompt")) if isinstance(card.get("instance_prompt"), str) else []
    out["gated"] = _gated(raw["gated"]) if "gated" in raw else None  # a partial body may not say
    out["nsfw"] = "not-for-all-audiences" in hub if "tags" in raw else None
    out["model_type"] = _text(raw.get("pipeline_tag"))
    if "tags" in raw:
        out["asset_type"], out["folder"] = ("lora", "loras") if "lora" in out["tags"] else OTHER_MODEL
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
    if any(k in raw for k in ("license", "licence", "license_tag")):
        out["license_terms"]["source"] = "user"


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
    provider = provider_name(provider) if isinstance(provider, str) else provider
    if provider not in _MAPPERS:
        raise ValueError(f"unknown provider {provider!r}; known providers: {', '.join(_MAPPERS)}")
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"metadata must be a JSON object (dict), got {type(raw).__name__}")
    out = _blank(provider)
    _MAPPERS[provider](dict(raw or {}), out, **hints)
    out["provider"] = provider
    if out["nsfw"] is not None:
        out["nsfw"] = bool(out["nsfw"])
    _complete_rights(out)
    return out


def _complete_rights(out: dict[str, Any]) -> None:
    """Every result carries ``license`` (our id) and the structured ``license_terms`` keys."""
    out["license"] = rights.licence_id(out["license"]) if isinstance(out["license"], str) else None
    terms = out["license_terms"] if isinstance(out["license_terms"], dict) else {}
    if terms.get("source") is None and out["license"]:  # a licence someone typed, nothing else stated
        derived = rights.licence_terms(out["license"], source="user", base_model=out["base_model"])
        terms = {**derived, **{k: v for k, v in terms.items() if v is not None}}
    for key in rights.TERM_KEYS:
        terms.setdefault(key, None)
    if terms["base_model_license"] is None:
        terms["base_model_license"] = rights.base_model_license(out["base_model"])
    out["license_terms"] = terms


def merge_metadata(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` (what a person typed) wins where it says something; tags are united."""
    out = dict(base)
    for key, value in override.items():
        if key == "tags":
            out["tags"] = list(dict.fromkeys([*(base.get("tags") or []), *(value or [])]))
        elif key == "license_terms":  # terms a person left unstated do not erase the provider's
            out[key] = {**(base.get(key) or {}), **{k: v for k, v in (value or {}).items() if v is not None}}
        elif value not in (None, [], {}, "") or key not in out:
            out[key] = value
    return out


__all__ = [
    "PROVIDERS",
    "REMOTE_PROVIDERS",
    "_REMOTE_ALLOWLIST",
    "CIVITAI_FILE_TYPES",
    "CIVITAI_MODEL_TYPES",
    "allowed_host_patterns",
    "civitai_kind",
    "civitai_size",
    "commercial_use",
    "host_matches",
    "is_host_allowed",
    "merge_metadata",
    "normalise_metadata",
    "nsfw_from_level",
    "pick_civitai_file",
    "plain_text",
    "provider_for_url",
    "to_bool",
    "to_tags",
]
