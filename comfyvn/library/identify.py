"""Identify library files on Civitai in bulk, and link files to Hugging Face repos they came from.

Civitai: ``POST /api/v1/model-versions/by-hash`` takes a JSON array of at most 100 SHA-256
values and answers the full version objects of the published ones it knows (first match per
hash).  Each request takes a token of the shared per-provider rate limiter
(:class:`comfyvn.ingest.ratelimit.RateLimiter`, the one every pull of the workspace draws from),
goes through the network policy (:func:`comfyvn.ingest.netguard.check_url`: allow-list, public
address, pinned), and a 429 blocks the provider for every process.  Hashes Civitai does not know
go into a persistent negative cache (``library.negative_cache_days``, default 7) and are not asked
again before it expires, so a rescan of an unidentified library costs no call.

A match fills the asset's metadata as a pull does: the version is merged with its model
(``GET /api/v1/models/{id}``, once per model: licence terms, creator and tags live there) and
mapped by :func:`comfyvn.ingest.mappers.normalise_metadata` (rights per :mod:`comfyvn.rights`);
the version's first preview image becomes the asset's thumbnail.

Hugging Face: a file whose folder names a repo (``config.json`` ``_name_or_path`` / ``repo_id``,
a model card's ``repo_id:`` / ``model_id:`` front matter, or ``hf_repo`` in the asset's metadata) is
linked to that repo when one of the repo's LFS objects has the file's SHA-256
(``GET /api/models/{repo}?blobs=true``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import get_setting
from ..hooks.events import emit
from ..ingest.errors import RemoteError
from ..ingest.mappers import normalise_metadata
from ..ingest.providers.base import GuardedSession, auth_headers, base_url, env_token, read_limited
from ..ingest.providers.civitai import DEFAULT_BASE, TOKEN_ENV, map_error, merge_model, rebase
from ..ingest.ratelimit import RateLimiter
from .roots import IN_PLACE_PREFIX

log = logging.getLogger("comfyvn.library.identify")

BATCH = 100  # Civitai's limit per by-hash call (it answers 400 beyond)
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".sft")
PREVIEW_MAX_BYTES = 20 * 1024 * 1024
_UPSERT_IDENTIFIED = ("ON CONFLICT(project_id, uid, provider) DO UPDATE SET ref = excluded.ref,"
                      " identified_at = excluded.identified_at")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_META_SKIP = ("tags", "license", "provider")


@dataclass
class IdentifyReport:
    provider: str = "civitai"
    asked: int = 0
    calls: int = 0  # by-hash calls
    model_calls: int = 0
    matched: list[dict] = field(default_factory=list)
    not_found: int = 0
    skipped_negative: int = 0
    previews: int = 0
    hf_linked: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def negative_cache_seconds(ws) -> float:
    days = get_setting("library.negative_cache_days", 7, ws)
    try:
        days = float(days)
    except (TypeError, ValueError):
        raise ValueError(f"library.negative_cache_days must be a number of days, got {days!r}") from None
    if days < 0:
        raise ValueError(f"library.negative_cache_days must be >= 0, got {days}")
    return days * 86400


def unidentified(registry, provider: str = "civitai", *, include_negative: bool = False) -> list[dict]:
    """In-place model assets not yet identified on ``provider`` (and, unless ``include_negative``,
    not in its fresh negative cache): ``[{"uid", "hash", "path"}]``."""
    since = time.time() - negative_cache_seconds(registry.ws)
    rows = registry.db.query(
        "SELECT a.uid, a.hash, a.path FROM assets a WHERE a.project_id = ? AND a.path LIKE ? AND NOT EXISTS"
        " (SELECT 1 FROM library_identified i WHERE i.project_id = a.project_id AND i.uid = a.uid AND i.provider = ?)"
        + ("" if include_negative else
           " AND NOT EXISTS (SELECT 1 FROM library_negative n WHERE n.provider = ? AND n.sha256 = a.hash"
           " AND n.asked_at >= ?)") + " ORDER BY a.uid",
        (registry.project_id, IN_PLACE_PREFIX + "%", provider, *(() if include_negative else (provider, since))))
    return [dict(r) for r in rows if PurePosixPath(r["path"]).suffix.lower() in MODEL_SUFFIXES]


class CivitaiBulk:
    """The by-hash bulk call, paced and policed (one instance per identification run)."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.ws = registry.ws
        self.base = base_url("civitai", self.ws, DEFAULT_BASE)
        self.limiter = RateLimiter(registry.db, self.ws)
        self.session = GuardedSession("civitai", self.ws, auth=auth_headers(env_token(TOKEN_ENV)),
                                      error_mapper=map_error)

    def close(self) -> None:
        self.session.close()

    def _pace(self) -> None:
        while (wait := self.limiter.try_acquire("civitai")) > 0:
            time.sleep(min(wait, 60.0))

    def by_hash(self, hashes: list[str]) -> list[dict]:
        """Version objects Civitai knows for up to :data:`BATCH` SHA-256 values."""
        if not 0 < len(hashes) <= BATCH:
            raise ValueError(f"by-hash takes 1..{BATCH} hashes per call, got {len(hashes)}")
        subject = f"Civitai bulk lookup of {len(hashes)} hashes"
        body = json.dumps([h.upper() for h in hashes]).encode()
        for _attempt in range(5):
            self._pace()
            s = self.session
            target = s.check(f"{self.base}/api/v1/model-versions/by-hash")
            headers = {"Content-Type": "application/json", "Accept": "application/json",
                       "Host": target.host_header}
            if target.origin in s.auth_origins:
                headers.update(s.auth)
            request = s.client.build_request("POST", target.connect_url, headers=headers, content=body,
                                             extensions=target.request_extensions())
            try:
                resp = s.client.send(request, stream=True)
            except Exception as exc:  # httpx errors: the provider is unreachable
                raise RemoteError(f"{subject}: cannot reach {target.host} ({type(exc).__name__}: {exc})",
                                  code="remote.connection", retryable=True) from None
            try:
                data = read_limited(resp, 64 * 1024 * 1024)
            finally:
                resp.close()
            if resp.status_code == 429:
                retry = float(resp.headers.get("retry-after") or 30)
                self.limiter.block("civitai", retry)
                continue
            if resp.status_code != 200:
                raise s.http_error(resp, data, target, target, subject)
            doc = json.loads(data)
            if not isinstance(doc, list):
                raise RemoteError(f"{subject}: expected a JSON array, got {type(doc).__name__}",
                                  code="remote.bad_response")
            return [v for v in doc if isinstance(v, dict)]
        raise RemoteError(f"{subject}: still rate limited after 5 tries; try again later",
                          code="remote.rate_limited", retryable=True)

    def model(self, model_id: Any) -> dict | None:
        self._pace()
        try:
            return self.session.get_json(f"{self.base}/api/v1/models/{int(model_id)}",
                                         subject=f"Civitai model {model_id}")
        except RemoteError as exc:
            if exc.code == "remote.not_found":
                return None  # a hidden model: the version is known, its terms are not
            raise

    def preview(self, version: dict) -> Path | None:
        """Download the version's first image to a temporary file (the caller removes it)."""
        image = next((i for i in version.get("images") or [] if isinstance(i, dict) and i.get("url")
                      and i.get("type", "image") == "image"), None)
        if image is None:
            return None
        url = rebase(str(image["url"]), self.base)
        resp, _target, _hops = self.session.open("GET", url, subject="Civitai preview image")
        fd, name = tempfile.mkstemp(prefix="civitai-preview-", suffix=PurePosixPath(url.split("?")[0]).suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                total = 0
                for chunk in resp.iter_bytes():
                    total += len(chunk)
                    if total > PREVIEW_MAX_BYTES:
                        raise RemoteError(f"preview image {url[:100]} is over {PREVIEW_MAX_BYTES} bytes",
                                          code="remote.too_large")
                    fh.write(chunk)
        except BaseException:
            os.unlink(name)
            raise
        finally:
            resp.close()
        return Path(name)


def _version_hashes(version: dict) -> set[str]:
    return {str((f.get("hashes") or {}).get("SHA256", "")).lower() for f in version.get("files") or []
            if isinstance(f, dict)}


def identify_unidentified(registry, *, limit: int | None = None, previews: bool = True) -> IdentifyReport:
    """Ask Civitai about every unidentified in-place model of ``registry``'s project, 100 per call."""
    started = time.monotonic()
    report = IdentifyReport()
    todo = unidentified(registry, "civitai")
    report.skipped_negative = len(unidentified(registry, "civitai", include_negative=True)) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    by_sha = {r["hash"]: r for r in todo}
    if not todo:
        report.seconds = time.monotonic() - started
        return report
    bulk = CivitaiBulk(registry)
    models: dict[Any, dict | None] = {}
    try:
        shas = list(by_sha)
        for start in range(0, len(shas), BATCH):
            batch = shas[start:start + BATCH]
            versions = bulk.by_hash(batch)
            report.calls += 1
            report.asked += len(batch)
            found: set[str] = set()
            for version in versions:
                for sha in _version_hashes(version) & set(batch):
                    if sha in found:
                        continue  # first match per hash, as Civitai answers it
                    found.add(sha)
                    try:
                        _apply_match(registry, bulk, by_sha[sha], version, models, report, previews)
                    except (RemoteError, ValueError, OSError) as exc:
                        report.errors.append(f"{by_sha[sha]['uid']}: {exc}")
            missing = [sha for sha in batch if sha not in found]
            report.not_found += len(missing)
            now = time.time()
            with registry.db.transaction() as conn:
                conn.executemany("INSERT INTO library_negative(provider, sha256, asked_at) VALUES (?,?,?)"
                                 " ON CONFLICT(provider, sha256) DO UPDATE SET asked_at = excluded.asked_at",
                                 [("civitai", sha, now) for sha in missing])
    finally:
        bulk.close()
        report.seconds = time.monotonic() - started
        _announce(registry, report)
    return report


def _apply_match(registry, bulk: CivitaiBulk, asset: dict, version: dict, models: dict, report: IdentifyReport,
                 previews: bool) -> None:
    model_id = version.get("modelId")
    if model_id is not None and model_id not in models:
        models[model_id] = bulk.model(model_id)
        report.model_calls += 1
    model = models.get(model_id)
    raw = merge_model(version, model) if model else version
    meta = normalise_metadata("civitai", raw, sha256=asset["hash"])
    update = {k: v for k, v in meta.items() if k not in _META_SKIP and v not in (None, [], {})}
    update["origin"] = "civitai"
    registry.update_asset_meta(asset["uid"], update, add_tags=meta.get("tags") or [],
                               **({"license_tag": meta["license"]} if meta.get("license") else {}))
    with registry.db.transaction() as conn:
        conn.execute(f"INSERT INTO library_identified(project_id, uid, provider, ref, identified_at)"
                     f" VALUES (?,?,?,?,?) {_UPSERT_IDENTIFIED}", (registry.project_id, asset["uid"], "civitai",
                                              f"{model_id}@{version.get('id')}", time.time()))
    report.matched.append({"uid": asset["uid"], "model_id": model_id, "version_id": version.get("id"),
                           "title": meta.get("title")})
    if previews:
        image = bulk.preview(version)
        if image is not None:
            try:
                status = registry.set_preview_image(asset["uid"], image)
                report.previews += any(v["status"] == "ready" for v in status.values())
            finally:
                image.unlink(missing_ok=True)


def _announce(registry, report: IdentifyReport) -> None:
    try:
        with registry.db.transaction() as conn:
            emit(conn, "on_library_identified", {"project_id": registry.project_id, "provider": report.provider,
                                                 "asked": report.asked, "calls": report.calls,
                                                 "matched": len(report.matched), "not_found": report.not_found},
                 project_id=registry.project_id)
    except Exception:
        log.debug("could not emit on_library_identified", exc_info=True)


# ------------------------------------------------------------------------------- Hugging Face
def repo_hint(file_path: Path, meta: dict | None = None) -> str | None:
    """The Hugging Face repo a file's folder names, if any."""
    for key in ("hf_repo", "repo_id"):
        value = (meta or {}).get(key)
        if isinstance(value, str) and _REPO_RE.match(value):
            return value
    folder = file_path.parent
    config = folder / "config.json"
    if config.is_file() and config.stat().st_size < 1024 * 1024:
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            for key in ("repo_id", "_name_or_path"):
                value = data.get(key)
                if isinstance(value, str) and _REPO_RE.match(value):
                    return value
    card = folder / "README.md"
    if card.is_file() and card.stat().st_size < 1024 * 1024:
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            front = text[3:].split("\n---", 1)[0]
            m = re.search(r"^(?:repo_id|model_id):\s*['\"]?([^'\"\s]+)", front, re.MULTILINE)
            if m and _REPO_RE.match(m.group(1)):
                return m.group(1)
    return None


def link_huggingface(registry, *, limit: int | None = None) -> list[dict]:
    """Link in-place files to the Hugging Face repo their folder names when the repo holds their
    bytes (an LFS object with the same SHA-256).  Returns ``[{"uid", "repo", "file"}]``."""
    todo = unidentified(registry, "huggingface", include_negative=True)[:limit]
    linked: list[dict] = []
    infos: dict[str, dict | None] = {}
    base = base_url("huggingface", registry.ws, "https://huggingface.co")
    with GuardedSession("huggingface", registry.ws) as s:
        for row in todo:
            asset = registry.get_asset(row["uid"])
            repo = repo_hint(Path(asset["abs_path"]), asset["meta"])
            if repo is None:
                continue
            if repo not in infos:
                try:
                    infos[repo] = s.get_json(f"{base}/api/models/{repo}?blobs=true", subject=f"Hugging Face {repo}")
                except RemoteError as exc:
                    log.info("Hugging Face repo %s: %s", repo, exc)
                    infos[repo] = None
            info = infos[repo]
            if not info:
                continue
            sibling = next((x for x in info.get("siblings") or [] if isinstance(x, dict)
                            and str((x.get("lfs") or {}).get("sha256", "")).lower() == row["hash"]), None)
            if sibling is None:
                continue
            meta = normalise_metadata("huggingface", info, filename=sibling.get("rfilename"), sha256=row["hash"])
            update = {k: v for k, v in meta.items() if k not in _META_SKIP and v not in (None, [], {})}
            update.update(origin="huggingface", hf_repo=info.get("id", repo), hf_file=sibling.get("rfilename"))
            registry.update_asset_meta(row["uid"], update, add_tags=meta.get("tags") or [],
                                       **({"license_tag": meta["license"]} if meta.get("license") else {}))
            with registry.db.transaction() as conn:
                conn.execute(f"INSERT INTO library_identified(project_id, uid, provider, ref, identified_at)"
                             f" VALUES (?,?,?,?,?) {_UPSERT_IDENTIFIED}", (registry.project_id, row["uid"], "huggingface",
                                                      f"{info.get('id', repo)}/{sibling.get('rfilename')}", time.time()))
            linked.append({"uid": row["uid"], "repo": info.get("id", repo), "file": sibling.get("rfilename")})
    return linked


__all__ = ["BATCH", "CivitaiBulk", "IdentifyReport", "identify_unidentified", "link_huggingface",
           "negative_cache_seconds", "repo_hint", "unidentified"]
