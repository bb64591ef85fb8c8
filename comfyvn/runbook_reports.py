"""Runbooks: the seed's debug cookbook, one function per runbook returning a :class:`Report`.

Each notebook in ``notebooks/runbooks/`` keeps its code thin: it calls one function of this
module, which calls the core's checks and repairs (:mod:`comfyvn.ingest.repairs`, the enforcer,
the system checker) and returns a :class:`Report` (a :class:`Verdict`, pandas tables made by
:mod:`comfyvn.runbook_display` and the raw data).  The notebook shows the tables and a chart,
prints ``VERDICT: OK — ...`` or ``VERDICT: FAIL — ...`` and, in its last cell, raises
:class:`RunbookFailed` when the verdict is FAIL, so a papermill run exits non-zero.  The
papermill runner and the ``comfyvn-runbook`` command are in :mod:`comfyvn.runbooks`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import ApiError, ComfyvnClient
from .config import Workspace, open_existing_workspace
from .errors import ComfyvnError
from .ingest import repairs
from .ingest.errors import IngestError
from .ingest.jobs import JobStatus
from .ingest.jobstore import JobStore
from .ingest.queue import AssetIngestQueue
from .registry.rebuild import audit_sidecars
from .runbook_display import job_table, jobs_frame
from .store import open_store
from .syscheck import PROFILES, run_profile

if TYPE_CHECKING:  # pandas is imported when first used: the CLI starts fast without it
    import pandas as pd

VERDICT_PREFIX = "VERDICT:"
TERMS_FLAG = repairs.TERMS_FLAG


# ---------------------------------------------------------------------------------------- verdicts
class RunbookFailed(ComfyvnError, AssertionError):
    """Raised by a runbook's last cell when what it checks is wrong (papermill then exits non-zero)."""


@dataclass
class Verdict:
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return f"{VERDICT_PREFIX} {'OK' if self.ok else 'FAIL'} — {self.summary}"

    def __str__(self) -> str:
        return "\n".join([self.line, *(f"  - {d}" for d in self.details)])

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise RunbookFailed(self.line)


@dataclass
class Report:
    """What a runbook found: the verdict, tables to show and the raw data behind them."""

    verdict: Verdict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


WORKSPACE_HINT = "pass --workspace DIR (or -p workspace DIR) or set COMFYVN_HOME; --init creates a new workspace"


def open_workspace(root: str | os.PathLike[str] | None = None) -> Workspace:
    """The workspace a runbook works on (``root``, else ``COMFYVN_HOME``, else the current folder).

    Refuses a folder that is not a workspace yet: a runbook that inspects a typo'd path
    would otherwise create an empty workspace there and report that all is well.
    """
    return open_existing_workspace(root, hint=WORKSPACE_HINT)



def open_queue(ws: Workspace) -> AssetIngestQueue:
    """The workspace's queue, without a background downloader of its own: a runbook's kernel
    is short-lived, so re-queued remote jobs are left to the server's worker."""
    return AssetIngestQueue(ws)


