"""The system checker behind ``tools/check_current_system.py``.

A profile is a list of checks run against a live server (through :mod:`comfyvn.client`) and
against the shipped files:

* **flag defaults**: the shipped ``comfyvn/config/defaults.json`` (and any config file given)
  keep ``enable_asset_ingest = false`` and ``require_remote_terms_ack = true``;
* **routes**: every route is *called* (a harmless GET, or a POST with an invalid body that
  the handler must refuse) and must answer JSON from the comfyvn handler: a 2xx, or an
  error ``{"error", "message"}`` such as 400 ``invalid_body``, 403 ``feature_disabled`` or
  404 ``asset_not_found``.  A 404/405 from Jupyter or Tornado, an HTML page or a 5xx fails;
  OPTIONS proves nothing and is not used;
* **documentation coverage**: the Markdown files under ``docs/`` name every route and hook
  of the profile;
* **storage folders** (with a workspace: ``COMFYVN_HOME`` or ``workspace_root``): the assets
  root, staging and thumbnails folders (``paths.*``) exist, and staging shares the assets
  root's file system (placement by rename).

Profiles: ``p7_asset_ingest_cache`` (ingest queue + dedup cache), ``asset_gallery``
(``/assets/*``), ``hook_bus`` (``/api/modder/hooks*`` incl. a WebSocket handshake) and
``all``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import api_routes
from .client import ApiError, BadRequest, ComfyvnClient
from .config import ConfigError, Workspace, check_storage_paths, existing_workspace, shipped_default
from .hooks import HOOK_SPECS
from .hooks.specs import topics

MISSING_ID = "syscheck-missing-0000"
INVALID_BODY = b"[]"  # valid JSON, never a valid request object: a POST that cannot change anything


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Probe:
    """One route and a harmless call that proves its handler is there."""

    route: str  # as documented, e.g. /api/ingest/jobs/{job_id}
    method: str = "GET"
    body: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)
    validate: Callable[[Any], str | None] | None = None  # extra check of a 2xx JSON body

    def path(self) -> str:
        return re.sub(r"\{\w+\}", MISSING_ID, self.route)


def _has(*keys: str) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        missing = [k for k in keys if not isinstance(body, dict) or k not in body]
        return f"answer lacks {', '.join(missing)}" if missing else None
    return check


def _lists_hooks(category: str | None) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        names = {h.get("name") for h in (body or {}).get("hooks", []) if isinstance(h, dict)}
        want = set(topics(category))
        missing = sorted(want - names)
        return f"hook discovery lacks {', '.join(missing)}" if missing else None
    return check


#: how a route is called when the table's default is not enough: (path, method) -> body, params, check.
#: Every other route and method of :data:`comfyvn.api_routes.ROUTES` is probed too: a GET as such,
#: a POST or PATCH with :data:`INVALID_BODY`, a DELETE of an id that cannot exist (404).
PROBE_DETAILS: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/ingest/upload", "POST"): {"body": b""},  # no ?filename=: refused before anything is stored
    ("/api/ingest/status", "GET"): {"params": {"limit": 1, "include_cache": "true"},
                                    "validate": _has("summary", "cache")},
    ("/api/ingest/jobs", "GET"): {"params": {"limit": 1}, "validate": _has("items", "next_cursor")},
    ("/assets", "GET"): {"params": {"limit": 1}, "validate": _has("items", "next_cursor")},
    ("/assets/upload", "POST"): {"body": b""},
    ("/assets/debug/hooks", "GET"): {"validate": _has("hooks")},
    ("/assets/debug/modder-hooks", "GET"): {"validate": _lists_hooks("asset")},
    ("/assets/debug/history", "GET"): {"params": {"limit": 1}, "validate": _has("items")},
    ("/api/assets/search", "GET"): {"params": {"q": "x", "limit": 1}, "validate": _has("items", "total")},
    ("/api/modder/hooks", "GET"): {"validate": _lists_hooks(None)},
    ("/api/modder/hooks/history", "GET"): {"params": {"limit": 1}, "validate": _has("items")},
    ("/api/modder/hooks/webhooks", "GET"): {"validate": _has("items")},
    ("/api/comfyvn/openapi.json", "GET"): {"validate": _has("openapi", "paths")},
    ("/api/licences/check", "GET"): {"params": {"limit": 1}, "validate": _has("counts", "assets")},
    ("/api/licences/manifest", "GET"): {"params": {"format": "json"}, "validate": _has("licences")},
    ("/api/library", "GET"): {"validate": _has("roots", "last_scan")},
    ("/api/library/duplicates", "GET"): {"validate": _has("groups", "reclaimable_bytes")},
}


def probes(*areas: str) -> list[Probe]:
    """One probe per route and method of ``areas`` in the route table (WebSockets apart)."""
    out = []
    for route in api_routes.routes(*areas, websocket=False):
        for method in route.methods:
            details = {"body": INVALID_BODY if method in ("POST", "PATCH") else None,
                       **PROBE_DETAILS.get((route.path, method), {})}
            out.append(Probe(route.path, method, **details))
    return out


INGEST_PROBES = probes("ingest")
ASSET_PROBES = probes("assets")
HOOK_PROBES = probes("hooks", "api")
LICENCE_PROBES = probes("licences")
LIBRARY_PROBES = probes("library")
WS_ROUTES = [route.path for route in api_routes.routes(websocket=True)]

PROFILES: dict[str, dict[str, Any]] = {
    "p7_asset_ingest_cache": {
        "description": "ingest queue routes, dedup cache snapshot, flag defaults, ingest docs",
        "probes": INGEST_PROBES, "ws": [], "hooks": topics("ingest"),
        "flags": True,
    },
    "asset_gallery": {
        "description": "asset registry routes the gallery uses, asset hook docs",
        "probes": ASSET_PROBES, "ws": [], "hooks": topics("asset"),
        "flags": False,
    },
    "hook_bus": {
        "description": "hook discovery, history, WebSocket stream, webhooks, test event, OpenAPI",
        "probes": HOOK_PROBES, "ws": WS_ROUTES, "hooks": topics(), "flags": False,
    },
    "licences": {
        "description": "licence check, manifest and override routes, licence hook docs",
        "probes": LICENCE_PROBES, "ws": [], "hooks": topics("licence"), "flags": False,
    },
    "library": {
        "description": "library roots, scan, identification and duplicate routes, library hook docs",
        "probes": LIBRARY_PROBES, "ws": [], "hooks": topics("library"), "flags": False,
    },
}
PROFILES["all"] = {
    "description": "every profile",
    "probes": INGEST_PROBES + ASSET_PROBES + HOOK_PROBES + LICENCE_PROBES + LIBRARY_PROBES, "ws": WS_ROUTES,
    "hooks": topics(), "flags": True,
}


# ---------------------------------------------------------------------------- flag defaults
EXPECTED_FLAGS = {"enable_asset_ingest": False, "require_remote_terms_ack": True}


def check_flag_defaults(files: list[Path]) -> list[Check]:
    checks = []
    for path in files:
        name = f"flag defaults: {path}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            checks.append(Check(name, False, "file is missing"))
            continue
        except (OSError, ValueError) as exc:
            checks.append(Check(name, False, f"cannot read it: {exc}"))
            continue
        flags = data.get("features", {}) if isinstance(data, dict) else {}
        wrong = [f"features.{k} is {json.dumps(flags.get(k))}, expected {json.dumps(v)}"
                 for k, v in EXPECTED_FLAGS.items() if flags.get(k) is not v]
        checks.append(Check(name, not wrong, "; ".join(wrong) or
                            ", ".join(f"{k}={json.dumps(v)}" for k, v in EXPECTED_FLAGS.items())))
    return checks


def check_ingest_constants() -> Check:
    try:
        from .ingest import queue
    except Exception as exc:  # the checker reports a broken package instead of crashing
        return Check("ingest constants", False, f"comfyvn.ingest.queue does not import: {exc}")
    problems = []
    if getattr(queue, "DEFAULT_RATE_LIMIT", None) != 0.33:
        problems.append(f"DEFAULT_RATE_LIMIT is {getattr(queue, 'DEFAULT_RATE_LIMIT', None)!r}, expected 0.33")
    limit = shipped_default("ingest.max_remote_bytes")
    if getattr(queue, "MAX_REMOTE_BYTES", None) != limit:
        problems.append(f"MAX_REMOTE_BYTES is {getattr(queue, 'MAX_REMOTE_BYTES', None)!r}, expected {_mib(limit)} "
                        "(ingest.max_remote_bytes in the shipped defaults)")
    if not isinstance(getattr(queue, "STATE_VERSION", None), int):
        problems.append("STATE_VERSION is not an integer")
    return Check("ingest constants", not problems, "; ".join(problems) or
                 f"DEFAULT_RATE_LIMIT=0.33, MAX_REMOTE_BYTES={_mib(limit)}, STATE_VERSION={queue.STATE_VERSION}")


def check_paths(ws: Workspace) -> Check:
    """The workspace's storage folders, as :func:`comfyvn.config.check_storage_paths` sees them."""
    try:
        check_storage_paths(ws)
        where = f"assets root {ws.assets_root}, staging {ws.staging_dir}, thumbnails {ws.thumbnails_dir}"
    except (ConfigError, OSError) as exc:
        return Check("storage folders", False, str(exc))
    return Check("storage folders", True, f"{where}; staging and the assets root on one file system")


