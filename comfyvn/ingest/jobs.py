"""The job vocabulary of the ingest queue: statuses, the actions a person may take, the groups.

The one place that says what an ingest job's status means; the queue, the HTTP handlers, the
OpenAPI description, the queue inspector, the runbooks and the reliability harness import it.
:class:`JobStatus` is a :class:`~enum.StrEnum`, so a status is the plain string in JSON, SQL
and comparisons (``JobStatus.STAGED == "staged"``).

Life of a job::

    local file ──stage──> staged ──apply──> applying ──> applied
    remote URL ──> queued ──(worker)──> downloading ──> staged ...
                   any step may end in duplicate, failed, released or cancelled
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class JobStatus(StrEnum):
    QUEUED = "queued"  # waits for the worker (a remote pull, or a local file to stage again)
    DOWNLOADING = "downloading"  # a process pulls (or re-stages) its bytes now
    STAGED = "staged"  # its bytes lie in staging, hashed; waits for apply
    APPLYING = "applying"  # a process moves its file into the registry now
    APPLIED = "applied"  # its file is a registered asset
    DUPLICATE = "duplicate"  # its bytes were already staged or registered
    FAILED = "failed"  # an error stopped it (retry or release it)
    RELEASED = "released"  # a person dropped it and its staging file
    CANCELLED = "cancelled"  # a person stopped it before it was applied

    def __repr__(self) -> str:  # a printed job or summary reads as it did with plain strings
        return repr(self.value)


class JobAction(StrEnum):
    """What a person (or a client) may ask of a job."""

    APPLY = "apply"
    RELEASE = "release"
    CANCEL = "cancel"
    RETRY = "retry"

    def __repr__(self) -> str:
        return repr(self.value)


_S = JobStatus

#: every status, in the order of a job's life (summaries and filters list them this way)
STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)

#: which statuses each action accepts (an action asked of a job in its own result status is a no-op
#: for release and cancel: see :data:`ACTION_RESULTS`)
TRANSITIONS: Mapping[JobAction, frozenset[JobStatus]] = MappingProxyType({
    JobAction.APPLY: frozenset({_S.STAGED}),
    JobAction.RELEASE: frozenset({_S.STAGED, _S.DUPLICATE, _S.FAILED}),
    JobAction.CANCEL: frozenset({_S.QUEUED, _S.DOWNLOADING, _S.STAGED}),
    JobAction.RETRY: frozenset({_S.FAILED, _S.CANCELLED}),
})

#: the status an action leads to (retry: ``queued``, or at once ``staged``/``duplicate`` when the
#: staged file is still there; apply: ``applied``, or ``duplicate``/``failed``)
ACTION_RESULTS: Mapping[JobAction, JobStatus] = MappingProxyType({
    JobAction.APPLY: _S.APPLIED, JobAction.RELEASE: _S.RELEASED, JobAction.CANCEL: _S.CANCELLED,
    JobAction.RETRY: _S.QUEUED,
})

# ---------------------------------------------------------------------------- the groups
#: waiting for its bytes: the worker pulls (or re-stages) them; the HTTP API answers 202 for these
PENDING: frozenset[JobStatus] = frozenset({_S.QUEUED, _S.DOWNLOADING})
#: a process works on it now (the ``owner`` column names it); recovery takes these back from dead owners
CLAIMED: frozenset[JobStatus] = frozenset({_S.DOWNLOADING, _S.APPLYING})
#: moves on by itself, without a person: after a restart has settled none may be left
UNSETTLED: frozenset[JobStatus] = PENDING | CLAIMED
#: its digest blocks duplicates (the partial UNIQUE index on active digests covers these)
HOLDS_DIGEST: frozenset[JobStatus] = frozenset({_S.STAGED, _S.APPLYING})
#: may own files in staging that the sweep must keep (a failed apply keeps its staged file for a retry)
KEEPS_STAGING: frozenset[JobStatus] = frozenset({_S.QUEUED, _S.DOWNLOADING, _S.STAGED, _S.APPLYING, _S.FAILED})
#: never runs again by itself (history: a person may still release or retry some of them)
SETTLED: frozenset[JobStatus] = frozenset(STATUSES) - UNSETTLED - {_S.STAGED}
#: nothing can be asked of it any more
FINAL: frozenset[JobStatus] = frozenset(s for s in SETTLED if not any(s in ok for ok in TRANSITIONS.values()))


def allows(action: JobAction | str, status: JobStatus | str) -> bool:
    """Whether ``action`` may be asked of a job in ``status``."""
    return status in TRANSITIONS[JobAction(action)]


def actions_for(status: JobStatus | str) -> frozenset[JobAction]:
    """The actions a job in ``status`` accepts (what a dashboard enables)."""
    return frozenset(a for a, ok in TRANSITIONS.items() if status in ok)


def check_status(status: str) -> JobStatus:
    """``status`` as a :class:`JobStatus`; a :class:`ValueError` naming the known ones otherwise."""
    try:
        return JobStatus(status)
    except ValueError:
        raise ValueError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}") from None


def sql_in(statuses: frozenset[JobStatus] | tuple[JobStatus, ...]) -> str:
    """``('a','b')`` for ``status IN ...`` in a statement (the values are this module's constants)."""
    return "(" + ",".join(f"'{s}'" for s in sorted(statuses, key=STATUSES.index)) + ")"


__all__ = [
    "ACTION_RESULTS",
    "CLAIMED",
    "FINAL",
    "HOLDS_DIGEST",
    "KEEPS_STAGING",
    "PENDING",
    "SETTLED",
    "STATUSES",
    "TRANSITIONS",
    "UNSETTLED",
    "JobAction",
    "JobStatus",
    "actions_for",
    "allows",
    "check_status",
    "sql_in",
]