# ---------------------------------------------------------------------------------------- inspect_queue
def inspect_queue(ws: Workspace, *, limit: int = 20, stuck_minutes: float = 15) -> Report:
    """Summary, recent jobs and stuck jobs (seed cookbook 1: inspect queue state)."""
    import pandas as pd

    if float(stuck_minutes) <= 0:
        raise ValueError("stuck_minutes must be a positive number of minutes")
    interrupted = repairs.interrupted_jobs(JobStore(open_store(ws)))  # before the queue recovers them
    queue = open_queue(ws)
    now = time.time()
    summary = queue.summary()
    recent = queue.list_jobs(limit=int(limit))
    stuck = repairs.find_stuck_jobs(queue, stuck_minutes=stuck_minutes, now=now)
    counts = {k: v for k, v in summary["counts"].items() if v}
    stuck_frame = jobs_frame(stuck, now)
    stuck_frame.insert(2, "stuck_reason", [j["stuck_reason"] for j in stuck])
    recovered = pd.DataFrame(
        [{"job_id": j["job_id"], "was": j["status"], "now": (queue.get(j["job_id"]) or {}).get("status"),
          "dead_process": j["owner"]} for j in interrupted], columns=["job_id", "was", "now", "dead_process"])
    failed = list(repairs.iter_jobs(queue, JobStatus.FAILED))
    reasons = repairs.failure_reasons(failed)
    limits = pd.DataFrame([{"provider": p, **v} for p, v in (summary.get("rate_limits") or {}).items()])
    total = summary["total"]
    extra = [f"{plural(len(failed), 'failed job')}: " + "; ".join(f"{r} ({n})" for r, n in reasons.items())
             + " (retry or release them)"] if failed else []
    if len(recovered):
        extra.append(f"{len(recovered)} jobs of dead processes were recovered when the queue opened")
    if stuck:
        verdict = Verdict(False, f"{len(stuck)} of {total} jobs stuck",
                          [f"{j['job_id']}: {j['stuck_reason']}" for j in stuck] + extra)
    else:
        verdict = Verdict(True, f"{plural(total, 'job')}, none stuck (threshold {stuck_minutes} min)", extra)
    return Report(verdict, {"counts": pd.DataFrame(sorted(counts.items()), columns=["status", "jobs"]),
                            "recent": jobs_frame(recent, now), "stuck": stuck_frame, "recovered": recovered,
                            "failed": jobs_frame(failed, now), "rate_limits": limits},
                  {"summary": summary, "stuck": stuck, "interrupted": interrupted})


# ---------------------------------------------------------------------------------------- snapshot_dedup_cache
def snapshot_dedup_cache(ws: Workspace, *, base_url: str | None = None, token: str | None = None,
                         export: bool = True) -> Report:
    """Snapshot the dedup cache (seed cookbook 2) and check each entry still holds its bytes.

    With ``base_url`` the server's ``/api/ingest/status?include_cache=true`` is fetched too and
    must agree with the workspace: a server answering for another workspace is caught here.
    """
    import pandas as pd

    queue = open_queue(ws)
    cache = queue.dedup_snapshot()
    exported = queue.export_state() if export else None
    rows = [{**r, "digest": r["digest"][:16]} for r in repairs.dedup_cache_entries(queue, cache)]
    frame = pd.DataFrame(rows, columns=["digest", "job_id", "status", "pinned", "provider", "project_id", "bytes",
                                        "file_present", "staging_path"])
    problems = [f"{r['job_id']} ({r['digest']}…): staging file missing, the entry blocks its bytes for nothing; "
                "run requeue_missing_staging" for r in rows if r["status"] == JobStatus.STAGED
                and not r["file_present"]]
    server_cache = None
    if base_url:
        try:
            with ComfyvnClient(base_url, token) as client:
                server_cache = client.status(limit=1, include_cache=True).get("cache")
        except ApiError as exc:
            problems.append(f"server {base_url}: {exc}")
        else:
            server_cache = repairs.cache_entries(server_cache)
            if set(server_cache) != set(cache):
                only_server = sorted(set(server_cache) - set(cache))
                only_here = sorted(set(cache) - set(server_cache))
                problems.append(f"the server's cache differs from {ws.root}: {len(only_server)} entries only on the "
                                f"server, {len(only_here)} only here (is the server using this workspace?)")
    pinned = sum(1 for r in rows if r["pinned"])
    size = sum(r["bytes"] or 0 for r in rows)
    where = f"; written to {exported['dedup_cache_file']}" if exported else ""
    if problems:
        verdict = Verdict(False, f"{plural(len(problems), 'problem')} in a cache of "
                                 f"{plural(len(rows), 'entry', 'entries')}", problems)
    else:
        checked = " and matches the server" if server_cache is not None else ""
        verdict = Verdict(True, f"{plural(len(rows), 'entry', 'entries')} ({pinned} pinned, {size:,} bytes), every staging file "
                                f"present{checked}{where}")
    return Report(verdict, {"entries": frame}, {"cache": cache, "server_cache": server_cache, "exported": exported})