def _mib(n: int) -> str:
    return f"{n / 1024**2:g} MiB"


# ---------------------------------------------------------------------------- routes
def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def judge(probe: Probe, resp: httpx.Response) -> tuple[bool, str]:
    """Did the comfyvn handler answer? (see the module docstring for the rule)"""
    status = resp.status_code
    body = _json(resp)
    label = f"{probe.method} {probe.path()} -> {status}"
    ours = isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
    if 200 <= status < 300:
        if body is None:
            return False, f"{label}: answer is not JSON"
        problem = probe.validate(body) if probe.validate else None
        return (False, f"{label}: {problem}") if problem else (True, label)
    if status == 405:
        return False, f"{label}: method not implemented (405)"
    if status >= 500:
        return False, f"{label}: server error {(body or {}).get('message', resp.text[:200])!r}"
    if not ours:
        kind = "no route (Jupyter's own 404)" if status == 404 else "not an answer of the comfyvn handler"
        return False, f"{label}: {kind}: {resp.text[:160]!r}"
    if status in (401, 403) and body["error"] in ("forbidden", "unauthorized"):
        return False, f"{label}: not authorised ({body['message']}); pass --token or set JUPYTER_TOKEN"
    return True, f"{label} {body['error']}"


def check_routes(client: ComfyvnClient, probes: list[Probe]) -> list[Check]:
    checks = []
    for probe in probes:
        name = f"route {probe.method} {probe.route}"
        headers = {"Content-Type": "application/json"} if probe.body else None
        try:
            resp = client.request(probe.method, probe.path(), params=probe.params, content=probe.body,
                                  headers=headers, check=False)
        except ApiError as exc:
            checks.append(Check(name, False, str(exc)))
            continue
        ok, detail = judge(probe, resp)
        checks.append(Check(name, ok, detail))
    return checks


