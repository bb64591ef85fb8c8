"""The queue inspector's logic: job list with filters, progress, actions on a selection, the enqueue form."""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from comfyvn.config import feature_enabled
from comfyvn.fsutil import UnsafePathError, safe_relative
from comfyvn.ingest.errors import IngestError
from comfyvn.ingest.jobs import STATUSES, TRANSITIONS, JobAction, JobStatus, check_status
from comfyvn.ingest.mappers import PROVIDERS, REMOTE_PROVIDERS
from comfyvn.ingest.queue import AssetIngestQueue

from .selection import SelectionModel
from .theme import human_bytes

_S = JobStatus
STATUS_TONES = {_S.QUEUED: "", _S.DOWNLOADING: "info", _S.STAGED: "accent", _S.APPLYING: "info", _S.APPLIED: "ok",
                _S.DUPLICATE: "warn", _S.FAILED: "bad", _S.RELEASED: "", _S.CANCELLED: ""}
# which statuses each action accepts (the queue's transition table, to enable buttons)
ACTIONS: dict[str, frozenset[JobStatus]] = {str(a): TRANSITIONS[a] for a in
                                            (JobAction.APPLY, JobAction.RELEASE, JobAction.RETRY, JobAction.CANCEL)}
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
FLAGS = ("enable_asset_ingest", "require_remote_terms_ack")


class FormError(ValueError):
    """The enqueue form has problems; ``errors`` maps field name -> message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


@dataclass
class EnqueueForm:
    """What the person typed.  ``mode`` is ``local`` (a file path) or ``remote`` (a URL)."""

    mode: str = "local"
    source_path: str = ""
    remote_url: str = ""
    provider: str = "auto"
    terms_acknowledged: bool = False
    asset_type_hint: str = ""
    dest_relative: str = ""
    pin: bool = False

    def validate(self, queue: AssetIngestQueue) -> dict[str, str]:
        """Field -> message for every problem found before anything is queued (empty when fine)."""
        errors: dict[str, str] = {}
        if self.mode not in ("local", "remote"):
            errors["mode"] = "Choose a local file or a remote URL."
        elif self.mode == "local":
            path = self.source_path.strip()
            if not path:
                errors["source_path"] = "Enter the path of a file on this machine."
            else:
                try:
                    queue.check_source(self.source(queue))
                except (IngestError, OSError, ValueError) as exc:
                    errors["source_path"] = str(exc)
            if self.provider not in ("auto", "local"):
                errors["provider"] = "Local files use the 'local' provider."
        else:
            url = self.remote_url.strip()
            parts = urlsplit(url)
            if not url:
                errors["remote_url"] = "Enter a Civitai, Hugging Face or other http(s) URL."
            elif parts.scheme not in ("http", "https") or not parts.hostname:
                errors["remote_url"] = "The URL must start with https:// (or http://) and name a host."
            if self.provider not in ("auto", *REMOTE_PROVIDERS):
                errors["provider"] = f"Remote pulls use one of: auto, {', '.join(REMOTE_PROVIDERS)}."
            if feature_enabled("require_remote_terms_ack", queue.ws) and not self.terms_acknowledged:
                errors["terms_acknowledged"] = ("Tick the box to confirm you accept the provider's terms and the "
                                                "asset's licence (required by features.require_remote_terms_ack).")
        hint = self.asset_type_hint.strip()
        if hint and not _TYPE_RE.match(hint):
            errors["asset_type_hint"] = "Use 1-64 lower-case letters, digits, '.', '_' or '-' (e.g. backgrounds)."
        dest = self.dest_relative.strip()
        if dest:
            try:
                safe_relative(dest, what="destination")
            except UnsafePathError as exc:
                errors["dest_relative"] = str(exc)
        return errors

    def source(self, queue: AssetIngestQueue) -> Path:
        """The local path; a relative one is taken relative to the workspace folder (COMFYVN_HOME)."""
        path = Path(self.source_path.strip()).expanduser()
        return path if path.is_absolute() else queue.ws.root / path

    def to_kwargs(self, queue: AssetIngestQueue) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"asset_type_hint": self.asset_type_hint.strip() or None,
                                  "dest_relative": self.dest_relative.strip() or None, "pin": self.pin}
        if self.mode == "local":
            kwargs.update(provider="local", source_path=str(self.source(queue)))
        else:
            kwargs.update(remote_url=self.remote_url.strip(), terms_acknowledged=self.terms_acknowledged,
                          provider="local" if self.provider == "auto" else self.provider)
        return kwargs


@dataclass
class ActionOutcome:
    job_id: str
    ok: bool
    status: str | None
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def progress_of(job: dict) -> tuple[float | None, str]:
    """``(fraction or None, label)`` for the job table's progress column."""
    done, total = job.get("bytes_done") or 0, job.get("bytes_total")
    status = job["status"]
    if status == JobStatus.DOWNLOADING:
        if total:
            return min(1.0, done / total), f"{human_bytes(done)} of {human_bytes(total)}"
        return None, human_bytes(done) if done else "starting…"
    if status == JobStatus.QUEUED:
        return 0.0, "waiting"
    if status in (JobStatus.STAGED, JobStatus.APPLYING, JobStatus.APPLIED, JobStatus.DUPLICATE):  # bytes known
        size = job.get("bytes") or done or total
        return 1.0, human_bytes(size) if size else ""
    return None, ""


