"""Civitai: turn what a person pastes into a :class:`RemotePlan` via the public REST API.

Accepted forms (the host may be ``civitai.com``, ``www.civitai.com``, ``civitai.red`` or the
configured ``ingest.providers.civitai.base_url``):

- model page ``https://civitai.com/models/913572[/slug][?modelVersionId=1184630]``
  (no version: the newest, ``modelVersions[0]``);
- download URL ``https://civitai.com/api/download/models/1184630[?type=Training%20Data&fileId=...]``;
- API URLs ``/api/v1/models/{id}``, ``/api/v1/model-versions/{id}``,
  ``/api/v1/model-versions/by-hash/{sha256}``, and ``/model-versions/{id}``;
- short ids ``civitai:1184630`` (a version), ``civitai:913572@1184630``,
  ``civitai:model/913572``, ``civitai:sha256:<hex>`` and AIR URNs
  ``urn:air:sdxl:lora:civitai:913572@1184630``.

The file is picked like Civitai does: ``fileId`` if given, else the ``type`` / ``format`` /
``size`` / ``fp`` preferences, else the primary file.  ``provider_metadata`` is the raw
``/api/v1/model-versions/{id}`` document.  The token comes from ``CIVITAI_API_TOKEN``
(sent as ``Authorization: Bearer`` to the API host only, never to the storage host).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from ... import provider_names
from ...config import Workspace
from ..errors import RemoteError
from ..mappers import civitai_size
from .base import (
    GuardedSession,
    HttpFailure,
    RemotePlan,
    auth_headers,
    base_url,
    check_reference_url,
    env_token,
    error_text,
    remote_error,
    safe_filename,
)

NAME = "civitai"
DEFAULT_BASE = "https://civitai.com"
TOKEN_ENV = "CIVITAI_API_TOKEN"
CANONICAL_HOSTS = provider_names.CANONICAL_HOSTS[NAME]
# model-level fields a version body lacks; merged into its ``model`` object on every pull
MODEL_FIELDS = ("name", "type", "description", "creator", "tags", "nsfw", "nsfwLevel", "allowNoCredit",
                "allowCommercialUse", "allowDerivatives", "allowDifferentLicense", "availability", "poi", "minor")
SIZE_TOLERANCE = 1024  # sizeKB is a rounded float: published sizes are good to one KiB
PREF_KEYS = ("type", "format", "size", "fp")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _token() -> str | None:
    return env_token(TOKEN_ENV)


def _int(value: Any, what: str) -> int:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        raise RemoteError(f"Civitai {what} must be a number, got {str(value)[:40]!r}.", code="remote.bad_url") from None
    if n <= 0 or n > 2**31 - 1:
        raise RemoteError(f"Civitai {what} {n} is out of range.", code="remote.bad_url")
    return n


def parse_reference(remote_url: str, metadata: dict | None, ws: Workspace | None) -> dict[str, Any]:
    """``{"model_id", "version_id", "file_id", "sha256", "prefs", "token"}`` from a user's URL / id."""
    ref: dict[str, Any] = {"model_id": None, "version_id": None, "file_id": None, "sha256": None,
                           "prefs": {}, "token": None}
    text = (remote_url or "").strip()
    check_reference_url(text)
    meta = metadata or {}
    low = text.lower()
    if low.startswith("urn:air:"):
        m = re.search(r":civitai:(\d+)(?:@(\d+))?", text)
        if not m:
            raise RemoteError(f"Not a Civitai AIR: {text[:120]!r}", code="remote.bad_url")
        ref["model_id"] = _int(m.group(1), "model id")
        ref["version_id"] = _int(m.group(2), "version id") if m.group(2) else None
    elif low.startswith("civitai:"):
        rest = text.split(":", 1)[1].strip().lstrip("/")
        if rest.lower().startswith(("sha256:", "by-hash:", "hash:")):
            ref["sha256"] = rest.split(":", 1)[1].strip()
        elif rest.lower().startswith(("model/", "models/")):
            ref["model_id"] = _int(rest.split("/", 1)[1], "model id")
        elif "@" in rest:
            mid, vid = rest.split("@", 1)
            ref["model_id"], ref["version_id"] = _int(mid, "model id"), _int(vid, "version id")
        else:
            ref["version_id"] = _int(rest, "version id")
    elif text:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        base_host = (urlsplit(base_url(NAME, ws, DEFAULT_BASE)).hostname or "").lower()
        if parts.scheme not in ("http", "https") or (host not in CANONICAL_HOSTS and host != base_host):
            raise RemoteError(
                f"Not a Civitai URL: {text[:120]!r}. Paste a model page (https://civitai.com/models/ID), "
                "a download link (https://civitai.com/api/download/models/VERSION_ID) or civitai:VERSION_ID.",
                code="remote.bad_url")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path.rstrip("/")
        if m := re.fullmatch(r"/api/download/models/([^/]+)", path):
            ref["version_id"] = _int(m.group(1), "version id")
        elif m := re.fullmatch(r"/api/v1/model-versions/by-hash/([^/]+)", path):
            ref["sha256"] = m.group(1)
        elif m := re.fullmatch(r"(?:/api/v1)?/model-versions/([^/]+)", path):
            ref["version_id"] = _int(m.group(1), "version id")
        elif m := re.fullmatch(r"(?:/api/v1)?/models/([^/]+)(?:/[^/]*)?", path):
            ref["model_id"] = _int(m.group(1), "model id")
            if query.get("modelVersionId"):
                ref["version_id"] = _int(query["modelVersionId"], "modelVersionId")
        else:
            raise RemoteError(f"Civitai URL not understood: {parts.path[:120]!r}. Use a model page or a "
                              "download link.", code="remote.bad_url")
        if query.get("fileId"):
            ref["file_id"] = _int(query["fileId"], "fileId")
        ref["prefs"] = {k: query[k] for k in PREF_KEYS if query.get(k)}
        ref["token"] = query.get("token") or None
    else:
        ref["version_id"] = meta.get("modelVersionId") or meta.get("model_version_id")
        if ref["version_id"] is None:
            raise RemoteError("No Civitai URL or id given.", code="remote.bad_url")
        ref["version_id"] = _int(ref["version_id"], "version id")
    for key, names in (("version_id", ("modelVersionId", "model_version_id")), ("file_id", ("fileId", "file_id"))):
        if ref[key] is None:
            for name in names:
                if meta.get(name) not in (None, ""):
                    ref[key] = _int(meta[name], name)
                    break
    if ref["sha256"] is not None and not _HEX64.match(str(ref["sha256"])):
        raise RemoteError("A Civitai hash lookup needs a 64-character SHA256.", code="remote.bad_url")
    return ref


