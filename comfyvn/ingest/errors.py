"""Errors of the ingest queue: each has a stable ``code`` and a message a person can act on."""

from __future__ import annotations


class IngestError(Exception):
    """Base class of ingest errors (``code`` is stable, ``message`` is for people)."""

    code = "ingest_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {"error": self.code, "message": self.message}


class RateLimitedError(IngestError):
    """The provider's token bucket is empty; try again in ``retry_after`` seconds."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(0.0, float(retry_after))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "retry_after": round(self.retry_after, 3)}


class TermsNotAcknowledgedError(IngestError):
    """A remote pull without ``terms_acknowledged=True`` while ``require_remote_terms_ack`` is on."""

    code = "terms_not_acknowledged"
    http_status = 400


class SourceNotAllowedError(IngestError):
    """``source_path`` lies outside ``ingest.allowed_source_roots``."""

    code = "source_not_allowed"
    http_status = 403


class SourceRefusedError(SourceNotAllowedError):
    """The source lies inside an allowed root but is never readable: the workspace's own files
    (database, config, logs, cache, staging, trash, uploads, other projects' assets) or a
    sensitive name (dot-files and dot-folders, keys, credentials).  See :mod:`comfyvn.sources`."""

    code = "source_refused"


class SourceUnreadableError(SourceNotAllowedError):
    """The operating system refused to open the source (permissions)."""

    code = "source_unreadable"


class SourceNotRegularError(IngestError):
    """The source is a folder, FIFO, device or socket, not a regular file."""

    code = "not_a_file"


class SourceTooLargeError(IngestError):
    """The source is bigger than ``ingest.max_source_bytes`` or the free disk space allows."""

    code = "source_too_large"


class SourcePathError(IngestError):
    """The source path cannot be resolved (symlink loop, name too long, not a folder on the way)."""

    code = "bad_source_path"


class SourceChangedError(IngestError):
    """The source was replaced (e.g. by a symlink) between resolving and opening it."""

    code = "source_changed"
    http_status = 409


class CopyRequiredError(IngestError):
    """``copy=False`` names a file outside the project's assets root (it would be moved)."""

    code = "copy_required"


class JobNotFoundError(IngestError, KeyError):
    """No job with that id."""

    code = "job_not_found"
    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class InvalidTransitionError(IngestError):
    """The job's status does not allow the requested step (e.g. releasing an applied job)."""

    code = "invalid_transition"
    http_status = 409


class RemoteError(IngestError):
    """A remote pull failed.

    ``retryable`` says whether trying again later may succeed (429, 5xx, cut connection);
    ``retry_after`` is the provider's Retry-After in seconds when it sent one.
    """

    code = "remote_error"
    http_status = 502

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
