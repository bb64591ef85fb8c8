"""Errors of the ingest queue: each has a stable ``code`` and a message a person can act on.

Each class carries its meaning from :mod:`comfyvn.errors` (the server extension's error table turns
meanings into HTTP statuses); a plain :class:`IngestError` is a request the queue cannot take.
"""

from __future__ import annotations

from ..errors import ComfyvnError, Conflict, InvalidInput, NotFound, RateLimited, Refused, UpstreamFailure


class IngestError(ComfyvnError):
    """Base class of ingest errors (``code`` is stable, ``message`` is for people)."""

    code = "ingest_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {"error": self.code, "message": self.message}


class RateLimitedError(RateLimited, IngestError):
    """The provider's token bucket is empty; try again in ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(0.0, float(retry_after))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "retry_after": round(self.retry_after or 0.0, 3)}


class TermsNotAcknowledgedError(InvalidInput, IngestError):
    """A remote pull without ``terms_acknowledged=True`` while ``require_remote_terms_ack`` is on."""

    code = "terms_not_acknowledged"


class SourceNotAllowedError(Refused, IngestError):
    """``source_path`` lies outside ``ingest.allowed_source_roots``."""

    code = "source_not_allowed"


class SourceRefusedError(SourceNotAllowedError):
    """The source lies inside an allowed root but is never readable: the workspace's own files
    (database, config, logs, cache, staging, trash, uploads, other projects' assets) or a
    sensitive name (dot-files and dot-folders, keys, credentials).  See :mod:`comfyvn.sources`."""

    code = "source_refused"


class SourceUnreadableError(SourceNotAllowedError):
    """The operating system refused to open the source (permissions)."""

    code = "source_unreadable"


class SourceNotRegularError(InvalidInput, IngestError):
    """The source is a folder, FIFO, device or socket, not a regular file."""

    code = "not_a_file"


class SourceTooLargeError(InvalidInput, IngestError):
    """The source is bigger than ``ingest.max_source_bytes`` or the free disk space allows."""

    code = "source_too_large"


class SourcePathError(InvalidInput, IngestError):
    """The source path cannot be resolved (symlink loop, name too long, not a folder on the way)."""

    code = "bad_source_path"


class SourceChangedError(Conflict, IngestError):
    """The source was replaced (e.g. by a symlink) between resolving and opening it."""

    code = "source_changed"


class CopyRequiredError(InvalidInput, IngestError):
    """``copy=False`` names a file outside the project's assets root (it would be moved)."""

    code = "copy_required"


class JobNotFoundError(NotFound, IngestError, KeyError):
    """No job with that id."""

    code = "job_not_found"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class InvalidTransitionError(Conflict, IngestError):
    """The job's status does not allow the requested step (e.g. releasing an applied job)."""

    code = "invalid_transition"


class RemoteError(UpstreamFailure, IngestError):
    """A remote pull failed.

    ``retryable`` says whether trying again later may succeed (429, 5xx, cut connection);
    ``retry_after`` is the provider's Retry-After in seconds when it sent one.
    """

    code = "remote_error"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None,
                 retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = None if retry_after is None else max(0.0, float(retry_after))
        self.retryable = bool(retryable)
        self.status = status

    def to_dict(self) -> dict:
        out = super().to_dict()
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


__all__ = [
    "CopyRequiredError",
    "IngestError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "RateLimitedError",
    "RemoteError",
    "SourceChangedError",
    "SourceNotAllowedError",
    "SourceNotRegularError",
    "SourcePathError",
    "SourceRefusedError",
    "SourceTooLargeError",
    "SourceUnreadableError",
    "TermsNotAcknowledgedError",
]