def map_error(f: HttpFailure) -> RemoteError | None:
    """Civitai's documented error answers (download_behaviour.json) as actionable errors."""
    text, doc = error_text(f.body)
    low = (text or "").lower()
    err_key = str(doc.get("error", "")).lower()
    if f.on_storage_host:
        return None  # storage-host 403 = expired signed link: generic mapping handles it
    if f.status == 401:
        if "disabled downloads" in low:
            return remote_error(f"{f.subject}: the creator has disabled downloads for this file; it cannot be "
                                "pulled (not even with a token).", code="remote.downloads_disabled", status=401)
        if f.token_sent:
            return remote_error(f"{f.subject}: Civitai refused the API key in {TOKEN_ENV} (HTTP 401: "
                                f"{text or 'Unauthorized'}). Create a new key under civitai.com → Account "
                                "settings → API Keys.", code="remote.auth_invalid", status=401)
        return remote_error(f"{f.subject}: Civitai requires you to be logged in to download this file. Set "
                            f"{TOKEN_ENV} to an API key (civitai.com → Account settings → API Keys).",
                            code="remote.auth_required", status=401)
    if f.status == 403:
        if "early access" in low or err_key == "early access":
            return remote_error(f"{f.subject}: this version is in paid Early Access on Civitai; buy access with "
                                f"the account whose key is in {TOKEN_ENV}, or wait until it is public.",
                                code="remote.early_access", status=403)
        return remote_error(f"{f.subject}: Civitai denied access (HTTP 403: {text or 'Forbidden'}).",
                            code="remote.forbidden", status=403)
    if f.status == 404:
        return remote_error(f"{f.subject}: Civitai says {text or 'not found'!r}; check the model/version id.",
                            code="remote.not_found", status=404)
    if f.status == 410:
        return remote_error(f"{f.subject}: the model is archived on Civitai and can no longer be downloaded.",
                            code="remote.gone", status=410)
    return None