def check_server(client: ComfyvnClient) -> Check:
    """The server answers and accepts the token (Jupyter's own ``/api/status``)."""
    try:
        resp = client.request("GET", "api/status", check=False)
    except ApiError as exc:
        return Check("server reachable", False, str(exc))
    if resp.status_code in (401, 403):
        return Check("server reachable", False, f"{client.base_url} refused the token (HTTP {resp.status_code}); "
                                                "pass --token or set JUPYTER_TOKEN")
    if resp.status_code != 200:
        return Check("server reachable", False, f"GET api/status answered HTTP {resp.status_code}; "
                                                "is this a Jupyter server (check the base URL)?")
    return Check("server reachable", True, f"{client.base_url} (authenticated)")


def check_ingest_flag_state(client: ComfyvnClient) -> Check:
    """Informational: whether this server has ingest on (either state passes)."""
    resp = client.request("GET", "api/ingest/status", params={"limit": 1}, check=False)
    body = _json(resp) or {}
    if resp.status_code == 403 and body.get("error") == "feature_disabled":
        return Check("ingest flag on this server", True, "enable_asset_ingest is off: /api/ingest/* answers 403 "
                                                         "feature_disabled (the shipped default)")
    if resp.status_code == 200:
        return Check("ingest flag on this server", True, "enable_asset_ingest is on")
    return Check("ingest flag on this server", False, f"GET /api/ingest/status answered HTTP {resp.status_code}")