# ---------------------------------------------------------------------------------------- release_job
def release_job(ws: Workspace, job_id: str | None, *, cancel_active: bool = False) -> Report:
    """Force-release one job (seed cookbook 3); refuses, with the queue's reason, what may not be released.

    ``cancel_active=True`` cancels a ``queued`` or ``downloading`` job instead (the queue only
    releases staged, duplicate or failed jobs; a hung download is stopped by cancelling it).
    """
    if not job_id:
        return Report(Verdict(False, "no job given: run with -p job_id <job id> (inspect_queue lists them)"))
    queue = open_queue(ws)
    before = queue.get(job_id)
    if before is None:
        return Report(Verdict(False, f"no job {job_id!r} in the queue of {ws.root}"))
    try:
        outcome = repairs.release_job(queue, job_id, cancel_active=cancel_active)
    except IngestError as exc:  # the queue's reason (or the job vanished meanwhile)
        return Report(Verdict(False, f"refused to release job {job_id} ({before['status']}): {exc}"),
                      {"job": job_table(before, "before")}, {"before": before, "error": str(exc)})
    table = job_table(outcome.before, "before").join(job_table(outcome.after, "after"))
    if outcome.problems:
        verdict = Verdict(False, f"job {job_id} {outcome.action} incompletely", outcome.problems)
    else:
        verdict = Verdict(True, f"{outcome.action} job {job_id} (was {outcome.before['status']}); no staging file "
                                "or cache pin left")
    return Report(verdict, {"job": table}, {"before": outcome.before, "after": outcome.after})


# ---------------------------------------------------------------------------------------- requeue_missing_staging
def requeue_missing_staging(ws: Workspace, *, dry_run: bool = False) -> Report:
    """Failure row "Status=failed with Staging file missing": re-queue the source asset
    (see :func:`comfyvn.ingest.repairs.requeue_missing_staging`); FAILs naming the jobs whose
    source is gone too."""
    import pandas as pd

    rows = repairs.requeue_missing_staging(open_queue(ws), dry_run=dry_run)
    frame = pd.DataFrame(rows, columns=["job_id", "was", "source", "source_exists", "action", "now", "detail"])
    bad = [r for r in rows if r["now"] not in repairs.REQUEUED_OK and not r["action"].startswith("none")]
    if not rows:
        verdict = Verdict(True, "no job lacks its staging file")
    elif dry_run:
        blocked = [r for r in rows if not r["source_exists"]]
        verdict = Verdict(not blocked, f"dry run: {len(rows) - len(blocked)} of {len(rows)} jobs can be re-queued",
                          [f"{r['job_id']}: source {r['source']} is gone" for r in blocked])
    elif bad:
        verdict = Verdict(False, f"{len(rows) - len(bad)} of {len(rows)} jobs re-queued; {len(bad)} could not be",
                          [f"{r['job_id']}: {r['detail'] or r['now']}" for r in bad])
    else:
        verdict = Verdict(True, f"re-queued {plural(len(rows), 'job')} from their original source",
                          [f"{r['job_id']}: now {r['now']}" for r in rows])
    return Report(verdict, {"jobs": frame}, {"rows": rows})


