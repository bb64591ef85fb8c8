"""Hugging Face: turn a file URL into a :class:`RemotePlan` via the Hub API.

Accepted forms (host ``huggingface.co``, ``hf.co`` or the configured
``ingest.providers.huggingface.base_url``):

- ``https://huggingface.co/{org}/{repo}/resolve/{rev}/{path}`` (``?download=true`` is fine),
- ``https://huggingface.co/{org}/{repo}/blob/{rev}/{path}`` (the file page),
- ``hf://{org}/{repo}/{path}`` and ``hf://{org}/{repo}@{rev}/{path}``.

Steps, as ``huggingface_hub`` does them: ``GET /api/models/{repo}[/revision/{rev}]?blobs=true``
(model info: kept raw as ``provider_metadata``; LFS files carry ``lfs.sha256``), then
``HEAD /{repo}/resolve/{commit}/{path}`` following only relative redirects, which checks access
(gated repos answer 401/403 with ``X-Error-Code: GatedRepo``) and gives ``X-Linked-Etag`` /
``X-Linked-Size`` / ``X-Repo-Commit``.  The download URL is pinned to the commit, so a resumed
download never mixes two revisions.  The token comes from ``HF_TOKEN``.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

from ... import provider_names
from ...config import Workspace
from ..errors import RemoteError
from .base import (
    GuardedSession,
    HttpFailure,
    RemotePlan,
    auth_headers,
    base_url,
    check_reference_url,
    env_token,
    error_text,
    read_limited,
    remote_error,
    safe_filename,
)

NAME = "huggingface"
DEFAULT_BASE = "https://huggingface.co"
TOKEN_ENV = "HF_TOKEN"
CANONICAL_HOSTS = provider_names.CANONICAL_HOSTS[NAME]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _token() -> str | None:
    return env_token(TOKEN_ENV, "HUGGING_FACE_HUB_TOKEN")


def _check_repo(repo: str, text: str) -> str:
    """``org/name``, or a legacy id without organisation (``gpt2``) that the Hub redirects."""
    parts = repo.split("/")
    if len(parts) not in (1, 2) or not all(_NAME_RE.match(p) for p in parts):
        raise RemoteError(f"Not a Hugging Face model repo id ('org/name'): {repo!r} in {text[:120]!r}",
                          code="remote.bad_url")
    return repo


def parse_reference(remote_url: str, ws: Workspace | None) -> tuple[str, str, str]:
    """``(repo_id, revision, path_in_repo)`` from a user's URL."""
    text = (remote_url or "").strip()
    check_reference_url(text)
    if text.lower().startswith("hf://"):
        rest = text[5:].strip("/")
        if rest.startswith(("datasets/", "spaces/")):
            raise RemoteError("Only model repos are supported (not datasets or spaces).", code="remote.bad_url")
        rest = rest.removeprefix("models/")
        bits = rest.split("/")
        if len(bits) < 3:
            raise RemoteError(f"Use hf://org/repo/path/to/file (got {text[:120]!r}).", code="remote.bad_url")
        repo, rev = "/".join(bits[:2]), "main"
        if "@" in bits[1]:
            name, rev = bits[1].split("@", 1)
            repo = f"{bits[0]}/{name}"
        return _check_repo(repo, text), unquote(rev), unquote("/".join(bits[2:]))
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    base_host = (urlsplit(base_url(NAME, ws, DEFAULT_BASE)).hostname or "").lower()
    if parts.scheme not in ("http", "https") or (host not in CANONICAL_HOSTS and host != base_host):
        raise RemoteError(f"Not a Hugging Face file URL: {text[:120]!r}. Paste "
                          "https://huggingface.co/ORG/REPO/resolve/main/FILE or hf://ORG/REPO/FILE.",
                          code="remote.bad_url")
    m = (re.fullmatch(r"/([^/]+/[^/]+)/(?:resolve|blob)/([^/]+)/(.+)", parts.path)
         or re.fullmatch(r"/([^/]+)/(?:resolve|blob)/([^/]+)/(.+)", parts.path))  # gpt2/resolve/main/x
    if not m:
        if parts.path.startswith(("/datasets/", "/spaces/")):
            raise RemoteError("Only model repos are supported (not datasets or spaces).", code="remote.bad_url")
        raise RemoteError("Hugging Face URL must point at one file: "
                          ".../ORG/REPO/resolve/REVISION/PATH (or /blob/).", code="remote.bad_url")
    return _check_repo(m.group(1), text), unquote(m.group(2)), unquote(m.group(3))