def check_websocket(client: ComfyvnClient, route: str) -> list[Check]:
    name = f"websocket {route}"
    try:
        with client.subscribe(["on_modder_test"], path=route.lstrip("/"), open_timeout=10) as sub:
            if sub.ack.get("type") != "ack" or sub.ack.get("topics") != ["on_modder_test"]:
                return [Check(name, False, f"unexpected acknowledgement {sub.ack}")]
            pong = sub.ping(timeout=10)
    except (ApiError, OSError, TimeoutError) as exc:
        return [Check(name, False, f"handshake failed: {exc}")]
    checks = [Check(name, True, f"ack {json.dumps(sub.ack)}; ping answered with {pong.get('type')}")]
    try:
        client.subscribe(["on_syscheck_no_such_hook"], path=route.lstrip("/"), open_timeout=10).close()
        checks.append(Check(f"{name} unknown topic", False, "an unknown topic was acknowledged"))
    except BadRequest as exc:
        checks.append(Check(f"{name} unknown topic", True, f"refused: {exc.message}"))
    except (ApiError, OSError, TimeoutError) as exc:
        checks.append(Check(f"{name} unknown topic", False, f"unexpected failure: {exc}"))
    return checks


def check_openapi_lists(client: ComfyvnClient, routes: list[str], *, exhaustive: bool = False) -> Check:
    """The served OpenAPI document describes ``routes`` (and, when ``exhaustive``, nothing else)."""
    resp = client.request("GET", "api/comfyvn/openapi.json", check=False)
    body = _json(resp)
    if resp.status_code != 200 or not isinstance(body, dict):
        return Check("openapi lists the routes", False, f"GET /api/comfyvn/openapi.json answered {resp.status_code}")
    paths = set(body.get("paths", {}))
    missing = [r for r in routes if r not in paths]
    extra = sorted(paths - set(routes)) if exhaustive else []
    problems = ([f"missing: {', '.join(missing)}"] if missing else []) + (
        [f"served but not checked by this tool (update comfyvn/syscheck.py): {', '.join(extra)}"] if extra else [])
    return Check("openapi lists the routes", not problems, "; ".join(problems) or f"{len(routes)} routes described")


# ---------------------------------------------------------------------------- docs coverage
_PLACEHOLDER = r"(?:\{[^}/\s]+\}|<[^>/\s]+>|:[A-Za-z_]\w*|\$\{?[A-Za-z_]\w*\}?)"


def route_pattern(route: str) -> re.Pattern[str]:
    """``/assets/{uid}`` also matches ``/assets/<uid>``, ``/assets/{asset_uid}``, ``/assets/:uid``..."""
    parts = re.split(r"\{\w+\}", route)
    body = _PLACEHOLDER.join(re.escape(p) for p in parts)
    return re.compile(body + r"(?![A-Za-z0-9_\-/{<])")