# ---------------------------------------------------------------------------------------- replay_archived_state
def replay_archived_state(ws: Workspace, state_path: str | None, *, dedup_cache_path: str | None = None,
                          disable_terms_ack: bool = False) -> Report:
    """Import an archived ``queue_state.json`` (any version); see
    :func:`comfyvn.ingest.repairs.replay_archive` for ``disable_terms_ack``."""
    import pandas as pd

    if not state_path:
        return Report(Verdict(False, "no archive given: run with -p state_path /path/to/queue_state.json"))
    try:
        doc, version = repairs.read_archive(state_path)
    except (OSError, ValueError, IngestError) as exc:
        return Report(Verdict(False, f"cannot replay {state_path}: {exc}"))
    unacked = repairs.unacknowledged_remote(doc)
    outcome = repairs.replay_archive(open_queue(ws), state_path, dedup_cache_path=dedup_cache_path,
                                     disable_terms_ack=disable_terms_ack)
    result, flag_before, flag_after = outcome.result, outcome.flag_before, outcome.flag_after
    rows = ([{"job_id": j["job_id"], "outcome": "imported", "status": j["status"], "reason": ""}
             for j in result["imported"]]
            + [{"job_id": j["job_id"], "outcome": "skipped", "status": None, "reason": j["reason"]}
               for j in result["skipped"]]
            + [{"job_id": j.get("job_id"), "outcome": "refused", "status": None, "reason": j["reason"]}
               for j in result["refused"]])
    frame = pd.DataFrame(rows, columns=["job_id", "outcome", "status", "reason"])
    flags = pd.DataFrame({TERMS_FLAG: [flag_before, outcome.flag_during, flag_after]},
                         index=["before", "during the import", "after"])
    n_in, n_skip, n_ref = len(result["imported"]), len(result["skipped"]), len(result["refused"])
    problems = []
    if flag_after != flag_before:
        problems.append(f"features.{TERMS_FLAG} is {flag_after} after the replay, was {flag_before}: "
                        f"set it back in {ws.config_file}")
    for j in result["refused"]:
        problems.append(f"{j.get('job_id') or '#' + str(j.get('index'))}: {j['reason']}")
    if any("terms.not_acknowledged" in j["reason"] for j in result["refused"]):
        problems.append("to replay these remote requests, rerun with -p disable_terms_ack True "
                        "(the flag is turned off for the import only and restored afterwards)")
    origin = f"version {version} archive" + (" (migrated)" if result.get("migrated_from") else "")
    if problems:
        verdict = Verdict(False, f"{n_ref} of {len(doc['jobs'])} archived jobs refused, {n_in} imported "
                                 f"({origin})", problems)
    else:
        ack = (f"; {len(unacked)} remote requests without terms_acknowledged replayed with "
               f"{TERMS_FLAG} off, flag restored to {flag_after}") if unacked and disable_terms_ack else ""
        verdict = Verdict(True, f"imported {plural(n_in, 'job')}, skipped {n_skip} already present ({origin}){ack}")
    return Report(verdict, {"jobs": frame, "flags": flags},
                  {"result": result, "version": version, "unacknowledged": unacked})