def map_error(f: HttpFailure) -> RemoteError | None:
    """Map Hub answers by ``X-Error-Code`` (as huggingface_hub does) to actionable errors."""
    if f.on_storage_host:
        return None
    code = f.headers.get("x-error-code", "")
    msg = f.headers.get("x-error-message") or error_text(f.body)[0] or ""
    subject = f.subject
    if code == "GatedRepo":
        if f.status == 401 or not f.token_sent:
            return remote_error(f"{subject} is in a gated repo and requires a Hugging Face token with access: set "
                                f"{TOKEN_ENV} to a token of an account that was granted access (request access on "
                                "the repo's page first).", code="remote.gated", status=f.status)
        return remote_error(f"{subject} is in a gated repo and the account of your {TOKEN_ENV} has not been granted "
                            "access yet; request access on the repo's page, then retry.",
                            code="remote.gated", status=f.status)
    if code == "RepoNotFound" or (f.status == 401 and "invalid username or password" in msg.lower()):
        hint = "" if f.token_sent else f" (a private repo needs {TOKEN_ENV})"
        return remote_error(f"{subject}: repository not found{hint}.", code="remote.not_found", status=f.status)
    if code == "EntryNotFound":
        return remote_error(f"{subject}: no such file in the repo.", code="remote.not_found", status=f.status)
    if code == "RevisionNotFound":
        return remote_error(f"{subject}: no such revision (branch, tag or commit).", code="remote.not_found",
                            status=f.status)
    if f.status == 401 and f.token_sent:
        why = msg or "invalid credentials"
        return remote_error(f"{subject}: Hugging Face refused the token in {TOKEN_ENV} ({why}); create a new "
                            "read token at huggingface.co/settings/tokens.",
                            code="remote.auth_invalid", status=401)
    return None


def plan(remote_url: str, metadata: dict | None, ws: Workspace | None) -> RemotePlan:
    repo, rev, path = parse_reference(remote_url, ws)
    headers = auth_headers(_token())
    base = base_url(NAME, ws, DEFAULT_BASE)
    subject = f"Hugging Face file {repo}/{path}"
    with GuardedSession(NAME, ws, auth=headers, error_mapper=map_error) as s:
        def model_info(repo_id: str) -> dict:
            url = f"{base}/api/models/{repo_id}" + ("" if rev == "main" else f"/revision/{quote(rev, safe='')}")
            return s.get_json(url + "?blobs=true", subject=f"Hugging Face repo {repo_id}")

        info = model_info(repo)
        canonical = str(info.get("id") or "")  # "gpt2" is "openai-community/gpt2" today
        if canonical != repo and canonical.count("/") == 1 and all(_NAME_RE.match(p) for p in canonical.split("/")):
            repo = canonical  # the Hub's redirect drops ?blobs=true: ask the canonical repo again
            info = model_info(repo)
        siblings = {str(x.get("rfilename")): x for x in info.get("siblings") or [] if isinstance(x, dict)}
        if siblings and path not in siblings:
            raise RemoteError(f"{subject}: the repo has no file {path!r} at revision {rev!r}.",
                              code="remote.not_found")
        sibling = siblings.get(path, {})
        commit = str(info.get("sha") or rev)
        resolve_url = f"{base}/{repo}/resolve/{quote(commit, safe='')}/{quote(path)}"
        resp, _target, hops = s.open("HEAD", resolve_url, subject=subject, follow="relative",
                                     ok=(200, 301, 302, 303, 307, 308))
        read_limited(resp, 0)
    linked = next((h.headers for h in [*hops, resp] if "x-linked-etag" in h.headers or "x-linked-size" in h.headers),
                  None)
    commit = (resp.headers.get("x-repo-commit") or (hops[0].headers.get("x-repo-commit") if hops else None)
              or commit)
    lfs_value = sibling.get("lfs")
    lfs = lfs_value if isinstance(lfs_value, dict) else {}
    sha = str(lfs.get("sha256") or "").lower() or None
    if sha is None and linked is not None and resp.status_code in (301, 302, 303, 307, 308):
        etag = linked.get("x-linked-etag", "").strip().strip('"').removeprefix("W/").strip('"').lower()
        sha = etag if _HEX64.match(etag) else None  # an LFS pointer's oid; git sha1 for plain files
    size = lfs.get("size") or sibling.get("size")
    if size is None and linked is not None and linked.get("x-linked-size", "").isdigit():
        size = int(linked["x-linked-size"])
    if size is None and resp.status_code == 200 and resp.headers.get("content-length", "").isdigit():
        size = int(resp.headers["content-length"])
    return RemotePlan(
        provider=NAME,
        source_url=remote_url.strip(),
        download_url=f"{base}/{repo}/resolve/{quote(commit, safe='')}/{quote(path)}",
        filename=safe_filename(path.rsplit("/", 1)[-1]),
        expected_sha256=sha if sha and _HEX64.match(sha) else None,
        expected_size=int(size) if isinstance(size, int) or (isinstance(size, str) and size.isdigit()) else None,
        provider_metadata=info,
        headers=headers,
    )