def on_redirect(resp: Any, target: Any, next_url: str) -> None:
    """Civitai answers browser-like clients with redirects to pages instead of errors: refuse them."""
    parts = urlsplit(next_url)
    if (parts.hostname or "").lower() != target.host:
        return
    if parts.path.startswith("/login"):
        raise remote_error("Civitai redirected the download to its login page: this file requires an account. "
                           f"Set {TOKEN_ENV} to an API key.", code="remote.auth_required", status=resp.status_code)
    if re.fullmatch(r"/model-versions/\d+/?", parts.path):
        raise remote_error("Civitai redirected the download to the version page: it is in Early Access and "
                           "needs an account that bought access.", code="remote.early_access",
                           status=resp.status_code)


def rebase(url: str, base: str) -> str:
    """Move a civitai.com URL from the API's JSON onto the configured base URL."""
    parts = urlsplit(url)
    if (parts.hostname or "").lower() in CANONICAL_HOSTS:
        b = urlsplit(base)
        return urlunsplit((b.scheme, b.netloc, parts.path, parts.query, ""))
    return url


def _file_matches(file: dict, prefs: dict) -> bool:
    meta = file.get("metadata") or {}
    checks = {"type": file.get("type"), "format": meta.get("format"), "size": meta.get("size"), "fp": meta.get("fp")}
    return all(str(checks[k] or "").lower() == str(v).lower() for k, v in prefs.items())


def choose_file(version: dict, ref: dict, subject: str) -> dict:
    files = [f for f in version.get("files") or [] if isinstance(f, dict)]
    mode = ((version.get("model") or {}).get("mode") or "").lower()
    if not files:
        why = "the model is archived" if mode == "archived" else "the version lists no files"
        raise RemoteError(f"{subject}: nothing to download ({why}).", code="remote.not_found")
    if ref.get("file_id") is not None:
        for f in files:
            if f.get("id") == ref["file_id"]:
                return f
        raise RemoteError(f"{subject}: no file with id {ref['file_id']} in this version "
                          f"(files: {', '.join(str(f.get('id')) for f in files)}).", code="remote.not_found")
    if ref.get("sha256"):
        for f in files:
            if str((f.get("hashes") or {}).get("SHA256", "")).lower() == str(ref["sha256"]).lower():
                return f
    prefs = ref.get("prefs") or {}
    if prefs:
        matching = [f for f in files if _file_matches(f, prefs)]
        if not matching:
            raise RemoteError(f"{subject}: no file matches {urlencode(prefs)} (files: "
                              f"{', '.join(str(f.get('name')) for f in files)}).", code="remote.not_found")
        files = matching
    for f in files:
        if f.get("primary") is True:
            return f
    for f in files:
        if f.get("type") == "Model":
            return f
    return files[0]


def _check_body(doc: dict, subject: str) -> dict:
    """A ``{"error": ...}`` body is an answer that failed, never metadata."""
    if "error" in doc and "id" not in doc:
        raise RemoteError(f"{subject}: Civitai answered with an error: {str(doc.get('error'))[:300]}",
                          code="remote.not_found" if "not found" in str(doc.get("error")).lower()
                          else "remote.bad_response")
    return doc