# ---------------------------------------------------------------------------------------- validate_system
DEFAULT_PROFILES = ("p7_asset_ingest_cache", "asset_gallery", "hook_bus")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _names(value: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    if value is None or value == "":
        return list(default)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def validate_system(base_url: str, token: str | None = None, *, profiles: str | Sequence[str] | None = None,
                    docs_dir: str | os.PathLike[str] | None = None, check_docs: bool = True,
                    timeout: float = 15.0) -> Report:
    """Run the system checker's profiles against a server (seed cookbook 4: queue + routes stay wired).

    The same checks as ``tools/check_current_system.py --profile P --base URL``: flag defaults of
    the shipped config, every route called and answered by the comfyvn handler, the WebSocket
    handshake, and (``check_docs``) that ``docs/*.md`` name every route and hook.
    """
    import pandas as pd

    columns = ["profile", "name", "ok", "detail"]
    if not base_url:
        return Report(Verdict(False, "no server given: run with -p base_url http://127.0.0.1:8888/ -p token ..."),
                      {"checks": pd.DataFrame(columns=columns)})
    names = _names(profiles, DEFAULT_PROFILES)
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        return Report(Verdict(False, f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(PROFILES)}"),
                      {"checks": pd.DataFrame(columns=columns)})
    token = token or os.environ.get("JUPYTER_TOKEN") or None
    docs = Path(docs_dir) if docs_dir else REPO_ROOT / "docs"
    notes = []
    if check_docs and not docs.is_dir():
        notes.append(f"docs coverage not checked: {docs} does not exist (pass -p docs_dir)")
    shipped = [REPO_ROOT / "config" / "comfyvn.json"]
    rows = []
    for name in names:
        report = run_profile(name, base_url, token, docs_dir=docs if check_docs and docs.is_dir() else None,
                             config_files=[p for p in shipped if p.exists()], timeout=float(timeout))
        rows += [{"profile": name, **c} for c in report["checks"]]
    frame = pd.DataFrame(rows, columns=columns)
    failed = [r for r in rows if not r["ok"]]
    if failed:
        verdict = Verdict(False, f"{len(failed)} of {len(rows)} checks failed against {base_url}",
                          [f"[{r['profile']}] {r['name']}: {r['detail']}" for r in failed] + notes)
    else:
        verdict = Verdict(True, f"{len(rows)} checks passed in {len(names)} profiles against {base_url}", notes)
    return Report(verdict, {"checks": frame}, {"profiles": names})


# ---------------------------------------------------------------------------------------- enforce_sidecars
def enforce_sidecars(ws: Workspace, *, project_id: str | None = None, fix: bool = False,
                     fill_metadata: bool = False, overwrite: bool = False) -> Report:
    """Audit sidecars (dry run) or fix them and audit again to prove the fix (``project_id`` None:
    the workspace's ``registry.default_project``).

    The enforcer opens the registry without recovering it first, so interrupted operations
    are reported (and, with ``fix``, finished) rather than silently repaired.
    """
    import pandas as pd

    first = audit_sidecars(project_id, workspace_root=ws.root, fix=bool(fix), fill_metadata=bool(fill_metadata),
                           overwrite=bool(overwrite))
    after = audit_sidecars(project_id, workspace_root=ws.root) if fix else None
    final = after if after is not None else first
    findings = pd.DataFrame(first["findings"], columns=["kind", "uid", "path", "detail", "fixed"])
    remaining = sorted({f["kind"] for f in final["findings"]})
    details = [f"{k}: {n}" for k, n in final["counts"].items()]
    details += [f"could not fill {u['field']} of {u['path']}: {u['reason']}" for u in final.get("unfilled") or []]
    n_first, n_final = len(first["findings"]), len(final["findings"])
    assets = plural(first["summary"]["assets"], "asset")
    if final["ok"] and not n_final:
        if fix:
            fixed = sum(1 for f in first["findings"] if f["fixed"])
            verdict = Verdict(True, f"fixed {fixed} of {plural(n_first, 'finding')} in {assets}; "
                                    "the audit is now clean")
        else:
            verdict = Verdict(True, f"{assets} of project {project_id!r}: sidecars, files, thumbnails and "
                                    "metadata in order")
    elif fix:
        verdict = Verdict(False, f"{plural(n_final, 'finding')} remain after fixing {assets}", details)
    else:
        verdict = Verdict(False, f"{plural(n_final, 'finding')} in {assets} (dry run: nothing changed); rerun "
                                 "with -p fix True to fix", details)
    return Report(verdict, {"findings": findings}, {"audit": first, "after_fix": after, "counts": first["counts"],
                                                    "remaining": remaining})


__all__ = [
    "DEFAULT_PROFILES",
    "TERMS_FLAG",
    "VERDICT_PREFIX",
    "WORKSPACE_HINT",
    "Report",
    "RunbookFailed",
    "Verdict",
    "enforce_sidecars",
    "inspect_queue",
    "open_queue",
    "open_workspace",
    "plural",
    "release_job",
    "replay_archived_state",
    "requeue_missing_staging",
    "snapshot_dedup_cache",
    "validate_system",
]