def check_docs(docs_dir: Path, routes: list[str], hooks: list[str]) -> list[Check]:
    files = sorted(docs_dir.glob("*.md")) if docs_dir.is_dir() else []
    if not files:
        return [Check("docs coverage", False, f"no Markdown files in {docs_dir}")]
    text = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    checks = []
    missing_routes = [r for r in routes if not route_pattern(r).search(text)]
    checks.append(Check("docs name every route", not missing_routes,
                        f"not in {docs_dir}/*.md: {', '.join(missing_routes)}" if missing_routes
                        else f"{len(routes)} routes named in {len(files)} files"))
    missing_hooks = [h for h in hooks if not re.search(rf"(?<![\w]){re.escape(h)}(?!\w)", text)]
    checks.append(Check("docs name every hook", not missing_hooks,
                        f"not in {docs_dir}/*.md: {', '.join(missing_hooks)}" if missing_hooks
                        else f"{len(hooks)} hooks named"))
    return checks


# ---------------------------------------------------------------------------- running a profile
def run_profile(profile: str, base: str, token: str | None = None, *, docs_dir: Path | None = None,
                config_files: list[Path] | None = None, timeout: float = 15.0,
                workspace_root: Path | None = None) -> dict:
    """Run every check of ``profile``; returns ``{"profile", "base", "ok", "checks": [...]}``.

    The storage folders are checked for ``workspace_root``, else for ``COMFYVN_HOME`` when set."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    spec = PROFILES[profile]
    checks: list[Check] = []
    if spec["flags"]:
        from .config import DEFAULTS_FILE

        checks += check_flag_defaults([*(config_files or []), DEFAULTS_FILE])
        checks.append(check_ingest_constants())
    with ComfyvnClient(base, token=token, timeout=timeout) as client:
        server = check_server(client)
        checks.append(server)
        if server.ok:
            checks += check_routes(client, spec["probes"])
            if any(p.route.startswith("/api/ingest/") for p in spec["probes"]):
                checks.append(check_ingest_flag_state(client))
            for route in spec["ws"]:
                checks += check_websocket(client, route)
            if profile in ("hook_bus", "all"):
                checks.append(check_openapi_lists(client, all_routes("all"), exhaustive=profile == "all"))
    if docs_dir is not None:
        checks += check_docs(docs_dir, all_routes(profile), spec["hooks"])
    if workspace_root is not None or os.environ.get("COMFYVN_HOME"):
        try:
            checks.append(check_paths(existing_workspace(workspace_root)))
        except FileNotFoundError as exc:
            checks.append(Check("storage folders", False, str(exc)))
    return {"profile": profile, "base": base, "ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}


def all_routes(profile: str) -> list[str]:
    spec = PROFILES[profile]
    return list(dict.fromkeys([p.route for p in spec["probes"]] + spec["ws"]))


def format_report(report: dict) -> str:
    lines = [f"profile {report['profile']} against {report['base']}: {'OK' if report['ok'] else 'FAILED'}"]
    for c in report["checks"]:
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- hook reference (docs)
HOOK_TABLE_BEGIN = "<!-- hook-reference:begin (generated from comfyvn.hooks.HOOK_SPECS) -->"
HOOK_TABLE_END = "<!-- hook-reference:end -->"


def hook_reference_markdown() -> str:
    """The per-hook payload reference of docs/MODDER_HOOKS.md, generated from ``HOOK_SPECS``."""
    out = [HOOK_TABLE_BEGIN, ""]
    for spec in HOOK_SPECS.values():
        extra = []
        if spec.hook_event:
            extra.append(f"`hook_event`: `{spec.hook_event}`")
        if spec.alias_of:
            extra.append(f"alias of `{spec.alias_of}`")
        extra.append(f"WebSocket topic `{spec.name}` (or `modder.{spec.name}`)")
        out += [f"#### `{spec.name}` ({spec.category})", "", spec.description + " " + "; ".join(extra) + ".", "",
                "| field | type and meaning |", "|---|---|"]
        out += [f"| `{name}` | {desc.replace('|', '&#124;')} |" for name, desc in spec.payload.items()]
        out.append("")
    out.append(HOOK_TABLE_END)
    return "\n".join(out)


def update_hook_reference(path: str | Path) -> bool:
    """Rewrite the generated section of ``path``; returns True when it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = text.index(HOOK_TABLE_BEGIN), text.index(HOOK_TABLE_END) + len(HOOK_TABLE_END)
    new = text[:start] + hook_reference_markdown() + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text