class QueueModel:
    def __init__(self, queue: AssetIngestQueue, page_size: int = 200) -> None:
        self.queue = queue
        self.page_size = page_size
        self.status: str | None = None
        self.provider: str | None = None
        self.jobs: list[dict] = []
        self.summary: dict = {"counts": dict.fromkeys(STATUSES, 0), "total": 0}
        self.selection = SelectionModel()
        self.last_results: list[ActionOutcome] = []
        self.lock = threading.RLock()

    @property
    def job_ids(self) -> list[str]:
        return [j["job_id"] for j in self.jobs]

    def load(self) -> list[dict]:
        with self.lock:
            self.summary = self.queue.summary()
            self.jobs = self.queue.page_jobs(limit=self.page_size, status=self.status, provider=self.provider)["items"]
            # selected jobs stay selected while they exist, even when filtered out of view
            return self.jobs

    def set_filter(self, status: str | None = None, provider: str | None = None) -> list[dict]:
        if status:
            check_status(status)
        if provider and provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")
        with self.lock:
            self.status, self.provider = status or None, provider or None
            return self.load()

    def click(self, job_id: str, *, shift: bool = False, toggle: bool = False) -> None:
        with self.lock:
            self.selection.click(job_id, self.job_ids, shift=shift, toggle=toggle)

    def focused_job(self) -> dict | None:
        focused = self.selection.focused
        if not focused:
            return None
        for job in self.jobs:
            if job["job_id"] == focused:
                return job
        return self.queue.get(focused)

    def selected_jobs(self) -> list[dict]:
        by_id = {j["job_id"]: j for j in self.jobs}
        out = []
        for job_id in self.selection.selected:
            job = by_id.get(job_id) or self.queue.get(job_id)
            if job is not None:
                out.append(job)
        return out

    def allowed_actions(self) -> dict[str, int]:
        """Action -> how many selected jobs it applies to (buttons are enabled when > 0)."""
        jobs = self.selected_jobs()
        return {a: sum(1 for j in jobs if j["status"] in ok) for a, ok in ACTIONS.items()}

    def run_action(self, action: str, job_ids: list[str] | None = None) -> list[ActionOutcome]:
        """Run ``apply``/``release``/``retry``/``cancel`` on the selection; one outcome per job."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        ids = list(job_ids if job_ids is not None else self.selection.selected)
        if not ids:
            raise ValueError(f"Select one or more jobs in the table first, then {action} them.")
        outcomes: list[ActionOutcome] = []
        if action == JobAction.APPLY:
            result = self.queue.apply(ids)
            for job in result["applied"]:
                outcomes.append(ActionOutcome(job["job_id"], True, job["status"],
                                              f"applied as asset {job.get('asset_uid')}"))
            for job in result["failed"]:
                outcomes.append(ActionOutcome(job["job_id"], False, job["status"], job.get("error") or "failed"))
            for job in result["skipped"]:
                outcomes.append(ActionOutcome(job["job_id"], False, job["status"],
                                              f"skipped: only staged jobs can be applied (it is {job['status']})"))
            for job_id in result["unknown"]:
                outcomes.append(ActionOutcome(str(job_id), False, None, "no such job (removed meanwhile?)"))
        else:
            method = getattr(self.queue, action)
            for job_id in ids:
                try:
                    job = method(job_id)
                    outcomes.append(ActionOutcome(job_id, True, job["status"], f"now {job['status']}"))
                except IngestError as exc:
                    outcomes.append(ActionOutcome(job_id, False, None, exc.message))
        order = {j: i for i, j in enumerate(ids)}
        outcomes.sort(key=lambda o: order.get(o.job_id, len(order)))
        with self.lock:
            self.last_results = outcomes
            self.load()
        return outcomes

    def enqueue(self, form: EnqueueForm) -> dict:
        """Validate and queue; raises :class:`FormError` with field messages, or the queue's readable error."""
        errors = form.validate(self.queue)
        if errors:
            raise FormError(errors)
        job = self.queue.enqueue(**form.to_kwargs(self.queue))
        with self.lock:
            self.load()
            self.selection.click(job["job_id"], self.job_ids)
        return job

    def flags(self) -> dict[str, bool]:
        return {name: feature_enabled(name, self.queue.ws) for name in FLAGS}

    @staticmethod
    def row(job: dict) -> dict:
        source = job.get("remote_url") or job.get("source_path") or ""
        name = job.get("filename") or (source.rstrip("/").rsplit("/", 1)[-1] if source else "")
        note = job.get("error") or ", ".join(job.get("notes") or [])
        if job.get("asset_uid"):
            note = f"asset {job['asset_uid']}" + (f" · {note}" if note else "")
        elif job.get("existing_uid"):
            note = f"same as asset {job['existing_uid']}"
        elif job.get("dedup_of"):
            note = f"same as job {job['dedup_of']}"
        from datetime import datetime

        created = datetime.fromtimestamp(job["created_at"]).strftime("%H:%M:%S") if job.get("created_at") else ""
        return {"id": job["job_id"], "cells": {
            "job": job["job_id"], "created": created, "status": [job["status"], STATUS_TONES.get(job["status"], "")],
            "provider": job["provider"], "name": name, "type": job.get("asset_type_hint") or "",
            "progress": list(progress_of(job)), "note": note}}