def merge_model(version: dict, model: dict) -> dict:
    """The version body with the model's own fields (licence terms, creator, tags, NSFW level)
    merged into its ``model`` object, where Civitai itself puts the model's name and type."""
    merged = dict(version)
    merged["model"] = {**{k: model[k] for k in MODEL_FIELDS if k in model}, **(version.get("model") or {}),
                       "id": model.get("id", version.get("modelId"))}
    for key in ("allowNoCredit", "allowCommercialUse", "allowDerivatives", "allowDifferentLicense",
                "creator", "tags", "nsfwLevel"):  # the model's values win over a version's summary
        if key in model:
            merged["model"][key] = model[key]
    return merged


def plan(remote_url: str, metadata: dict | None, ws: Workspace | None) -> RemotePlan:
    ref = parse_reference(remote_url, metadata, ws)
    token = _token() or ref["token"]
    headers = auth_headers(token)
    base = base_url(NAME, ws, DEFAULT_BASE)
    model: dict | None = None
    with GuardedSession(NAME, ws, auth=headers, error_mapper=map_error) as s:
        if ref["version_id"] is None and ref["sha256"]:
            subject = f"Civitai file with SHA256 {ref['sha256'][:12]}…"
            version = _check_body(s.get_json(f"{base}/api/v1/model-versions/by-hash/{ref['sha256'].upper()}",
                                             subject=subject), subject)
        else:
            if ref["version_id"] is None:
                subject = f"Civitai model {ref['model_id']}"
                model = _check_body(s.get_json(f"{base}/api/v1/models/{ref['model_id']}", subject=subject),
                                    subject)
                versions = [v for v in model.get("modelVersions") or [] if isinstance(v, dict) and v.get("id")]
                if not versions:
                    raise RemoteError(f"Civitai model {ref['model_id']} has no published versions.",
                                      code="remote.not_found")
                ref["version_id"] = int(versions[0]["id"])
            subject = f"Civitai model version {ref['version_id']}"
            version = _check_body(s.get_json(f"{base}/api/v1/model-versions/{ref['version_id']}",
                                             subject=subject), subject)
        model_id = version.get("modelId") or ref["model_id"]
        if model is None and model_id is not None:  # licence terms, creator and tags live on the model
            subject = f"Civitai model {model_id}"
            try:
                model = _check_body(s.get_json(f"{base}/api/v1/models/{_int(model_id, 'model id')}",
                                               subject=subject), subject)
            except RemoteError as exc:
                if exc.code != "remote.not_found":
                    raise
                model = None  # a hidden/unlisted model: the version is still pullable, its terms unknown
    vid = version.get("id", ref["version_id"])
    subject = f"Civitai model version {vid}"
    file = choose_file(version, ref, subject)
    url = file.get("downloadUrl") or version.get("downloadUrl") or f"{DEFAULT_BASE}/api/download/models/{vid}"
    download_url = rebase(str(url), base)
    if ref.get("file_id") is not None and "fileId=" not in download_url:
        download_url += ("&" if "?" in download_url else "?") + f"fileId={ref['file_id']}"
    sha = (file.get("hashes") or {}).get("SHA256")
    size = civitai_size(file.get("sizeKB"))
    return RemotePlan(
        provider=NAME,
        source_url=_strip_token(remote_url),
        download_url=download_url,
        filename=safe_filename(str(file.get("name") or f"civitai_{vid}.bin")),
        expected_sha256=str(sha).lower() if sha and _HEX64.match(str(sha)) else None,
        expected_size=size,
        provider_metadata=merge_model(version, model) if model else version,
        headers=headers,
        size_tolerance=SIZE_TOLERANCE if size is not None else 0,
    )


def _strip_token(url: str) -> str:
    """Drop a ``token=`` query parameter (a Civitai API key) from a URL kept for display."""
    parts = urlsplit(url)
    if "token=" not in parts.query:
        return url
    q = [(k, v) for k, vs in parse_qs(parts.query, keep_blank_values=True).items() for v in vs if k != "token"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), parts.fragment))
